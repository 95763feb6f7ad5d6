"""scripts.matrix: continue semantics, log rotation, summary, lock, status of a killed runner; with stand-ins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lib.results import claim, read_json, write_json
from scripts import launch
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


def run_all(mdir: Path, meta: dict, jobs: int = 1, **options) -> int:
    return runner.run_all(mdir, meta, ("local", launch.slots(jobs, 1, None, 2, 1)), **options)


def run_one(mdir: Path, meta: dict, run_id: str) -> str:
    return launch.run_one(mdir, meta, run_id).status


def test_continue_keeps_done_resumes_interrupted_skips_failed(tmp_path, capsys):
    mdir, meta = make_matrix(tmp_path, {"done": [], "killed": [], "broken": ["--fail"], "new": []})
    run_one(mdir, meta, "done")
    kept = (mdir / "done" / "metrics.json").read_bytes()
    write_json(mdir / "killed" / "run.json", {"status": "running", "attempt": 1})  # died mid-run
    (mdir / "killed" / "checkpoint.pt").write_bytes(b"x")
    (mdir / "killed" / "train.log").write_text("attempt 1\n")
    run_one(mdir, meta, "broken")

    assert run_all(mdir, meta) == 1  # 'broken' is still failed
    out = capsys.readouterr().out
    assert "done" in out and "(kept)" in out and "RETRY_FAILED=1" in out
    assert (mdir / "done" / "metrics.json").read_bytes() == kept
    assert "--resume" in (mdir / "killed" / "train.log").read_text()
    assert (mdir / "killed" / "train.log.1").read_text() == "attempt 1\n"
    assert read_json(mdir / "killed" / "run.json")["attempt"] == 2
    assert read_json(mdir / "new" / "run.json")["status"] == "completed"
    assert read_json(mdir / "broken" / "run.json")["attempt"] == 1  # not retried

    assert run_all(mdir, meta, retry_failed=True) == 1  # retried, fails again
    assert read_json(mdir / "broken" / "run.json")["attempt"] == 2
    assert (mdir / "broken" / "train.log.1").exists()
    assert "| broken | failed |" in (mdir / "summary.md").read_text()


def test_a_trainer_that_dies_silently_is_marked_failed_with_its_last_error(tmp_path):
    mdir, meta = make_matrix(tmp_path, {"crash": []})
    meta["runs"][0]["argv"] = [sys.executable, "-c", "import sys; print('error: out of cheese', file=sys.stderr); sys.exit(3)", "--output-dir", str(mdir / "crash")]
    assert run_one(mdir, meta, "crash") == "failed"
    record = read_json(mdir / "crash" / "run.json")
    assert record["exit_code"] == 3 and record["error"] == "error: out of cheese"


def test_lock_refuses_a_second_holder(tmp_path):
    with runner.lock(tmp_path, "m1"):
        with pytest.raises(runner.MatrixError, match=r"already running .*\(pid \d+ matrix m1\)"):
            with runner.lock(tmp_path, "m2"):
                pass
    with runner.lock(tmp_path, "m2"):  # released again
        pass


# A trainer stand-in: holds a run's claim, marks the run as running, says so, and waits to be killed.
HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lib.results import RunRecord, claim
    run_dir = Path(sys.argv[1])
    fd = claim(run_dir)
    RunRecord(run_dir).start(run_dir.name, [], 1)
    print("holding", flush=True)
    sys.stdin.read()  # until the test kills this process
    """
)


def status_lines(mdir: Path, capsys) -> list[str]:
    assert runner.main(["status", "--results", str(mdir)]) == 0
    return [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]


def test_status_tells_a_killed_runner_from_a_live_one(tmp_path, capsys):
    mdir, meta = make_matrix(tmp_path, {"a": [], "b": []})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(mdir / "a")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"  # blocks until the claim is held and run.json written
        live = status_lines(mdir, capsys)
        assert "] a " in live[0] and live[0].rstrip().endswith("running") and live[1].rstrip().endswith("pending")
    finally:
        holder.kill()  # SIGKILL: no handler runs, run.json keeps saying "running"
        holder.wait()
    assert read_json(mdir / "a" / "run.json")["status"] == "running"
    dead = status_lines(mdir, capsys)
    assert dead[0].rstrip().endswith("interrupted (runner gone)")


def test_only_the_runs_claim_keeps_it_alive_not_the_results_lock(tmp_path, capsys):
    mdir, meta = make_matrix(tmp_path, {"a": []})
    write_json(mdir / "a" / "run.json", {"status": "running", "attempt": 1})  # its trainer was killed
    with runner.lock(mdir.parent, meta["id"]):  # a runner of this matrix (continue) that has not claimed it
        assert status_lines(mdir, capsys)[0].rstrip().endswith("interrupted (runner gone)")
    fd = claim(mdir / "a")
    try:
        assert status_lines(mdir, capsys)[0].rstrip().endswith("running")
        assert claim(mdir / "a") is None  # one process executes a run
    finally:
        os.close(fd)
    assert status_lines(mdir, capsys)[0].rstrip().endswith("interrupted (runner gone)")


def test_matrix_name_follows_the_defconfig_record(tmp_path, monkeypatch):
    from lib import config

    monkeypatch.chdir(tmp_path)
    values = {"A": 1}
    assert runner.matrix_name(values) == "custom"
    write_json(tmp_path / "build" / "defconfig.json", {"name": "quickstart", "config_hash": config.config_hash(values)})
    assert runner.matrix_name(values) == "quickstart"
    assert runner.matrix_name({"A": 2}) == "custom"


def test_a_second_matrix_in_the_same_second_is_refused_not_a_traceback(tmp_path, monkeypatch, capsys):
    from datetime import datetime

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner.config, "load", lambda path: {"RESULTS_DIR": "results"})
    monkeypatch.setattr(runner, "matrix_name", lambda values: "x")
    stamp = datetime(2026, 1, 1, 12, 0, 0)
    monkeypatch.setattr(runner, "datetime", type("Frozen", (), {"now": staticmethod(lambda: stamp)}))
    (tmp_path / "results" / "20260101-120000-x").mkdir(parents=True)
    assert runner.main(["run"]) == 2
    assert "results/20260101-120000-x already exists" in capsys.readouterr().err


@pytest.mark.parametrize("env, gpus, forked", [({}, None, True), ({"MATRIX_FORK": "0"}, None, False), ({}, ("0",), False)])
def test_cpu_runs_are_forked_unless_told_not_to_gpu_runs_never(tmp_path, monkeypatch, env, gpus, forked):
    mdir, meta = make_matrix(tmp_path, {"a": []})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    seen = []
    monkeypatch.setattr(launch.Pool, "run", lambda self, runs: seen.append(self.fork))
    runner.run_all(mdir, meta, ("local", [launch.Slot(0, gpus, 1)]))
    assert seen == [forked]


def test_a_baseline_that_is_no_configuration_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    (tmp_path / ".config").write_text("CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\nCONFIG_PRUNING_NONE=y\n"
                                      f'CONFIG_SEEDS="1 2"\nCONFIG_RESULTS_DIR="{tmp_path / "results"}"\n'
                                      'CONFIG_MATRIX_BASELINE="lenet5_sgd_none_s1"\n')
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / ".config"))
    assert runner.main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: CONFIG_MATRIX_BASELINE='lenet5_sgd_none_s1' is no configuration of this matrix; valid: lenet5_sgd_none"]
    assert not list(tmp_path.glob("results/*/matrix.json"))
