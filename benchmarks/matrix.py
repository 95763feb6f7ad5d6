"""The quick start's wall time with one and with two runs at once, and the harness's efficiency, in one run.

    python -m benchmarks.matrix [--defconfig quickstart] [--epochs N] [--keep]

In a temporary copy of the repository (the checkout is left alone) the
matrix of `--defconfig` (graphs off) runs three times, one after another:

  jobs1   JOBS=1, THREADS=1
  jobs2   JOBS=2, THREADS=1        the same threads per run as jobs1
  serial  JOBS=1, default threads  (all cores for the one run)
  fresh   as jobs1, but every run a fresh process (MATRIX_FORK=0: no fork server)

and prints, for each, the wall time of `python -m scripts.matrix run`
(start-up, planning and summary included), the sum of its runs' training
time (metrics.json's train_time_s: the first epoch's start to the last
evaluation), and the harness efficiency = training / wall. Then the wall
ratio jobs2 / jobs1 and whether every run's final metrics (history and
final block without times and memory) are identical between jobs1 and
jobs2. Figures go to benchmarks/RESULTS.md with the date, commit and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {
    "jobs1": ["--jobs", "1", "--threads", "1"],
    "jobs2": ["--jobs", "2", "--threads", "1"],
    "serial": ["--jobs", "1"],
    "fresh": ["--jobs", "1", "--threads", "1"],  # with MATRIX_FORK=0: no fork server
}
ENV = {"fresh": {"MATRIX_FORK": "0"}}


def copy_repository(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the checkout, as a clone would have them."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


MEASURED = ("train_time_s", "peak_memory_mib", "samples_per_s", "tokens_per_s")  # not computed: differ between processes


def comparable(metrics: dict) -> dict:
    history = [{k: v for k, v in h.items() if k != "elapsed_s"} for h in metrics["history"]]
    final = {k: v for k, v in metrics["final"].items() if k not in MEASURED}
    return {"history": history, "final": final}


def run_matrix(root: Path, options: list[str], epochs: int | None, env: dict) -> tuple[float, dict]:
    """(wall seconds of the runner, {run id: metrics.json}) of one matrix in `root`."""
    before = set((root / "results").glob("*/matrix.json"))
    argv = [sys.executable, "-m", "scripts.matrix", "run", *options, *(["--epochs", str(epochs)] if epochs else [])]
    start = time.monotonic()
    result = subprocess.run(argv, cwd=root, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.monotonic() - start
    if result.returncode:
        sys.exit(f"error: {' '.join(argv[2:])} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    [new] = set((root / "results").glob("*/matrix.json")) - before
    runs = json.loads(new.read_text())["runs"]
    return wall, {r["run_id"]: json.loads((new.parent / r["run_id"] / "metrics.json").read_text()) for r in runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--defconfig", default="quickstart", help="the matrix to run")
    p.add_argument("--epochs", type=int, help="override every run's epochs (shorter runs: more start-up per run)")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy and print where it is")
    args = p.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    try:
        copy_repository(root)
        source = (root / "defconfigs" / args.defconfig).read_text()
        (root / "defconfigs" / "bench").write_text(source + "CONFIG_MATRIX_AUTO_GRAPHS=n\n")
        subprocess.run([sys.executable, "-m", "scripts.defconfig", "bench"], cwd=root, check=True, capture_output=True)
        measured = {name: run_matrix(root, options, args.epochs, ENV.get(name, {})) for name, options in SETTINGS.items()}
    finally:
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"{args.defconfig}: {len(measured['jobs1'][1])} runs, {os.cpu_count()} CPUs\n")
    print(f"{'setting':<8s} {'options':<28s} {'wall s':>8s} {'train s':>8s} {'efficiency':>10s}")
    for name, (wall, metrics) in measured.items():
        train = sum(m["final"]["train_time_s"] for m in metrics.values())
        print(f"{name:<8s} {' '.join(SETTINGS[name]):<28s} {wall:8.1f} {train:8.1f} {train / wall:10.2f}")
    (wall1, m1), (wall2, m2) = measured["jobs1"], measured["jobs2"]
    same = [rid for rid in m1 if comparable(m1[rid]) == comparable(m2[rid])]
    print(f"\nwall jobs2 / jobs1: {wall2 / wall1:.2f}; wall fresh / jobs1: {measured['fresh'][0] / wall1:.2f}")
    print(f"final metrics identical between jobs1 and jobs2: {len(same)}/{len(m1)} runs")
    return 0 if len(same) == len(m1) else 1


if __name__ == "__main__":
    sys.exit(main())
