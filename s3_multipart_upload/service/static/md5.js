// MD5 (RFC 1321), incremental, for the upload page: WebCrypto has no MD5, and S3 checks parts by it
// (Content-MD5 on each PUT, and a part's ETag is its MD5). Written for this project; tested against
// Python's hashlib in a real browser (tests/test_page.py).

const S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
const K = new Int32Array(64);
for (let i = 0; i < 64; i++) K[i] = Math.floor(Math.abs(Math.sin(i + 1)) * 4294967296) | 0;

export class MD5 {
  constructor() {
    this.state = new Int32Array([0x67452301, 0xefcdab89 | 0, 0x98badcfe | 0, 0x10325476]);
    this.block = new Uint8Array(64);  // bytes waiting for a full block
    this.blockWords = new Int32Array(16);
    this.pending = 0;
    this.length = 0;  // bytes hashed so far (a Number: exact up to 2^53)
  }

  /** Hash more bytes (a Uint8Array or an ArrayBuffer). */
  update(data) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    let offset = 0;
    const n = bytes.length;
    this.length += n;
    if (this.pending) {
      const take = Math.min(64 - this.pending, n);
      this.block.set(bytes.subarray(0, take), this.pending);
      this.pending += take;
      offset = take;
      if (this.pending < 64) return this;
      this._blocks(this.block, 0, 64);
      this.pending = 0;
    }
    const whole = (n - offset) & ~63;
    if (whole) this._blocks(bytes, offset, offset + whole);
    offset += whole;
    if (offset < n) {
      this.block.set(bytes.subarray(offset), 0);
      this.pending = n - offset;
    }
    return this;
  }

  /** The 16-byte digest; the object cannot be updated afterwards. */
  digest() {
    const bits = this.length * 8;
    const tail = new Uint8Array(this.pending < 56 ? 64 : 128);
    tail.set(this.block.subarray(0, this.pending));
    tail[this.pending] = 0x80;
    const at = tail.length - 8;
    const low = bits % 4294967296;
    const high = Math.floor(bits / 4294967296);
    for (let i = 0; i < 4; i++) {
      tail[at + i] = (low >>> (8 * i)) & 0xff;
      tail[at + 4 + i] = (high >>> (8 * i)) & 0xff;
    }
    this._blocks(tail, 0, tail.length);
    const out = new Uint8Array(16);
    for (let i = 0; i < 4; i++) {
      const w = this.state[i];
      out[4 * i] = w & 0xff;
      out[4 * i + 1] = (w >>> 8) & 0xff;
      out[4 * i + 2] = (w >>> 16) & 0xff;
      out[4 * i + 3] = (w >>> 24) & 0xff;
    }
    return out;
  }

  _blocks(b, start, end) {
    const x = this.blockWords;
    const st = this.state;
    let a0 = st[0], b0 = st[1], c0 = st[2], d0 = st[3];
    for (let p = start; p < end; p += 64) {
      for (let i = 0; i < 16; i++) {
        const j = p + 4 * i;
        x[i] = b[j] | (b[j + 1] << 8) | (b[j + 2] << 16) | (b[j + 3] << 24);
      }
      let a = a0, bb = b0, c = c0, d = d0, t = 0, s = 0;
      // The four rounds, each its own loop (no branch per step).
      for (let i = 0; i < 16; i++) {
        s = S[i & 3];
        t = (a + ((bb & c) | (~bb & d)) + K[i] + x[i]) | 0;
        a = d; d = c; c = bb; bb = (bb + ((t << s) | (t >>> (32 - s)))) | 0;
      }
      for (let i = 16; i < 32; i++) {
        s = S[4 + (i & 3)];
        t = (a + ((d & bb) | (~d & c)) + K[i] + x[(5 * i + 1) & 15]) | 0;
        a = d; d = c; c = bb; bb = (bb + ((t << s) | (t >>> (32 - s)))) | 0;
      }
      for (let i = 32; i < 48; i++) {
        s = S[8 + (i & 3)];
        t = (a + (bb ^ c ^ d) + K[i] + x[(3 * i + 5) & 15]) | 0;
        a = d; d = c; c = bb; bb = (bb + ((t << s) | (t >>> (32 - s)))) | 0;
      }
      for (let i = 48; i < 64; i++) {
        s = S[12 + (i & 3)];
        t = (a + (c ^ (bb | ~d)) + K[i] + x[(7 * i) & 15]) | 0;
        a = d; d = c; c = bb; bb = (bb + ((t << s) | (t >>> (32 - s)))) | 0;
      }
      a0 = (a0 + a) | 0; b0 = (b0 + bb) | 0; c0 = (c0 + c) | 0; d0 = (d0 + d) | 0;
    }
    st[0] = a0; st[1] = b0; st[2] = c0; st[3] = d0;
  }
}

export function toHex(bytes) {
  let out = "";
  for (const v of bytes) out += v.toString(16).padStart(2, "0");
  return out;
}

export function toBase64(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

/** MD5 of a Blob, read a slice at a time (never the whole Blob in memory). */
export async function md5OfBlob(blob, chunk = 4 * 1024 * 1024, onBytes = null) {
  const h = new MD5();
  for (let at = 0; at < blob.size; at += chunk) {
    const buf = await blob.slice(at, Math.min(blob.size, at + chunk)).arrayBuffer();
    h.update(buf);
    if (onBytes) onBytes(buf.byteLength);
  }
  return h.digest();
}
