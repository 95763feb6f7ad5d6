"""`Trackers`: the run's trackers behind one object that never lets a tracker stop training.

Every call goes to each open tracker under one lock (the memory sampler logs
from its own thread). A tracker that raises is closed and dropped, and the
failure becomes a warning line (printed once, kept in `warnings` for
run.json); the other trackers and the training go on.
"""

from __future__ import annotations

import sys
import threading

from lib.tracking.base import Tracker


class Trackers:
    def __init__(self, trackers: list[Tracker] | None = None, warnings: list[str] | None = None):
        self.trackers = list(trackers or [])
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        for w in warnings or []:
            self.warn(w)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            print(message, file=sys.stderr, flush=True)

    def _each(self, method: str, *args, **kwargs) -> None:
        with self._lock:
            for tracker in list(self.trackers):
                try:
                    getattr(tracker, method)(*args, **kwargs)
                except Exception as e:
                    self.trackers.remove(tracker)
                    self.warn(f"tracking: {tracker.name} failed in {method} ({type(e).__name__}: {e}); continuing without it")
                    if method != "finish":
                        try:
                            tracker.finish(exit_code=1)
                        except Exception:
                            pass

    def log(self, metrics: dict, step: int) -> None:
        self._each("log", metrics, step)

    def log_memory(self, sample: dict) -> None:
        self._each("log_memory", sample)

    def summary(self, final: dict) -> None:
        self._each("summary", final)

    def finish(self, exit_code: int = 0) -> None:
        self._each("finish", exit_code=exit_code)
        with self._lock:
            self.trackers = []
