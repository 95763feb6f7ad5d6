"""trackio: a local tracker whose runs live in a SQLite database under the tracking dir.

trackio reads its directory (TRACKIO_DIR) once, when it is first imported, so
the directory is set in the environment before that import; a process that
already imported trackio with another directory cannot switch, and says so.
Per-epoch metrics are logged with the epoch as step, memory samples as
trackio "system" metrics, and the final block as `final/*` at the last step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lib.tracking.base import Tracker, TrackerUnavailable, scalars, writable_dir


def import_trackio(directory: Path):
    wanted = str(directory.resolve())
    if "trackio" in sys.modules and sys.modules["trackio"] is not None:
        from trackio import utils

        if str(Path(utils.TRACKIO_DIR).resolve()) != wanted:
            raise TrackerUnavailable(
                f"trackio was already imported in this process with directory {utils.TRACKIO_DIR}; cannot switch to {wanted}"
            )
    os.environ["TRACKIO_DIR"] = wanted
    try:
        import trackio
    except Exception as e:  # ImportError, or a broken install failing on import
        raise TrackerUnavailable(f"trackio selected but not importable ({type(e).__name__}: {e}); pip install trackio") from None
    return trackio


class TrackioTracker(Tracker):
    name = "trackio"

    def __init__(self, project: str, run_name: str, config: dict, directory, *, group: str | None = None, resume: bool = False):
        self.directory = writable_dir(Path(directory) / "trackio")
        trackio = import_trackio(self.directory)
        self.run = trackio.init(
            project=project,
            name=run_name,
            group=group,
            config=config,
            resume="allow" if resume else "never",
            embed=False,
            auto_log_gpu=False,  # lib.monitor samples the GPU; no second poller
            auto_log_cpu=False,
        )
        self.step = 0

    def log(self, metrics: dict, step: int) -> None:
        self.step = step
        self.run.log(scalars(metrics), step=step)

    def log_memory(self, sample: dict) -> None:
        values = {f"memory/{k}": v for k, v in sample.items() if k != "phase"}
        self.run.log_system(values)

    def summary(self, final: dict) -> None:
        self.run.log({f"final/{k}": v for k, v in scalars(final).items()}, step=self.step)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish()
