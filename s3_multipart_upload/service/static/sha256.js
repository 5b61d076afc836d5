// SHA-256 (FIPS 180-4), incremental, for the upload page: the page declares each file's SHA-256 when it
// starts an upload, and the controller accepts the object once it matches. SubtleCrypto has no streaming
// digest (it would need the whole file in memory), so the file is read in slices and fed to this, in a
// worker (sha256-worker.js) so that the page stays responsive. Written for this project; tested against
// Python's hashlib and the standard's vectors in a real browser (tests/test_page_many.py).

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** The slice read at a time from a file: the most memory hashing a file takes. */
export const SLICE = 4 * 1024 * 1024;

export class SHA256 {
  constructor() {
    this.state = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    this.block = new Uint8Array(64); // bytes waiting for a full block
    this.w = new Int32Array(64);
    this.pending = 0;
    this.length = 0; // bytes hashed so far (a Number: exact up to 2^53)
  }

  /** Hash more bytes (a Uint8Array or an ArrayBuffer). */
  update(data) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    const n = bytes.length;
    let offset = 0;
    this.length += n;
    if (this.pending) {
      const take = Math.min(64 - this.pending, n);
      this.block.set(bytes.subarray(0, take), this.pending);
      this.pending += take;
      offset = take;
      if (this.pending < 64) return this;
      this._block(this.block, 0);
      this.pending = 0;
    }
    for (; offset + 64 <= n; offset += 64) this._block(bytes, offset);
    if (offset < n) {
      this.block.set(bytes.subarray(offset), 0);
      this.pending = n - offset;
    }
    return this;
  }

  /** The 32 bytes of the digest; the object is used up. */
  digest() {
    const bits = this.length * 8;
    const pad = new Uint8Array(this.pending < 56 ? 64 - this.pending : 128 - this.pending);
    pad[0] = 0x80;
    const end = pad.length;
    const high = Math.floor(bits / 4294967296);
    const low = bits >>> 0;
    pad[end - 8] = high >>> 24; pad[end - 7] = high >>> 16; pad[end - 6] = high >>> 8; pad[end - 5] = high;
    pad[end - 4] = low >>> 24; pad[end - 3] = low >>> 16; pad[end - 2] = low >>> 8; pad[end - 1] = low;
    this.update(pad);
    const out = new Uint8Array(32);
    for (let i = 0; i < 8; i++) {
      const v = this.state[i];
      out[4 * i] = v >>> 24; out[4 * i + 1] = v >>> 16; out[4 * i + 2] = v >>> 8; out[4 * i + 3] = v;
    }
    return out;
  }

  _block(b, o) {
    const w = this.w;
    for (let t = 0; t < 16; t++) {
      const j = o + 4 * t;
      w[t] = (b[j] << 24) | (b[j + 1] << 16) | (b[j + 2] << 8) | b[j + 3];
    }
    for (let t = 16; t < 64; t++) {
      const x = w[t - 15];
      const y = w[t - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    const s = this.state;
    let a = s[0], b2 = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[t] + w[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & b2) ^ (a & c) ^ (b2 & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b2; b2 = a; a = (t1 + t2) | 0;
    }
    s[0] = (s[0] + a) | 0; s[1] = (s[1] + b2) | 0; s[2] = (s[2] + c) | 0; s[3] = (s[3] + d) | 0;
    s[4] = (s[4] + e) | 0; s[5] = (s[5] + f) | 0; s[6] = (s[6] + g) | 0; s[7] = (s[7] + h) | 0;
  }
}

/** The SHA-256 of a Blob, hex, read ``slice`` bytes at a time (in the calling thread: the worker's loop). */
export async function sha256OfBlob(blob, slice = SLICE, onProgress = undefined) {
  const h = new SHA256();
  for (let at = 0; at < blob.size; at += slice) {
    const bytes = new Uint8Array(await blob.slice(at, at + slice).arrayBuffer());
    h.update(bytes);
    if (onProgress) onProgress(at + bytes.length);
  }
  return [...h.digest()].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** The SHA-256 of a File, hex, computed in a worker (one per call, ended after): the page's thread only waits.
 *  ``onProgress(bytes)`` after each slice; ``signal`` (an AbortSignal) ends the worker early, rejecting. */
export function sha256InWorker(file, { slice = SLICE, onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./sha256-worker.js", import.meta.url), { type: "module" });
    const end = (fn, value) => { worker.terminate(); fn(value); };
    if (signal) {
      if (signal.aborted) return end(reject, new Error("stopped"));
      signal.addEventListener("abort", () => end(reject, new Error("stopped")), { once: true });
    }
    worker.onmessage = (event) => {
      const m = event.data;
      if (m.error !== undefined) end(reject, new Error(m.error));
      else if (m.sha256 !== undefined) end(resolve, m.sha256);
      else if (onProgress) onProgress(m.done);
    };
    worker.onerror = (event) => { event.preventDefault(); end(reject, new Error(event.message || "worker failed")); };
    worker.postMessage({ file, slice });
  });
}
