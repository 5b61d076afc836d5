"""The service's background threads (the verifier, the webhook deliverer): each repeats ``run_once`` until stopped,
and waits up to ``poll`` seconds between passes that found nothing to do (``wake`` cuts the wait short)."""

from __future__ import annotations

import logging
import threading

import sqlalchemy.exc

log = logging.getLogger(__name__)


class Background:
    """Subclasses say their ``name``, the errors a pass may meet and live through (``passing``), and ``run_once``:
    True when it did some work (then the next pass starts at once)."""

    name = "worker"
    passing: tuple[type[Exception], ...] = (sqlalchemy.exc.SQLAlchemyError,)

    def __init__(self, workers: int, poll: float) -> None:
        self.workers = workers
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run_once(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"s3mu-{self.name}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():  # ends with stop(); each pass either works or waits up to `poll`
            try:
                worked = self.run_once()
            except self.passing as exc:
                log.warning("%s: %s: %s", self.name.capitalize(), type(exc).__name__,
                            str(exc).splitlines()[0][:200] if str(exc) else "")
                worked = False
            if not worked:
                self._wake.wait(self.poll)
                self._wake.clear()
