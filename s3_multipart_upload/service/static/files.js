// What the page is handed, as a flat list of {file, path}: files chosen in the file input (several at once), a
// folder chosen in the folder input (each file with its webkitRelativePath), or what was dropped: files, and
// folders walked with webkitGetAsEntry (their files in every subfolder, each with its path in the folder).
// The path is what a file id is suggested from, so that a folder's files keep their names apart.
// Hidden files in a folder (a name starting with '.', such as .DS_Store, or anything under a hidden folder such
// as .git/) are skipped and counted: they are the system's or a tool's, not the run's. Files chosen one by one
// are taken as they are, whatever their names.

/** At most this many files are taken from one choice or drop; the page says how many were left out. */
export const MAX_FILES = 1000;

/** Whether ``name`` (of a file or folder inside a chosen or dropped folder) is hidden. */
export const isHidden = (name) => name.startsWith(".");

/** The files of a file input, each with its path in the chosen folder (or its name), and how many hidden files
 *  of the folder were skipped (the chosen folder itself is not judged: the user chose it). */
export function filesOfInput(input) {
  const all = [...input.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
  const files = all.filter(({ path }) => !path.split("/").slice(1).some(isHidden));
  return { files, hidden: all.length - files.length };
}

const entryFile = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));
const readSome = (reader) => new Promise((resolve, reject) => reader.readEntries(resolve, reject));

/** Every file under ``entry`` (a FileSystemEntry), depth first, names sorted; ``out`` stops growing at MAX_FILES,
 *  and ``counts.more`` counts those left out, ``counts.unreadable`` those the browser would not give,
 *  ``counts.hidden`` the hidden files skipped (``hidden``: ``entry`` is in a hidden folder, or is hidden). */
export async function walk(entry, prefix, out, counts, hidden = false) {
  if (entry.isFile && hidden) {
    counts.hidden++;
  } else if (entry.isFile) {
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
    for (const child of children) {
      await walk(child, `${prefix}${entry.name}/`, out, counts, hidden || isHidden(child.name));
    }
  }
}

/** What a drop event brings. The entries are taken at once (the DataTransfer is emptied once the handler
 *  returns), then walked. Without webkitGetAsEntry, the dropped files as they are. */
export function filesOfDrop(dataTransfer) {
  const items = [...dataTransfer.items].filter((i) => i.kind === "file");
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  const plain = [...dataTransfer.files];
  return (async () => {
    const counts = { more: 0, unreadable: 0, hidden: 0 };
    if (entries.some((e) => !e)) {
      const out = plain.slice(0, MAX_FILES).map((file) => ({ file, path: file.name }));
      return { files: out, more: Math.max(0, plain.length - MAX_FILES), unreadable: 0, hidden: 0, folders: 0 };
    }
    const out = [];
    for (const entry of entries) await walk(entry, "", out, counts); // a dropped folder is judged by its files
    return { files: out, ...counts, folders: entries.filter((e) => e.isDirectory).length };
  })();
}

const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

/** What the page says of the files it did not take: past MAX_FILES, hidden, unreadable ("" when none). */
export function leftOutNote({ more = 0, hidden = 0, unreadable = 0 }) {
  let note = "";
  if (more > 0) note += ` ${plural(more, "file")} past the first ${MAX_FILES} ${more === 1 ? "was" : "were"} left out.`;
  if (hidden) {
    note += ` ${plural(hidden, "hidden file")} (${hidden === 1 ? "its name starts" : "their names start"} with ` +
      `'.', or ${hidden === 1 ? "it is" : "they are"} in a folder whose name does, such as .DS_Store or .git/) ` +
      `${hidden === 1 ? "was" : "were"} skipped.`;
  }
  if (unreadable) {
    note += ` ${plural(unreadable, "file or folder")} could not be read and ${unreadable === 1 ? "is" : "are"} ` +
      "not listed.";
  }
  return note;
}
