"""Which files of a folder a command takes (``--exclude``/``--include``, ``--follow-symlinks``), and the walk that
finds them.

The filters are aws-cli's (``aws s3 cp --recursive``): every file is taken unless a filter says otherwise; filters
are tried in the order given and the last one that matches decides; a pattern is matched against the file's path
relative to the folder, with ``/`` between folders, by ``fnmatch`` rules in which ``*`` also matches ``/``::

    --exclude "*" --include "*.txt"     only the .txt files
    --include "*.txt" --exclude "*"     nothing
    --exclude ".git/*"                  everything but what lies under .git/

Hidden files are files like any other. The walk is streamed (``os.scandir``, folders in name order, files sorted
within a folder), so memory does not grow with the number of files. Symbolic links are followed by default, as
aws-cli does; a link to a folder already on the way down (a loop) is reported and not entered.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from s3_multipart_upload.errors import BadInput

log = logging.getLogger(__name__)
MAX_FILES = 1_000_000  # a bound on what one command walks
MAX_DEPTH = 1_000  # folders within folders; deeper is a loop the inode check missed, or a mistake

EXCLUDE = "exclude"
INCLUDE = "include"


@dataclass(frozen=True)
class Filter:
    """One ``--exclude PATTERN`` or ``--include PATTERN``."""

    kind: str  # EXCLUDE or INCLUDE
    pattern: str


def taken(relative: str, filters: Sequence[Filter]) -> tuple[bool, Filter | None]:
    """Whether the file at ``relative`` (a POSIX path under the folder) is taken, and the filter that decided
    (None: no filter matched, so it is taken)."""
    for f in reversed(filters):
        if fnmatch.fnmatchcase(relative, f.pattern):
            return f.kind == INCLUDE, f
    return True, None


def parse(excludes_and_includes: Sequence[tuple[str, str]]) -> tuple[Filter, ...]:
    """Filters from (kind, pattern) pairs in the order given on the command line."""
    out = []
    for kind, pattern in excludes_and_includes:
        if kind not in (EXCLUDE, INCLUDE):
            raise BadInput(f"unknown filter {kind!r}: use --exclude or --include")
        if not pattern:
            raise BadInput(f"--{kind} needs a pattern", 'for example --exclude "*.tmp"')
        out.append(Filter(kind, pattern))
    return tuple(out)


@dataclass(frozen=True)
class Found:
    """One entry of the walk: a file taken, or one left out and why (``skipped``)."""

    path: Path
    relative: str
    size: int = 0
    skipped: str | None = None
    mtime_ns: int = 0


def walk(root: Path, filters: Sequence[Filter] = (), follow_symlinks: bool = True,
         with_skipped: bool = False) -> Iterator[Found]:
    """The regular files under ``root`` that the filters take, streamed in a stable order (folders by name).

    With ``with_skipped``, also what was left out and why: a filter, a symbolic link not followed, a loop, a
    broken link, something that is not a regular file (a FIFO, a socket, a device)."""
    try:
        top = root.stat()
    except OSError as exc:
        raise BadInput(f"cannot read the folder {root}: {exc.strerror}", "check the path") from None
    if not stat.S_ISDIR(top.st_mode):
        raise BadInput(f"{root} is not a folder", "give a folder to --recursive")
    count = 0
    # (folder, its relative path, the (dev, inode) of the folders above it and itself), depth first.
    stack: list[tuple[Path, str, frozenset[tuple[int, int]]]] = [(root, "", frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        folder, rel_folder, above = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("Cannot read the folder %s (%s): skipped.", folder, exc.strerror)
            if with_skipped:
                yield Found(folder, rel_folder, skipped=f"folder not readable: {exc.strerror}")
            continue
        subfolders: list[tuple[Path, str, frozenset[tuple[int, int]]]] = []
        for entry in entries:
            rel = f"{rel_folder}{entry.name}"
            path = Path(entry.path)
            is_link = entry.is_symlink()
            if is_link and not follow_symlinks:
                if with_skipped:
                    yield Found(path, rel, skipped="symbolic link (--no-follow-symlinks)")
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                log.warning("Skipping %s: %s.", path, "a broken symbolic link" if is_link else exc.strerror)
                if with_skipped:
                    yield Found(path, rel, skipped="broken symbolic link" if is_link else str(exc.strerror))
                continue
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if ident in above:
                    log.warning("Not following %s: a symbolic link loop (it leads back to a folder above it).",
                                path)
                    if with_skipped:
                        yield Found(path, rel + "/", skipped="symbolic link loop")
                    continue
                if len(above) >= MAX_DEPTH:
                    raise BadInput(f"{path} lies more than {MAX_DEPTH} folders deep", "check for a loop")
                subfolders.append((path, rel + "/", above | {ident}))
                continue
            if not stat.S_ISREG(st.st_mode):
                if with_skipped:
                    yield Found(path, rel, skipped="not a regular file")
                continue
            ok, by = taken(rel, filters)
            if not ok:
                if with_skipped:
                    assert by is not None
                    yield Found(path, rel, st.st_size, skipped=f"--{by.kind} {by.pattern}")
                continue
            count += 1
            if count > MAX_FILES:
                raise BadInput(f"{root} holds more than {MAX_FILES} files", "upload it in several commands")
            yield Found(path, rel, st.st_size, mtime_ns=st.st_mtime_ns)
        stack.extend(reversed(subfolders))
