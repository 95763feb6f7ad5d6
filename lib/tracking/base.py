"""The tracker interface, the error a tracker raises when it cannot run, and shared checks."""

from __future__ import annotations

from abc import ABC, abstractmethod

import os
import tempfile
from pathlib import Path


class TrackerUnavailable(Exception):
    """This tracker cannot be used for this run; the message says why and what to do."""


def writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove a file can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TrackerUnavailable(f"tracking directory {path} is not writable ({e.strerror or e}); set --tracking-dir (CONFIG_TRACKING_DIR)") from None
    return path


def scalars(data: dict) -> dict:
    """The numeric and boolean entries of a flat dict (what every tracker can plot)."""
    return {k: v for k, v in data.items() if isinstance(v, (bool, int, float))}


class Tracker(ABC):
    """One experiment tracker's run. Methods may raise; `Trackers` turns that into a warning."""

    name = "base"

    @abstractmethod
    def log(self, metrics: dict, step: int) -> None:
        """Log one history entry at `step`."""

    @abstractmethod
    def log_memory(self, sample: dict) -> None:
        """Log one memory sample."""

    @abstractmethod
    def summary(self, final: dict) -> None:
        """Record the final block."""

    @abstractmethod
    def finish(self, exit_code: int = 0) -> None:
        """Close the run."""
