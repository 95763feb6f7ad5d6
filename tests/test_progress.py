"""scripts.progress: the per-run lines, the plain display (no escape codes) and the live one (rich), and its ETA."""

from __future__ import annotations

import io
import threading

import pytest

from lib.results import RunRecord, describe, write_json
from scripts.progress import Display, MetricsTail, headline, progress_line

EPOCHS = 3


@pytest.fixture
def matrix(tmp_path):
    """A matrix directory of three LeNet-5 runs (the stand-in argv a runner holds) and a way to advance one."""
    mdir = tmp_path / "results" / "20260101-000000-test"
    runs = [
        {"run_id": rid, "spec": {"model": "lenet5", "seed": 1},
         "argv": ["python", "-m", "lenet5.train", "--epochs", str(EPOCHS), "--output-dir", str(mdir / rid)]}
        for rid in ("lenet5_sgd_none", "lenet5_adam_none", "lenet5_adamw_none")
    ]
    write_json(mdir / "matrix.json", {"schema": 1, "id": mdir.name, "host": "test-host", "runs": runs})
    return mdir, runs


def advance(mdir, run: dict, epochs: int, per_epoch: float = 2.0, *, done: bool = False) -> dict:
    """The run's files after `epochs` epochs (metrics.json history; final block and run.json "completed" when done)."""
    run_dir = mdir / run["run_id"]
    record = RunRecord(run_dir)
    if not record.data:
        record.start(run["run_id"], run["argv"], 1)
    history = [{"epoch": e, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 90.0 + e, "sparsity": 0.0, "lr": 0.01,
                "elapsed_s": e * per_epoch} for e in range(1, epochs + 1)]
    metrics = {"schema": 1, "run_id": run["run_id"], "model": "lenet5", "history": history}
    if done:
        metrics["final"] = {"accuracy": 97.77, "best_accuracy": 97.77, "best_at": epochs, "sparsity_prunable": 0.0,
                            "sparsity_global": 0.0, "train_time_s": epochs * per_epoch}
    write_json(run_dir / "metrics.json", metrics)
    if done:
        record.finish("completed", exit_code=0)
    return describe(run_dir)


def test_progress_line_and_headline():
    run = {"run_id": "lenet5_sgd_none"}
    info = {"status": "completed", "accuracy": 97.77, "best_accuracy": 98.0, "sparsity_prunable": 0.5, "train_time_s": 12.3}
    assert headline(info) == ("acc", "%", 97.77, 98.0)
    line = progress_line(2, 9, run, info)
    assert line.startswith("[2/9] lenet5_sgd_none") and "completed" in line and "acc 97.77%  sparsity 50.0%  12.3s" in line
    assert headline({"perplexity": 20.5}) == ("ppl", "", 20.5, None)
    assert progress_line(1, 9, run, {"status": "failed", "error": "boom"}).endswith("failed  boom")


def test_plain_mode_prints_lines_only(matrix):
    mdir, runs = matrix
    out = io.StringIO()  # not a terminal: plain
    display = Display(mdir, runs, stream=out)
    assert display.live is None
    display.skipped(runs[0], advance(mdir, runs[0], EPOCHS, done=True), "kept")
    display.started(runs[1], "1 thread")
    display.started(runs[2], "resuming, 1 thread")
    advance(mdir, runs[1], 1)
    advance(mdir, runs[2], 1)
    display.tick()
    display.finished(runs[1], advance(mdir, runs[1], EPOCHS, done=True))
    display.finished(runs[2], advance(mdir, runs[2], EPOCHS, done=True))
    display.close()

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/3] lenet5_sgd_none") and lines[0].endswith("(kept)")
    assert lines[1] == f"[2/3] {'lenet5_adam_none':<40s} started (1 thread)"
    assert lines[2] == f"[3/3] {'lenet5_adamw_none':<40s} started (resuming, 1 thread)"
    assert lines[3].startswith("[2/3] lenet5_adam_none") and "completed" in lines[3] and "acc 97.77%" in lines[3]
    assert lines[4] == "  2 done, 1 running, 0 failed, 0 left; ETA 4s"  # the other run: 2 epochs left at 2 s each
    assert lines[5].startswith("[3/3] lenet5_adamw_none") and "acc 97.77%" in lines[5]
    assert len(lines) == 6  # no summary once nothing runs or is left
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_a_kind_of_run_warning_is_said_once_per_matrix(matrix):
    mdir, runs = matrix
    out = io.StringIO()
    display = Display(mdir, runs, stream=out)
    for i, run in enumerate(runs[:2]):
        info = advance(mdir, run, EPOCHS, done=True)
        RunRecord(mdir / run["run_id"]).update(warnings=[
            f"tracking: wandb failed in start (CommError: invalid API key, attempt {i}); continuing without it"])
        display.finished(run, info)
    said = [line for line in out.getvalue().splitlines() if line.startswith("warning:")]
    assert said == ["warning: lenet5_sgd_none: tracking: wandb failed in start (CommError: invalid API key, attempt 0); "
                    "continuing without it (said once for this matrix; each run's run.json lists its own)"]


