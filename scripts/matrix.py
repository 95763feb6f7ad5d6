"""Run, continue and inspect a test matrix, on this machine or on Slurm.

usage:
  python -m scripts.matrix run [--epochs N] [--jobs N|auto] [--threads N] [--scheduler local|slurm]
                               [--fail-fast] [--only GLOB]
  python -m scripts.matrix continue [--results DIR] [--retry-failed] [same options as run]
  python -m scripts.matrix status [--results DIR] [--only GLOB]
  python -m scripts.matrix cancel [--results DIR]        cancel the matrix's Slurm job arrays
  python -m scripts.matrix dry-run [--epochs N]         print the runs and their command lines

`run` writes matrix.json (config copy and hash, git state, versions, host,
the planned runs with their argv) before the first run, then executes the
runs: locally up to --jobs at once (CONFIG_MATRIX_JOBS; auto: one per GPU,
or per two cores), each pinned to its own GPUs and an equal share of the
CPU threads (scripts/launch.py), or as one Slurm job array
(scripts/slurm.py). A progress display shows what runs; the report's table
(scripts/report.py) ends it (also summary.md). A failed run is recorded and the others carry
on (--fail-fast: no new run starts after a failure); the exit status is
non-zero when any run failed. --only restricts run, continue and status to
the run ids matching a glob.

`continue` reopens the newest matrix (or --results DIR): completed runs are
kept untouched, interrupted runs resume from their checkpoint, runs never
started are started, failed runs are retried only with --retry-failed;
on Slurm it submits only what is neither completed nor queued. It refuses
when .config changed since the matrix was planned (the settings of where
and how many runs execute, MATRIX_JOBS, MATRIX_THREADS, the scheduler and
SLURM_*, may change).

`status` shows each run's record; one whose run.json says "running" while
no process holds its claim is "interrupted (runner gone)": it was killed,
and `continue` resumes it. A fine-tuning run not started yet says which
parent it waits for. On Slurm each line adds its task's state. `dry-run`
prints each run's complete command line, shell-quoted (`<id>` in the output
directory stands for the matrix id a run gets), fine-tuning runs after every
other run, each with its parent.

Only one runner works in a results directory at a time (a lock file), and
one process executes a run (its claim).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path

from lib import config, fs_errors, matrix
from lib.atomic import atomic_open, remove_partial
from lib.results import (
    MATRIX_FILE, SCHEMA, MatrixError, claimed, describe, is_done, live_status, lock, now, open_matrix, read_json,
    set_aside_checkpoint, write_json,
)
from scripts import launch
from scripts.progress import Display, progress_line

REPO = Path(__file__).resolve().parent.parent
SCHEDULERS = ("local", "slurm")


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


def check_flags(values: dict, runs: list[dict]) -> None:
    """Every run's command line passes its trainer's own parser and checks, so a bad value stops the plan, not a run."""
    import importlib

    previous = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = str(matrix.processes(values))  # a trainer checks how its work splits over processes
    try:
        for run in runs:
            argv, model = run["argv"], run["spec"]["model"]
            flags = argv[argv.index(f"{model}.train") + 1 :]
            trainer = importlib.import_module(f"{model}.train")
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    trainer.parse_args(flags[1:] if flags[:1] == ["--"] else flags)
            except SystemExit:
                said = [line for line in err.getvalue().splitlines() if line.strip()]
                reason = said[-1].split(" error: ", 1)[-1] if said else "its trainer refused the flags"
                raise MatrixError(f"{run['run_id']}: {reason} (no run was started)") from None
    finally:
        if previous is None:
            os.environ.pop("WORLD_SIZE", None)
        else:
            os.environ["WORLD_SIZE"] = previous


def check_baseline(values: dict, runs: list[dict]) -> None:
    """CONFIG_MATRIX_BASELINE names a configuration of the matrix (a run id without its seed suffix), or is unset."""
    key = values.get("MATRIX_BASELINE")
    if not key:
        return
    from scripts.evidence import config_key

    planned = list(dict.fromkeys(config_key(r["run_id"], r["spec"]["seed"]) for r in runs))
    if key not in planned:
        raise MatrixError(f"CONFIG_MATRIX_BASELINE={key!r} is no configuration of this matrix; valid: {', '.join(planned)}")


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
    import torch  # the versions; the devices through NVML, so that this process stays fit to fork trainers

    return {
        "git": {"commit": commit, "dirty": dirty, "diff_file": "git.diff" if dirty and diff else None},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "devices": launch.gpu_names() or ["cpu"],
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# -- summary --------------------------------------------------------------------
def finish(matrix_dir: Path, meta: dict, runs: list[dict]) -> int:
    """summary.md and the report's table, the graphs when configured; non-zero when one of `runs` did not complete."""
    from scripts import report  # here, so that status and dry-run do not load numpy and scipy

    table = report.table(matrix_dir)
    with atomic_open(matrix_dir / "summary.md") as f:
        f.write(f"# Matrix {meta['id']}\n\n{table}\n")
    print(f"\n{table}\n\nresults: {matrix_dir}")
    if meta["config"].get("MATRIX_AUTO_GRAPHS"):
        from scripts import graphs  # here, so that status and dry-run do not load matplotlib

        graphs.draw(matrix_dir)
    failed = [r["run_id"] for r in runs if describe(matrix_dir / r["run_id"])["status"] != "completed"]
    if failed:
        print(f"error: {len(failed)} run(s) did not complete: {', '.join(failed)} (see their train.log)", file=sys.stderr)
        return 1
    return 0


