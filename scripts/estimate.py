"""Expected wall time of the matrix that .config describes, from measured pace.

usage: python -m scripts.estimate [--jobs N|auto] [--throttle N] [--results-root DIR] [--no-probe]

Each model of the matrix gets a pace (seconds per epoch; per iteration for
GPT-2) and a start-up (seconds per run outside the run's own clock: process
start, imports, data loading), taken from
  - finished runs of earlier matrices under the results root on this host
    with the same workload (dataset, batch size, image or model size,
    device, precision, processes; see WORKLOAD_FLAGS), preferring runs that
    had the same CPU threads as a run of this matrix gets; else
  - a probe: the model's first run of the matrix, cut to one epoch (GPT-2:
    10 iterations), trained in a temporary directory and timed. It includes
    one-time costs (torch.compile, cuDNN tuning) that a full run spreads
    thinner, so it errs high for such runs. --no-probe skips it.
A run takes start-up + length x pace (its trained length, budget extension
included; GPT-2's --max-minutes caps it). The serial time is their sum; the
wall time gives each run, in the matrix's order, to the first worker that
is free (list scheduling): --jobs workers on this machine (default
CONFIG_MATRIX_JOBS; the runner's slots, so GPUs and threads split as `make`
splits them), and --throttle array tasks at once on Slurm (default: the
jobs count; with JOBS=auto no throttle). Slurm's queue wait is not included.
"""

from __future__ import annotations

import argparse
import heapq
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lib.results import MATRIX_FILE, MatrixError, is_done, read_json

REPO = Path(__file__).resolve().parent.parent
UNITS = {"--epochs": "epoch", "--max-iters": "iter"}  # the flag that sets a run's length -> its history key
UNIT_WORDS = {"epoch": "epoch", "iter": "iteration"}
# The flags that decide how long one unit of training takes; runs that agree on all of them share a pace.
WORKLOAD_FLAGS = (
    "--nproc_per_node", "--device", "--amp", "--compile", "--workers", "--dataset", "--image-folder", "--text-file",
    "--image-size", "--stem", "--train-samples", "--batch-size", "--model-size", "--block-size", "--grad-accum",
    "--eval-interval", "--eval-iters",
)
PROBE_ITERS = 10  # GPT-2 probe length


class ProbeFailed(Exception):
    """A probe run did not finish; the message says why (the trainer's error line)."""


# -- a run's command line -----------------------------------------------------------
def flag(argv: list[str], name: str) -> str | bool | None:
    """The value of `name` in `argv` (its last, as argparse takes it): its word, True for a bare switch, None when absent."""
    if name not in argv:
        return None
    i = _last(argv, name)
    return argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else True


def _last(argv: list[str], name: str) -> int:
    return len(argv) - 1 - argv[::-1].index(name)


def model_of(argv: list[str]) -> str | None:
    """The model a run trains: `<model>` of `-m <model>.train` (None for another command)."""
    return next((a.split(".")[0] for a in argv if a.endswith(".train")), None)


def length(argv: list[str]) -> tuple[str, int]:
    """(history unit, units the run trains): --epochs or --max-iters, lengthened by --budget-extension."""
    from lib.pruning.budget import extend  # the trainers' own rounding

    for name, unit in UNITS.items():
        if flag(argv, name) is not None:
            return unit, extend(int(flag(argv, name)), float(flag(argv, "--budget-extension") or 0))
    raise MatrixError(f"{' '.join(argv)}: sets neither {' nor '.join(UNITS)}, so its length is unknown")


def workload(argv: list[str]) -> tuple:
    return (model_of(argv), *((name, flag(argv, name)) for name in WORKLOAD_FLAGS))


# -- pace ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pace:
    """Seconds per unit of training and per run's start-up (None: not measured), and where they came from."""

    seconds: float
    unit: str
    startup: float | None
    source: str

    def run_seconds(self, argv: list[str]) -> float:
        """Expected wall time of one run with this pace."""
        _, units = length(argv)
        train = units * self.seconds
        cap = float(flag(argv, "--max-minutes") or 0)
        return (min(train, 60 * cap) if cap > 0 else train) + (self.startup or 0.0)


def seconds_per_unit(metrics: dict) -> tuple[str, float] | None:
    """(unit, elapsed seconds per unit) at the last history entry of a metrics.json."""
    history = (metrics or {}).get("history") or []
    if not history:
        return None
    last = history[-1]
    unit = "epoch" if "epoch" in last else "iter"
    return (unit, last["elapsed_s"] / last[unit]) if last.get(unit) and "elapsed_s" in last else None


