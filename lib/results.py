"""Run directory files: run.json and metrics.json, always written atomically.

A run is done if and only if run.json says "completed" and metrics.json parses
with a "final" block (`is_done`). Writers go through `write_json`, which
writes a temporary file, fsyncs it and renames it over the old one, so a
reader never sees half a file, even after SIGKILL.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = 1
STATUSES = ("running", "completed", "failed", "interrupted")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | os.PathLike, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike):
    """The parsed file, or None when it is missing or does not parse."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def is_done(run_dir: str | os.PathLike) -> bool:
    run = read_json(Path(run_dir) / "run.json") or {}
    metrics = read_json(Path(run_dir) / "metrics.json") or {}
    return run.get("status") == "completed" and isinstance(metrics.get("final"), dict)


class RunRecord:
    """run.json of one run directory."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / "run.json"
        self.data = read_json(self.path) or {}

    def start(self, run_id: str, argv: list[str], seed: int) -> None:
        self.data = {
            "schema": SCHEMA,
            "run_id": run_id,
            "status": "running",
            "attempt": int(self.data.get("attempt", 0)) + 1,
            "started": now(),
            "finished": None,
            "heartbeat": now(),
            "exit_code": None,
            "error": None,
            "argv": list(argv),
            "seed": seed,
        }
        write_json(self.path, self.data)

    def update(self, **fields) -> None:
        self.data.update(fields)
        write_json(self.path, self.data)

    def heartbeat(self) -> None:
        self.update(heartbeat=now())

    def finish(self, status: str, exit_code: int | None = None, error: str | None = None) -> None:
        assert status in STATUSES, status
        self.update(status=status, finished=now(), heartbeat=now(), exit_code=exit_code, error=error)
