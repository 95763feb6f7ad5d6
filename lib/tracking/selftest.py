"""Prove a tracker works here, or open trackio's dashboard.

    python -m lib.tracking.selftest trackio     # make trackio-test
    python -m lib.tracking.selftest wandb       # make wandb-test
    python -m lib.tracking.selftest view        # make trackio-view

`trackio` and `wandb` log a short synthetic run (a falling loss, the config,
a few memory samples) through the same code a trainer uses, then read the
run back and print what they found; the exit status says whether it worked.
A self-test passes only on evidence: finding nothing to read back is a
failure that says what was missing.

- trackio: the run's rows in trackio's SQLite database.
- wandb (offline unless you are logged in): wandb's own summary of the run
  (`run.summary`, which asks wandb's service) must hold the last epoch, loss
  and the final accuracy; then, once `wandb.teardown()` has waited for the
  service to write everything out, the run's directory under
  `<dir>/wandb/` must hold its run file (what `wandb sync` uploads) naming
  the run and every logged key, and `files/wandb-summary.json`, where wandb
  writes one (online runs), the final accuracy. wandb's private record
  format is never decoded.

`view` serves trackio's dashboard for the tracking directory. The directory
is --tracking-dir, else CONFIG_TRACKING_DIR from .config, else "tracking".
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
import time
from pathlib import Path

from lib.tracking import DEFAULT_DIR, Trackers, open_trackers, project_name

STEPS = 5
MODEL = "selftest"
# What wandb's summary of the synthetic run must say: the last values logged, and the final block.
WANDB_SUMMARY = {"epoch": STEPS, "train_loss": 1.0 / STEPS, "final/accuracy": 10.0 * STEPS}
WANDB_KEYS = ("epoch", "train_loss", "val_accuracy", "memory/rss_mib", "final/accuracy")


def tracking_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if Path(".config").is_file():
        from lib import config

        try:
            return Path(config.load(".config").get("TRACKING_DIR") or DEFAULT_DIR)
        except config.ConfigError:
            pass
    return Path(DEFAULT_DIR)


def log_synthetic(name: str, directory: Path) -> tuple[str, str, Trackers]:
    """Log the synthetic run and its final block; (project, run name, the still open trackers)."""
    project, run_name = project_name(MODEL), f"{MODEL}-{time.strftime('%Y%m%d-%H%M%S')}"
    trackers = open_trackers(name, project=project, run_name=run_name, directory=directory,
                             config={"lr": 0.1, "steps": STEPS, "purpose": "tracker self-test"})
    for step in range(1, STEPS + 1):
        trackers.log({"epoch": step, "train_loss": 1.0 / step, "val_accuracy": 10.0 * step}, step=step)
        trackers.log_memory({"t": float(step), "phase": "train", "rss_mib": 100.0 + step})
    trackers.summary({"accuracy": 10.0 * STEPS})
    return project, run_name, trackers


def check_trackio(directory: Path, project: str, run_name: str) -> str:
    db = directory / "trackio" / f"{project}.db"
    if not db.is_file():
        raise RuntimeError(f"trackio wrote no database {db}")
    con = sqlite3.connect(db)
    try:
        rows = [json.loads(m) for (m,) in con.execute("SELECT metrics FROM metrics WHERE run_name = ?", (run_name,))]
    finally:
        con.close()
    losses = [r["train_loss"] for r in rows if "train_loss" in r]
    if len(losses) != STEPS:
        raise RuntimeError(f"{db}: expected {STEPS} logged steps for run {run_name}, found {len(losses)}")
    return f"trackio OK: {len(losses)} steps of run {run_name} in {db} (view: make trackio-view)"


def summary_gaps(summary: dict) -> list[str]:
    """How wandb's summary differs from WANDB_SUMMARY ("key: expected X, found Y"); empty when it matches."""
    gaps = []
    for key, want in WANDB_SUMMARY.items():
        got = summary.get(key)
        if not isinstance(got, (int, float)) or not math.isclose(got, want):
            gaps.append(f"{key}: expected {want}, found {got}")
    return gaps