def execution(args, config: dict) -> tuple[str, object]:
    """(scheduler, its setting): ("local", the slots) or ("slurm", the array throttle); bad input is a MatrixError."""
    scheduler = args.scheduler or ("slurm" if config.get("MATRIX_SCHEDULER_SLURM") else "local")
    if scheduler not in SCHEDULERS:
        raise MatrixError(f"SCHEDULER={scheduler!r} is not a scheduler; valid: {', '.join(SCHEDULERS)}")
    jobs = launch.parse_jobs(args.jobs or config.get("MATRIX_JOBS") or "1")
    if scheduler == "slurm":
        from scripts import slurm  # only a Slurm matrix needs it

        slurm.check(config)
        return scheduler, 0 if jobs == "auto" else jobs  # auto: no throttle, Slurm decides
    gpus = launch.visible_gpus()
    threads = args.threads if args.threads is not None else config.get("MATRIX_THREADS") or 0
    slots = launch.slots(jobs, matrix.processes(config), gpus if launch.uses_gpus(config, gpus) else None,
                         launch.usable_cpus(), threads)
    return scheduler, slots


def selected(runs: list[dict], only: str | None) -> list[dict]:
    """The runs whose id matches the ONLY glob (all without one); a glob that matches nothing is an error."""
    if not only:
        return runs
    picked = [r for r in runs if fnmatch.fnmatchcase(r["run_id"], only)]
    if not picked:
        raise MatrixError(f"ONLY={only!r} matches no run of this matrix; 'make dry-run' lists the run ids")
    return picked


def unfinished(matrix_dir: Path, runs: list[dict], chosen: list[dict], display, retry_failed: bool,
         busy: set[str] = frozenset(), restart_corrupt: bool = False) -> list[dict]:
    """The runs of `chosen` (ONLY's pick of `runs`) still to execute; the display hears why each other run is left alone.

    A failed run is retried with `retry_failed`, or with `restart_corrupt` when
    it failed because its checkpoint was corrupt (set aside: it starts over).
    """
    out = []
    for run in runs:
        run_dir = matrix_dir / run["run_id"]
        info = describe(run_dir)
        corrupt = info["status"] == "failed" and set_aside_checkpoint(run_dir)
        if run not in chosen:
            display.skipped(run, info, "not in ONLY")
        elif is_done(run_dir):
            display.skipped(run, info, "kept")
        elif info["status"] == "failed" and not retry_failed and not (restart_corrupt and corrupt):
            display.skipped(run, info, "its checkpoint was corrupt and set aside: RESTART_CORRUPT=1 restarts it"
                            if corrupt else "RETRY_FAILED=1 retries it")
        elif run["run_id"] in busy or claimed(run_dir):
            display.skipped(run, info, "already running")
        else:
            out.append(run)
    return out


