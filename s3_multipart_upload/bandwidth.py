"""``--max-bandwidth``: one token bucket for every byte an upload sends, shared by its threads (and by the files of
a many-files upload), so the whole command stays under the rate whatever the thread count.

Bytes are taken as the HTTP client reads a part's body (``stream.PartStream``): reading a file to hash it is not
sending, and a retry's bytes count again, since they go over the link again. The bucket holds at most a quarter of
a second of bytes, so a pause (a slow part, a retry's backoff) does not let a burst through afterwards.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from s3_multipart_upload.errors import BadInput

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)(B|b|bits?)?\s*(?:/\s*s|ps)?\s*$")
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
MIN_RATE = 1024  # bytes/s: a useful floor (a connection moving this slowly still sends within S3's idle timeout)


def parse_rate(text: str) -> int:
    """``50MB/s``, ``50M``, ``100MiB/s``, ``800Mbit/s``, ``800Mb/s``, ``1.5GB/s`` -> bytes per second. MB is 10^6
    bytes, MiB 2^20 (as aws-cli, s5cmd and rclone write them); a lower-case ``b`` (or ``bit``) is bits, as network
    rates are written; a bare number is bytes per second."""
    match = _RATE.match(text)
    if not match:
        raise BadInput(f"--max-bandwidth {text!r} is not a rate",
                       "write it as 50MB/s, 100MiB/s, 800Mbit/s or a number of bytes per second")
    number, prefix, binary, unit = match.groups()
    base = 1024 if binary else 1000
    rate = float(number) * base ** _POWER[prefix.lower()]
    if unit and unit != "B":  # b, bit, bits
        rate /= 8
    if rate < MIN_RATE:
        raise BadInput(f"--max-bandwidth {text} is {rate:.0f} bytes/s; the least is {MIN_RATE}")
    return int(rate)


class Bandwidth:
    """A token bucket: ``take(n)`` returns once ``n`` more bytes fit under ``rate`` bytes per second."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self._capacity = max(1.0, rate / 4)
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Wait until ``n`` bytes may go (each caller waits for its own share; the order is first come)."""
        with self._lock:  # one taker at a time: they queue here, each for its own bytes
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            if wait > 0:  # the debt is paid by waiting, holding the lock so that no later taker jumps ahead
                self._sleep(wait)
                self._tokens = 0.0
                self._at = self._clock()
