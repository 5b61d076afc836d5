"""Part planning: S3's multipart limits as pure functions, no I/O.

S3 accepts at most 10,000 parts per upload; every part but the last is between 5 MiB and
5 GiB, so the largest object a multipart upload can build is 10,000 x 5 GiB (48.8 TiB).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from s3_multipart_upload.errors import BadInput

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = MAX_PARTS * MAX_PART_SIZE
# Chosen by measurement against a local S3 server (docs/limits.md, "Choosing the defaults").
DEFAULT_PART_SIZE = 32 * MiB


@dataclass(frozen=True)
class Part:
    """One part of the object: S3's 1-based number, and its byte range in the object."""

    number: int
    offset: int
    length: int


@dataclass(frozen=True)
class Plan:
    part_size: int
    parts: tuple[Part, ...]
    total_size: int
    note: str | None = None  # why the part size differs from the one asked for, if it does


_SIZE = re.compile(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(value: int | str) -> int | None:
    """Bytes as a whole number, or with a binary suffix: ``67108864``, ``64M``, ``64MiB``, ``1G``; None if it is
    not a size."""
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(str(value))
    return None if match is None else int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def human(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number at or above 1 (``64 MiB``)."""
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def ranges(numbers: Sequence[int], most: int = 20) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``, for messages that stay short."""
    out: list[str] = []
    nums = sorted(numbers)
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ", ".join(out[:most]) + (", ..." if len(out) > most else "")


def choose_part_size(total_size: int, requested: int | None, max_parts: int = MAX_PARTS) -> tuple[int, str | None]:
    """The part size for a new upload of ``total_size`` bytes, and a note when it was raised (``max_parts``: a
    store's own limit below S3's 10,000, as ``--max-parts`` gives it)."""
    limit = "S3's 10,000 parts" if max_parts == MAX_PARTS else f"--max-parts {max_parts}"
    if total_size > max_parts * MAX_PART_SIZE:
        raise BadInput(
            f"the file is {human(total_size)}, larger than the {human(max_parts * MAX_PART_SIZE)} "
            f"({max_parts:,} parts of 5 GiB) that one multipart upload can hold"
            + ("" if max_parts == MAX_PARTS else " on this store (--max-parts)"),
            "split the data into several objects",
        )
    part_size = DEFAULT_PART_SIZE if requested is None else requested
    if part_size <= 0:
        raise BadInput(f"split size must be a positive number of bytes, not {part_size}")
    if part_size > MAX_PART_SIZE:
        raise BadInput(
            f"split size {part_size} bytes ({human(part_size)}) is above S3's maximum part size of 5 GiB",
            f"use -s {MAX_PART_SIZE} or less",
        )
    if part_size < MIN_PART_SIZE and total_size > part_size:
        raise BadInput(
            f"split size {part_size} bytes is below S3's minimum part size of 5 MiB "
            f"({MIN_PART_SIZE} bytes), and the file needs more than one part",
            f"use -s {MIN_PART_SIZE} or more, or leave -s out for the default ({human(DEFAULT_PART_SIZE)})",
        )
    if -(-total_size // part_size) <= max_parts:
        return part_size, None
    # Smallest whole number of MiB that fits the file into the parts allowed.
    raised = -(-total_size // max_parts)
    raised = -(-raised // MiB) * MiB
    raised = min(max(raised, MIN_PART_SIZE), MAX_PART_SIZE)
    note = (
        f"part size raised from {human(part_size)} to {human(raised)}: "
        f"{human(total_size)} in parts of {human(part_size)} would exceed {limit}"
    )
    return raised, note


def plan_file(total_size: int, part_size: int, note: str | None = None, max_parts: int = MAX_PARTS) -> Plan:
    """Split ``total_size`` bytes into parts of ``part_size`` (the last one shorter, or empty)."""
    if part_size <= 0:
        raise BadInput(f"part size must be positive, not {part_size}")
    if total_size == 0:
        return Plan(part_size, (Part(1, 0, 0),), 0, note)
    parts = tuple(
        Part(i + 1, offset, min(part_size, total_size - offset))
        for i, offset in enumerate(range(0, total_size, part_size))
    )
    if len(parts) > max_parts:
        raise BadInput(f"{len(parts)} parts of {human(part_size)} exceed "
                       + ("S3's limit of 10,000 parts" if max_parts == MAX_PARTS else f"--max-parts {max_parts}"))
    return Plan(part_size, parts, total_size, note)


def plan_bytes(total_size: int, split_size: int | None, fixed: bool, max_parts: int = MAX_PARTS) -> Plan:
    """The plan for ``total_size`` contiguous bytes: a new upload chooses its part size (and may raise it);
    a resumed one (``fixed``) keeps the one recorded at its start."""
    if fixed and split_size is not None:
        return plan_file(total_size, split_size)
    part_size, note = choose_part_size(total_size, split_size, max_parts)
    return plan_file(total_size, part_size, note, max_parts)


def plan_chunks(sizes: Sequence[int], names: Sequence[str] | None = None, max_parts: int = MAX_PARTS) -> Plan:
    """One part per pre-split chunk file, in order; checks each against S3's limits (and ``max_parts``)."""
    if not sizes:
        raise BadInput("no chunk files to upload")
    if len(sizes) > max_parts:
        limit = "S3's limit of 10,000 parts" if max_parts == MAX_PARTS else f"--max-parts {max_parts}"
        raise BadInput(f"{len(sizes)} chunk files exceed {limit}", "join some chunks")
    label = list(names) if names is not None else [f"chunk {i + 1}" for i in range(len(sizes))]
    parts = []
    offset = 0
    for i, size in enumerate(sizes):
        if size > MAX_PART_SIZE:
            raise BadInput(f"{label[i]} is {human(size)}, above S3's maximum part size of 5 GiB", "split it smaller")
        if size < MIN_PART_SIZE and i < len(sizes) - 1:
            raise BadInput(
                f"{label[i]} is {size} bytes, below S3's minimum part size of 5 MiB, and it is not the last chunk",
                "re-split the data into chunks of at least 5 MiB (for example: split -b 64M)",
            )
        parts.append(Part(i + 1, offset, size))
        offset += size
    return Plan(max(sizes), tuple(parts), offset)


def check_equal_parts(plan: Plan, names: Sequence[str] | None = None) -> None:
    """``--equal-parts``: a store that needs every part but the last of one size, and the last no larger (R2), gets
    no other plan; the parts (chunk files, ``names``) that differ are named. A file's plan always passes."""
    if len(plan.parts) < 2:
        return
    label = list(names) if names is not None else [f"part {p.number}" for p in plan.parts]
    size = plan.parts[0].length
    odd = [p for p in plan.parts[1:-1] if p.length != size]
    last = plan.parts[-1]
    if last.length > size:
        odd.append(last)
    if odd:
        shown = ", ".join(f"{label[p.number - 1]} ({human(p.length)}, {p.length} bytes)" for p in odd[:10])
        more = f" and {len(odd) - 10} more" if len(odd) > 10 else ""
        raise BadInput(
            f"--equal-parts: every chunk but the last must be the size of the first, {label[0]} ({human(size)}, "
            f"{size} bytes), and the last no larger; these are not: {shown}{more}",
            f"re-split the data into equal chunks (for example: split -b {size}), or upload the joined file with -f",
        )


# Data of unknown length (a pipe): parts double in size every max_parts // STREAM_TIERS parts (50 of S3's 10,000).
STREAM_TIERS = 200
STREAM_RESERVE = 10  # with --expected-size, 1/10 of the parts are kept for a stream longer than expected


@dataclass(frozen=True)
class Schedule:
    """The part sizes of data whose length is not known before its end: ``first`` for parts 1 to ``flat``, then
    twice as large every ``step`` parts, up to 5 GiB. Fixed at an upload's start (META records it), so that every
    run cuts the same stream into the same parts."""

    first: int
    flat: int
    step: int
    max_parts: int = MAX_PARTS

    def size(self, number: int) -> int:
        if number <= self.flat:
            return self.first
        doublings = min((number - self.flat - 1) // self.step + 1, 40)
        return min(self.first << doublings, max(MAX_PART_SIZE, self.first))

    def tiers(self) -> list[tuple[int, int, int, int]]:
        """(first part, last part, part size, bytes up to the tier's end) for each size in turn."""
        out: list[tuple[int, int, int, int]] = []
        total = 0
        for number in range(1, self.max_parts + 1):
            size = self.size(number)
            total += size
            if out and out[-1][2] == size:
                out[-1] = (out[-1][0], number, size, total)
            else:
                out.append((number, number, size, total))
        return out

    def capacity(self) -> int:
        """The longest data this schedule fits into ``max_parts`` parts."""
        return self.tiers()[-1][3]

    def to_json(self) -> dict[str, int]:
        return {"first": self.first, "flat": self.flat, "step": self.step, "maxParts": self.max_parts}

    @classmethod
    def from_json(cls, doc: object) -> Schedule | None:
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), int) and doc[k] > 0
                                                for k in ("first", "flat", "step", "maxParts")):
            return None
        return cls(doc["first"], doc["flat"], doc["step"], doc["maxParts"])

    def describe(self) -> str:
        """``32 MiB x 50 (to 1.6 GiB), 64 MiB x 50 (to 4.7 GiB), ..., 5 GiB x 9600 (to 47.2 TiB)``."""
        return ", ".join(f"{human(size)} x {last - first + 1:,} (to {human(end)})"
                         for first, last, size, end in self.tiers())


def schedule_for(split_size: int | None, expected_size: int | None, max_parts: int = MAX_PARTS,
                 equal: bool = False) -> tuple[Schedule, str]:
    """The schedule of a new upload of a stream, and why its first parts are the size they are. With the expected
    size, parts are sized as for a file of that size; a stream longer than expected goes on with larger parts.
    ``equal`` (--equal-parts: a store that takes only parts of one size): no growth, every part the first's size."""
    if equal:
        grown, why = schedule_for(split_size, expected_size, max_parts)
        equal_sized = Schedule(grown.first, max_parts, 1, max_parts)
        why = why.replace(", growing (the stream's length is not known)", "")
        return equal_sized, (f"{why}; all of one size (--equal-parts): the stream may be up to "
                             f"{human(equal_sized.capacity())}")
    step = max(1, max_parts // STREAM_TIERS)
    if expected_size is not None:
        # Sized as a file of that size would be, in 90 % of the parts: the rest hold a stream longer than expected,
        # in parts that grow to 5 GiB within them (from 2.5 TiB more at S3's 10,000).
        if expected_size > max_parts * MAX_PART_SIZE:
            raise BadInput(f"--expected-size {human(expected_size)} is larger than the "
                           f"{human(max_parts * MAX_PART_SIZE)} ({max_parts:,} parts of 5 GiB) that one multipart "
                           "upload can hold", "split the data into several objects")
        room = max(1, max_parts - max_parts // STREAM_RESERVE)
        if expected_size > room * MAX_PART_SIZE:  # no room to keep: the largest parts, which hold the most
            return Schedule(MAX_PART_SIZE, max_parts, step, max_parts), \
                f"5 GiB, the largest: --expected-size {human(expected_size)} would leave no parts for a longer stream"
        first, note = choose_part_size(expected_size, split_size, room)
        why = note.replace(f"--max-parts {room}", f"{room:,} parts (10 % are kept for a longer stream)") if note \
            else f"{'as asked (-s)' if split_size else f'the default, {human(DEFAULT_PART_SIZE)}'}, for " \
                 f"--expected-size {human(expected_size)}"
        if first < MIN_PART_SIZE:
            first, why = MIN_PART_SIZE, "5 MiB, S3's smallest part but the last (a stream may be longer than expected)"
        flat = max(1, -(-expected_size // first))
        growth = max(1, min(step, (max_parts - flat) // 12))  # 12 sizes reach 5 GiB from 5 MiB
        return Schedule(first, flat, growth, max_parts), why
    first = DEFAULT_PART_SIZE if split_size is None else split_size
    if not MIN_PART_SIZE <= first <= MAX_PART_SIZE:
        raise BadInput(f"split size {first} bytes ({human(first)}) is outside S3's part sizes, 5 MiB to 5 GiB",
                       "a stream's length is unknown until its end, so every part but the last must be 5 MiB or more")
    why = "as asked (-s)" if split_size is not None else f"the default, {human(DEFAULT_PART_SIZE)}"
    return Schedule(first, step, step, max_parts), why + ", growing (the stream's length is not known)"