def run_all(matrix_dir: Path, meta: dict, where: tuple[str, object], *, only: str | None = None,
            retry_failed: bool = False, fail_fast: bool = False, restart_corrupt: bool = False) -> int:
    """Execute the matrix's unfinished runs (those `only` selects) where `execution()` said; locally, then the summary."""
    scheduler, setting = where
    runs = selected(meta["runs"], only)
    if scheduler == "slurm":
        from scripts import slurm

        display = Display(matrix_dir, meta["runs"], live=False)
        pending = unfinished(matrix_dir, meta["runs"], runs, display, retry_failed, slurm.active(matrix_dir), restart_corrupt)
        return slurm.submit(matrix_dir, meta, [r["run_id"] for r in pending], setting) if pending else 0
    display = Display(matrix_dir, meta["runs"])
    try:
        pending = unfinished(matrix_dir, meta["runs"], runs, display, retry_failed, restart_corrupt=restart_corrupt)
        fork = not any(s.gpus for s in setting) and os.environ.get(launch.FORK_ENV) != "0"
        print(f"{len(pending)} to run, {len(setting)} at once ({setting[0].describe()} each)", flush=True)
        launch.Pool(setting, display, fail_fast=fail_fast, fork=fork).run(pending)
    finally:
        display.close()
    return finish(matrix_dir, meta, runs)


# -- commands -------------------------------------------------------------------
def overrides_from(args) -> dict:
    return {"--epochs": args.epochs} if getattr(args, "epochs", None) is not None else {}


