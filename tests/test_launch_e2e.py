"""End to end through make: JOBS=2 killed and continued exactly, ONLY, bad execution settings, fake GPU pinning."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import kill_group, wait_until
from lib.results import read_json
from test_runner_e2e import comparable, epochs_done, error_lines, only_matrix, snapshot

pytestmark = pytest.mark.e2e

FOUR_RUNS = """CONFIG_MODEL_LENET5=y
CONFIG_LENET5_EPOCHS={epochs}
CONFIG_LENET5_BATCH_SIZE=64
CONFIG_OPTIMIZER_SGD=y
CONFIG_OPTIMIZER_ADAM=y
CONFIG_PRUNING_NONE=y
CONFIG_PRUNING_MAGNITUDE=y
CONFIG_SPARSITIES="0.5"
CONFIG_MATRIX_AUTO_GRAPHS=n
"""


def status(record_dir: Path) -> str | None:
    return (read_json(record_dir / "run.json") or {}).get("status")


def straight_metrics(root: Path, mdir: Path, run_id: str, threads: int) -> dict:
    """The run's metrics, uninterrupted, from the argv matrix.json planned for it, with `threads` threads."""
    planned = next(r for r in json.loads((mdir / "matrix.json").read_text())["runs"] if r["run_id"] == run_id)
    argv = list(planned["argv"])
    out = root / "straight" / run_id
    argv[argv.index("--output-dir") + 1] = str(out)
    subprocess.run(argv, cwd=root, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return comparable(read_json(out / "metrics.json"))


def test_jobs_2_killed_with_two_runs_in_flight_then_continued_exactly(make):
    root = make.root
    (root / ".config").write_text(FOUR_RUNS.format(epochs=15))
    proc = make.popen("all", "JOBS=2", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: any((root / "results").glob("*/matrix.json")), "matrix.json", proc)
        mdir = only_matrix(root)
        runs = [r["run_id"] for r in read_json(mdir / "matrix.json")["runs"]]
        assert len(runs) == 4
        first, later = runs[:2], runs[2:]
        wait_until(lambda: all(status(mdir / r) == "completed" for r in first), "the first two runs", proc)
        wait_until(lambda: all(epochs_done(mdir / r) >= 2 for r in later), "two epochs of both later runs", proc)
    finally:
        kill_group(proc)  # make, the runner and both trainers at once

    assert all(status(mdir / r) == "running" for r in later)  # both died without a word
    kept = {r: snapshot(mdir / r) for r in first}
    resumed = make("continue", "JOBS=2")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert {r: snapshot(mdir / r) for r in first} == kept  # completed runs untouched, byte for byte
    for r in later:
        record = read_json(mdir / r / "run.json")
        assert record["status"] == "completed" and record["attempt"] == 2 and record["threads"] == 1
        assert int((mdir / r / "train.log").read_text().split("at epoch ")[1].split()[0]) >= 2
    for r in runs:  # every final metric equals an uninterrupted run's with the same threads
        assert comparable(read_json(mdir / r / "metrics.json")) == straight_metrics(root, mdir, r, threads=1), r


def test_only_restricts_run_continue_and_status(make):
    root = make.root
    (root / ".config").write_text(FOUR_RUNS.format(epochs=1))
    result = make("all", "ONLY=*_adam_*")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mdir = only_matrix(root)
    assert sorted(p.name for p in mdir.glob("*/run.json") for p in [p.parent]) == ["lenet5_adam_magnitude_50", "lenet5_adam_none"]
    shown = make("status", "ONLY=lenet5_sgd_*")
    assert shown.returncode == 0 and shown.stdout.count(" pending") == 2 and "adam" not in shown.stdout
    rest = make("continue", "ONLY=lenet5_sgd_none")
    assert rest.returncode == 0 and status(mdir / "lenet5_sgd_none") == "completed"
    assert not (mdir / "lenet5_sgd_magnitude_50" / "run.json").exists()
    nothing = make("all", "ONLY=resnet*")
    assert nothing.returncode == 2 and error_lines(nothing.stderr) == [
        "error: ONLY='resnet*' matches no run of this matrix; 'make dry-run' lists the run ids"
    ]


@pytest.mark.parametrize("setting, message", [
    ("JOBS=0", "error: JOBS='0': give the number of runs at once (1, 2, ...) or auto"),
    ("JOBS=many", "error: JOBS='many': give the number of runs at once (1, 2, ...) or auto"),
    ("SCHEDULER=foo", "error: SCHEDULER='foo' is not a scheduler; valid: local, slurm"),
])
def test_bad_execution_settings_are_one_line_and_write_nothing(make, setting, message):
    (make.root / ".config").write_text(FOUR_RUNS.format(epochs=1))
    result = make("all", setting)
    assert result.returncode != 0 and error_lines(result.stderr) == [message]
    assert not list((make.root / "results").glob("*/matrix.json"))


def test_runs_on_two_fake_gpus_never_share_one_and_a_ddp_run_gets_two(make):
    root = make.root
    (root / ".config").write_text(FOUR_RUNS.format(epochs=2))
    make.env["MATRIX_GPUS"] = "0,1"  # the runner's GPU list; the trainers still train on the CPU (no GPU here)
    result = make("all", "JOBS=4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "only 2 run(s) of 1 GPU(s) fit on 2 GPU(s); running 2 at once" in result.stdout
    records = [read_json(p) for p in sorted(only_matrix(root).glob("*/run.json"))]
    assert len(records) == 4 and {r["visible_devices"] for r in records} == {"0", "1"}
    spans = [(r["visible_devices"], r["started"], r["finished"]) for r in records]
    for dev, start, end in spans:  # ISO times: runs on one device follow each other
        assert all(end <= s2 or e2 <= start for d2, s2, e2 in spans if d2 == dev and (s2, e2) != (start, end))

    (root / ".config").write_text("CONFIG_DDP_PROCS=2\n" + FOUR_RUNS.format(epochs=1).replace("CONFIG_OPTIMIZER_ADAM=y\n", "")
                                  .replace("CONFIG_PRUNING_MAGNITUDE=y\n", ""))
    shutil.rmtree(root / "results")
    ddp = make("all", "JOBS=auto")
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    [record] = [read_json(p) for p in only_matrix(root).glob("*/run.json")]
    assert record["visible_devices"] == "0,1"
