from __future__ import annotations

from s3_multipart_upload.uploader import Throttle


def test_slowdown_halves_then_a_calm_spell_doubles_back() -> None:
    now = [0.0]
    changes: list[tuple[int, int]] = []
    t = Throttle(8, cool_down=30, clock=lambda: now[0], on_change=lambda now_, was: changes.append((now_, was)))
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
    assert changes == [(4, 8), (2, 4), (4, 2), (8, 4)]  # what --json reports as throttled events
    for _ in range(10):
        t.slow_down()
    assert t.allowed() == 1  # never below one part in flight


def test_a_burst_of_slowdowns_to_requests_already_in_flight_halves_once() -> None:
    now = [100.0]
    t = Throttle(8, cool_down=10, clock=lambda: now[0])
    for _ in range(8):  # the eight parts in flight, all sent at 99 s, all answered SlowDown
        t.slow_down(sent_at=99.0)
    assert t.allowed() == 4
    now[0] = 105.0
    t.slow_down(sent_at=101.0)  # sent after that cut, and still refused: the server wants fewer
    assert t.allowed() == 2
    now[0] = 114.9
    t.slow_down(sent_at=100.5)  # an old request's answer: no cut, but the calm spell starts again
    now[0] = 124.0
    assert t.allowed() == 2
    now[0] = 124.9
    assert t.allowed() == 4
