"""scripts.matrix: continue semantics, log rotation, summary, lock; with a stand-in trainer."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from lib.results import read_json, write_json
from scripts import matrix as runner

# A stand-in for <model>.train: writes the run-directory contract, or fails when told to.
TRAINER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lib.results import RunRecord, write_json
    out = Path(sys.argv[sys.argv.index("--output-dir") + 1])
    out.mkdir(parents=True, exist_ok=True)
    print("args", " ".join(sys.argv[1:]))
    rec = RunRecord(out)
    rec.start(out.name, sys.argv, 1)
    if "--fail" in sys.argv:
        print("error: told to fail", file=sys.stderr)
        rec.finish("failed", 1, "told to fail")
        sys.exit(1)
    write_json(out / "metrics.json", {"history": [{"epoch": 1}], "final": {"accuracy": 90.0, "sparsity_prunable": 0.0, "train_time_s": 1.0}})
    rec.finish("completed", 0)
    """
)


def make_matrix(tmp_path: Path, runs: dict[str, list[str]]) -> tuple[Path, dict]:
    mdir = tmp_path / "results" / "20260101-000000-test"
    mdir.mkdir(parents=True)
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    meta = {
        "id": mdir.name,
        "config": {"MATRIX_AUTO_GRAPHS": False},
        "runs": [
            {"run_id": rid, "spec": {"seed": 1}, "argv": [sys.executable, str(script), *extra, "--output-dir", str(mdir / rid)]}
            for rid, extra in runs.items()
        ],
    }
    write_json(mdir / "matrix.json", meta)
    return mdir, meta


@pytest.fixture(autouse=True)
def repo_on_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(runner.REPO))


def test_continue_keeps_done_resumes_interrupted_skips_failed(tmp_path, capsys):
    mdir, meta = make_matrix(tmp_path, {"done": [], "killed": [], "broken": ["--fail"], "new": []})
    runner.execute(meta["runs"][0], resume=False)
    kept = (mdir / "done" / "metrics.json").read_bytes()
    write_json(mdir / "killed" / "run.json", {"status": "running", "attempt": 1})  # died mid-run
    (mdir / "killed" / "checkpoint.pt").write_bytes(b"x")
    (mdir / "killed" / "train.log").write_text("attempt 1\n")
    runner.execute(meta["runs"][2], resume=False)

    assert runner.run_all(mdir, meta) == 1  # 'broken' is still failed
    out = capsys.readouterr().out
    assert "done" in out and "(kept)" in out and "RETRY_FAILED=1" in out
    assert (mdir / "done" / "metrics.json").read_bytes() == kept
    assert "--resume" in (mdir / "killed" / "train.log").read_text()
    assert (mdir / "killed" / "train.log.1").read_text() == "attempt 1\n"
    assert read_json(mdir / "killed" / "run.json")["attempt"] == 2
    assert read_json(mdir / "new" / "run.json")["status"] == "completed"
    assert read_json(mdir / "broken" / "run.json")["attempt"] == 1  # not retried

    assert runner.run_all(mdir, meta, retry_failed=True) == 1  # retried, fails again
    assert read_json(mdir / "broken" / "run.json")["attempt"] == 2
    assert (mdir / "broken" / "train.log.1").exists()
    assert "| broken | failed |" in (mdir / "summary.md").read_text()


def test_a_trainer_that_dies_silently_is_marked_failed_with_its_last_error(tmp_path):
    mdir, meta = make_matrix(tmp_path, {"crash": []})
    meta["runs"][0]["argv"] = [sys.executable, "-c", "import sys; print('error: out of cheese', file=sys.stderr); sys.exit(3)", "--output-dir", str(mdir / "crash")]
    assert runner.execute(meta["runs"][0], resume=False) == "failed"
    record = read_json(mdir / "crash" / "run.json")
    assert record["exit_code"] == 3 and record["error"] == "error: out of cheese"


def test_lock_refuses_a_second_holder(tmp_path):
    with runner.lock(tmp_path):
        with pytest.raises(runner.MatrixError, match="already running"):
            with runner.lock(tmp_path):
                pass
    with runner.lock(tmp_path):  # released again
        pass


def test_matrix_name_follows_the_defconfig_record(tmp_path, monkeypatch):
    from lib import config

    monkeypatch.chdir(tmp_path)
    values = {"A": 1}
    assert runner.matrix_name(values) == "custom"
    write_json(tmp_path / "build" / "defconfig.json", {"name": "quickstart", "config_hash": config.config_hash(values)})
    assert runner.matrix_name(values) == "quickstart"
    assert runner.matrix_name({"A": 2}) == "custom"


def test_newest_matrix_and_clear_error_when_none(tmp_path):
    with pytest.raises(runner.MatrixError, match="no matrix"):
        runner.newest_matrix(tmp_path)
    for name in ("20260101-000000-a", "20260102-000000-b"):
        write_json(tmp_path / name / "matrix.json", {})
    assert runner.newest_matrix(tmp_path).name == "20260102-000000-b"
