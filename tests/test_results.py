"""lib.results: atomic JSON files, run.json life cycle, the one definition of done."""

from __future__ import annotations

import json

from lib.results import RunRecord, is_done, read_json, write_json


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
    write_json(tmp_path / "metrics.json", {"history": [], "final": {"accuracy": 1.0}})
    assert not is_done(tmp_path)  # still running
    rec.finish("completed", 0)
    assert is_done(tmp_path)
    write_json(tmp_path / "metrics.json", {"history": []})
    assert not is_done(tmp_path)  # no final block
