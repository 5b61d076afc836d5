// The upload page of the controller: sign in with an API token, choose a file and its file id (or many files, or
// a folder: a queue, FILES_IN_FLIGHT files at a time), upload each in parallel parts with presigned URLs, and
// resume after a reload by checking every part the storage holds. Each new upload declares the file's SHA-256
// (computed in a worker, sha256.js), so that the controller's verifier can accept it; the principal's uploads
// are listed with their statuses.
//
// It uses the file-centric endpoints, as `upload --controller` does, so each can finish the other's upload:
//   GET  /multipart_uploads                           the principal's uploads, with their statuses (the list)
//   GET  /files/ID/multipart_uploads?status=pending   the file's unfinished upload (or null)
//   POST /files/ID/multipart_uploads {size, sha256}   a new one
//   GET  /multipart_uploads/UPLOAD/parts              the parts the storage holds
//   POST /multipart_uploads/UPLOAD/part/N/presigned_post   a URL for part N, asked just before its PUT
//   PATCH /multipart_uploads/UPLOAD {status}          uploaded (with every part's ETag, and the SHA-256 when it
//                                                     was not declared at init) or cancelled
//
// Kept in the browser: the token in sessionStorage (this tab only, never in a URL); in localStorage, per
// principal and file id, {fileId, uploadId, name, size, lastModified, partSize}: what it takes to recognise
// the same file after a reload. Never a presigned URL.

import { filesOfDrop, filesOfInput, leftOutNote, MAX_FILES } from "./files.js";
import { md5OfBlob, toBase64, toHex } from "./md5.js";
import { sha256InWorker } from "./sha256.js";

const TOKEN_KEY = "s3mu.token";
const RECORDS_KEY = "s3mu.uploads.v1";
const PARALLEL = 4;
const MAX_TRIES = 5; // per part, for failures that may pass (5xx, a dropped connection, an expired URL)
const FILE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;
const EXPIRED = new Set(["AccessDenied", "RequestExpired", "ExpiredToken"]);
const $ = (id) => document.getElementById(id);

/** Stops the upload with a message for the user; not retried. */
class Refused extends Error {}
/** Pause or cancel: the part goes back to the queue. */
class Stopped extends Error {}
/** No answer at all (status 0): offline, a dropped connection, or a CORS refusal. */
class NoAnswer extends Error {}

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

let token = null;
let principal = null;
let file = null;
let job = null; // the upload being sent, paused, or just refused (cancel still applies to it)
// Aborted at sign-out: every SHA-256 worker of the signed-in session listens to it (and to its own upload's stop).
let session = new AbortController();
// The single file's preparation (its SHA-256, its upload's creation) until it has a job: Cancel aborts it.
let preparing = null;

// -- small helpers ----------------------------------------------------------------------------------------

const enc = encodeURIComponent;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const backoff = (tries) => sleep(250 * 2 ** tries * (0.75 + Math.random() / 2)); // 1 s, 2 s, 4 s, 8 s, with jitter
const bareETag = (etag) => String(etag || "").replace(/"/g, "").toLowerCase();

function size(bytes) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${bytes} bytes` : `${v.toFixed(1)} ${units[i]}`;
}

const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

function duration(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function say(text, kind = "info") {
  const m = $("message");
  // An error interrupts a screen reader (an alert); the rest is read when it is idle.
  m.setAttribute("role", kind === "error" ? "alert" : "status");
  m.setAttribute("aria-live", kind === "error" ? "assertive" : "polite");
  m.textContent = text;
  m.dataset.kind = kind;
}

const RUNNING = ["checking", "uploading", "waiting", "pausing", "completing"];
// Where the keyboard focus goes when the control that had it is disabled or hidden: the next step's control.
const FOCUS_NEXT = {
  idle: ["upload", "file"], checking: ["message"], uploading: ["pause"], waiting: ["pause"],
  pausing: ["message"], paused: ["resume"], completing: ["message"], done: ["file"],
  refused: ["upload", "cancel", "file"], failed: ["upload", "cancel", "file"], cancelled: ["file"],
};

function setState(state) {
  const focused = document.activeElement;
  document.body.dataset.state = state;
  const running = RUNNING.includes(state);
  const sendable = batch && batch.items.some((item) => SENDABLE.includes(item.state));
  $("upload").disabled = running || state === "paused" || !(file || sendable);
  $("pause").disabled = !["uploading", "waiting"].includes(state);
  $("resume").disabled = state !== "paused";
  const cancellable = ["uploading", "waiting", "pausing", "paused", "refused", "failed"].includes(state);
  $("cancel").disabled = !((job && job.upload && cancellable) || (state === "checking" && !job && preparing));
  $("file").disabled = running || state === "paused";
  $("folder").disabled = running || state === "paused";
  $("file-id").disabled = running || state === "paused";
  const lost = !focused || focused === document.body || focused.disabled || focused === $("message") ||
    focused.closest("[hidden]") !== null;
  if (lost && !$("work").hidden) {
    const next = (FOCUS_NEXT[state] || []).map($).find((el) => el && !el.disabled);
    if (next) next.focus();
  }
}

const waiters = new Set(); // those waiting for the network, woken early by pause and cancel

function waitOnline() {
  if (navigator.onLine) return Promise.resolve();
  return new Promise((resolve) => {
    const wake = () => {
      waiters.delete(wake);
      window.removeEventListener("online", wake);
      resolve();
    };
    waiters.add(wake);
    window.addEventListener("online", wake);
  });
}

function wakeWaiters() {
  for (const wake of [...waiters]) wake();
}

function s3Code(body) {
  const m = /<Code>([^<]{1,100})<\/Code>/.exec(body || "");
  return m ? m[1] : null;
}

// -- what the page remembers ------------------------------------------------------------------------------

function allRecords() {
  try {
    return JSON.parse(localStorage.getItem(RECORDS_KEY) || "{}") || {};
  } catch {
    return {};
  }
}

function records() {
  return allRecords()[principal] || {};
}

function saveRecord(record) {
  const all = allRecords();
  all[principal] = { ...(all[principal] || {}), [record.fileId]: record };
  localStorage.setItem(RECORDS_KEY, JSON.stringify(all));
}

function forgetRecord(fileId) {
  const all = allRecords();
  if (all[principal]) {
    delete all[principal][fileId];
    localStorage.setItem(RECORDS_KEY, JSON.stringify(all));
  }
}

const sameFile = (record, f) =>
  record.name === f.name && record.size === f.size && record.lastModified === f.lastModified;

function describe(record) {
  return `${record.name}, ${size(record.size)}, modified ${new Date(record.lastModified).toLocaleString()}`;
}

/** When two times print alike to the second, with their milliseconds, so that the difference shows. */
function when(ms, other) {
  const text = new Date(ms).toLocaleString();
  return text === new Date(other).toLocaleString() ? `${text} and ${ms % 1000} ms` : text;
}

/** How the chosen file differs from the one an upload was started with, each property with both values. */
function differences(record, f) {
  const out = [];
  if (record.name !== f.name) out.push(`its name is ${f.name}, that file's was ${record.name}`);
  if (record.size !== f.size) out.push(`it has ${size(f.size)}, that file had ${size(record.size)}`);
  if (record.lastModified !== f.lastModified) {
    out.push(`it was modified ${when(f.lastModified, record.lastModified)}, that file ` +
      `${when(record.lastModified, f.lastModified)}`);
  }
  return out.join("; ");
}

