"""scripts/slurm.py: settings to sbatch options, the multi-node command, checks; end to end against a one-node Slurm.

The end-to-end tests drive make in a repository copy against the cluster of
tests/slurm_cluster.py: an array with a task cancelled mid-run, status and
continue, compared with a local serial run; a task stopped by the
pre-timeout warning that checkpoints and requeues itself; bad input; DDP on
one node, by the array and by the multi-node command.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Make, wait_until
from lib import config, matrix
from lib.results import MatrixError, read_json
from scripts import slurm
from slurm_cluster import Cluster, slurm_cluster  # noqa: F401  (the session fixture)
from test_launch_e2e import FOUR_RUNS as FOUR_RUN_TEMPLATE
from test_runner_e2e import comparable, epochs_done, error_lines, only_matrix, snapshot

SETTINGS = {
    "SLURM_PARTITION": "gpu", "SLURM_ACCOUNT": "lab", "SLURM_QOS": "high", "SLURM_TIME_LIMIT": "2-00:00:00",
    "SLURM_SIGNAL_LEAD": 600, "SLURM_NODES": 2, "SLURM_GPUS": 4, "SLURM_CPUS": 32, "SLURM_MEM": "64G",
    "SLURM_EXTRA_ARGS": "--constraint='a100&ib' --exclusive",
}


# -- settings and commands ------------------------------------------------------------
def test_unset_settings_take_the_kconfig_defaults():
    """make SCHEDULER=slurm over a .config that picks the local scheduler: every SLURM_* is None there."""
    defaults = slurm.defaults()
    assert set(defaults) == set(SETTINGS)
    assert defaults["SLURM_TIME_LIMIT"] == "24:00:00" and defaults["SLURM_NODES"] == 1 and defaults["SLURM_SIGNAL_LEAD"] == 300
    picked = slurm.settings({"SLURM_PARTITION": "gpu", "SLURM_NODES": None, "MODEL_LENET5": True})
    assert picked == {**defaults, "SLURM_PARTITION": "gpu"}


def test_sbatch_options_carry_every_setting():
    assert slurm.sbatch_options(SETTINGS) == [
        "--time=2-00:00:00", "--nodes=2", "--ntasks-per-node=1", "--signal=B:USR1@600", "--requeue",
        "--partition=gpu", "--account=lab", "--qos=high", "--mem=64G", "--gpus-per-node=4", "--cpus-per-task=32",
        "--constraint=a100&ib", "--exclusive",
    ]
    assert slurm.sbatch_options(slurm.defaults()) == [
        "--time=24:00:00", "--nodes=1", "--ntasks-per-node=1", "--signal=B:USR1@300", "--requeue",
    ]


def test_extra_arguments_that_do_not_split_are_one_line():
    with pytest.raises(MatrixError, match=r"CONFIG_SLURM_EXTRA_ARGS='--comment \"a' does not split"):
        slurm.sbatch_options({**SETTINGS, "SLURM_EXTRA_ARGS": '--comment "a'})


def planned_argv(tmp_path: Path, ddp_procs: int) -> list[str]:
    (tmp_path / ".config").write_text(f"CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\nCONFIG_PRUNING_NONE=y\nCONFIG_DDP_PROCS={ddp_procs}\n")
    values = config.load(tmp_path / ".config")
    [spec] = matrix.expand(values)
    return matrix.argv(spec, values, "results/m/lenet5_sgd_none")


@pytest.mark.parametrize("ddp_procs", [1, 2])
def test_multi_node_command_starts_one_torchrun_per_node_meeting_at_the_first(tmp_path, ddp_procs):
    argv = planned_argv(tmp_path, ddp_procs)
    trainer_args = argv[argv.index("lenet5.train") + 1:]
    if trainer_args[0] == "--":
        trainer_args = trainer_args[1:]
    command = slurm.multi_node(argv, nodes=2, procs=4, head="node07", port=21234, rdzv_id="88_3", cpus=32, gpus=4)
    assert command == [
        "srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=32", "--gpus-per-node=4",
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
        "--rdzv_endpoint=node07:21234", "--rdzv_id=88_3", "-m", "lenet5.train", "--", *trainer_args,
    ]
    assert "--standalone" not in command and trainer_args[-2:] == ["--output-dir", "results/m/lenet5_sgd_none"]
    per_gpu = slurm.multi_node(argv, nodes=3, procs=0, head="n1", port=20000, rdzv_id="1_0")
    assert "--nproc_per_node=gpu" in per_gpu and per_gpu[:4] == ["srun", "--nodes=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]


def test_batch_script_execs_the_task_entry_point(tmp_path):
    text = slurm.batch_script(tmp_path / "my matrix", 3)
    assert text.startswith("#!/bin/bash\n")
    last = text.splitlines()[-1]
    assert last.startswith(f"exec {sys.executable} -m scripts.slurm task --results ")
    assert last.endswith(f"'{tmp_path}/my matrix' --submission 3")  # quoted: paths reach the shell as one word


def test_check_without_sbatch_on_path_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MatrixError) as e:
        slurm.check({})
    assert "sbatch, squeue, scontrol, scancel, sinfo are not on PATH" in str(e.value) and "SCHEDULER=local" in str(e.value)


def test_task_outside_slurm_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run([sys.executable, "-m", "scripts.slurm", "task", "--results", str(tmp_path), "--submission", "0"],
                            capture_output=True, text=True, env=env, cwd=slurm.REPO)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: 'task' runs inside a Slurm array task (SLURM_ARRAY_TASK_ID is not set); 'make' submits them"]


# -- against the cluster ----------------------------------------------------------------
def test_check_asks_the_cluster(slurm_cluster: Cluster):
    before = slurm_cluster.jobs()
    slurm.check({"SLURM_PARTITION": slurm_cluster.partition})
    with pytest.raises(MatrixError, match=r"CONFIG_SLURM_PARTITION='nope' is not a partition of this cluster; valid: debug"):
        slurm.check({"SLURM_PARTITION": "nope"})
    with pytest.raises(MatrixError, match=r"sbatch refuses a run with these CONFIG_SLURM_\* settings: .*Invalid --time"):
        slurm.check({"SLURM_TIME_LIMIT": "soon"})
    with pytest.raises(MatrixError, match=r"sbatch refuses a run with these CONFIG_SLURM_\* settings: .*not available"):
        slurm.check({"SLURM_MEM": "100T"})  # more than the node has
    assert slurm_cluster.jobs() == before  # sbatch --test-only submits nothing


def test_a_refused_submission_leaves_no_record(slurm_cluster: Cluster, tmp_path):
    meta = {"id": "20260101-000000-custom", "config": {"SLURM_EXTRA_ARGS": "--no-such-option"}}
    with pytest.raises(MatrixError, match=r"sbatch refused the job array: .*--no-such-option"):
        slurm.submit(tmp_path, meta, ["a", "b"], 2)
    assert slurm.submissions(tmp_path) == [] and not list((tmp_path / "slurm").glob("*.sh"))


def test_tasks_slurm_has_forgotten_have_no_state(slurm_cluster: Cluster, tmp_path, capsys):
    """After MinJobAge Slurm no longer knows a finished job: its runs' state is "", nothing is active or cancelled."""
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / slurm.SUBMISSIONS).write_text('[{"job_id": "999999", "run_ids": ["a", "b"]}, {"job_id": null, "run_ids": ["c"]}]')
    assert slurm.task_states(tmp_path) == {"a": "", "b": ""}
    assert slurm.active(tmp_path) == set()
    assert slurm.cancel(tmp_path) == 0 and "nothing to cancel" in capsys.readouterr().out


