"""The upload page with many files, in a real headless Chromium (the stack of tests/test_page.py: the controller,
the counting proxy, rclone serve s3): several files chosen or a folder, two files in flight, the principal's
uploads listed with their statuses, a reload mid-way resumed by choosing the files again, keyboard only, and
the SHA-256 the page declares (computed in a worker) against hashlib."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from s3_multipart_upload.plan import MiB
from tests.test_page import browser, page, stack

__all__ = ["browser", "page", "stack"]


def test_sha256_in_the_browser_is_hashlibs(page: Any) -> None:
    """The page's SHA-256 against the standard's vectors and Python's, at block edges (55, 56, 64 bytes), fed in
    pieces of odd sizes; and in the worker over a Blob read in many slices of an odd size."""
    vectors = {"": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
               "abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
               "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq":
                   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"}
    got = page.evaluate("""async (texts) => {
        const m = await import("/static/sha256.js");
        const hex = (b) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
        const out = texts.map((t) => hex(new m.SHA256().update(new TextEncoder().encode(t)).digest()));
        const million = new m.SHA256();
        const a = new Uint8Array(1000).fill(97);
        for (let i = 0; i < 1000; i++) million.update(a);
        out.push(hex(million.digest()));
        return out;
    }""", list(vectors))
    # FIPS 180-2's one million "a"s
    assert got == [*vectors.values(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"]
    sizes = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 1 * MiB + 3, 3 * MiB + 7]
    data = hashlib.shake_256(b"sha256 test").digest(max(sizes))
    got = page.evaluate("""async ([b64, sizes]) => {
        const m = await import("/static/sha256.js");
        const hex = (b) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
        const all = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const out = [];
        for (const size of sizes) {
            const bytes = all.subarray(0, size);
            const pieces = new m.SHA256();
            for (let i = 0; i < size; i += 100003) pieces.update(bytes.subarray(i, i + 100003));
            const small = new m.SHA256();
            for (let i = 0; i < Math.min(size, 4096); i += 7) small.update(bytes.subarray(i, Math.min(i + 7, 4096)));
            out.push([hex(new m.SHA256().update(bytes).digest()), hex(pieces.digest()), hex(small.digest())]);
        }
        return out;
    }""", [base64.b64encode(data).decode(), sizes])
    for size, (whole, pieces, small) in zip(sizes, got, strict=True):
        assert whole == pieces == hashlib.sha256(data[:size]).hexdigest(), size
        assert small == hashlib.sha256(data[:min(size, 4096)]).hexdigest(), size
    # In the worker, as the page runs it: 21 copies of 1 MiB + 13 random bytes, read 1 MiB + 1 at a time (21
    # slices and a short one); the File is made of the block's copies, so no 21 MiB crosses from Python.
    block = hashlib.shake_256(b"worker").digest(MiB + 13)
    result = page.evaluate("""async (b64) => {
        const m = await import("/static/sha256.js");
        const block = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const file = new File(Array(21).fill(block), "big.bin");
        const progress = [];
        const t0 = performance.now();
        const sha = await m.sha256InWorker(file, { slice: 1024 * 1024 + 1, onProgress: (d) => progress.push(d) });
        return { sha, progress, size: file.size, mibPerS: file.size / 1048576 / ((performance.now() - t0) / 1000) };
    }""", base64.b64encode(block).decode())
    size = 21 * len(block)
    assert result["size"] == size
    assert result["sha"] == hashlib.sha256(block * 21).hexdigest()
    assert len(result["progress"]) == 22 and result["progress"][-1] == size
    print(f"SHA-256 in Chromium's worker: {result['mibPerS']:.0f} MiB/s")