/** A file id from a file's name: its letters, digits, '.', '_' and '-', the rest turned into '-'. */
function suggestId(name) {
  const id = name.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").replace(/[^A-Za-z0-9._-]+/g, "-")
    .replace(/-+(?=[._])|(?<=[._])-+/g, "").replace(/^[^A-Za-z0-9]+/, "").replace(/-+$/, "").slice(0, 255);
  return FILE_ID.test(id) ? id : "";
}

// -- the controller ---------------------------------------------------------------------------------------

/** A call to the controller; ``forJob``: give up with Stopped when that upload is paused or cancelled meanwhile. */
async function api(method, path, body, forJob = null) {
  for (let tries = 1; ; tries++) {
    let response;
    try {
      const headers = { Authorization: `Bearer ${token}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      response = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      });
    } catch {
      if (!navigator.onLine) {
        await offline(forJob);
        if (forJob && forJob.stopped) throw new Stopped();
        continue;
      }
      if (tries >= MAX_TRIES) throw new Refused("The controller does not answer: try again later.");
      await backoff(tries);
      continue;
    }
    const text = await response.text();
    let doc = null;
    try { doc = text ? JSON.parse(text) : null; } catch { doc = null; }
    if (response.ok) return doc;
    const detail = doc && typeof doc.detail === "string" ? doc.detail : text.slice(0, 300);
    if (response.status === 401) {
      signOut("The controller refused this token (it is unknown, or no longer valid): sign in with a valid one.");
      throw new Refused("The controller refused the token.");
    }
    if (response.status >= 500 && tries < MAX_TRIES) {
      await backoff(tries);
      continue;
    }
    throw new ApiError(response.status, (doc && doc.code) || String(response.status), detail);
  }
}

async function offline(forJob = null) {
  if (forJob && forJob.stopped) return; // paused or cancelled: nothing to wait for
  const ui = forJob ? forJob.ui : SINGLE;
  const before = ui.current();
  ui.state("waiting");
  ui.say("The network connection is lost: waiting for it to come back; the upload then continues by itself.");
  await waitOnline();
  if ((forJob || job) && (forJob || job).stopped) return;
  ui.state(before === "waiting" ? "uploading" : before);
  ui.say("Back online: continuing.");
}

// -- one upload -------------------------------------------------------------------------------------------

class Job {
  /** ``ui``: where it shows its state, messages and progress (SINGLE, or a row of the many-file queue). */
  constructor(f, fileId, upload, ui = SINGLE) {
    this.ui = ui;
    this.file = f;
    this.fileId = fileId;
    this.upload = upload;
    this.partSize = upload.part_size;
    this.count = Math.max(1, Math.ceil(f.size / this.partSize));
    this.done = new Map(); // part number -> MD5 hex (= its ETag at the storage)
    this.inflight = new Map(); // part number -> {xhr, loaded, reason}
    this.stopped = null; // null, "pause" or "cancel"
    this.sha256 = null; // a promise of the file's SHA-256, declared at completion when it was not at init
    this.failure = null;
    this.hashStop = null; // the AbortController of its SHA-256 worker: cancel ends it
    this.kept = 0;
    this.differed = 0;
    this.expired = 0;
    this.samples = []; // [time, acknowledged bytes]: the rate is theirs, not that of bytes merely handed out
    this.announced = 0; // the last tenth of the upload read out to screen readers
    // A PUT with no progress for this long is given up and sent again: a connection can hang without an error.
    this.stallMs = 1000 * (Number(document.body.dataset.stallSeconds) || 120);
  }

  length(n) {
    return Math.min(this.partSize, this.file.size - (n - 1) * this.partSize);
  }

  slice(n) {
    const start = (n - 1) * this.partSize;
    return this.file.slice(start, start + this.length(n));
  }

  ackedBytes() {
    let bytes = 0;
    for (const n of this.done.keys()) bytes += this.length(n);
    return bytes;
  }

  sentBytes() {
    let bytes = 0;
    for (const n of this.done.keys()) bytes += this.length(n);
    for (const entry of this.inflight.values()) bytes += entry.loaded;
    return bytes;
  }

  /** Keep each part the storage holds whose size and MD5 match the local slice; refuse a different file. */
  async reconcile() {
    const listed = (await api("GET", `/multipart_uploads/${enc(this.upload.upload_id)}/parts`)).parts;
    const held = listed.filter((p) => p.PartNumber >= 1 && p.PartNumber <= this.count);
    if (!held.length) return;
    this.ui.state("checking");
    this.ui.say(`Checking the ${plural(held.length, "part")} the storage already holds against ${this.file.name}…`);
    let checked = 0;
    const total = held.reduce((sum, p) => sum + p.Size, 0);
    for (const p of held) {
      const n = p.PartNumber;
      if (p.Size === this.length(n)) {
        const md5 = toHex(await md5OfBlob(this.slice(n), undefined, (bytes) => {
          checked += bytes;
          this.ui.render(`Checking held parts: ${size(checked)} of ${size(total)}`, checked / total);
        }));
        if (md5 === bareETag(p.ETag)) {
          this.done.set(n, md5);
          continue;
        }
      }
      this.differed++;
    }
    this.kept = this.done.size;
    if (!this.kept) {
      throw new Refused(`None of the ${held.length} parts the storage holds for file id ${this.fileId} matches ` +
        `${this.file.name}: this is not the file its upload was started with. Choose that file to resume, ` +
        "or cancel the upload to start again with this one.");
    }
  }

  async run() {
    this.stopped = null;
    this.failure = null;
    this.samples = [[performance.now(), this.ackedBytes()]];
    const queue = [];
    for (let n = 1; n <= this.count; n++) if (!this.done.has(n)) queue.push(n);
    this.ui.state("uploading");
    const ticker = setInterval(() => this.progress(), 250);
    const onOffline = () => this.abortAll("offline");
    window.addEventListener("offline", onOffline);
    try {
      await Promise.all(Array.from({ length: Math.min(PARALLEL, queue.length) }, () => this.worker(queue)));
    } finally {
      clearInterval(ticker);
      window.removeEventListener("offline", onOffline);
    }
    this.progress();
    // Paused after the last parts were already on their way: nothing is left to pause, so it completes.
    const allSent = this.stopped === "pause" && token && this.done.size === this.count;
    if (this.stopped && !allSent) return false;
    if (this.failure) throw this.failure;
    await this.complete();
    return true;
  }

  async worker(queue) {
    while (!this.stopped && !this.failure && queue.length) {
      const n = queue.shift();
      try {
        await this.sendPart(n);
      } catch (e) {
        if (!(e instanceof Stopped)) {
          this.failure = this.failure || e;
          this.abortAll("stop");
        }
        return;
      }
    }
  }

  abortAll(reason) {
    for (const entry of this.inflight.values()) {
      entry.reason = reason;
      entry.xhr.abort();
    }
  }

  async sendPart(n) {
    const blob = this.slice(n);
    const md5 = await md5OfBlob(blob);
    const md5Hex = toHex(md5);
    const contentMD5 = toBase64(md5);
    for (let tries = 1; ; ) {
      if (this.stopped) throw new Stopped();
      const signed = await api("POST", `/multipart_uploads/${enc(this.upload.upload_id)}/part/${n}/presigned_post`,
        undefined, this);
      if (this.stopped) throw new Stopped();
      let answer;
      try {
        answer = await this.put(n, signed.url, blob, contentMD5);
      } catch (e) {
        if (!(e instanceof NoAnswer)) throw e;
        console.warn(`part ${n}: no answer from the storage (try ${tries})`);
        if (!navigator.onLine) {
          await offline(this);
          continue; // not counted: the network, not the part
        }
        if (tries++ >= MAX_TRIES) {
          throw new Refused(`Part ${n} could not be sent: the storage at ${new URL(signed.url).origin} did not ` +
            "answer. Either the network fails, or the bucket's CORS rule does not let this page PUT " +
            "(it must allow this page's origin, the PUT method and the Content-MD5 header).");
        }
        await backoff(tries);
        continue;
      }
      if (answer.status >= 200 && answer.status < 300) {
        if (answer.etag === null) {
          throw new Refused(`The storage took part ${n} but does not let this page read its ETag: the bucket's ` +
            "CORS rule must expose the ETag header (ExposeHeaders: ETag).");
        }
        if (bareETag(answer.etag) !== md5Hex) {
          if (tries++ >= MAX_TRIES) {
            throw new Refused(`Part ${n}: the storage's ETag ${answer.etag} is not the MD5 of the part ` +
              `(${md5Hex}); this page can upload only to stores whose part ETags are MD5s.`);
          }
          continue;
        }
        this.done.set(n, md5Hex);
        return;
      }
      const code = s3Code(answer.body) || String(answer.status);
      console.warn(`part ${n}: the storage answered ${answer.status} ${code} (try ${tries})`);
      if (answer.status === 403 || EXPIRED.has(code)) {
        this.expired++;
        this.ui.say(`Part ${n}: its upload link was refused (${code}), most likely expired: asking for a new one.`);
      } else if (code === "BadDigest" || code === "InvalidDigest") {
        this.ui.say(`Part ${n}: the storage received bytes that do not match their MD5: sending it again.`);
      } else if (!(answer.status >= 500 || code === "SlowDown" || code === "RequestTimeout")) {
        throw new Refused(`Part ${n}: the storage refused it (${answer.status} ${code}).`);
      }
      if (tries++ >= MAX_TRIES) {
        throw new Refused(`Part ${n}: the storage refused it ${MAX_TRIES} times (${answer.status} ${code}); ` +
          (code === "BadDigest" ? "did the file change while it was being uploaded?" : "try again later."));
      }
      await backoff(tries);
    }
  }

  put(n, url, blob, contentMD5) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const entry = { xhr, loaded: 0, reason: "stop", last: performance.now() };
      this.inflight.set(n, entry);
      const settle = () => this.inflight.delete(n);
      xhr.open("PUT", url);
      xhr.setRequestHeader("Content-MD5", contentMD5);
      xhr.upload.onprogress = (event) => {
        entry.loaded = event.loaded;
        entry.last = performance.now();
      };
      xhr.upload.onload = () => { entry.last = performance.now(); }; // the body is sent: now the answer
      xhr.onload = () => {
        settle();
        resolve({ status: xhr.status, etag: xhr.getResponseHeader("ETag"), body: xhr.responseText });
      };
      xhr.onerror = () => { settle(); reject(new NoAnswer()); };
      xhr.ontimeout = xhr.onerror;
      xhr.onabort = () => { settle(); reject(entry.reason === "stop" ? new Stopped() : new NoAnswer()); };
      xhr.send(blob); // the browser streams the slice from the file
    });
  }

  /** Every part as the storage lists it must be this file's slice (size and MD5) before the upload completes. */
  async complete() {
    this.ui.state("completing");
    this.ui.say("Checking every part with the storage, then completing the upload…");
    const listed = (await api("GET", `/multipart_uploads/${enc(this.upload.upload_id)}/parts`)).parts;
    const byNumber = new Map(listed.map((p) => [p.PartNumber, p]));
    const parts = {};
    for (let n = 1; n <= this.count; n++) {
      const p = byNumber.get(n);
      if (!p || p.Size !== this.length(n) || bareETag(p.ETag) !== this.done.get(n)) {
        this.done.delete(n);
        const what = p ? `holds a part ${n} that differs from` : `lacks part ${n} of`;
        throw new Refused(`Not completed: the storage ${what} ${this.file.name}. Press Upload to send it again.`);
      }
      parts[n] = bareETag(p.ETag);
    }
    const body = { status: "uploaded", parts };
    if (this.sha256) body.sha256 = await this.sha256;
    return api("PATCH", `/multipart_uploads/${enc(this.upload.upload_id)}`, body)
      .then((done) => { this.result = done; });
  }

  progress() {
    const now = performance.now();
    for (const [n, entry] of this.inflight) {
      if (now - entry.last > this.stallMs) {
        this.ui.say(`Part ${n}: no progress for ${Math.round(this.stallMs / 1000)} s: sending it again.`);
        entry.reason = "stalled";
        entry.xhr.abort();
      }
    }
    const sent = this.sentBytes();
    // The rate and time left come from the parts the storage acknowledged over the last 20 s: the bytes a PUT
    // has handed out include those still in buffers on the way, which made early estimates far too short.
    const acked = this.ackedBytes();
    this.samples.push([now, acked]);
    while (this.samples.length > 2 && now - this.samples[1][0] > 20000) this.samples.shift();
    const [t0, b0] = this.samples[0];
    const rate = now - t0 > 500 && acked > b0 ? ((acked - b0) * 1000) / (now - t0) : NaN;
    const total = this.file.size;
    const percent = total ? Math.floor((100 * sent) / total) : 100;
    let text = `${size(sent)} of ${size(total)} (${percent}%) · parts ${this.done.size} of ${this.count}`;
    const left = rate > 0 && acked < total ? duration((total - acked) / rate) : "";
    if (left) text += ` · ${size(rate)}/s · ${left} left`;
    this.ui.render(text, total ? sent / total : 1);
    const tenth = total ? Math.floor((10 * acked) / total) * 10 : 0; // what the storage holds, read out by tenths
    if (tenth > this.announced && tenth < 100) {
      this.announced = tenth;
      this.ui.announce(`${tenth}% uploaded` + (left ? `, about ${left} left.` : "."));
    }
  }
}

