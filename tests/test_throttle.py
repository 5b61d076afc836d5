from __future__ import annotations

from s3_multipart_upload.uploader import Throttle


def test_slowdown_halves_then_a_calm_spell_doubles_back() -> None:
    now = [0.0]
    t = Throttle(8, cool_down=30, clock=lambda: now[0])
    assert t.allowed() == 8
    t.slow_down()
    t.slow_down()
    assert t.allowed() == 2
    now[0] = 29.9
    assert t.allowed() == 2
    now[0] = 30.0
    assert t.allowed() == 4
    now[0] = 59.0
    assert t.allowed() == 4  # each step up waits for another calm spell
    now[0] = 60.0
    assert t.allowed() == 8
    for _ in range(10):
        t.slow_down()
    assert t.allowed() == 1  # never below one part in flight