def test_eta_from_the_measured_pace(matrix):
    mdir, runs = matrix
    display = Display(mdir, runs, stream=io.StringIO())
    display.started(runs[0], "1 thread")
    assert display.eta() is None  # no pace yet, here or in an earlier matrix
    advance(mdir, runs[0], 1, per_epoch=2.0)
    # 2 s per epoch: the running run has 2 epochs left (4 s), then the two left take 6 s each on the one worker
    assert display.eta() == pytest.approx(4 + 6 + 6)
    assert display.summary() == "0 done, 1 running, 0 failed, 2 left; ETA 16s"
    display.started(runs[1], "1 thread")  # two at once now: two workers
    advance(mdir, runs[1], 2, per_epoch=2.0)
    assert display.eta() == pytest.approx(2 + 6)  # 4 s | 2 s, then the last run (6 s) on the worker free first
    display.close()


def test_eta_from_an_earlier_matrix_on_this_host(matrix, monkeypatch):
    mdir, runs = matrix
    earlier = mdir.parent / "20250101-000000-old"
    old = [dict(r, argv=[*r["argv"][:-1], str(earlier / r["run_id"])]) for r in runs]
    write_json(earlier / "matrix.json", {"schema": 1, "id": earlier.name, "host": "test-host", "runs": old})
    advance(earlier, old[0], EPOCHS, per_epoch=5.0, done=True)
    monkeypatch.setattr("scripts.progress.socket.gethostname", lambda: "test-host")
    display = Display(mdir, runs, stream=io.StringIO())
    display.skipped(runs[0], describe(mdir / runs[0]["run_id"]), "not selected")
    assert display.count("skipped") == 1
    assert display.eta() == pytest.approx(2 * EPOCHS * 5.0)
    display.close()


def test_live_mode_renders_counts_and_running_rows_without_a_thread(matrix, monkeypatch):
    monkeypatch.setenv("COLUMNS", "140")
    mdir, runs = matrix
    out = io.StringIO()
    threads = threading.active_count()
    display = Display(mdir, runs, stream=out, live=True)
    display.skipped(runs[0], advance(mdir, runs[0], EPOCHS, done=True), "kept")
    display.started(runs[1], "1 thread")
    display.tick()
    assert "starting" in out.getvalue()
    advance(mdir, runs[1], 2)
    display.tick()
    assert threading.active_count() == threads  # no refresh thread: the runner forks trainers
    text = out.getvalue()
    assert "1 done, 1 running, 0 failed, 1 left; ETA" in text
    assert "[2/3]" in text and "lenet5_adam_none" in text and "1 thread" in text
    assert "epoch 2/3" in text and "acc 92.00%" in text
    display.finished(runs[1], advance(mdir, runs[1], EPOCHS, done=True))
    display.close()
    text = out.getvalue()
    assert "(kept)" in text and "acc 97.77%" in text
    assert "\x1b[" in text  # a terminal's cursor movements


def test_metrics_tail_reads_again_only_when_the_file_changed(tmp_path):
    path = tmp_path / "metrics.json"
    tail = MetricsTail(path)
    assert tail.latest() is None
    write_json(path, {"history": [{"epoch": 1}]})
    assert tail.latest() == {"epoch": 1}
    path.with_name("other").write_text("{}")
    stamp = tail.stamp
    assert tail.latest() == {"epoch": 1} and tail.stamp == stamp
    write_json(path, {"history": [{"epoch": 1}, {"epoch": 2, "x": 1}]})
    assert tail.latest() == {"epoch": 2, "x": 1}