function render(text, fraction) {
  $("progress").textContent = text;
  $("bar").value = Math.min(1, Math.max(0, fraction));
}

/** The single-file view: the page's own state, message, bar and announcements. */
const SINGLE = {
  state: (state) => setState(state),
  current: () => document.body.dataset.state,
  say: (text, kind) => say(text, kind),
  render: (text, fraction) => render(text, fraction),
  announce: (text) => { $("announce").textContent = text; },
};

// -- what the buttons do ----------------------------------------------------------------------------------

/** The SHA-256 of ``f``, computed in a worker, its progress shown in ``ui``; ``signal`` ends the worker. */
function hashFile(f, ui, signal) {
  ui.render(`Computing the SHA-256: 0 bytes of ${size(f.size)}`, 0);
  return sha256InWorker(f, {
    signal,
    onProgress: (done) => ui.render(`Computing the SHA-256: ${size(done)} of ${size(f.size)}`, done / f.size),
  });
}

/**
 * The upload of ``chosen`` as ``fileId``, ready to run: its pending upload when there is one and ``chosen`` is its
 * file (the page's record of it, its size, and the held parts' MD5s decide), else a new one, created with the
 * file's SHA-256 declared (the controller checks the object against it and accepts it). ``onJob`` gets the job as
 * soon as there is an upload (so that it can be cancelled also when refused here). ``stop`` (an AbortController)
 * ends its SHA-256 worker, as signing out does: a file is not hashed on for nobody.
 */