def _time(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def startups(matrix_dir: Path, runs: list[dict]) -> dict[str, float]:
    """Run id -> seconds between the end of the previous run and its own start, for runs nothing ran beside.

    A run's clock (run.json "started") starts once its process has imported,
    loaded its data and built its model; when no other run of the matrix was
    in flight then, the time since the last one finished is that start-up.
    Runs of a parallel matrix overlap and give none.
    """
    spans = []
    for run in runs:
        record = read_json(matrix_dir / run["run_id"] / "run.json") or {}
        start, end = _time(record.get("started")), _time(record.get("finished"))
        if start is not None and end is not None and record.get("attempt") == 1:
            spans.append((start, end, run["run_id"]))
    out, latest = {}, None  # latest: when the last of the runs started before ended
    for start, end, run_id in sorted(spans):
        if latest is not None and latest <= start:
            out[run_id] = start - latest
        latest = end if latest is None else max(latest, end)
    return out


def history(results_root: str | os.PathLike, argv: list[str], *, host: str, threads: int | None = None,
            exclude: Path | None = None) -> Pace | None:
    """The pace of `argv`'s workload from completed runs of earlier matrices on `host`, or None without any."""
    samples, gaps, matrices = [], [], set()  # samples: (seconds per unit, unit, threads)
    key = workload(argv)
    for path in sorted(Path(results_root).glob(f"*/{MATRIX_FILE}")):
        matrix_dir = path.parent
        meta = read_json(path) or {}
        if meta.get("host") != host or (exclude is not None and matrix_dir.resolve() == Path(exclude).resolve()):
            continue
        alike = [r for r in meta.get("runs", []) if workload(r["argv"]) == key and is_done(matrix_dir / r["run_id"])]
        for run in alike:
            pace = seconds_per_unit(read_json(matrix_dir / run["run_id"] / "metrics.json"))
            if pace:
                record = read_json(matrix_dir / run["run_id"] / "run.json") or {}
                samples.append((pace[1], pace[0], record.get("threads")))
                matrices.add(matrix_dir)
        if alike:
            ids = {r["run_id"] for r in alike}
            gaps += [g for run_id, g in startups(matrix_dir, meta["runs"]).items() if run_id in ids]
    if not samples:
        return None
    same = [s for s in samples if threads is not None and s[2] == threads]
    used = same or samples
    note = f", {threads} thread{'s' if threads != 1 else ''}" if same else (", other thread counts" if threads else "")
    return Pace(
        seconds=statistics.median(s[0] for s in used),
        unit=used[0][1],
        startup=statistics.median(gaps) if gaps else None,
        source=f"{len(used)} finished run{'s' if len(used) != 1 else ''} of {len(matrices)} earlier matri"
               f"{'ces' if len(matrices) != 1 else 'x'}{note}",
    )


def _set(argv: list[str], name: str, value: str) -> list[str]:
    argv = list(argv)
    if name in argv:
        argv[_last(argv, name) + 1] = value
    else:
        argv += [name, value]
    return argv


def probe(argv: list[str], env: dict[str, str] | None = None) -> Pace:
    """Time `argv` cut to one epoch (or PROBE_ITERS iterations) in a temporary directory; `env`: the slot's."""
    unit, _ = length(argv)
    with tempfile.TemporaryDirectory(prefix="estimate-") as out:
        cut = _set(_set(_set(argv, "--output-dir", out), "--budget-extension", "0"), "--tracker", "none")
        if unit == "epoch":
            cut, what = _set(cut, "--epochs", "1"), "1 epoch"
        else:
            iters = str(min(PROBE_ITERS, length(argv)[1]))
            cut, what = _set(_set(_set(cut, "--max-iters", iters), "--eval-interval", iters), "--max-minutes", "0"), f"{iters} iterations"
        print(f"probing {model_of(argv)}: {what} of its first run ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        done = subprocess.run(cut, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True)
        wall = time.monotonic() - began
        metrics = read_json(Path(out) / "metrics.json") or {}
    if done.returncode or not metrics.get("final"):
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else f"exit status {done.returncode}")
        raise ProbeFailed(f"the {model_of(argv)} probe failed: {why}")
    last, final = metrics["history"][-1], metrics["final"]
    seconds = last["elapsed_s"] / last[unit]
    if unit == "iter" and final.get("tokens_per_s"):
        # The probe evaluates once in its few iterations; the run once every --eval-interval.
        train = final["tokens"] / final["tokens_per_s"]
        every = int(flag(argv, "--eval-interval") or last[unit])
        seconds = train / last[unit] + (last["elapsed_s"] - train) / every
    return Pace(seconds, unit, max(0.0, wall - last["elapsed_s"]), f"probe ({what})")


# -- wall time -----------------------------------------------------------------------------
def wall_time(durations: list[float], workers: int, busy: list[float] = ()) -> float:
    """Seconds until `durations` are all done on `workers` workers, each taken in order by the first free worker.

    `busy`: the seconds left of runs already in flight (each holds a worker).
    """
    free = sorted(list(busy) + [0.0] * max(0, workers - len(busy)))
    if not free:
        raise ValueError("wall_time needs at least one worker")
    heapq.heapify(free)
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def human(seconds: float) -> str:
    """A duration as a person reads it: 42s, 4m 10s, 2h 05m, 3d 04h."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


# -- the configured matrix ------------------------------------------------------------------
def planned(values: dict, results_root: Path) -> list[dict]:
    """The configured matrix's runs (the runner's expansion and command lines)."""
    from lib import matrix

    return [
        {"run_id": matrix.run_id(s), "spec": s.to_dict(), "argv": matrix.argv(s, values, str(results_root / "estimate" / matrix.run_id(s)))}
        for s in matrix.expand(values)
    ]


def report(runs: list[dict], paces: dict[str, Pace | str], workers: int, threads: int, throttle: int, jobs) -> tuple[str, bool]:
    """The table per model and the summary line; whether every model has a pace."""
    rows = [("model", "runs", "length/run", "pace", "start-up", "serial", "source")]
    serial, durations = 0.0, []
    for model, pace in paces.items():
        mine = [r for r in runs if r["spec"]["model"] == model]
        lengths = sorted({length(r["argv"])[1] for r in mine})
        unit = UNIT_WORDS[length(mine[0]["argv"])[0]]
        span = f"{lengths[0]}" if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
        if isinstance(pace, str):
            rows.append((model, str(len(mine)), f"{span} {unit}s", "-", "-", "-", pace))
            continue
        seconds = [pace.run_seconds(r["argv"]) for r in mine]
        serial += sum(seconds)
        rows.append((model, str(len(mine)), f"{span} {unit}s", f"{pace.seconds:.3g} s/{unit}",
                     "-" if pace.startup is None else f"{pace.startup:.1f} s", human(sum(seconds)), pace.source))
    for run in runs:
        pace = paces[run["spec"]["model"]]
        durations.append(pace.run_seconds(run["argv"]) if isinstance(pace, Pace) else 0.0)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.rjust(w) if i == 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows)
    missing = [m for m, pace in paces.items() if isinstance(pace, str)]
    slurm = f"throttle {throttle}" if throttle else "no throttle"
    uncounted = f" ({', '.join(missing)} not counted)" if missing else ""
    summary = (f"{len(runs)} runs{uncounted}: {human(serial)} serial; "
               f"wall {human(wall_time(durations, workers))} with JOBS={jobs} ({threads} thread{'s' if threads != 1 else ''} per run), "
               f"{human(wall_time(durations, throttle or len(durations)))} on Slurm with {slurm} "
               "(list scheduling in the matrix's order; Slurm's queue wait not included)")
    return f"{table}\n{summary}", not missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", help="runs at once on this machine: a number or auto (make JOBS=; default CONFIG_MATRIX_JOBS)")
    p.add_argument("--throttle", type=int, help="Slurm array tasks at once (default: the jobs count)")
    p.add_argument("--results-root", help="where earlier matrices are (default: CONFIG_RESULTS_DIR)")
    p.add_argument("--no-probe", action="store_true", help="never probe: models without earlier runs stay unknown")
    args = p.parse_args(argv)
    from lib import config, matrix
    from scripts import launch

    try:
        values = config.load(os.environ.get("KCONFIG_CONFIG", ".config"))
        results_root = Path(args.results_root or values.get("RESULTS_DIR") or "results")
        runs = planned(values, results_root)
        jobs = launch.parse_jobs(args.jobs or values.get("MATRIX_JOBS") or "1")
        if args.throttle is not None and args.throttle < 0:
            raise MatrixError(f"--throttle {args.throttle}: give the array tasks at once (1, 2, ...), or 0 for none")
        throttle = args.throttle if args.throttle is not None else (0 if jobs == "auto" else jobs)
        gpus = launch.visible_gpus()
        slots = launch.slots(jobs, matrix.processes(values), gpus if launch.uses_gpus(values, gpus) else None,
                             launch.usable_cpus(), values.get("MATRIX_THREADS") or 0)
    except (config.ConfigError, MatrixError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    host, threads = socket.gethostname(), slots[0].threads
    paces: dict[str, Pace | str] = {}
    for model in dict.fromkeys(r["spec"]["model"] for r in runs):
        first = next(r for r in runs if r["spec"]["model"] == model)
        found = history(results_root, first["argv"], host=host, threads=threads)
        if found is None and not args.no_probe:
            try:
                found = probe(first["argv"], slots[0].env())
            except ProbeFailed as e:
                found = str(e)
        paces[model] = found or "unknown: no finished run on this host (--no-probe)"
    print(f"the matrix of {os.environ.get('KCONFIG_CONFIG', '.config')} on {host}")
    text, complete = report(runs, paces, len(slots), threads, throttle, jobs)
    print(text)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
