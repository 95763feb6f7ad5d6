"""Prove a tracker works here, or open trackio's dashboard.

    python -m lib.tracking.selftest trackio     # make trackio-test
    python -m lib.tracking.selftest wandb       # make wandb-test
    python -m lib.tracking.selftest view        # make trackio-view

`trackio` and `wandb` log a short synthetic run (a falling loss, the config,
a few memory samples) through the same code a trainer uses, then read the
run back from the tracker's local files and print what they found; the exit
status says whether it worked. wandb stays offline unless you are logged in.
`view` serves trackio's dashboard for the tracking directory. The directory
is --tracking-dir, else CONFIG_TRACKER_DIR from .config, else "tracking".
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

from lib.tracking import DEFAULT_DIR, open_trackers, project_name
from lib.tracking import wandb_records

STEPS = 5
MODEL = "selftest"


def tracking_dir(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if Path(".config").is_file():
        from lib import config

        try:
            return Path(config.load(".config").get("TRACKER_DIR") or DEFAULT_DIR)
        except config.ConfigError:
            pass
    return Path(DEFAULT_DIR)


def log_synthetic(name: str, directory: Path) -> tuple[str, str, list[str]]:
    """Log the synthetic run; (project, run name, warnings)."""
    project, run_name = project_name(MODEL), f"{MODEL}-{time.strftime('%Y%m%d-%H%M%S')}"
    trackers = open_trackers(name, project=project, run_name=run_name, directory=directory,
                             config={"lr": 0.1, "steps": STEPS, "purpose": "tracker self-test"})
    for step in range(1, STEPS + 1):
        trackers.log({"epoch": step, "train_loss": 1.0 / step, "val_accuracy": 10.0 * step}, step=step)
        trackers.log_memory({"t": float(step), "phase": "train", "rss_mib": 100.0 + step})
    trackers.summary({"accuracy": 10.0 * STEPS})
    trackers.finish(exit_code=0)
    return project, run_name, trackers.warnings


def check_trackio(directory: Path, project: str, run_name: str) -> str:
    db = directory / "trackio" / f"{project}.db"
    con = sqlite3.connect(db)
    try:
        rows = [json.loads(m) for (m,) in con.execute("SELECT metrics FROM metrics WHERE run_name = ?", (run_name,))]
    finally:
        con.close()
    losses = [r["train_loss"] for r in rows if "train_loss" in r]
    if len(losses) != STEPS:
        raise RuntimeError(f"{db}: expected {STEPS} logged steps for run {run_name}, found {len(losses)}")
    return f"trackio OK: {len(losses)} steps of run {run_name} in {db} (view: make trackio-view)"


def check_wandb(directory: Path, run_name: str) -> str:
    files = [f for f in wandb_records.find_runs(directory) if wandb_records.read(f)["run"].get("name") == run_name]
    if not files:
        return f"wandb OK: run {run_name} logged online (no local offline file to read back)"
    rec = wandb_records.read(files[-1])
    losses = [h["train_loss"] for h in rec["history"] if "train_loss" in h]
    if len(losses) != STEPS:
        raise RuntimeError(f"{files[-1]}: expected {STEPS} logged steps, found {len(losses)}")
    return f"wandb OK (offline): {len(losses)} steps of run {run_name} in {files[-1].parent} (upload later: wandb sync {files[-1].parent})"


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
    p.add_argument("--tracking-dir", default=None, help="default: CONFIG_TRACKER_DIR from .config, else 'tracking'")
    p.add_argument("--project", default=None, help="view: open this project (default: the dashboard's list)")
    args = p.parse_args(argv)
    directory = tracking_dir(args.tracking_dir)
    if args.what == "view":
        return view(directory, args.project)
    project, run_name, warnings = log_synthetic(args.what, directory)
    if warnings:
        for w in warnings:
            print(f"error: {w}", file=sys.stderr)
        return 1
    try:
        print(check_trackio(directory, project, run_name) if args.what == "trackio" else check_wandb(directory, run_name))
    except (OSError, RuntimeError, sqlite3.Error) as e:
        print(f"error: {args.what} self-test: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
