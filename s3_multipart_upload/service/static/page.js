// The upload page of the controller: sign in with an API token, choose a file and its file id, upload it in
// parallel parts with presigned URLs, and resume after a reload by checking every part the storage holds.
//
// It uses the file-centric endpoints, as `upload --controller` does, so each can finish the other's upload:
//   GET  /files/ID/multipart_uploads?status=pending   the file's unfinished upload (or null)
//   POST /files/ID/multipart_uploads {size}           a new one
//   GET  /multipart_uploads/UPLOAD/parts              the parts the storage holds
//   POST /multipart_uploads/UPLOAD/part/N/presigned_post   a URL for part N, asked just before its PUT
//   PATCH /multipart_uploads/UPLOAD {status}          uploaded (with every part's ETag) or cancelled
//
// Kept in the browser: the token in sessionStorage (this tab only, never in a URL); in localStorage, per
// principal and file id, {fileId, uploadId, name, size, lastModified, partSize}: what it takes to recognise
// the same file after a reload. Never a presigned URL.

import { md5OfBlob, toBase64, toHex } from "./md5.js";

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
  $("upload").disabled = running || state === "paused" || !file;
  $("pause").disabled = !["uploading", "waiting"].includes(state);
  $("resume").disabled = state !== "paused";
  const cancellable = ["uploading", "waiting", "pausing", "paused", "refused", "failed"].includes(state);
  $("cancel").disabled = !(job && job.upload && cancellable);
  $("file").disabled = running || state === "paused";
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
  const before = document.body.dataset.state;
  setState("waiting");
  say("The network connection is lost: waiting for it to come back; the upload then continues by itself.");
  await waitOnline();
  if (job && job.stopped) return;
  setState(before === "waiting" ? "uploading" : before);
  say("Back online: continuing.");
}

// -- one upload -------------------------------------------------------------------------------------------

