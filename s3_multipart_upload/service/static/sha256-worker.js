// The upload page's SHA-256 worker: given {file, slice}, it reads the file one slice at a time (so memory
// stays at one slice whatever the file's size), posts {done: bytes} after each, then {sha256: hex}, or {error}.

import { sha256OfBlob } from "./sha256.js";

self.onmessage = async (event) => {
  const { file, slice } = event.data;
  try {
    const sha256 = await sha256OfBlob(file, slice, (done) => self.postMessage({ done }));
    self.postMessage({ sha256 });
  } catch (e) {
    self.postMessage({ error: `${file.name || "the file"} could not be read: ${e && e.message ? e.message : e}` });
  }
};
