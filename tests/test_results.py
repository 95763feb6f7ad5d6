"""lib.results: atomic JSON files, run.json life cycle, the one definition of done; matrix directories."""

from __future__ import annotations

import json
import os

import pytest

from lib import results
from lib.results import MatrixError, RunRecord, is_done, read_json, write_json


def test_write_json_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_read_json_tolerates_missing_and_garbage(tmp_path):
    assert read_json(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text('{"half": ')
    assert read_json(tmp_path / "bad.json") is None


def test_run_record_counts_attempts(tmp_path):
    rec = RunRecord(tmp_path)
    rec.start("r", ["a"], 3)
    rec.finish("interrupted", 130, "interrupted")
    rec = RunRecord(tmp_path)
    rec.start("r", ["a", "--resume"], 3)
    data = read_json(tmp_path / "run.json")
    assert data["attempt"] == 2 and data["status"] == "running" and data["finished"] is None
    assert set(data) == {"schema", "run_id", "status", "attempt", "started", "finished", "heartbeat", "exit_code", "error", "argv", "seed"}


def test_done_needs_completed_status_and_a_final_block(tmp_path):
    rec = RunRecord(tmp_path)
    rec.start("r", [], 1)
    final = {"accuracy": 1.0, "sparsity_prunable": 0.0, "train_time_s": 1.0}
    write_json(tmp_path / "metrics.json", {"history": [], "final": final})
    assert not is_done(tmp_path)  # still running
    rec.finish("completed", 0)
    assert is_done(tmp_path)
    write_json(tmp_path / "metrics.json", {"history": [], "final": {"perplexity": 9.0, "sparsity_prunable": 0.0}})
    assert not is_done(tmp_path)  # a final block the readers cannot show
    assert results.describe(tmp_path) == {
        "status": "unreadable", "error": "metrics.json's final block lacks train_time_s; "
                                         "'make continue' writes it again from the run's checkpoint"}
    write_json(tmp_path / "metrics.json", {"history": []})
    assert not is_done(tmp_path)  # no final block


def test_newest_matrix_and_clear_error_when_none(tmp_path):
    with pytest.raises(MatrixError, match="no matrix"):
        results.newest_matrix(tmp_path)
    for name in ("20260101-000000-a", "20260102-000000-b"):
        write_json(tmp_path / name / "matrix.json", {"id": name})
    (tmp_path / "graphs").mkdir()  # not a matrix id: never a candidate
    assert results.newest_matrix(tmp_path).name == "20260102-000000-b"
    assert results.open_matrix(None, tmp_path) == (tmp_path / "20260102-000000-b", {"id": "20260102-000000-b"})
    assert results.open_matrix(tmp_path / "20260101-000000-a")[1] == {"id": "20260101-000000-a"}
    # the newest matrix lost its matrix.json: an error naming it, not a silent fall-back to an older matrix
    (tmp_path / "20260103-000000-c").mkdir()
    with pytest.raises(MatrixError, match="20260103-000000-c/matrix.json is missing or unreadable"):
        results.open_matrix(None, tmp_path)


def test_a_moved_or_copied_matrix_runs_where_it_is_now(tmp_path):
    planned = tmp_path / "results" / "20260101-000000-a"
    runs = [{"run_id": "p", "argv": ["py", "-m", "lenet5.train", "--data-dir", str(tmp_path / "data"),
                                      "--output-dir", str(planned / "p")]},
            {"run_id": "c", "argv": ["py", "-m", "lenet5.train", "--init-from", str(planned / "p" / "best.pt"),
                                      "--output-dir", str(planned / "c")]}]
    write_json(tmp_path / "copy" / "matrix.json", {"id": "a", "runs": runs})
    _, meta = results.open_matrix(tmp_path / "copy")
    assert meta["runs"][0]["argv"][-1] == str(tmp_path / "copy" / "p")
    assert meta["runs"][0]["argv"][4] == str(tmp_path / "data")  # outside the matrix: unchanged
    assert meta["runs"][1]["argv"][4] == str(tmp_path / "copy" / "p" / "best.pt")
    assert read_json(tmp_path / "copy" / "matrix.json")["runs"] == runs  # the record keeps the planned paths
    write_json(planned / "matrix.json", {"id": "a", "runs": runs})
    assert results.open_matrix(planned)[1]["runs"] == runs


def test_open_matrix_defaults_to_the_results_dir_of_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KCONFIG_CONFIG", raising=False)
    write_json(tmp_path / "results" / "20260101-000000-a" / "matrix.json", {"id": "a"})
    assert results.open_matrix()[0].resolve() == tmp_path / "results" / "20260101-000000-a"


def test_describe_and_load_runs_read_a_matrix_directory(tmp_path):
    assert results.describe(tmp_path / "never-started") == {"status": "pending", "error": None}
    RunRecord(tmp_path / "a").start("a", [], 1)
    final = {"accuracy": 90.0, "sparsity_prunable": 0.0, "train_time_s": 1.0}
    write_json(tmp_path / "a" / "metrics.json", {"history": [{"epoch": 1}], "final": final})
    write_json(tmp_path / "b" / "metrics.json", {"history": []})  # nothing to draw yet
    assert results.describe(tmp_path / "a") == {"status": "running", "error": None, **final}
    assert [m["final"] for m in results.load_runs(tmp_path)] == [final]


def test_a_running_run_without_a_live_claim_is_shown_as_interrupted(tmp_path):
    assert not results.claimed(tmp_path / "a")  # no claim file: nobody ever ran it
    fd = results.claim(tmp_path / "a")
    assert results.claimed(tmp_path / "a") and results.claim(tmp_path / "a") is None
    os.close(fd)
    assert not results.claimed(tmp_path / "a") and not results.claimed(tmp_path / "b")
    assert results.live_status({"status": "running"}, alive=True) == "running"
    assert results.live_status({"status": "running"}, alive=False) == "interrupted (runner gone)"
    assert results.live_status({"status": "completed"}, alive=False) == "completed"


def test_load_runs_leaves_out_unreadable_runs_with_a_line(tmp_path, capsys):
    good = {"history": [{"epoch": 1}], "final": {"accuracy": 90.0, "sparsity_prunable": 0.0, "train_time_s": 1.0}}
    write_json(tmp_path / "a" / "metrics.json", good)
    write_json(tmp_path / "b" / "metrics.json", {"history": [{"epoch": 1}], "final": {"accuracy": 90.0}})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metrics.json").write_text('{"history": [')
    write_json(tmp_path / "d" / "metrics.json", {"history": [{"epoch": 1}]})  # still running: drawn
    assert [m.get("final") for m in results.load_runs(tmp_path)] == [good["final"], None]
    assert capsys.readouterr().err.splitlines() == [
        "note: b left out: metrics.json's final block lacks sparsity_prunable, train_time_s",
        "note: c left out: metrics.json does not parse"]
