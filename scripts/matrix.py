"""Run, continue and inspect a test matrix.

usage:
  python -m scripts.matrix run [--epochs N]            plan .config into results/<id>/ and run it
  python -m scripts.matrix continue [--results DIR] [--retry-failed]
  python -m scripts.matrix status [--results DIR]
  python -m scripts.matrix dry-run [--epochs N]        print the runs and their command lines

`run` writes matrix.json (config copy and hash, git state, versions, host,
the planned runs with their argv) before the first run, then runs each one
as a `python -m <model>.train` subprocess, one after another, with a
progress line per run and a summary table at the end (also summary.md).
A failed run is recorded and the matrix carries on; the exit status is
non-zero when any run failed.

`continue` reopens the newest matrix (or --results DIR): completed runs are
kept untouched, interrupted runs resume from their checkpoint, runs never
started are started, failed runs are retried only with --retry-failed. It
refuses when .config changed since the matrix was planned.

`status` shows a run whose run.json still says "running" while no runner
holds the results lock as "interrupted (runner gone)": it was killed, and
`continue` resumes it.

Only one matrix runs in a results directory at a time (a lock file).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path

from lib import config, matrix
from scripts.progress import headline, progress_line
from lib.results import (
    MATRIX_FILE, SCHEMA, MatrixError, RunRecord, describe, is_done, live_status, lock, now, open_matrix, read_json,
    runner_alive, write_json,
)

REPO = Path(__file__).resolve().parent.parent


# -- planning -------------------------------------------------------------------
def plan(values: dict, matrix_dir: Path, overrides: dict) -> list[dict]:
    """The runs of a configuration, with their directories and command lines."""
    return [
        {
            "run_id": matrix.run_id(spec),
            "spec": spec.to_dict(),
            "argv": matrix.argv(spec, values, str(matrix_dir / matrix.run_id(spec)), overrides),
        }
        for spec in matrix.expand(values)
    ]


def matrix_name(values: dict) -> str:
    """The defconfig this .config came from, or 'custom' once it was changed."""
    record = read_json(Path("build") / "defconfig.json") or {}
    return record["name"] if record.get("config_hash") == config.config_hash(values) else "custom"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def provenance(matrix_dir: Path) -> dict:
    commit = _git("rev-parse", "HEAD").strip() or None
    diff = _git("diff", "HEAD") if commit else ""
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no").strip())
    if dirty and diff:
        (matrix_dir / "git.diff").write_text(diff)
    import torch  # only for the versions and device description

    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "git": {"commit": commit, "dirty": dirty, "diff_file": "git.diff" if dirty and diff else None},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "devices": devices or ["cpu"],
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# -- running one run ------------------------------------------------------------
def rotate_log(run_dir: Path) -> None:
    log = run_dir / "train.log"
    if log.exists():
        n = 1
        while (run_dir / f"train.log.{n}").exists():
            n += 1
        log.rename(run_dir / f"train.log.{n}")


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1]


def execute(run: dict, resume: bool) -> str:
    """Run one trainer subprocess to its end; return the run's final status."""
    argv = list(run["argv"]) + (["--resume"] if resume else [])
    run_dir = Path(argv[argv.index("--output-dir") + 1])
    run_dir.mkdir(parents=True, exist_ok=True)
    rotate_log(run_dir)
    with open(run_dir / "train.log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            _settle(run, run_dir, "interrupted", 130)
            raise
    return _settle(run, run_dir, "failed", code) if code else RunRecord(run_dir).data.get("status", "failed")


def _settle(run: dict, run_dir: Path, status: str, code: int) -> str:
    """Make run.json say what happened when the trainer could not say it itself."""
    record = RunRecord(run_dir)
    if record.data.get("status") in (None, "running"):
        if not record.data:
            record.start(run["run_id"], run["argv"], run["spec"]["seed"])
        record.finish(status, exit_code=code, error=last_line(run_dir / "train.log") or f"exit status {code}")
    return record.data["status"]


# -- summary --------------------------------------------------------------------
def summary_table(matrix_dir: Path, runs: list[dict]) -> str:
    """Markdown table of the runs; 'final'/'best' are accuracy (%) or perplexity, as the metric column says."""
    rows = ["| run | status | metric | final | best | sparsity (%) | train time (s) |", "|---|---|---|---:|---:|---:|---:|"]
    for run in runs:
        info = describe(matrix_dir / run["run_id"])
        if info["status"] == "completed":
            name, unit, final, best = headline(info)
            metric = "accuracy (%)" if name == "acc" else "perplexity"
            rows.append(
                f"| {run['run_id']} | completed | {metric} | {final:.2f} | {'-' if best is None else f'{best:.2f}'} | "
                f"{100 * info['sparsity_prunable']:.1f} | {info['train_time_s']:.1f} |"
            )
        else:
            rows.append(f"| {run['run_id']} | {info['status']} | | - | - | - | - |")
    return "\n".join(rows)


def finish(matrix_dir: Path, meta: dict) -> int:
    table = summary_table(matrix_dir, meta["runs"])
    (matrix_dir / "summary.md").write_text(f"# Matrix {meta['id']}\n\n{table}\n")
    print(f"\n{table}\n\nresults: {matrix_dir}")
    if meta["config"].get("MATRIX_AUTO_GRAPHS"):
        from scripts import graphs  # here, so that status and dry-run do not load matplotlib

        graphs.draw(matrix_dir)
    failed = [r["run_id"] for r in meta["runs"] if describe(matrix_dir / r["run_id"])["status"] != "completed"]
    if failed:
        print(f"error: {len(failed)} run(s) did not complete: {', '.join(failed)} (see their train.log)", file=sys.stderr)
        return 1
    return 0


def run_all(matrix_dir: Path, meta: dict, retry_failed: bool = False) -> int:
    n = len(meta["runs"])
    for i, run in enumerate(meta["runs"], 1):
        run_dir = matrix_dir / run["run_id"]
        info = describe(run_dir)
        if is_done(run_dir):
            print(progress_line(i, n, run, info) + "  (kept)", flush=True)
            continue
        if info["status"] == "failed" and not retry_failed:
            print(progress_line(i, n, run, info) + "  (RETRY_FAILED=1 retries it)", flush=True)
            continue
        resume = (run_dir / "checkpoint.pt").exists()
        print(f"[{i}/{n}] {run['run_id']:<40s} {'resuming' if resume else 'running'}...", flush=True)
        execute(run, resume)
        print(progress_line(i, n, run, describe(run_dir)), flush=True)
    return finish(matrix_dir, meta)


# -- commands -------------------------------------------------------------------
def overrides_from(args) -> dict:
    return {"--epochs": args.epochs} if getattr(args, "epochs", None) else {}


def cmd_run(args) -> int:
    values = config.load(os.environ.get("KCONFIG_CONFIG", ".config"))
    results_root = Path(values["RESULTS_DIR"] or "results")
    matrix_id = f"{datetime.now():%Y%m%d-%H%M%S}-{matrix_name(values)}"
    with lock(results_root, matrix_id):
        matrix_dir = results_root / matrix_id
        if matrix_dir.exists():  # ids have one-second resolution
            raise MatrixError(f"{matrix_dir} already exists (a matrix started within the same second); run make again")
        overrides = overrides_from(args)
        runs = plan(values, matrix_dir, overrides)
        matrix_dir.mkdir(parents=True)
        meta = {
            "schema": SCHEMA,
            "id": matrix_id,
            "created": now(),
            "defconfig": matrix_name(values),
            "config": values,
            "config_hash": config.config_hash(values),
            "dot_config": Path(os.environ.get("KCONFIG_CONFIG", ".config")).read_text(),
            "overrides": overrides,
            **provenance(matrix_dir),
            "runs": runs,
        }
        write_json(matrix_dir / MATRIX_FILE, meta)
        print(f"matrix {matrix_id}: {len(runs)} runs -> {matrix_dir}", flush=True)
        return run_all(matrix_dir, meta)


def cmd_continue(args) -> int:
    matrix_dir, meta = open_matrix(args.results)
    config_file = os.environ.get("KCONFIG_CONFIG", ".config")
    if Path(config_file).exists():
        changed = config.diff(meta["config"], config.load(config_file))
        if changed:
            raise MatrixError(
                f"{config_file} changed since {meta['id']} was planned; restore it or start a new matrix with 'make'. "
                f"Changed: {'; '.join(changed)}"
            )
    planned = plan(meta["config"], matrix_dir, meta.get("overrides", {}))
    if [r["run_id"] for r in planned] != [r["run_id"] for r in meta["runs"]]:
        raise MatrixError(f"{matrix_dir}: the planned runs no longer match this version of the harness")
    with lock(matrix_dir.parent, meta["id"]):
        print(f"continuing matrix {meta['id']} ({len(meta['runs'])} runs)", flush=True)
        return run_all(matrix_dir, meta, retry_failed=args.retry_failed)


def cmd_status(args) -> int:
    matrix_dir, meta = open_matrix(args.results)
    alive = runner_alive(matrix_dir.parent, meta["id"])
    print(f"matrix {meta['id']} ({matrix_dir})")
    for i, run in enumerate(meta["runs"], 1):
        info = describe(matrix_dir / run["run_id"])
        info["status"] = live_status(info, alive)
        print(progress_line(i, len(meta["runs"]), run, info))
    return 0


def cmd_dry_run(args) -> int:
    values = config.load(os.environ.get("KCONFIG_CONFIG", ".config"))
    runs = plan(values, Path(values["RESULTS_DIR"] or "results") / "<id>", overrides_from(args))
    for run in runs:
        print(f"{run['run_id']}\n    {' '.join(run['argv'][1:])}")
    print(f"{len(runs)} runs")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "dry-run"):
        s = sub.add_parser(name)
        s.add_argument("--epochs", type=int, help="override every model's epochs (make EPOCHS=N)")
    for name in ("continue", "status"):
        s = sub.add_parser(name)
        s.add_argument("--results", help="matrix directory (default: the newest under the results directory)")
    sub.choices["continue"].add_argument("--retry-failed", action="store_true")
    args = p.parse_args(argv)
    command = {"run": cmd_run, "continue": cmd_continue, "status": cmd_status, "dry-run": cmd_dry_run}[args.command]
    try:
        return command(args)
    except (config.ConfigError, MatrixError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: 'make continue' resumes the matrix", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