def positive_int(text: str) -> int:
    """An override that counts something (EPOCHS): a whole number >= 1, refused before any run starts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def execution_symbol(name: str) -> bool:
    """A symbol that says where and how many runs execute, never what a run computes: free to change between run and continue."""
    return name.startswith(("MATRIX_JOBS", "MATRIX_THREADS", "MATRIX_SCHEDULER", "SLURM_"))


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
        selected(runs, args.only)
        check_baseline(values, runs)
        check_flags(values, runs)
        where = execution(args, values)  # bad input stops here, before the matrix directory exists
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
        try:
            write_json(matrix_dir / MATRIX_FILE, meta)
        except OSError:  # a full or read-only disk: leave no matrix directory without its matrix.json behind
            shutil.rmtree(matrix_dir, ignore_errors=True)
            raise
        print(f"matrix {matrix_id}: {len(runs)} runs -> {matrix_dir}", flush=True)
        return run_all(matrix_dir, meta, where, only=args.only, retry_failed=args.retry_failed, fail_fast=args.fail_fast)


def cmd_continue(args) -> int:
    matrix_dir, meta = open_matrix(args.results)
    config_file = os.environ.get("KCONFIG_CONFIG", ".config")
    values = dict(meta["config"])
    if Path(config_file).exists():
        current = config.load(config_file)
        changed = config.diff({k: v for k, v in meta["config"].items() if not execution_symbol(k)},
                              {k: v for k, v in current.items() if not execution_symbol(k)})
        if changed:
            raise MatrixError(
                f"{config_file} changed since {meta['id']} was planned; restore it or start a new matrix with 'make'. "
                f"Changed: {'; '.join(changed)}"
            )
        values.update({k: v for k, v in current.items() if execution_symbol(k)})  # JOBS, scheduler: as .config says now
        meta = {**meta, "config": values}  # what the submission reads (matrix.json keeps the planned copy)
    planned = plan(meta["config"], matrix_dir, meta.get("overrides", {}))
    if [r["run_id"] for r in planned] != [r["run_id"] for r in meta["runs"]]:
        raise MatrixError(f"{matrix_dir}: the planned runs no longer match this version of the harness")
    selected(meta["runs"], args.only)
    where = execution(args, values)
    with lock(matrix_dir.parent, meta["id"]):
        remove_partial(matrix_dir)  # matrix.json's leftovers; each run's own are removed when it starts
        print(f"continuing matrix {meta['id']} ({len(meta['runs'])} runs)", flush=True)
        return run_all(matrix_dir, meta, where, only=args.only, retry_failed=args.retry_failed, fail_fast=args.fail_fast,
                       restart_corrupt=args.restart_corrupt)


def cmd_status(args) -> int:
    matrix_dir, meta = open_matrix(args.results)
    slurm_states = {}
    if (matrix_dir / "slurm").is_dir():
        from scripts import slurm

        try:
            slurm_states = slurm.task_states(matrix_dir)
        except MatrixError as e:  # results read away from the cluster: run.json alone
            print(f"note: no Slurm states ({e})")
    print(f"matrix {meta['id']} ({matrix_dir})")
    runs = selected(meta["runs"], args.only)
    unreadable = []
    for run in runs:
        run_dir = matrix_dir / run["run_id"]
        info = describe(run_dir)
        info["status"] = live_status(info, claimed(run_dir))
        if info["status"] == "unreadable":
            unreadable.append(run["run_id"])
        parent = run["spec"].get("parent")
        if info["status"] == "pending" and parent and not is_done(matrix_dir / parent):
            info["error"] = f"waits for parent {parent} ({live_status(describe(matrix_dir / parent), claimed(matrix_dir / parent))})"
        line = progress_line(meta["runs"].index(run) + 1, len(meta["runs"]), run, info)
        state = slurm_states.get(run["run_id"])
        print(f"{line}  [slurm: {state.lower()}]" if state else line)
    if unreadable:  # every other run was shown; the exit status says that a file needs 'make continue'
        print(f"error: {len(unreadable)} run(s) with unreadable files: {', '.join(unreadable)}; "
              "'make continue' writes them again from their checkpoints", file=sys.stderr)
        return 1
    return 0


def cmd_cancel(args) -> int:
    matrix_dir, _ = open_matrix(args.results)
    if not (matrix_dir / "slurm").is_dir():
        raise MatrixError(f"{matrix_dir} was not submitted to Slurm; a local matrix stops with Ctrl-C")
    from scripts import slurm

    return slurm.cancel(matrix_dir)


def cmd_dry_run(args) -> int:
    values = config.load(os.environ.get("KCONFIG_CONFIG", ".config"))
    runs = plan(values, Path(values["RESULTS_DIR"] or "results") / "<id>", overrides_from(args))
    check_flags(values, runs)
    for run in runs:
        parent = run["spec"].get("parent")
        print(f"{run['run_id']}{f'  (after {parent})' if parent else ''}\n    {shlex.join(run['argv'])}")
    print(f"{len(runs)} runs")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    commands = {"run": cmd_run, "continue": cmd_continue, "status": cmd_status, "dry-run": cmd_dry_run,
                "cancel": cmd_cancel}
    parsers = {name: sub.add_parser(name) for name in commands}
    for name in ("run", "dry-run"):
        parsers[name].add_argument("--epochs", type=positive_int, help="override every model's epochs (make EPOCHS=N, N >= 1)")
    for name in ("continue", "status", "cancel"):
        parsers[name].add_argument("--results", help="matrix directory (default: the newest under the results directory)")
    for name in ("run", "continue"):
        s = parsers[name]
        s.add_argument("--jobs", help="runs at once: a number or auto (make JOBS=; default CONFIG_MATRIX_JOBS)")
        s.add_argument("--threads", type=int, help="CPU threads per run, 0 = split the cores (make THREADS=)")
        s.add_argument("--scheduler", help=f"one of {', '.join(SCHEDULERS)} (make SCHEDULER=; default CONFIG_MATRIX_SCHEDULER)")
        s.add_argument("--fail-fast", action="store_true", help="start no new run after the first failure (make FAIL_FAST=1)")
        s.add_argument("--retry-failed", action="store_true", default=False,
                       help="rerun failed runs (make RETRY_FAILED=1)" if name == "continue" else argparse.SUPPRESS)
    parsers["continue"].add_argument("--restart-corrupt", action="store_true",
                                     help="restart from the beginning the runs whose checkpoint was corrupt (set aside; make RESTART_CORRUPT=1)")
    for name in ("run", "continue", "status"):
        parsers[name].add_argument("--only", help="only the run ids matching this glob (make ONLY='*_adamw_*')")
    args = p.parse_args(argv)
    try:
        return commands[args.command](args)
    except (config.ConfigError, MatrixError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only, full or unreadable results directory
        print(f"error: {fs_errors.explain(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: 'make continue' resumes the matrix", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
