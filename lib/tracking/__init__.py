"""Experiment tracking: trackio (local), wandb (offline unless logged in), both, or none.

`for_run(args, ...)` opens the trackers a trainer's `--tracker` names, in the
project `{model}-{5 hex}` of this checkout (`project_name`), with the run id
as run name and the matrix directory as group. Anything that goes wrong (an
unknown name, a tracker that is not installed, a tracking directory that is
not writable, a tracker failing mid-run) is a warning: the run records it and
trains on without that tracker. `tracker_symbols(spec)` maps a `TRACKER=`
value to Kconfig assignments for the defconfig loader. The family's flags
(`add_arguments`: --tracker, from the TRACKER_* checkboxes joined by commas,
and TRACKING_DIR -> --tracking-dir) and `TrackingSettings` live here; a bad
tracker name is a warning at run time, so there is nothing to check earlier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.tracking.base import Tracker, TrackerUnavailable, writable_dir
from lib.tracking.fanout import Trackers
from lib.tracking.project import checkout_hash, project_name
from lib.tracking.secrets import redact
from lib.settings import Settings
from lib.tracking.spec import NONE, SYMBOLS, TRACKERS, flag_value, parse, split, tracker_symbols

DEFAULT_DIR = "tracking"

__all__ = [
    "DEFAULT_DIR", "NONE", "SYMBOLS", "TRACKERS", "Tracker", "TrackerUnavailable", "Trackers", "TrackingSettings",
    "add_arguments", "checkout_hash", "flag_value", "for_run", "open_trackers", "parse", "project_name", "redact",
    "run_config", "split", "tracker_symbols", "writable_dir",
]


def add_arguments(parser) -> None:
    g = parser.add_argument_group("experiment tracking (lib/Kconfig.tracking)")
    g.add_argument("--tracker", default=NONE,
                   help=f"comma-separated experiment trackers: {', '.join(TRACKERS)}, or {NONE}; one that cannot run is a warning")
    g.add_argument("--tracking-dir", default=DEFAULT_DIR, help="where trackio's database and wandb's offline runs go")


@dataclass(frozen=True)
class TrackingSettings(Settings):
    tracker: str
    tracking_dir: str


def _tracker_class(name: str):
    if name == "trackio":
        from lib.tracking.trackio_tracker import TrackioTracker

        return TrackioTracker
    from lib.tracking.wandb_tracker import WandbTracker

    return WandbTracker


def open_trackers(spec: str | None, *, project: str, run_name: str, config: dict, directory,
                  group: str | None = None, resume: bool = False) -> Trackers:
    """Open every tracker `spec` names; the ones that cannot open become warnings."""
    known, unknown = parse(spec)
    out = Trackers()
    for name in unknown:
        out.warn(f"tracking: unknown tracker {name!r} (valid: {', '.join(TRACKERS)}, {NONE}); continuing without it")
    config = redact(config)
    for name in known:
        try:
            tracker = _tracker_class(name)(project, run_name, config, directory, group=group, resume=resume)
        except Exception as e:  # TrackerUnavailable says what to do; anything else is the tracker's own error
            reason = str(e) if isinstance(e, TrackerUnavailable) else f"{type(e).__name__}: {e}"
            out.warn(f"tracking: {name} disabled: {reason}; continuing without it")
            continue
        out.trackers.append(tracker)
    return out


def run_config(args, **extra) -> dict:
    """What a tracker records as the run's config: the trainer's flags plus `extra`, redacted."""
    config = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), list, tuple))}
    config.update(extra)
    return redact(config)


def for_run(args, *, model: str, dataset: str, run_dir) -> Trackers:
    """The trackers a trainer's flags ask for (--tracker, --tracking-dir)."""
    run_dir = Path(run_dir)
    s = TrackingSettings.from_args(args)
    if not split(s.tracker):
        return Trackers()
    return open_trackers(
        s.tracker,
        project=project_name(model),
        run_name=run_dir.name,
        config=run_config(args, model=model, dataset=dataset, run_id=run_dir.name),
        directory=s.tracking_dir,
        group=run_dir.parent.name or None,
        resume=bool(args.resume),
    )