class Job {
  constructor(f, fileId, upload) {
    this.file = f;
    this.fileId = fileId;
    this.upload = upload;
    this.partSize = upload.part_size;
    this.count = Math.max(1, Math.ceil(f.size / this.partSize));
    this.done = new Map(); // part number -> MD5 hex (= its ETag at the storage)
    this.inflight = new Map(); // part number -> {xhr, loaded, reason}
    this.stopped = null; // null, "pause" or "cancel"
    this.failure = null;
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
    setState("checking");
    say(`Checking the ${plural(held.length, "part")} the storage already holds against ${this.file.name}…`);
    let checked = 0;
    const total = held.reduce((sum, p) => sum + p.Size, 0);
    for (const p of held) {
      const n = p.PartNumber;
      if (p.Size === this.length(n)) {
        const md5 = toHex(await md5OfBlob(this.slice(n), undefined, (bytes) => {
          checked += bytes;
          render(`Checking held parts: ${size(checked)} of ${size(total)}`, checked / total);
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
    setState("uploading");
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
        say(`Part ${n}: its upload link was refused (${code}), most likely expired: asking for a new one.`);
      } else if (code === "BadDigest" || code === "InvalidDigest") {
        say(`Part ${n}: the storage received bytes that do not match their MD5: sending it again.`);
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
    setState("completing");
    say("Checking every part with the storage, then completing the upload…");
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
    return api("PATCH", `/multipart_uploads/${enc(this.upload.upload_id)}`, { status: "uploaded", parts })
      .then((done) => { this.result = done; });
  }

  progress() {
    const now = performance.now();
    for (const [n, entry] of this.inflight) {
      if (now - entry.last > this.stallMs) {
        say(`Part ${n}: no progress for ${Math.round(this.stallMs / 1000)} s: sending it again.`);
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
    render(text, total ? sent / total : 1);
    const tenth = total ? Math.floor((10 * acked) / total) * 10 : 0; // what the storage holds, read out by tenths
    if (tenth > this.announced && tenth < 100) {
      this.announced = tenth;
      $("announce").textContent = `${tenth}% uploaded` + (left ? `, about ${left} left.` : ".");
    }
  }
}

function render(text, fraction) {
  $("progress").textContent = text;
  $("bar").value = Math.min(1, Math.max(0, fraction));
}

// -- what the buttons do ----------------------------------------------------------------------------------

async function startUpload() {
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
  setState("checking");
  say(`Asking the controller about file id ${fileId}…`);
  try {
    let upload = await api("GET", `/files/${enc(fileId)}/multipart_uploads?status=pending`);
    const record = records()[fileId];
    if (upload) {
      job = new Job(chosen, fileId, upload); // cancel applies to it from here, also when refused below
      if (record && record.uploadId === upload.upload_id && !sameFile(record, chosen)) {
        throw new Refused(`${chosen.name} is not the file the unfinished upload of file id ${fileId} was started ` +
          `with: ${differences(record, chosen)}. Choose that file to resume, or cancel the upload to start again.`);
      }
      if (upload.size !== null && upload.size !== chosen.size) {
        throw new Refused(`The unfinished upload of file id ${fileId} is for a file of ${size(upload.size)}; ` +
          `${chosen.name} has ${size(chosen.size)}. Choose that file to resume, or cancel the upload to start again.`);
      }
    } else {
      const body = { size: chosen.size };
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
      job = new Job(chosen, fileId, upload);
    }
    saveRecord({ fileId, uploadId: upload.upload_id, name: chosen.name, size: chosen.size,
                 lastModified: chosen.lastModified, partSize: upload.part_size });
    await job.reconcile();
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
  if (!job) return;
  job.stopped = "pause";
  wakeWaiters();
  if (job.inflight.size) {
    setState("pausing");
    say(`Pausing: finishing the ${plural(job.inflight.size, "part")} being sent; Cancel upload stops at once.`);
  }
}

function resume() {
  if (!job) return;
  say("Resuming.");
  continueUpload();
}

async function cancel() {
  const current = job;
  if (!current) return;
  const sent = current.done.size;
  if (!window.confirm(`Cancel the upload of file id ${current.fileId}? It cannot be resumed` +
      (sent ? `, and the ${plural(sent, "part")} sent so far are deleted.` : "."))) {
    return;
  }
  current.stopped = "cancel";
  current.abortAll("stop");
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

/** Whether a File can be read: a dropped folder arrives as one that cannot. */
const readable = (f) => f.slice(0, 1).arrayBuffer().then(() => true, () => false);

async function choose(f, leftOut = 0) {
  if (!f) return;
  const mine = ++choosing;
  file = f;
  job = null;
  render("", 0);
  $("file-info").textContent = `${f.name} · ${size(f.size)} · modified ${new Date(f.lastModified).toLocaleString()}`;
  const note = leftOut ? ` This page uploads one file at a time: the other ${plural(leftOut, "dropped file")} ` +
    `${leftOut === 1 ? "was" : "were"} left out.` : "";
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
    say(`${f.name} is a folder, or a file this browser cannot read: choose or drop one file (this page uploads ` +
      "one file at a time; for a folder, choose its files one by one).", "error");
    return;
  }
  if (!match) return;
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
  principal = (await response.json()).principal;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("who").textContent = principal;
  $("token").value = "";
  $("token").removeAttribute("aria-invalid");
  $("signin-message").textContent = "";
  $("signin").hidden = true;
  $("work").hidden = false;
  file = null;
  $("file").value = "";
  $("file-info").textContent = "No file chosen.";
  render("", 0);
  say("");
  setState("idle");
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
  if (job) {
    job.stopped = "pause";
    job.abortAll("stop");
  }
  job = null;
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
    if (job && RUNNING.includes(document.body.dataset.state) &&
        !window.confirm(`Sign out while file id ${job.fileId} is being uploaded? The upload stops; sign in ` +
          "again and choose the same file to resume it.")) {
      return;
    }
    signOut("");
  });
  // Leaving mid-upload loses nothing sent, but stops the upload: the browser asks first.
  window.addEventListener("beforeunload", (event) => {
    if (job && RUNNING.includes(document.body.dataset.state)) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
  $("file").addEventListener("change", () => choose($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (RUNNING.includes(document.body.dataset.state) || document.body.dataset.state === "paused") return;
    const entries = [...event.dataTransfer.items].filter((i) => i.kind === "file")
      .map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
    const folder = entries.find((e) => e && e.isDirectory);
    if (folder) {
      say(`${folder.name} is a folder: this page uploads one file at a time; drop or choose one of its files.`,
        "error");
      return;
    }
    const files = event.dataTransfer.files;
    choose(files[0], Math.max(0, files.length - 1));
  });
  $("upload").addEventListener("click", startUpload);
  $("pause").addEventListener("click", pause);
  $("resume").addEventListener("click", resume);
  $("cancel").addEventListener("click", cancel);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved, true);
  else showSignIn("");
}

init();
