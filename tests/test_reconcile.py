from __future__ import annotations

from s3_multipart_upload.plan import Part
from s3_multipart_upload.reconcile import ListedPart, reconcile
from s3_multipart_upload.state import PartRecord

PARTS = [Part(1, 0, 10), Part(2, 10, 10), Part(3, 20, 10), Part(4, 30, 10), Part(5, 40, 5)]


def rec(n: int, etag: str) -> PartRecord:
    return PartRecord(etag, n, "U", 10)


def test_the_reconciliation_table() -> None:
    logged = {1: rec(1, "a"), 2: rec(2, "b"), 4: rec(4, "d")}
    listed = {
        1: ListedPart(1, "a", 10),  # logged and listed, same ETag: done
        2: ListedPart(2, "B", 10),  # logged and listed, ETags differ: verify against the local bytes
        3: ListedPart(3, "c", 10),  # listed, not logged (died before the log line): verify
        5: ListedPart(5, "e", 4),  # listed with the wrong size: send again
        9: ListedPart(9, "z", 10),  # beyond the plan
    }  # 4 logged but not listed: send again
    d = reconcile(PARTS, logged, listed)
    assert list(d.done) == [1]
    assert [(p.number, held.etag) for p, held in d.verify] == [(2, "B"), (3, "c")]
    assert [p.number for p in d.send] == [4, 5]
    assert d.logged_not_listed == [4]
    assert d.stray == [9]


def test_a_fresh_upload_sends_everything() -> None:
    d = reconcile(PARTS, {}, {})
    assert [p.number for p in d.send] == [1, 2, 3, 4, 5] and not d.done and not d.verify


def test_a_historical_log_is_not_trusted_without_checking_the_bytes() -> None:
    d = reconcile(PARTS[:1], {1: rec(1, "a")}, {1: ListedPart(1, "a", 10)}, trust_log=False)
    assert not d.done and [p.number for p, _ in d.verify] == [1]
