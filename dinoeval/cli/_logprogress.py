"""Progress as plain log lines, for output that is not a terminal (SLURM, nohup, ``| tee``).

A redirected rich progress bar writes nothing until it ends (or floods the file with redraws).
:class:`LogProgress` writes one line per task at most every ``every`` seconds::

    [12:00:05] DINO on fashion-mnist:train: 1,280/60,000 (2.1%) · 640 img/s · ETA 1:31
    [12:01:36] DINO on fashion-mnist:train: done, 60,000 in 1:33 (645 img/s)

and, while no task moves (k-means, a logistic-regression sweep, collapse statistics), a
heartbeat line every ``every`` seconds saying what ran last and for how long, so a log never
sits silent through a long phase.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from collections.abc import Callable
from typing import TextIO

EVERY_ENV = "DINOEVAL_PROGRESS_EVERY"  # seconds between lines (default 30)


def _clock(seconds: float) -> str:
    s = round(max(seconds, 0.0))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def default_every() -> float:
    try:
        return max(0.0, float(os.environ.get(EVERY_ENV, "30")))
    except ValueError:
        return 30.0


class LogProgress:
    """``factory(description, total) -> update(done)`` writing plain lines to ``stream``."""

    def __init__(self, stream: TextIO, *, every: float | None = None) -> None:
        self.stream = stream
        self.every = default_every() if every is None else every
        self._lock = threading.Lock()
        self._last_line = time.monotonic()
        self._current = ""
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, text: str) -> None:
        with self._lock:
            now = _dt.datetime.now().strftime("%H:%M:%S")
            self.stream.write(f"[{now}] {text}\n")
            self.stream.flush()
            self._last_line = time.monotonic()

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        start = time.monotonic()
        last = [-1.0]
        self._current = description
        self._write(f"{description}: started, {total:,} to do")

        def update(done: int) -> None:
            now = time.monotonic()
            if done >= total:
                took = now - start
                self._write(f"{description}: done, {done:,} in {_clock(took)} "
                            f"({done / max(took, 1e-9):,.0f}/s)")
                self._current = f"after {description}"
                return
            if now - last[0] < self.every:
                return
            last[0] = now
            rate = done / max(now - start, 1e-9)
            eta = _clock((total - done) / rate) if rate > 0 else "?"
            self._write(f"{description}: {done:,}/{total:,} ({100 * done / max(total, 1):.1f}%)"
                        f" · {rate:,.0f}/s · ETA {eta}")
        return update

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(max(self.every, 0.05), 5.0)):
            if time.monotonic() - self._last_line >= self.every and self.every > 0:
                what = self._current or "starting"
                self._write(f"working ({what}); {_clock(time.monotonic() - self._start)} "
                            "elapsed")

    def __enter__(self) -> LogProgress:
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
