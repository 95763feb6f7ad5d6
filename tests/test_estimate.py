"""scripts.estimate: pace from earlier matrices, the probe, the wall-time arithmetic and the CLI."""

from __future__ import annotations

import os
import shutil
import socket
import sys

import pytest

from conftest import REPO
from lib import config, matrix
from lib.results import RunRecord, write_json
from scripts import estimate

HOST = socket.gethostname()


def lenet5_argv(out: str, *more: str) -> list[str]:
    return [sys.executable, "-m", "lenet5.train", "--dataset", "digits", "--epochs", "12", "--batch-size", "32",
            *more, "--output-dir", out]


def finished_run(matrix_dir, run_id: str, argv: list[str], *, per_epoch: float, started: str, finished: str,
                 threads: int | None = 1, status: str = "completed", attempt: int = 1) -> dict:
    """A run directory as a trainer leaves it: run.json through RunRecord, metrics.json with history and final."""
    run_dir = matrix_dir / run_id
    record = RunRecord(run_dir)
    record.start(run_id, argv, 1)
    record.update(status=status, started=started, finished=finished, attempt=attempt, exit_code=0, threads=threads)
    history = [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 90.0, "sparsity": 0.0, "lr": 0.01,
                "elapsed_s": e * per_epoch} for e in (1, 2, 3)]
    final = {"accuracy": 90.0, "best_accuracy": 90.0, "best_at": 3, "sparsity_prunable": 0.0, "sparsity_global": 0.0,
             "train_time_s": 3 * per_epoch, "peak_memory_mib": 100.0, "params": 10, "nonzero_params": 10}
    write_json(run_dir / "metrics.json", {"schema": 1, "run_id": run_id, "model": "lenet5", "dataset": "digits",
                                          "optimizer": "sgd", "variant": None, "pruning": "none", "target_sparsity": 0.0,
                                          "seed": 1, "history": history, "final": final})
    return {"run_id": run_id, "spec": {"model": "lenet5", "seed": 1}, "argv": argv}


def earlier_matrix(root, name: str, runs: list[dict], host: str = HOST) -> None:
    write_json(root / name / "matrix.json", {"schema": 1, "id": name, "host": host, "runs": runs})


def stamp(seconds: int) -> str:
    return f"2026-01-01T10:{seconds // 60:02d}:{seconds % 60:02d}+00:00"


# -- arithmetic -----------------------------------------------------------------------------------
def test_wall_time_takes_the_runs_in_order_on_the_first_free_worker():
    assert estimate.wall_time([3, 1, 1, 1], 2) == 3
    assert estimate.wall_time([4, 3, 2, 1], 2) == 5  # 4 | 3, then 2 after the 3, 1 after the 4
    assert estimate.wall_time([1, 1, 1], 1) == 3
    assert estimate.wall_time([2, 2], 4) == 2
    assert estimate.wall_time([], 2) == 0


def test_wall_time_counts_the_runs_in_flight():
    assert estimate.wall_time([1], 2, busy=[5]) == 5  # the free worker takes it
    assert estimate.wall_time([1], 1, busy=[5]) == 6
    assert estimate.wall_time([], 1, busy=[2, 7]) == 7  # more in flight than workers: each holds one
    with pytest.raises(ValueError):
        estimate.wall_time([1], 0)


def test_human_durations():
    assert [estimate.human(s) for s in (0, 42, 250, 7500, 3 * 86400 + 4 * 3600)] == ["0s", "42s", "4m 10s", "2h 05m", "3d 04h"]


def test_length_is_the_trained_length_with_the_budget_extension():
    assert estimate.length(lenet5_argv("x")) == ("epoch", 12)
    assert estimate.length(lenet5_argv("x", "--budget-extension", "20")) == ("epoch", 14)
    assert estimate.length([sys.executable, "-m", "gpt2.train", "--max-iters", "150"]) == ("iter", 150)
    with pytest.raises(estimate.MatrixError, match="--epochs nor --max-iters"):
        estimate.length([sys.executable, "-m", "lenet5.train"])


def test_a_run_takes_start_up_plus_length_times_pace_capped_by_max_minutes():
    pace = estimate.Pace(0.5, "epoch", 2.0, "test")
    assert pace.run_seconds(lenet5_argv("x")) == 12 * 0.5 + 2
    gpt2 = [sys.executable, "-m", "gpt2.train", "--max-iters", "1000", "--max-minutes", "1"]
    assert estimate.Pace(1.0, "iter", None, "test").run_seconds(gpt2) == 60


