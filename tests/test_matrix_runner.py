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


def test_an_attempt_killed_during_start_up_is_counted(tmp_path):
    mdir, meta = make_matrix(tmp_path, {"r": []})
    write_json(mdir / "r" / "run.json", {"run_id": "r", "status": "interrupted", "attempt": 1, "error": "stopped by SIGTERM"})
    meta["runs"][0]["argv"] = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                               "--output-dir", str(mdir / "r")]
    assert run_one(mdir, meta, "r") == "interrupted"
    record = read_json(mdir / "r" / "run.json")
    assert record["attempt"] == 2 and record["exit_code"] == -9 and record["error"] == "exit status -9"


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


def test_dry_run_prints_complete_quoted_command_lines_and_refuses_a_bad_epochs(tmp_path, monkeypatch, capsys):
    import shlex

    results = tmp_path / "my results"
    (tmp_path / ".config").write_text("CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\nCONFIG_PRUNING_NONE=y\n"
                                      f'CONFIG_RESULTS_DIR="{results}"\n')
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / ".config"))
    assert runner.main(["dry-run", "--epochs", "2"]) == 0
    command = capsys.readouterr().out.splitlines()[1]
    argv = shlex.split(command)  # pasteable: the interpreter first, the path with a space one word
    assert argv[:3] == [sys.executable, "-m", "lenet5.train"]
    assert argv[argv.index("--epochs") + 1] == "2" and argv[-1] == str(results / "<id>" / "lenet5_sgd_none")
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as stop:
            runner.main(["dry-run", "--epochs", bad])
        assert stop.value.code == 2 and "--epochs" in capsys.readouterr().err


def top_level_env() -> dict:
    """The environment of a make typed at a shell: none of the MAKE* variables of the make running the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "KCONFIG_"))}


@pytest.mark.parametrize("target", ["status", "continue", "update-graphs", "bench-inference"])
def test_make_passes_a_results_path_with_spaces_and_quotes_as_one_word(target):
    import shlex

    path = "results/my matrix's copy"
    out = subprocess.run(["make", "-n", "--no-print-directory", target, f"RESULTS={path}", "ONLY=lenet5 *", "PYTHON=python3"],
                         cwd=runner.REPO, capture_output=True, text=True, check=True, env=top_level_env()).stdout
    argv = shlex.split(out.strip().splitlines()[-1])
    assert argv[argv.index("--results") + 1] == path and argv.count(path) == 1
    if "--only" in argv:
        assert argv[argv.index("--only") + 1] == "lenet5 *"


def test_tracker_on_a_target_that_does_not_read_it_is_an_error_not_ignored():
    def make_n(*args):
        return subprocess.run(["make", "-n", "--no-print-directory", *args, "PYTHON=python3"], cwd=runner.REPO,
                              env=top_level_env(), capture_output=True, text=True)

    for goal in ([], ["continue"], ["status"]):
        refused = make_n(*goal, "TRACKER=foo")
        assert refused.returncode == 2 and "TRACKER=foo is read only by 'make defconfig" in refused.stderr
    assert make_n("defconfig-lenet5", "TRACKER=wandb").returncode == 0
    assert make_n("quickstart", "TRACKER=wandb").returncode == 0  # the sub-make that runs it inherits the variable


def test_a_value_a_trainer_would_refuse_stops_the_plan_before_any_run(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    (tmp_path / ".config").write_text("CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\nCONFIG_PRUNING_NONE=y\n"
                                      f'CONFIG_RESULTS_DIR="{results}"\nCONFIG_LENET5_LR="-0.01"\n')
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / ".config"))
    for command in ("run", "dry-run"):
        assert runner.main([command]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: lenet5_sgd_none: --lr must be positive, got -0.01 (no run was started)"]
    assert not [p for p in results.glob("*") if p.is_dir()]  # no matrix directory (only the lock file)


def test_continue_of_a_copied_matrix_changes_only_the_copy(tmp_path, monkeypatch, capsys):
    import shutil

    mdir, meta = make_matrix(tmp_path, {"done": [], "todo": []})
    run_one(mdir, meta, "done")
    copy = tmp_path / "elsewhere" / mdir.name
    shutil.copytree(mdir, copy)
    before = {p: p.read_bytes() for p in mdir.rglob("*") if p.is_file()}
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / "no.config"))  # continue from matrix.json's own configuration
    monkeypatch.setattr(runner, "plan", lambda values, matrix_dir, overrides: [{"run_id": r} for r in ("done", "todo")])
    assert runner.main(["continue", "--results", str(copy)]) == 0
    assert read_json(copy / "todo" / "run.json")["status"] == "completed"
    assert f"--output-dir {copy / 'todo'}" in (copy / "todo" / "train.log").read_text()
    assert {p: p.read_bytes() for p in mdir.rglob("*") if p.is_file()} == before and not (mdir / "todo").exists()


def test_a_run_whose_checkpoint_was_set_aside_restarts_only_with_restart_corrupt(tmp_path, capsys):
    mdir, meta = make_matrix(tmp_path, {"corrupt": [], "broken": ["--fail"]})
    run_one(mdir, meta, "broken")
    write_json(mdir / "corrupt" / "run.json", {"status": "failed", "attempt": 1, "error": "checkpoint.pt cannot be read"})
    (mdir / "corrupt" / "checkpoint.pt.corrupt").write_bytes(b"kept")
    assert run_all(mdir, meta) == 1
    assert "RESTART_CORRUPT=1 restarts it" in capsys.readouterr().out
    assert read_json(mdir / "corrupt" / "run.json")["status"] == "failed"
    assert run_all(mdir, meta, restart_corrupt=True) == 1  # 'broken' failed for another reason: left alone
    assert read_json(mdir / "corrupt" / "run.json")["status"] == "completed"
    assert "--resume" not in (mdir / "corrupt" / "train.log").read_text()  # from the beginning
    assert (mdir / "corrupt" / "checkpoint.pt.corrupt").read_bytes() == b"kept"
    assert read_json(mdir / "broken" / "run.json")["attempt"] == 1


def test_status_shows_an_unreadable_run_and_exits_non_zero(tmp_path, capsys):
    mdir, meta = make_matrix(tmp_path, {"good": [], "broken": []})
    run_one(mdir, meta, "good")
    run_one(mdir, meta, "broken")
    write_json(mdir / "broken" / "metrics.json", {"history": [{"epoch": 1}], "final": {"accuracy": 90.0}})
    assert runner.main(["status", "--results", str(mdir)]) == 1
    out, err = capsys.readouterr()
    assert "] good " in out and "completed" in out
    assert "unreadable  metrics.json's final block lacks sparsity_prunable, train_time_s" in out
    assert err == "error: 1 run(s) with unreadable files: broken; 'make continue' writes them again from their checkpoints\n"
