// What the page is handed, as a flat list of {file, path}: files chosen in the file input (several at once), a
// folder chosen in the folder input (each file with its webkitRelativePath), or what was dropped: files, and
// folders walked with webkitGetAsEntry (their files in every subfolder, each with its path in the folder).
// The path is what a file id is suggested from, so that a folder's files keep their names apart.

/** At most this many files are taken from one choice or drop; the page says how many were left out. */
export const MAX_FILES = 1000;

/** The files of a file input, each with its path in the chosen folder (or its name). */
export function filesOfInput(input) {
  return [...input.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
}

const entryFile = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));
const readSome = (reader) => new Promise((resolve, reject) => reader.readEntries(resolve, reject));

/** Every file under ``entry`` (a FileSystemEntry), depth first, names sorted; ``out`` stops growing at MAX_FILES,
 *  and ``counts.more`` counts those left out, ``counts.unreadable`` those the browser would not give. */
export async function walk(entry, prefix, out, counts) {
  if (entry.isFile) {
    if (out.length >= MAX_FILES) {
      counts.more++;
      return;
    }
    try {
      out.push({ file: await entryFile(entry), path: prefix + entry.name });
    } catch {
      counts.unreadable++;
    }
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    const children = [];
    for (;;) { // readEntries gives at most 100 at a time
      let some;
      try {
        some = await readSome(reader);
      } catch {
        counts.unreadable++;
        break;
      }
      if (!some.length) break;
      children.push(...some);
    }
    children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const child of children) await walk(child, `${prefix}${entry.name}/`, out, counts);
  }
}

/** What a drop event brings. The entries are taken at once (the DataTransfer is emptied once the handler
 *  returns), then walked. Without webkitGetAsEntry, the dropped files as they are. */
export function filesOfDrop(dataTransfer) {
  const items = [...dataTransfer.items].filter((i) => i.kind === "file");
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  const plain = [...dataTransfer.files];
  return (async () => {
    const counts = { more: 0, unreadable: 0 };
    if (entries.some((e) => !e)) {
      const out = plain.slice(0, MAX_FILES).map((file) => ({ file, path: file.name }));
      return { files: out, more: Math.max(0, plain.length - MAX_FILES), unreadable: 0, folders: 0 };
    }
    const out = [];
    for (const entry of entries) await walk(entry, "", out, counts);
    return { files: out, ...counts, folders: entries.filter((e) => e.isDirectory).length };
  })();
}