async function prepare(chosen, fileId, ui, onJob, stop = new AbortController()) {
  const signal = AbortSignal.any([session.signal, stop.signal]);
  let upload = await api("GET", `/files/${enc(fileId)}/multipart_uploads?status=pending`);
  if (stop.signal.aborted) throw new Stopped(); // cancelled before it had an upload
  const record = records()[fileId];
  let current;
  if (upload) {
    current = new Job(chosen, fileId, upload, ui);
    onJob(current);
    if (record && record.uploadId === upload.upload_id && !sameFile(record, chosen)) {
      throw new Refused(`${chosen.name} is not the file the unfinished upload of file id ${fileId} was started ` +
        `with: ${differences(record, chosen)}. Choose that file to resume, or cancel the upload to start again.`);
    }
    if (upload.size !== null && upload.size !== chosen.size) {
      throw new Refused(`The unfinished upload of file id ${fileId} is for a file of ${size(upload.size)}; ` +
        `${chosen.name} has ${size(chosen.size)}. Choose that file to resume, or cancel the upload to start again.`);
    }
  } else {
    ui.say(`Computing the SHA-256 of ${chosen.name}, which the controller checks the object against…`);
    let sha256;
    try {
      sha256 = await hashFile(chosen, ui, signal);
    } catch (e) {
      if (signal.aborted) throw new Stopped();
      throw e;
    }
    if (!token || signal.aborted) throw new Stopped();
    const body = { size: chosen.size, sha256 };
    if (/^[\x20-\x7e]{1,255}$/.test(chosen.type)) body.content_type = chosen.type;
    try {
      upload = await api("POST", `/files/${enc(fileId)}/multipart_uploads`, body);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        throw new Refused(`File id ${fileId} belongs to someone else: choose another file id.`);
      }
      if (e instanceof ApiError && e.code === "UploadExists") {
        const status = (/ that is ([a-z]+)/.exec(e.detail) || [])[1];
        throw new Refused(status === "pending"
          ? `File id ${fileId} has just been given an upload elsewhere (another tab or the command line): ` +
            "press Upload again to join it, or choose another file id."
          : `File id ${fileId} already has a finished upload` + (status ? ` (${status})` : "") +
            ": choose another file id for this file.");
      }
      throw e;
    }
    if (stop.signal.aborted) { // cancelled while its upload was being created: that upload goes too
      await api("PATCH", `/multipart_uploads/${enc(upload.upload_id)}`, { status: "cancelled" }).catch(() => {});
      throw new Stopped();
    }
    current = new Job(chosen, fileId, upload, ui);
    onJob(current);
  }
  current.hashStop = stop;
  saveRecord({ fileId, uploadId: upload.upload_id, name: chosen.name, size: chosen.size,
               lastModified: chosen.lastModified, partSize: upload.part_size });
  await current.reconcile();
  // An upload started without a declared SHA-256 (by a client that declared none): the page declares it at
  // completion, computed while the parts go.
  if (!upload.sha256) {
    current.sha256 = sha256InWorker(chosen, { signal });
    current.sha256.catch(() => {}); // a failure is the completion's to report; unawaited (paused), it is none
  }
  return current;
}

async function startUpload() {
  if (batch) return startBatch();
  const fileId = $("file-id").value.trim();
  if (!file) return say("Choose a file first.", "error");
  if (!FILE_ID.test(fileId)) {
    return say("A file id is 1 to 255 letters, digits, '.', '_' or '-', starting with a letter or digit.", "error");
  }
  if (file.size === 0) return say(`${file.name} is empty: there is nothing to upload.`, "error");
  const chosen = file;
  if (!(await readable(chosen))) {
    return say(`${chosen.name} cannot be read (is it a folder?): choose or drop one file.`, "error");
  }
  job = null;
  const stop = new AbortController();
  preparing = { stop, name: chosen.name };
  setState("checking");
  say(`Asking the controller about file id ${fileId}…`);
  try {
    try {
      await prepare(chosen, fileId, SINGLE, (j) => { job = j; setState("checking"); }, stop);
    } finally {
      if (preparing && preparing.stop === stop) preparing = null;
    }
    if (job.kept) {
      say(`Resuming: kept ${job.kept} of ${plural(job.count, "part")} the storage already holds` +
        (job.differed ? `; ${plural(job.differed, "held part")} did not match this file and ` +
          `${job.differed === 1 ? "is" : "are"} sent again` : "") +
        `; sending ${job.count - job.kept}.`);
    } else {
      say(job.count === 1 ? `Uploading ${chosen.name} in 1 part.`
        : `Uploading ${chosen.name} in ${job.count} parts of ${size(job.partSize)}, ${PARALLEL} at a time.`);
    }
    await continueUpload();
  } catch (e) {
    if (e instanceof Stopped && stop.signal.aborted && token && !job) {
      setState("cancelled");
      render("", 0);
      say(`Cancelled: nothing of ${chosen.name} was sent, and no upload was kept for file id ${fileId}.`);
      $("announce").textContent = "The upload is cancelled.";
      return;
    }
    failed(e);
  }
}

async function continueUpload() {
  const current = job;
  try {
    if (!(await current.run())) {
      if (current !== job || !token) return; // signed out meanwhile: signing in again tells what is unfinished
      if (current.stopped === "pause") {
        setState("paused");
        say(`Paused: ${current.done.size} of ${plural(current.count, "part")} are sent. Resume continues; the ` +
          "storage keeps the parts, also if you close this tab (choose the same file again to resume).");
      }
      return;
    }
    forgetRecord(current.fileId);
    const done = current.result;
    setState("done");
    refreshList(true);
    say(`Uploaded ${current.file.name} as file id ${current.fileId}: ${size(done.object_size ?? current.file.size)}, ` +
      `status ${done.status}.` +
      (current.kept ? ` ${current.kept} of ${current.count} parts were already there and were kept.` : "") +
      (current.differed ? ` ${plural(current.differed, "held part")} did not match this file and ` +
        `${current.differed === 1 ? "was" : "were"} sent again.` : ""), "ok");
  } catch (e) {
    failed(e);
  }
}

function failed(e) {
  if (!token) return; // signed out: the sign-in form says why
  if (e instanceof Refused) {
    setState("refused");
    say(e.message, "error");
  } else if (e instanceof ApiError) {
    setState("failed");
    say(`The controller refused: ${e.detail} (${e.code}).`, "error");
  } else {
    setState("failed");
    say(`Unexpected error: ${e && e.message ? e.message : e}`, "error");
    console.error(e);
  }
}

/** Pause lets the parts in flight finish (aborted, they would start again from their first byte) and starts no more. */
function pause() {
  if (batch) return pauseBatch();
  if (!job) return;
  job.stopped = "pause";
  wakeWaiters();
  if (job.inflight.size) {
    setState("pausing");
    say(`Pausing: finishing the ${plural(job.inflight.size, "part")} being sent; Cancel upload stops at once.`);
  }
}

function resume() {
  if (batch) {
    say("Resuming.");
    startBatch(true);
    return;
  }
  if (!job) return;
  say("Resuming.");
  continueUpload();
}