def file_gaps(run_dir: Path, run_file: Path, run_name: str) -> list[str]:
    """What is missing from the files wandb wrote for a run; empty when all the evidence is there.

    The run file is searched for the run's name and each logged key as
    plain bytes (wandb stores them as strings); its record format is not
    decoded.
    """
    if not run_dir.is_dir():
        return [f"no run directory {run_dir}"]
    if not run_file.is_file():
        return [f"no run file {run_file}"]
    data = run_file.read_bytes()
    gaps = [f"{run_file} does not name {s!r}" for s in (run_name, *WANDB_KEYS) if s.encode() not in data]
    summary_file = run_dir / "files" / "wandb-summary.json"
    if summary_file.is_file():
        try:
            gaps += [f"{summary_file}: {g}" for g in summary_gaps(json.loads(summary_file.read_text()))]
        except ValueError as e:
            gaps.append(f"{summary_file} does not parse ({e})")
    return gaps


def check_wandb(trackers: Trackers, run_name: str) -> str:
    """Finish the wandb run and read it back from wandb itself and from its files; RuntimeError says what is missing."""
    tracker = next((t for t in trackers.trackers if t.name == "wandb"), None)
    if tracker is None:
        raise RuntimeError("wandb did not open a run")
    run, mode = tracker.run, tracker.mode
    summary = dict(run.summary)  # wandb's service's own account of the run, before finish closes it
    run_dir, run_file = Path(run.settings.sync_dir), Path(run.settings.sync_file)
    trackers.finish(exit_code=0)
    import wandb

    wandb.teardown()  # waits until wandb's service has written the run out
    gaps = [f"wandb's summary of the run: {g}" for g in summary_gaps(summary)] + file_gaps(run_dir, run_file, run_name)
    if gaps:
        raise RuntimeError(f"wandb (mode {mode}) left no evidence of run {run_name}: " + "; ".join(gaps))
    where = f"{run_dir} (upload later: wandb sync {run_dir})" if mode == "offline" else str(run_dir)
    found = ", ".join(f"{k} {summary[k]}" for k in WANDB_SUMMARY)
    return f"wandb OK ({mode}): run {run_name}, wandb's summary: {found}; its files: {where}"


def view(directory: Path, project: str | None) -> int:
    from lib.tracking.trackio_tracker import import_trackio

    db_dir = directory / "trackio"
    if not any(db_dir.glob("*.db")):
        print(f"error: no trackio projects in {db_dir}: run 'make trackio-test' or a matrix with CONFIG_TRACKER_TRACKIO=y", file=sys.stderr)
        return 1
    trackio = import_trackio(db_dir)
    trackio.show(project=project, open_browser=False, block_thread=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("trackio", "wandb", "view"))
    p.add_argument("--tracking-dir", default=None, help="default: CONFIG_TRACKING_DIR from .config, else 'tracking'")
    p.add_argument("--project", default=None, help="view: open this project (default: the dashboard's list)")
    args = p.parse_args(argv)
    directory = tracking_dir(args.tracking_dir)
    if args.what == "view":
        return view(directory, args.project)
    project, run_name, trackers = log_synthetic(args.what, directory)
    try:
        if trackers.warnings:
            trackers.finish(exit_code=1)
            raise RuntimeError("; ".join(trackers.warnings))
        if args.what == "trackio":
            trackers.finish(exit_code=0)
            message = check_trackio(directory, project, run_name)
        else:
            message = check_wandb(trackers, run_name)
        if trackers.warnings:  # a tracker that failed while finishing
            raise RuntimeError("; ".join(trackers.warnings))
    except (OSError, RuntimeError, sqlite3.Error) as e:
        print(f"error: {args.what} self-test: {e}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
