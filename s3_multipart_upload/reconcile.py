"""Resume: the parts log is a cache, the server's part list is the truth. Pure, no I/O.

    logged  listed  same ETag  ->  decision
    yes     yes     yes        ->  done (unless the log cannot be trusted: historical META)
    yes     yes     no         ->  verify the listed part against the local bytes
    no      yes     -          ->  verify (the process died between S3's answer and the log line)
    either  no      -          ->  send
    listed with the wrong size ->  send
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from s3_multipart_upload.plan import Part
from s3_multipart_upload.state import PartRecord


@dataclass(frozen=True)
class ListedPart:
    number: int
    etag: str  # without quotes
    size: int


@dataclass
class Decision:
    done: dict[int, PartRecord] = field(default_factory=dict)
    verify: list[tuple[Part, ListedPart]] = field(default_factory=list)
    send: list[Part] = field(default_factory=list)
    logged_not_listed: list[int] = field(default_factory=list)
    stray: list[int] = field(default_factory=list)  # listed parts beyond the plan: never completed into the object


def reconcile(
    parts: Iterable[Part],
    logged: Mapping[int, PartRecord],
    listed: Mapping[int, ListedPart],
    trust_log: bool = True,
) -> Decision:
    decision = Decision()
    planned = set()
    for part in parts:
        planned.add(part.number)
        record = logged.get(part.number)
        held = listed.get(part.number)
        if held is None:
            if record is not None:
                decision.logged_not_listed.append(part.number)
            decision.send.append(part)
        elif held.size != part.length:
            decision.send.append(part)
        elif trust_log and record is not None and record.etag == held.etag:
            decision.done[part.number] = record
        else:
            decision.verify.append((part, held))
    decision.stray = sorted(n for n in listed if n not in planned)
    return decision