# -- end to end ---------------------------------------------------------------------------
FOUR_RUNS = FOUR_RUN_TEMPLATE.format(epochs=5)  # four short runs


def task_name(mdir: Path, run_id: str) -> str:
    """`<array job>_<index>` of the newest task that executes `run_id`."""
    record = [r for r in slurm.submissions(mdir) if run_id in r["run_ids"]][-1]
    return f"{record['job_id']}_{record['run_ids'].index(run_id)}"


def status_lines(make: Make) -> dict[str, str]:
    """run id -> what `make status` says about it."""
    result = make("status")
    assert result.returncode == 0, result.stderr
    return {ln.split()[1]: ln.split(None, 2)[2] for ln in result.stdout.splitlines() if ln.startswith("[")}


def run_status(run_dir: Path) -> str | None:
    return (read_json(run_dir / "run.json") or {}).get("status")


def settled(mdir: Path) -> bool:
    """No task of the matrix is pending or running any more."""
    return not slurm.active(mdir)


def without_slurm_on_path(make: Make, tmp_path: Path) -> dict:
    """make's environment with a PATH that has make and nothing of Slurm."""
    bin_dir = tmp_path / "bin-without-slurm"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "make").symlink_to(shutil.which("make"))
    return {**make.env, "PATH": str(bin_dir)}