async function cancel() {
  const current = job;
  if (!current) { // its SHA-256 is computed, or its upload asked for: nothing is sent yet
    const { stop, name } = preparing || {};
    if (!stop || document.body.dataset.state !== "checking") return;
    if (window.confirm(`Cancel the upload of ${name}? Nothing of it has been sent yet.`)) stop.abort();
    return;
  }
  const sent = current.done.size;
  if (!window.confirm(`Cancel the upload of file id ${current.fileId}? It cannot be resumed` +
      (sent ? `, and the ${plural(sent, "part")} sent so far are deleted.` : "."))) {
    return;
  }
  current.stopped = "cancel";
  current.abortAll("stop");
  if (current.hashStop) current.hashStop.abort(); // its SHA-256, computed while the parts went, is not needed
  wakeWaiters(); // the parts' waits end; the cancellation itself waits for the network
  setState("checking");
  say("Cancelling…");
  try {
    const done = await api("PATCH", `/multipart_uploads/${enc(current.upload.upload_id)}`, { status: "cancelled" });
    forgetRecord(current.fileId);
    job = null;
    setState("cancelled");
    render("", 0);
    say(`Cancelled: the upload of file id ${current.fileId} is ${done.status}, and the parts sent are deleted.`);
    refreshList();
  } catch (e) {
    failed(e);
  }
}

let choosing = 0; // the latest choice: an earlier one still being checked gives way
let suggested = ""; // the file id the page filled in, replaced by the next suggestion unless the user edited it

/** Whether the first part the storage holds for ``record``'s upload is ``f``'s slice; null when it cannot tell. */
async function firstHeldPartMatches(record, f) {
  try {
    const listed = (await api("GET", `/multipart_uploads/${enc(record.uploadId)}/parts`)).parts;
    const p = listed.find((q) => q.PartNumber >= 1 && (q.PartNumber - 1) * record.partSize < f.size);
    if (!p) return null;
    const start = (p.PartNumber - 1) * record.partSize;
    const length = Math.min(record.partSize, f.size - start);
    if (p.Size !== length) return false;
    return toHex(await md5OfBlob(f.slice(start, start + length))) === bareETag(p.ETag);
  } catch {
    return null;
  }
}

/** The file id of the principal's pending upload (as last listed) of ``f``'s size whose first part the storage
 *  holds is ``f``'s slice (its MD5); null when there is none. */
async function pendingOf(f) {
  const candidates = listed.filter((u) => u.status === "pending" && u.file_id && u.size === f.size).slice(0, 5);
  for (const u of candidates) {
    if (await firstHeldPartMatches({ uploadId: u.upload_id, partSize: u.part_size }, f)) return u.file_id;
  }
  return null;
}

/** Whether a File can be read: a dropped folder arrives as one that cannot. */
const readable = (f) => f.slice(0, 1).arrayBuffer().then(() => true, () => false);

async function choose(f, leftOut = 0) {
  if (!f) return;
  leaveBatch();
  const mine = ++choosing;
  file = f;
  job = null;
  render("", 0);
  $("file-info").textContent = `${f.name} · ${size(f.size)} · modified ${new Date(f.lastModified).toLocaleString()}`;
  const note = leftOut ? ` The other ${plural(leftOut, "dropped file")} ${leftOut === 1 ? "was" : "were"} left ` +
    "out." : "";
  const match = Object.values(records()).find((r) => sameFile(r, f));
  const idField = $("file-id");
  if (match) {
    idField.value = match.fileId;
    suggested = "";
    say(`Checking whether ${f.name} is the file of the unfinished upload of file id ${match.fileId}…${note}`);
  } else {
    if (!idField.value.trim() || idField.value === suggested) {
      suggested = suggestId(f.name);
      idField.value = suggested;
    }
    say(note.trim());
  }
  setState("idle");
  // Refused here, not after an upload was created for it.
  if (!(await readable(f))) {
    if (mine !== choosing) return;
    file = null;
    $("file").value = "";
    $("file-info").textContent = "No file chosen.";
    setState("idle");
    say(`${f.name} is a folder, or a file this browser cannot read: choose or drop a file, or for a folder, ` +
      "drop it or use \"choose a folder\".", "error");
    return;
  }
  if (!match) {
    // Not an upload this browser started: one of the principal's pending uploads of this size (started by the
    // command line, another browser, or before the browser's storage was cleared) whose first held part is
    // this file's slice. The file id is filled in unless the user typed one; Upload then checks every part.
    const found = await pendingOf(f);
    if (!found || mine !== choosing || document.body.dataset.state !== "idle") return;
    if (!idField.value.trim() || idField.value === suggested) {
      idField.value = found;
      suggested = found;
    }
    say(`This file has an unfinished upload, started elsewhere (file id ${found}): press Upload to resume it; ` +
      `its parts the storage holds are checked, and kept where they match.${note}`);
    return;
  }
  // Name, size and time alike are a guess: the bytes of a part the storage holds decide before we promise.
  const verdict = await firstHeldPartMatches(match, f);
  if (mine !== choosing || document.body.dataset.state !== "idle") return;
  if (verdict === false) {
    say(`${f.name} has the name, size and modification time of the file whose upload (file id ${match.fileId}) ` +
      "is unfinished, but not its bytes: the parts already sent do not match it. Choose that file to resume the " +
      `upload, or give this one another file id.${note}`, "error");
  } else {
    say(`This file has an unfinished upload (file id ${match.fileId}): press Upload to resume it` +
      (verdict ? "; its parts the storage holds are checked, and kept where they match." : ".") + note);
  }
}

/** After signing in (also after a reload): the unfinished uploads this browser started, still pending. */
async function noteUnfinished() {
  const still = [];
  for (const record of Object.values(records()).slice(0, 10)) {
    try {
      const pending = await api("GET", `/files/${enc(record.fileId)}/multipart_uploads?status=pending`);
      if (pending && pending.upload_id === record.uploadId) still.push(record);
      else forgetRecord(record.fileId); // finished or cancelled elsewhere: nothing to resume
    } catch {
      still.push(record); // cannot tell now: keep it
    }
  }
  if (!token || file || document.body.dataset.state !== "idle" || !still.length) return;
  const listed = still.map((r) => `file id ${r.fileId} (${describe(r)})`);
  say(still.length === 1
    ? `An upload from this browser is unfinished: ${listed[0]}. Choose that file to resume it.`
    : `${still.length} uploads from this browser are unfinished: ${listed.join("; ")}. Choose one of those ` +
      "files to resume its upload.");
}

// -- many files -------------------------------------------------------------------------------------------
//
// Several files chosen, or a folder, make a queue: one row per file (its path, size, file id, bar, status),
// FILES_IN_FLIGHT files sent at a time, each in parts PARALLEL at a time, each prepared as a single file is
// (its pending upload resumed after the same checks, else a new one with its SHA-256 declared).

const FILES_IN_FLIGHT = 2;
const SENDABLE = ["queued", "refused", "failed", "cancelled"]; // the rows Upload sends (again)
// The rows whose upload "Cancel its upload" cancels: being sent (its parts in flight are stopped, the rest of the
// queue goes on), paused, or stopped by a failure; not while it completes (the controller decides then).
const ROW_CANCELLABLE = ["checking", "uploading", "waiting", "pausing", "paused", "refused", "failed"];
const FINISHED = ["uploaded", "accepted"];
const ROW_STATUS = {
  queued: "Waiting", checking: "Checking", uploading: "Uploading", waiting: "Waiting for the network",
  pausing: "Pausing", paused: "Paused", completing: "Completing", done: "Done", refused: "Failed",
  failed: "Failed", skipped: "Skipped", cancelling: "Cancelling", cancelled: "Cancelled",
};

let batch = null; // {items: [...], stopped: null | "pause"} while many files are chosen