# -- pace from earlier matrices ---------------------------------------------------------------------
def test_history_pace_from_finished_runs_on_this_host_with_the_same_workload(tmp_path):
    root = tmp_path / "results"
    m1 = root / "20260101-100000-a"
    argv = lenet5_argv("x")
    earlier_matrix(root, m1.name, [
        finished_run(m1, "a", argv, per_epoch=1.0, started=stamp(0), finished=stamp(20)),
        finished_run(m1, "b", argv, per_epoch=2.0, started=stamp(27), finished=stamp(47), threads=2),  # start-up 7 s
        finished_run(m1, "c", argv, per_epoch=9.0, started=stamp(50), finished=stamp(60), status="running"),  # not done
        finished_run(m1, "d", lenet5_argv("x", "--compile"), per_epoch=9.0, started=stamp(64), finished=stamp(70)),
    ])
    m2 = root / "20260101-110000-b"  # another machine's
    earlier_matrix(root, m2.name, [finished_run(m2, "a", argv, per_epoch=9.0, started=stamp(0), finished=stamp(9))],
                   host="elsewhere")

    one = estimate.history(root, argv, host=HOST, threads=1)
    assert (one.seconds, one.unit, one.startup) == (1.0, "epoch", 7.0)
    assert one.source == "1 finished run of 1 earlier matrix, 1 thread"
    other = estimate.history(root, argv, host=HOST, threads=4)  # none had 4 threads: every alike run counts
    assert other.seconds == 1.5 and other.source.endswith("other thread counts")
    assert estimate.history(root, lenet5_argv("x", "--batch-size", "64"), host=HOST) is None  # batch size is workload
    assert estimate.history(root, argv, host=HOST, exclude=m1) is None


def test_start_up_only_between_runs_that_did_not_overlap(tmp_path):
    m = tmp_path / "m"
    argv = lenet5_argv("x")
    runs = [
        finished_run(m, "a", argv, per_epoch=1, started=stamp(0), finished=stamp(30)),
        finished_run(m, "b", argv, per_epoch=1, started=stamp(5), finished=stamp(40)),  # beside a: none
        finished_run(m, "c", argv, per_epoch=1, started=stamp(44), finished=stamp(60)),  # 4 s after both ended
        finished_run(m, "d", argv, per_epoch=1, started=stamp(70), finished=stamp(80), attempt=2),  # resumed: none
    ]
    assert estimate.startups(m, runs) == {"c": 4.0}


# -- the probe ---------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_probe_times_one_epoch_of_lenet5(tmp_path):
    argv = lenet5_argv(str(tmp_path / "never"), "--device", "cpu", "--budget-extension", "50")
    pace = estimate.probe(argv, {"OMP_NUM_THREADS": "1"})
    assert pace.unit == "epoch" and pace.seconds > 0 and pace.startup >= 0
    assert pace.source == "probe (1 epoch)"
    assert not (tmp_path / "never").exists()  # the probe trains in a temporary directory


def test_a_failing_probe_says_why(tmp_path):
    with pytest.raises(estimate.ProbeFailed, match="lenet5 probe failed: .*--batch-size must be at least 1"):
        estimate.probe(lenet5_argv(str(tmp_path / "x"), "--batch-size", "0"))


# -- the command line -----------------------------------------------------------------------------------
@pytest.fixture
def quickstart(tmp_path, monkeypatch):
    """The quick-start .config in a temporary directory, run from there."""
    shutil.copy(REPO / "defconfigs" / "quickstart", tmp_path / ".config")
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / ".config"))
    monkeypatch.setenv("MATRIX_GPUS", "")  # no GPU: the slots split the CPU cores
    return config.load(tmp_path / ".config")


def test_cli_table_and_summary_from_earlier_runs(tmp_path, quickstart, capsys):
    root = tmp_path / "results"
    m = root / "20260101-100000-quickstart"
    runs = [finished_run(m, matrix.run_id(s), matrix.argv(s, quickstart, str(m / matrix.run_id(s))), per_epoch=0.5,
                         started=stamp(10 * k + 2), finished=stamp(10 * k + 8)) for k, s in enumerate(matrix.expand(quickstart))]
    earlier_matrix(root, m.name, runs)

    assert estimate.main(["--jobs", "2", "--throttle", "3", "--results-root", str(root)]) == 0
    out = capsys.readouterr().out
    # each run: 12 epochs x 0.5 s + 4 s start-up = 10 s; 9 runs
    assert "lenet5     9  12 epochs   0.5 s/epoch  4.0 s     1m 30s  9 finished runs of 1 earlier matrix" in out
    assert "9 runs: 1m 30s serial; wall 50s with JOBS=2" in out
    assert "30s on Slurm with throttle 3" in out
    assert "list scheduling in the matrix's order" in out


def test_cli_without_pace_or_with_bad_input(tmp_path, quickstart, capsys):
    assert estimate.main(["--no-probe", "--results-root", str(tmp_path / "empty")]) == 1
    out = capsys.readouterr().out
    assert "unknown: no finished run on this host (--no-probe)" in out and "(lenet5 not counted)" in out
    assert estimate.main(["--jobs", "0", "--results-root", str(tmp_path)]) == 2
    assert "error: JOBS='0'" in capsys.readouterr().err
    assert estimate.main(["--throttle", "-1", "--results-root", str(tmp_path)]) == 2
    assert "error: --throttle -1" in capsys.readouterr().err


def test_help_is_the_docstring():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "scripts.estimate", "--help"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ}, check=True).stdout
    assert "list scheduling" in out and "--no-probe" in out