@pytest.mark.e2e
def test_array_cancel_status_continue_equals_a_local_serial_run(slurm_cluster, make, tmp_path):
    root = make.root
    (root / ".config").write_text(FOUR_RUNS)
    submitted = make("all", "SCHEDULER=slurm", "JOBS=2")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "submitted 4 run(s) as Slurm job array" in submitted.stdout
    mdir = only_matrix(root)
    [first] = slurm.submissions(mdir)
    assert len(first["run_ids"]) == 4 and "--array=0-3%2" in first["sbatch"]

    # Cancel one task mid-run: its trainer stops with a checkpoint; the others finish.
    victim = mdir / first["run_ids"][1]
    wait_until(lambda: epochs_done(victim) >= 1 or run_status(victim) not in (None, "running"), "an epoch of the victim")
    assert run_status(victim) == "running"
    subprocess.run(["scancel", task_name(mdir, victim.name)], check=True)
    wait_until(lambda: settled(mdir), "the end of every task")
    assert run_status(victim) == "interrupted" and (victim / "checkpoint.pt").exists()
    lines = status_lines(make)
    assert lines[victim.name].startswith("interrupted") and lines[victim.name].endswith("[slurm: cancelled]")
    others = [r for r in first["run_ids"] if r != victim.name]
    for run_id in others:
        assert lines[run_id].startswith("completed") and lines[run_id].endswith("[slurm: completed]")
    kept = {run_id: snapshot(mdir / run_id) for run_id in others}

    # Slurm selected but its commands missing: one line, nothing submitted, the matrix untouched.
    before = {p: p.read_bytes() for p in mdir.rglob("*") if p.is_file()}
    missing = subprocess.run(make.argv("continue", "SCHEDULER=slurm"), capture_output=True, text=True,
                             env=without_slurm_on_path(make, tmp_path))
    assert missing.returncode != 0
    assert len(error_lines(missing.stderr)) == 1 and "sbatch" in error_lines(missing.stderr)[0]
    assert {p: p.read_bytes() for p in mdir.rglob("*") if p.is_file()} == before

    # continue submits the unfinished run only, which resumes from its checkpoint.
    resumed = make("continue", "SCHEDULER=slurm", "JOBS=2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "submitted 1 run(s)" in resumed.stdout
    assert slurm.submissions(mdir)[1]["run_ids"] == [victim.name]
    wait_until(lambda: settled(mdir), "the end of the resubmitted task")
    assert run_status(victim) == "completed" and (victim / "train.log.1").exists()
    assert "resumed from" in (victim / "train.log").read_text()
    assert read_json(victim / "run.json")["attempt"] == 2
    assert {run_id: snapshot(mdir / run_id) for run_id in others} == kept
    assert all(line.startswith("completed") for line in status_lines(make).values())

    # The same matrix run locally, one run after another: the same numbers.
    local = make("all")
    assert local.returncode == 0, local.stdout[-2000:] + local.stderr[-2000:]
    [ldir] = [p.parent for p in (root / "results").glob("*/matrix.json") if p.parent != mdir]
    for run_id in first["run_ids"]:
        assert read_json(mdir / run_id / "run.json")["threads"] == read_json(ldir / run_id / "run.json")["threads"]
        assert comparable(read_json(mdir / run_id / "metrics.json")) == comparable(read_json(ldir / run_id / "metrics.json")), run_id


LONG_RUN = """CONFIG_MODEL_LENET5=y
CONFIG_LENET5_EPOCHS=2000
CONFIG_LENET5_BATCH_SIZE=64
CONFIG_OPTIMIZER_SGD=y
CONFIG_PRUNING_NONE=y
CONFIG_MATRIX_AUTO_GRAPHS=n
CONFIG_MATRIX_SCHEDULER_SLURM=y
CONFIG_SLURM_TIME_LIMIT="2"
CONFIG_SLURM_SIGNAL_LEAD=60
"""


def task_state(mdir: Path, run_id: str) -> str:
    return slurm.task_states(mdir).get(run_id, "")


def submit_one(make, config: str) -> tuple[Path, Path]:
    """Submit a one-run matrix of `config` with make: (its matrix directory, its run directory)."""
    (make.root / ".config").write_text(config)
    submitted = make("all")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    mdir = only_matrix(make.root)
    return mdir, mdir / "lenet5_sgd_none"


@pytest.mark.e2e
def test_pre_timeout_warning_checkpoints_and_requeues(slurm_cluster, make):
    """A two-minute limit with the warning 60 s before it: the run stops with a checkpoint, the task comes back and resumes it."""
    root = make.root
    mdir, run = submit_one(make, LONG_RUN)
    name = task_name(mdir, run.name)
    wait_until(lambda: run_status(run) not in (None, "running"), "the run to stop on the warning")
    record = read_json(run / "run.json")
    assert record["status"] == "interrupted" and record["exit_code"] == 128 + 10, record  # SIGUSR1
    assert record["error"].startswith("stopped by SIGUSR1 at ") and (run / "checkpoint.pt").exists()
    where = record["error"].split(" at ", 1)[1].split(";")[0]
    log = mdir / "slurm" / f"{name}.out"
    wait_until(lambda: f"task {name} requeued" in log.read_text(), "the task to requeue itself")

    # Slurm holds a requeued task back for two minutes, so that the first start's revoked credential is
    # never taken for the new one. Shorten the hold, not to zero: a start in the same second as the requeue
    # is refused by slurmd ("Job credential revoked") and the task ends for good.
    wait_until(lambda: task_state(mdir, run.name) == "PENDING", "the requeued task to be pending")
    subprocess.run(["scontrol", "update", f"JobId={name}", "StartTime=now+5"], check=True)
    wait_until(lambda: (read_json(run / "run.json") or {}).get("attempt") == 2, "the requeued task to resume the run")
    assert "Restarts=1" in subprocess.run(["scontrol", "show", "job", name], capture_output=True, text=True, check=True).stdout
    assert (run / "train.log.1").exists() and f"checkpoint.pt at {where}\n" in (run / "train.log").read_text()
    cancelled = make("cancel")
    assert cancelled.returncode == 0 and f"cancelled Slurm job array(s) {name.split('_')[0]} (1 task(s))" in cancelled.stdout
    wait_until(lambda: settled(mdir), "the cancelled task to end")
    assert run_status(run) == "interrupted" and read_json(run / "run.json")["error"].startswith("stopped by SIGTERM")
    again = make("cancel")
    assert again.returncode == 0 and "nothing to cancel" in again.stdout


def results_files(root: Path) -> dict:
    """Every file under results/ with its bytes, but the runner's lock file (make takes it, then refuses the input)."""
    return {p: p.read_bytes() for p in (root / "results").rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.e2e
def test_bad_input_is_one_line_and_submits_nothing(slurm_cluster, make, tmp_path):
    root = make.root
    (root / "results" / "20000101-000000-kept" / "lenet5_sgd_none").mkdir(parents=True)
    (root / "results" / "20000101-000000-kept" / "lenet5_sgd_none" / "run.json").write_text('{"status": "completed"}\n')
    before = results_files(root)
    jobs = slurm_cluster.jobs()
    (root / ".config").write_text(FOUR_RUNS)

    unknown = make("all", "SCHEDULER=foo")
    missing = subprocess.run(make.argv("all", "SCHEDULER=slurm"), capture_output=True, text=True,
                             env=without_slurm_on_path(make, tmp_path))
    (root / ".config").write_text(FOUR_RUNS + 'CONFIG_MATRIX_SCHEDULER_SLURM=y\nCONFIG_SLURM_PARTITION="nope"\n')
    partition = make("all")
    for result, words in ((unknown, ("SCHEDULER='foo'", "local, slurm")), (missing, ("sbatch", "SCHEDULER=local")),
                          (partition, ("CONFIG_SLURM_PARTITION='nope'", "valid: debug"))):
        assert result.returncode != 0
        [line] = error_lines(result.stderr)
        assert all(w in line for w in words), line
    assert results_files(root) == before  # no matrix, nothing changed
    assert slurm_cluster.jobs() == jobs


DDP_RUN = """CONFIG_MODEL_LENET5=y
CONFIG_LENET5_EPOCHS=2
CONFIG_LENET5_BATCH_SIZE=64
CONFIG_OPTIMIZER_SGD=y
CONFIG_PRUNING_NONE=y
CONFIG_DDP_PROCS=2
CONFIG_MATRIX_AUTO_GRAPHS=n
CONFIG_MATRIX_SCHEDULER_SLURM=y
CONFIG_SLURM_CPUS=2
"""


@pytest.mark.e2e
def test_ddp_on_one_node_by_the_array_and_by_the_multi_node_command(slurm_cluster, make, free_port):
    """DDP_PROCS=2 in an array task (torchrun --standalone), then the same run as SLURM_NODES>1 starts it, on one node."""
    root = make.root
    mdir, run = submit_one(make, DDP_RUN)
    wait_until(lambda: settled(mdir), "the DDP task to end")
    assert run_status(run) == "completed", (run / "train.log").read_text()[-2000:]

    # srun + torchrun with a c10d rendezvous, as a multi-node task starts a run, here with nodes=1.
    [planned] = read_json(mdir / "matrix.json")["runs"]
    argv = list(planned["argv"])
    rendezvous = root / "rendezvous" / run.name
    argv[argv.index("--output-dir") + 1] = str(rendezvous)
    command = slurm.multi_node(argv, nodes=1, procs=2, head=slurm_cluster.node, port=free_port, rdzv_id="test", cpus=2)
    threads = str(read_json(run / "run.json")["threads"])  # what the array task's trainer had
    result = subprocess.run(command, cwd=root, capture_output=True, text=True,
                            env={**make.env, **slurm_cluster.env(), "OMP_NUM_THREADS": threads})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert run_status(rendezvous) == "completed"
    assert comparable(read_json(rendezvous / "metrics.json")) == comparable(read_json(run / "metrics.json"))


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