function reasonOf(e) {
  if (e instanceof Refused) return e.message;
  if (e instanceof ApiError) return `The controller refused: ${e.detail} (${e.code}).`;
  return `Unexpected error: ${e && e.message ? e.message : e}`;
}

/** A row of the queue, and the view its job shows itself in. */
function makeItem({ file: f, path }, fileId, index) {
  const row = document.createElement("li");
  row.className = "item";
  const head = document.createElement("p");
  head.className = "item-head";
  const name = document.createElement("span");
  name.className = "item-name";
  name.textContent = path;
  head.append(name, ` · ${size(f.size)}`);
  const idLabel = document.createElement("label");
  idLabel.className = "item-id";
  idLabel.htmlFor = `item-id-${index}`;
  const whose = document.createElement("span");
  whose.className = "visually-hidden";
  whose.textContent = ` of ${path}`; // read out, so that each row's field has its own name
  idLabel.append("File id", whose);
  const idInput = document.createElement("input");
  idInput.type = "text";
  idInput.id = `item-id-${index}`;
  idInput.spellcheck = false;
  idInput.maxLength = 255;
  idInput.value = fileId;
  idInput.setAttribute("aria-describedby", `item-status-${index}`);
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute("aria-label", `Upload of ${path}`);
  const progress = document.createElement("p");
  progress.className = "progress";
  const status = document.createElement("p");
  status.className = "item-status";
  status.id = `item-status-${index}`;
  status.tabIndex = -1; // the focus waits here while its upload is cancelled (its button is hidden then)
  const cancelButton = document.createElement("button");
  cancelButton.type = "button";
  cancelButton.className = "danger";
  cancelButton.id = `item-cancel-${index}`;
  const cancelWhose = document.createElement("span");
  cancelWhose.className = "visually-hidden";
  cancelWhose.textContent = ` of ${path}`;
  cancelButton.append("Cancel its upload", cancelWhose);
  row.append(head, idLabel, idInput, bar, progress, status, cancelButton);
  // upload: the controller's upload of this file once there is one (kept when a try fails, for Cancel).
  // stop: the AbortController of its SHA-256 worker; cancelled: Cancel was pressed while it was being sent;
  // cancelling: the promise of that cancellation, which its sending waits for before the queue goes on.
  const item = { file: f, path, row, idInput, status, state: "queued", job: null, upload: null, stop: null,
                 cancelled: false, cancelling: Promise.resolve() };
  cancelButton.addEventListener("click", () => cancelItem(item));
  item.ui = {
    state: (state) => {
      item.state = state;
      row.dataset.state = state;
      idInput.disabled = !SENDABLE.includes(state);
      // Being hashed, there is no upload yet: Cancel stops the hashing, and the row is not sent.
      const hashing = state === "checking" && !item.upload && item.stop !== null;
      cancelButton.disabled = !((item.upload && ROW_CANCELLABLE.includes(state)) || hashing);
      cancelButton.hidden = !(item.upload || hashing) || ["done", "cancelling", "cancelled"].includes(state);
    },
    current: () => item.state,
    say: (text, kind = "info") => {
      status.textContent = `${ROW_STATUS[item.state] || item.state}: ${text}`;
      status.dataset.kind = kind;
    },
    render: (text, fraction) => {
      progress.textContent = text;
      bar.value = Math.min(1, Math.max(0, fraction));
    },
    announce: (text) => { $("announce").textContent = `${path}: ${text}`; },
  };
  item.ui.state(f.size === 0 ? "skipped" : "queued");
  item.ui.say(f.size === 0 ? "it is empty: there is nothing to upload." : "not started yet.");
  return item;
}

/** Many files (or a folder) chosen: the queue replaces the single file's view. */
function chooseMany(entries, note = "") {
  const recs = Object.values(records());
  const ids = new Set();
  const items = entries.map((entry, i) => {
    // The file of an unfinished upload from this browser keeps its file id; the others get one from their path.
    const rec = recs.find((r) => sameFile(r, entry.file));
    let id = rec ? rec.fileId : suggestId(entry.path) || `file-${i + 1}`;
    for (let n = 2; ids.has(id); n++) id = `${(rec ? rec.fileId : suggestId(entry.path)).slice(0, 250)}-${n}`;
    ids.add(id);
    return makeItem(entry, id, i);
  });
  file = null;
  job = null;
  batch = { items, stopped: null };
  $("file").value = "";
  $("folder").value = "";
  $("queue").replaceChildren(...items.map((item) => item.row));
  $("queue").hidden = false;
  $("single").hidden = true;
  const sending = items.filter((item) => item.state === "queued").length;
  $("file-info").textContent = `${plural(items.length, "file")} chosen, ${size(entries.reduce((n, e) => n + e.file.size, 0))}.`;
  render("", 0);
  setState("idle");
  say(`${plural(sending, "file")} to upload, ${FILES_IN_FLIGHT} at a time: check their file ids (suggested from ` +
    `their paths), then press Upload. A file whose upload is unfinished resumes.${note}`);
  findPending(batch, items.filter((item, i) => item.state === "queued" &&
    !recs.some((r) => r.fileId === item.idInput.value && sameFile(r, entries[i].file))));
}

/** For rows not known to this browser: a pending upload started elsewhere whose first held part is the file's
 *  gives the row its file id (unless the user changed the suggested one meanwhile). */
async function findPending(current, items) {
  for (const item of items) {
    const suggestedId = item.idInput.value;
    const found = await pendingOf(item.file);
    if (batch !== current) return;
    if (found && item.state === "queued" && item.idInput.value === suggestedId && !current.items.some((o) => o.idInput.value === found)) {
      item.idInput.value = found;
      item.ui.say(`resumes the unfinished upload of file id ${found}, started elsewhere (its first held part ` +
        "matches this file).");
    }
  }
}

/** Back to the single file's view. */
function leaveBatch() {
  batch = null;
  $("queue").replaceChildren();
  $("queue").hidden = true;
  $("single").hidden = false;
}

/** Upload: every row not sent yet, and those that failed or were cancelled (again); Resume (``resuming``): the
 *  paused rows and those not started. */
