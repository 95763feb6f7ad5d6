"""Benchmark the completed runs of a matrix at inference (make bench-inference).

usage:
  python -m scripts.bench_inference [--results DIR] [--only GLOB] [--force] [--device auto|cpu|cuda]
                                    [--threads N] [--batch N] [--repetitions N] [--warmup N]

For every completed run of the matrix DIR (default: the newest under the
results directory), dense runs first, then the pruned ones in the matrix's
order: lib/inference.py rebuilds its model from run.json and best.pt and
measures it next to the matrix's dense baseline of the same model and
dataset, in one process (parameters, nonzeros, size on disk and
compressed, latency at batch 1, throughput at --batch, peak memory,
validation quality; the compact model of a channel-pruned run, exported as
compact.pt; the 2:4 sparse model of an N:M run where the GPU runs it).
The result goes into the run's metrics.json under "inference"; a run that
already has one is skipped unless --force. --only restricts it to the run
ids matching a glob. Runs that are not completed are listed and left alone.
`make update-graphs` then draws the inference table and figure.
docs/inference.md says how to read them.

Timings are only as quiet as the machine: benchmark while nothing else runs.
The exit status is non-zero when a benchmark failed (each failure is one
line; the other runs are still benchmarked).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

from lib import fs_errors
from lib.results import MatrixError, is_done, open_matrix, read_json


def runs_of(matrix_dir: Path, meta: dict) -> list[Path]:
    """The matrix's run directories: its planned runs in order, then any other run directory in it."""
    planned = [matrix_dir / r["run_id"] for r in meta.get("runs", [])]
    others = sorted(p.parent for p in matrix_dir.glob("*/run.json") if p.parent not in planned)
    return planned + others


def dense_first(run_dirs: list[Path]) -> list[Path]:
    """Dense runs (pruning "none") before the pruned ones, each in its order."""
    def pruning(run_dir: Path) -> str:
        return (read_json(run_dir / "metrics.json") or {}).get("pruning", "")
    return sorted(run_dirs, key=lambda d: pruning(d) != "none")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--results", help="matrix directory (default: the newest under the results directory)")
    p.add_argument("--only", help="benchmark only the run ids matching this glob")
    p.add_argument("--force", action="store_true", help="benchmark runs that already have an inference result again")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--batch", type=int, help="the throughput batch (default: each run's --batch-size)")
    p.add_argument("--repetitions", type=int, default=None, help="timed calls per variant and batch (default: lib.inference.REPETITIONS)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default: lib.inference.WARMUP)")
    args = p.parse_args(argv)
    for name in ("threads", "batch", "repetitions"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup is not None and args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")

    import torch

    from lib import inference  # torch: imported once the flags are known good

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        matrix_dir, meta = open_matrix(args.results)
    except MatrixError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    chosen = [d for d in runs_of(matrix_dir, meta) if not args.only or fnmatch.fnmatch(d.name, args.only)]
    if not chosen:
        print(f"error: no run of {matrix_dir} matches --only {args.only!r}", file=sys.stderr)
        return 2
    options = {"device": args.device, "batch": args.batch,
               "repetitions": args.repetitions or inference.REPETITIONS,
               "warmup": inference.WARMUP if args.warmup is None else args.warmup}
    done = failed = 0
    for run_dir in dense_first(chosen):
        if not is_done(run_dir):
            status = (read_json(run_dir / "run.json") or {}).get("status", "pending")
            print(f"{run_dir.name}: not completed ({status}), left alone")
        elif inference.benchmarked(run_dir) and not args.force:
            print(f"{run_dir.name}: already benchmarked (--force / FORCE=1 measures it again)")
        else:
            try:
                result = inference.bench_run(run_dir, **options)
            except Exception as e:  # one line per failure; the other runs are still benchmarked
                why = fs_errors.explain(e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}"
                print(f"error: {run_dir.name}: {why}", file=sys.stderr, flush=True)
                failed += 1
                continue
            print(f"{run_dir.name}: {inference.summary_line(result)}", flush=True)
            done += 1
    print(f"benchmarked {done} run(s) of {matrix_dir}" + (f", {failed} failed" if failed else "")
          + (f"; draw them: make update-graphs RESULTS={matrix_dir}" if done else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
