from __future__ import annotations

import logging

import pytest

from s3_multipart_upload.progress import LogProgress


def test_log_lines_and_a_summary_every_30_seconds(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    p = LogProgress(interval=30, clock=lambda: now[0])
    p.started(total_bytes=40, total_parts=4, done_bytes=10, done_parts=1)
    with caplog.at_level(logging.INFO, logger="s3_multipart_upload"):
        now[0] = 110.0
        p.part_done(2, "a" * 32, 10, 9.6)
        now[0] = 131.0
        p.part_done(3, "b" * 32, 10, 21.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"Done uploading 2 - {'a' * 32}. Completed in 10 seconds."
    assert lines[1] == f"Done uploading 3 - {'b' * 32}. Completed in 21 seconds."
    assert lines[2] == "Progress: 3/4 parts, 30 B of 40 B (75.0 %), 0.0 MiB/s."
    assert len(lines) == 3