async function startBatch(resuming = false) {
  const current = batch;
  const todo = current.items.filter((item) => ["paused", "queued"].includes(item.state) ||
    (!resuming && SENDABLE.includes(item.state)));
  const ids = new Map();
  for (const item of current.items) {
    const id = item.idInput.value.trim();
    item.fileId = id;
    if (todo.includes(item)) ids.set(id, (ids.get(id) || 0) + 1);
  }
  const ready = [];
  for (const item of todo) {
    if (!FILE_ID.test(item.fileId)) {
      item.ui.state("refused");
      item.ui.say("a file id is 1 to 255 letters, digits, '.', '_' or '-', starting with a letter or digit.", "error");
    } else if (ids.get(item.fileId) > 1) {
      item.ui.state("refused");
      item.ui.say(`file id ${item.fileId} is given to more than one file here: give each its own.`, "error");
    } else {
      ready.push(item);
    }
  }
  if (!ready.length) {
    say("Nothing to upload: each file's row says why.", "error");
    return;
  }
  current.stopped = null;
  setState("uploading");
  say(`Uploading ${plural(ready.length, "file")}, ${FILES_IN_FLIGHT} at a time, each in parts, ${PARALLEL} at a time.`);
  await refreshList(); // what is already uploaded is not sent again
  const ticker = setInterval(() => batchProgress(current), 500);
  try {
    await Promise.all(Array.from({ length: Math.min(FILES_IN_FLIGHT, ready.length) }, async () => {
      while (!current.stopped && ready.length && batch === current && token) await sendItem(ready.shift(), current);
    }));
  } finally {
    clearInterval(ticker);
  }
  if (batch === current) batchProgress(current);
  if (batch !== current || !token) return;
  // Paused with every file already sent (their last parts were on their way): nothing is left to pause.
  const left = current.items.filter((item) => ["queued", "paused"].includes(item.state)).length;
  if (current.stopped === "pause" && left) {
    setState("paused");
    say(`Paused: ${plural(left, "file")} left to send. Resume continues; the storage keeps the parts sent, also ` +
      "if you close this tab (choose the same files again to resume).");
    return;
  }
  const count = (...states) => current.items.filter((item) => states.includes(item.state)).length;
  const done = count("done");
  const bad = count("refused", "failed");
  const cancelled = count("cancelled") ? ` ${count("cancelled")} cancelled.` : "";
  setState("done");
  if (bad) {
    say(`${done} of ${plural(current.items.length, "file")} uploaded; ${bad} failed: each failed file's row ` +
      `says why. Press Upload to try those again.${cancelled}`, "error");
  } else {
    say(`Uploaded ${plural(done, "file")}.${cancelled}` + (count("skipped") ? ` ${count("skipped")} skipped (empty).`
      : "") + " Your uploads, below, show when the controller has checked them.", "ok");
  }
}

/** The whole queue's progress on the page's own bar: bytes sent of all files, and files done. */
function batchProgress(current) {
  let total = 0;
  let sent = 0;
  for (const item of current.items) {
    if (item.state === "skipped") continue;
    total += item.file.size;
    if (item.state === "done") sent += item.file.size;
    else if (item.job) sent += Math.min(item.job.sentBytes(), item.file.size);
  }
  const done = current.items.filter((item) => item.state === "done").length;
  render(`All files: ${size(sent)} of ${size(total)} · files done ${done} of ` +
    `${current.items.filter((item) => item.state !== "skipped").length}`, total ? sent / total : 1);
}

async function sendItem(item, current) {
  const { ui } = item;
  item.cancelled = false;
  try {
    if (!item.job) {
      const known = listed.find((u) => u.file_id === item.fileId && u.status !== "pending" &&
        u.status !== "cancelled" && u.status !== "failed");
      if (known && FINISHED.includes(known.status) && known.size === item.file.size) {
        ui.state("done");
        ui.render(`${size(item.file.size)} (100%)`, 1);
        ui.say(`already uploaded as file id ${item.fileId} (${known.status}): not sent again.`, "ok");
        return;
      }
      item.stop = new AbortController();
      ui.state("checking");
      ui.say(`asking the controller about file id ${item.fileId}…`);
      item.job = await prepare(item.file, item.fileId, ui, (j) => {
        item.job = j;
        item.upload = j.upload;
        ui.state(item.state); // its Cancel applies now
      }, item.stop);
      if (item.cancelled) return await cancelled(item);
      if (item.job.kept) ui.say(`resuming: kept ${item.job.kept} of ${plural(item.job.count, "part")}.`);
      else ui.say(`sending ${plural(item.job.count, "part")} of ${size(item.job.partSize)}.`);
    }
    if (current.stopped) {
      ui.state("paused");
      ui.say(`${item.job.done.size} of ${plural(item.job.count, "part")} sent.`);
      return;
    }
    const sent = await item.job.run();
    if (item.cancelled) return await cancelled(item); // its parts were stopped: the queue goes on once it is cancelled
    if (!sent) {
      if (batch === current && token) {
        ui.state("paused");
        ui.say(`${item.job.done.size} of ${plural(item.job.count, "part")} sent.`);
      }
      return;
    }
    forgetRecord(item.fileId);
    const result = item.job.result;
    item.upload = null;
    ui.state("done");
    ui.say(`uploaded as file id ${item.fileId}: ${size(result.object_size ?? item.file.size)}, status ` +
      `${result.status}.`, "ok");
    ui.announce("uploaded.");
    refreshList(true);
  } catch (e) {
    if (item.cancelled) return await cancelled(item);
    if (!token || batch !== current) return;
    item.job = null; // tried again from the start: its pending upload is found and checked again
    ui.state(e instanceof Refused ? "refused" : "failed");
    ui.say(reasonOf(e), "error");
    ui.announce(`failed: ${reasonOf(e)}`);
    if (!(e instanceof Refused || e instanceof ApiError)) console.error(e);
  }
}

/** A row cancelled while it was being sent: once its cancellation is settled, the queue goes on without it. */
async function cancelled(item) {
  await item.cancelling;
  if (item.state === "cancelled") { // not the upload it may have been given meanwhile (the cancel came first)
    item.job = null;
    item.upload = null;
  }
}

/** Cancel a row's upload, asked first: being sent (its parts in flight are aborted, the rest of the queue goes on),
 *  paused, or stopped by a failure; the parts sent are deleted. Being hashed, before it has an upload: the hashing
 *  stops and the row is not sent. The focus stays in the row, on its status, which says what happened. */
async function cancelItem(item) {
  const upload = item.upload;
  const hashing = !upload && item.state === "checking" && item.stop !== null;
  if (!(upload && ROW_CANCELLABLE.includes(item.state)) && !hashing) return;
  const question = upload
    ? `Cancel the upload of file id ${upload.file_id}? It cannot be resumed, and the parts sent so far are deleted.`
    : `Cancel the upload of ${item.path}? Nothing of it has been sent yet.`;
  if (!window.confirm(question)) return;
  const before = item.state;
  const sending = RUNNING.includes(before);
  const hadFocus = item.row.contains(document.activeElement) || document.activeElement === document.body;
  let settle;
  item.cancelling = new Promise((resolve) => { settle = resolve; });
  item.cancelled = sending;
  if (item.stop) item.stop.abort(); // its SHA-256 worker ends
  if (item.job) {
    item.job.stopped = "cancel";
    item.job.abortAll("stop"); // its parts in flight: their PUTs are aborted, not finished
  }
  item.ui.state("cancelling");
  item.ui.say(upload ? `stopping its parts and cancelling the upload of file id ${upload.file_id}…`
    : "stopping the computing of its SHA-256…");
  if (hadFocus) item.status.focus();
  try {
    let done = null;
    if (upload) {
      done = await api("PATCH", `/multipart_uploads/${enc(upload.upload_id)}`, { status: "cancelled" });
      forgetRecord(upload.file_id);
    }
    item.upload = null;
    item.job = null;
    item.stop = null;
    item.ui.state("cancelled");
    item.ui.say(upload ? `the upload of file id ${upload.file_id} is ${done.status}, and its parts are deleted; ` +
      "Upload starts it again." : "nothing of it was sent; Upload starts it again.");
    item.ui.announce("its upload is cancelled.");
    refreshList();
  } catch (e) {
    if (token) {
      item.ui.state(sending ? "failed" : before);
      item.ui.say(`it could not be cancelled: ${reasonOf(e)}`, "error");
      item.ui.announce(`its upload could not be cancelled: ${reasonOf(e)}`);
    }
  } finally {
    settle();
  }
  if (batch && !RUNNING.includes(document.body.dataset.state)) setState(document.body.dataset.state);
}

function pauseBatch() {
  batch.stopped = "pause";
  let inflight = 0;
  for (const item of batch.items) {
    if (item.job && RUNNING.includes(item.state)) {
      item.job.stopped = "pause";
      inflight += item.job.inflight.size;
    }
  }
  wakeWaiters();
  setState("pausing");
  say(`Pausing: finishing the ${plural(inflight, "part")} being sent; no file is started meanwhile.`);
}

// -- the principal's uploads --------------------------------------------------------------------------------

let listed = []; // the signed-in principal's uploads, newest first, as the controller last listed them
let listTimer = null;
let listDelay = 1000;

/** Ask the controller for the principal's uploads and show them. While one it is to check (uploaded, with a
 *  declared checksum) is undecided, ask again, less and less often. ``fresh``: an upload just finished. */
async function refreshList(fresh = false) {
  if (fresh) listDelay = 1000;
  clearTimeout(listTimer);
  if (!token) return;
  let got;
  try {
    got = (await api("GET", "/multipart_uploads?limit=100")).uploads;
  } catch (e) {
    $("list-note").textContent = `The list of your uploads could not be loaded: ${reasonOf(e)}`;
    return;
  }
  if (!token) return;
  listed = got;
  renderList();
  if (listed.some((u) => u.status === "uploaded" && (u.sha256 || u.crc64nvme))) {
    listTimer = setTimeout(() => refreshList(), listDelay);
    listDelay = Math.min(listDelay * 1.5, 30000);
  }
}

const STATUS_TEXT = {
  pending: "unfinished: choose its file again to resume it",
  uploaded: "the controller checks it against its declared checksum",
  cancelled: "its parts were deleted",
};

/** What the list says of an upload beside its status: what comes next, or who decided and why. */
function details(u) {
  if (u.status === "uploaded" && !u.sha256 && !u.crc64nvme) return "no checksum was declared: a reviewer decides";
  if (["accepted", "rejected"].includes(u.status)) {
    const who = u.status_by === "verifier" ? "the controller's check" : u.status_by;
    return (u.reason || "") + (who ? ` (${who})` : "");
  }
  return STATUS_TEXT[u.status] || (u.reason || "");
}

function renderList() {
  const body = $("uploads-body");
  const rows = listed.map((u) => {
    const tr = document.createElement("tr");
    tr.dataset.fileId = u.file_id;
    tr.dataset.status = u.status;
    const known = u.object_size ?? u.size;
    const cells = [u.file_id, known === null ? "" : size(known), u.status, details(u)];
    for (const [i, text] of cells.entries()) {
      const td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      td.className = ["file-id", "size", "status", "details"][i];
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  body.replaceChildren(...rows);
  $("uploads").hidden = !rows.length;
  // A queue's finished rows follow the verifier's and the reviewers' decisions.
  for (const item of batch ? batch.items : []) {
    const u = listed.find((x) => x.file_id === item.fileId);
    if (item.state === "done" && u && ["accepted", "rejected"].includes(u.status) && item.decided !== u.status) {
      item.decided = u.status;
      item.ui.say(`uploaded as file id ${item.fileId}, and ${u.status}: ${details(u)}.`,
        u.status === "rejected" ? "error" : "ok");
    }
  }
  $("list-note").textContent = rows.length ? "" : "No uploads yet.";
}

// -- signing in -------------------------------------------------------------------------------------------

async function signIn(candidate, quiet) {
  let response;
  try {
    response = await fetch("/me", { headers: { Authorization: `Bearer ${candidate}` }, cache: "no-store" });
  } catch {
    $("signin-message").textContent = "The controller does not answer: try again later.";
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(quiet ? "" : "The controller refused this token: check it and try again.");
    return;
  }
  if (!response.ok) {
    $("signin-message").textContent = `The controller answered ${response.status}: try again later.`;
    return;
  }
  token = candidate;
  session = new AbortController();
  principal = (await response.json()).principal;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("who").textContent = principal;
  $("token").value = "";
  $("token").removeAttribute("aria-invalid");
  $("signin-message").textContent = "";
  $("signin").hidden = true;
  $("work").hidden = false;
  file = null;
  leaveBatch();
  $("file").value = "";
  $("folder").value = "";
  $("file-info").textContent = "No file chosen.";
  render("", 0);
  say("");
  setState("idle");
  listed = [];
  renderList();
  refreshList();
  noteUnfinished();
}

function showSignIn(message) {
  const hadFocus = $("work").contains(document.activeElement);
  $("signin-message").textContent = message;
  $("signin").hidden = false;
  $("work").hidden = true;
  document.body.dataset.state = "signed-out";
  if (hadFocus) $("token").focus();
}

function signOut(message = "") {
  const jobs = batch ? batch.items.map((item) => item.job).filter(Boolean) : [job].filter(Boolean);
  for (const running of jobs) {
    running.stopped = "pause";
    running.abortAll("stop");
  }
  if (batch) batch.stopped = "pause";
  session.abort(); // every SHA-256 worker ends
  job = null;
  clearTimeout(listTimer);
  token = null;
  principal = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn(message);
}

function init() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const candidate = $("token").value.trim();
    if (candidate) {
      signIn(candidate, false);
    } else {
      $("signin-message").textContent = "Paste your API token first: the field is empty, or only spaces.";
      $("token").setAttribute("aria-invalid", "true");
      $("token").focus();
    }
  });
  $("sign-out").addEventListener("click", () => {
    const state = document.body.dataset.state;
    if (job && RUNNING.includes(state) &&
        !window.confirm(`Sign out while file id ${job.fileId} is being uploaded? The upload stops; sign in ` +
          "again and choose the same file to resume it.")) {
      return;
    }
    if (batch && RUNNING.includes(state) &&
        !window.confirm("Sign out while files are being uploaded? The uploads stop; sign in again and choose the " +
          "same files to resume them.")) {
      return;
    }
    signOut("");
  });
  // Leaving mid-upload loses nothing sent, but stops the upload: the browser asks first.
  window.addEventListener("beforeunload", (event) => {
    if ((job || batch) && RUNNING.includes(document.body.dataset.state)) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
  // One file: the single file's view (its file id below); several, or a folder: the queue.
  const take = (entries, note = "") => {
    if (entries.length === 1 && !entries[0].path.includes("/")) choose(entries[0].file);
    else if (entries.length) chooseMany(entries, note);
  };
  const chosen = (input) => {
    const { files: all, hidden } = filesOfInput(input);
    const note = leftOutNote({ more: Math.max(0, all.length - MAX_FILES), hidden });
    if (!all.length) {
      say((hidden ? "That folder has no files to upload:" : "That folder has no files to upload.") + note, "error");
      return;
    }
    take(all.slice(0, MAX_FILES), note);
  };
  $("file").addEventListener("change", () => chosen($("file")));
  $("folder").addEventListener("change", () => chosen($("folder")));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (RUNNING.includes(document.body.dataset.state) || document.body.dataset.state === "paused") return;
    const got = await filesOfDrop(event.dataTransfer);
    const note = leftOutNote(got);
    if (!got.files.length) {
      say((got.folders ? "The dropped folder has no files to upload" : "Nothing to upload was dropped") +
        (note ? `:${note}` : "."), "error");
      return;
    }
    if (got.files.length === 1 && !got.folders) choose(got.files[0].file);
    else chooseMany(got.files, note);
  });
  $("refresh").addEventListener("click", () => refreshList(true));
  $("upload").addEventListener("click", startUpload);
  $("pause").addEventListener("click", pause);
  $("resume").addEventListener("click", resume);
  $("cancel").addEventListener("click", cancel);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved, true);
  else showSignIn("");
}

init();
