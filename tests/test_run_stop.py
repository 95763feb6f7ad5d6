"""lib.run: a run stops on SIGUSR1/SIGTERM with a checkpoint of its exact position, and --resume finishes it unchanged.

Also what run.json records of the threads and GPUs a run had.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from conftest import PATIENCE_S, REPO, wait_until
from gpt2 import train as gpt2_train
from lib import classifier
from lib import run as lib_run
from lib.results import read_json
from lib.run import execute, stop_exit_code
from test_gpt2_train import corpus, tiny_args  # noqa: F401 (corpus is a fixture)
from test_run import fit_tiny, parse

pytestmark = pytest.mark.usefixtures("one_thread")


def without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "elapsed_s"} for entry in history]


def final_figures(final: dict) -> dict:
    return {k: v for k, v in final.items() if k not in ("train_time_s", "peak_memory_mib", "tokens_per_s", "samples_per_s")}


def signal_after_step(monkeypatch, module, n: int, signum: int) -> None:
    """`module`'s optimizer_step sends `signum` to this process right after its n-th step (a real signal, a real handler)."""
    real, calls = module.optimizer_step, []

    def step(*a, **kw):
        real(*a, **kw)
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(module, "optimizer_step", step)


def test_the_exit_status_of_a_stop_is_128_plus_the_signal():
    assert stop_exit_code(signal.SIGUSR1) == 138 and stop_exit_code(signal.SIGTERM) == 143


def test_run_json_records_the_threads_and_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert fit_tiny(parse(tmp_path / "hidden", "--epochs", "1")) == 0
    record = read_json(tmp_path / "hidden" / "run.json")
    assert record["threads"] == torch.get_num_threads() == 1 and record["visible_devices"] == ""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert fit_tiny(parse(tmp_path / "unset", "--epochs", "1")) == 0
    assert read_json(tmp_path / "unset" / "run.json")["visible_devices"] is None


def test_sigint_still_interrupts_at_once(tmp_path, monkeypatch):
    signal_after_step(monkeypatch, classifier, 3, signal.SIGINT)
    assert fit_tiny(parse(tmp_path / "r", "--epochs", "2", "--batch-size", "4")) == 130
    record = read_json(tmp_path / "r" / "run.json")
    assert record["status"] == "interrupted" and record["exit_code"] == 130 and record["error"] == "interrupted"
    assert not (tmp_path / "r" / "checkpoint.pt").exists()  # stopped inside epoch 1: nothing was saved


def test_the_stop_handlers_last_only_while_a_run_executes(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    assert fit_tiny(parse(tmp_path / "r", "--epochs", "1")) == 0
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.e2e
def test_lenet5_stopped_by_sigusr1_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path):
    """`python -m lenet5.train` gets SIGUSR1 in its second epoch: exit 138, then --resume gives the same results."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

    def trainer(name, *extra) -> subprocess.Popen:
        argv = [sys.executable, "-m", "lenet5.train", "--output-dir", str(tmp_path / name), "--device", "cpu",
                "--monitor", "off", "--epochs", "3", "--batch-size", "4", "--optimizer", "adam",
                "--pruning-method", "magnitude", "--target-sparsity", "0.5", *extra]
        return subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    straight = trainer("straight")
    assert straight.communicate(timeout=PATIENCE_S) and straight.returncode == 0

    stopped = trainer("stopped")
    metrics = tmp_path / "stopped" / "metrics.json"
    wait_until(lambda: (read_json(metrics) or {}).get("history"), "the first epoch's metrics", stopped)
    os.kill(stopped.pid, signal.SIGUSR1)
    _, err = stopped.communicate(timeout=PATIENCE_S)
    assert stopped.returncode == 138, err
    record = read_json(tmp_path / "stopped" / "run.json")
    assert record["status"] == "interrupted" and record["exit_code"] == 138
    assert re.fullmatch(r"stopped by SIGUSR1 at epoch [23], step \d+ of 360; checkpoint.pt holds this position", record["error"])
    assert err == f"error: stopped: {record['error']}\n"
    assert record["threads"] == 1 and record["visible_devices"] == ""  # what the environment gave it
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] in (1, 2) and 1 <= state["epoch_steps"] <= 360 and len(state["per_process"]) == 1

    resumed = trainer("stopped", "--resume")
    _, err = resumed.communicate(timeout=PATIENCE_S)
    assert resumed.returncode == 0, err
    a, b = read_json(tmp_path / "straight" / "metrics.json"), read_json(metrics)
    assert without_times(b["history"]) == without_times(a["history"])
    assert final_figures(b["final"]) == final_figures(a["final"])
    assert read_json(tmp_path / "stopped" / "run.json")["attempt"] == 2


def test_gpt2_stopped_by_sigterm_between_evaluations_resumes_to_the_uninterrupted_run(corpus, tmp_path, monkeypatch):  # noqa: F811
    flags = ("--max-iters", "10", "--eval-interval", "4", "--dropout", "0.1")
    assert execute(gpt2_train.main, tiny_args(corpus, tmp_path / "straight", *flags)) == 0

    signal_after_step(monkeypatch, gpt2_train, 6, signal.SIGTERM)
    assert execute(gpt2_train.main, tiny_args(corpus, tmp_path / "stopped", *flags)) == 143
    record = read_json(tmp_path / "stopped" / "run.json")
    assert record["status"] == "interrupted" and record["exit_code"] == 143
    assert record["error"] == "stopped by SIGTERM at iteration 6 of 10; checkpoint.pt holds this position"
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=False)
    assert state["iter"] == 6 and state["interval_iters"] == 2  # two iterations' losses since the evaluation at 4

    monkeypatch.undo()
    assert execute(gpt2_train.main, tiny_args(corpus, tmp_path / "stopped", *flags, "--resume")) == 0
    a, b = (read_json(tmp_path / name / "metrics.json") for name in ("straight", "stopped"))
    assert [e["iter"] for e in b["history"]] == [4, 8, 10]
    assert without_times(b["history"]) == without_times(a["history"])
    assert final_figures(b["final"]) == final_figures(a["final"])


def _ddp_worker(rank: int, port: int, out: str, flags: tuple, signal_rank1_after: int, queue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    lib_run.STOP_CHECK_STEPS = 1  # agree after every step, so the stop's step is known exactly
    if rank == 1 and signal_rank1_after:
        signal_after_step(pytest.MonkeyPatch(), classifier, signal_rank1_after, signal.SIGUSR1)
    queue.put((rank, fit_tiny(parse(out, *flags))))


def two_processes(out, *flags, signal_rank1_after: int = 0) -> list:
    """classifier.fit on a gloo group of two; each process's exit code."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, port, str(out), flags, signal_rank1_after, queue)) for r in range(2)]
    for p in procs:
        p.start()
    codes = [code for _, code in sorted(queue.get(timeout=PATIENCE_S) for _ in procs)]
    for p in procs:
        p.join(timeout=PATIENCE_S)
    return codes


@pytest.mark.e2e
def test_under_ddp_a_signal_to_one_process_stops_both_at_the_same_step(tmp_path, capsys):
    flags = ("--epochs", "3", "--batch-size", "8", "--optimizer", "adamw")  # 4 steps per epoch on each process
    assert two_processes(tmp_path / "straight", *flags) == [0, 0]
    assert two_processes(tmp_path / "stopped", *flags, signal_rank1_after=6) == [138, 138]
    assert read_json(tmp_path / "stopped" / "run.json")["error"].startswith("stopped by SIGUSR1 at epoch 2, step 2 of 4;")
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1 and state["epoch_steps"] == 2 and len(state["per_process"]) == 2

    saved = (tmp_path / "stopped" / "checkpoint.pt").read_bytes()
    assert fit_tiny(parse(tmp_path / "stopped", *flags, "--resume")) == 1  # one process cannot continue two's epoch
    assert "with 2 process(es) and can only continue with as many, not 1" in capsys.readouterr().err
    assert (tmp_path / "stopped" / "checkpoint.pt").read_bytes() == saved

    assert two_processes(tmp_path / "stopped", *flags, "--resume") == [0, 0]
    a, b = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("straight", "stopped"))
    assert without_times(b["history"]) == without_times(a["history"])


def test_under_ddp_the_processes_agree_on_a_stop_only_every_few_steps(monkeypatch):
    """The all-reduce waits for the GPU: it runs on every STOP_CHECK_STEPS-th ask, never in between."""
    reduced = []
    monkeypatch.setattr(lib_run.dist, "all_reduce", lambda flag, op: reduced.append(int(flag.item())))
    run = object.__new__(lib_run.Run)
    run._stop_asks, run.device = 0, torch.device("cpu")
    monkeypatch.setattr(lib_run.Run, "distributed", property(lambda self: True))
    answers = [run.stop_requested() for _ in range(2 * lib_run.STOP_CHECK_STEPS)]
    assert len(reduced) == 2 and answers == [0] * len(answers)


def test_a_runner_watch_sees_its_process_exit_and_watches_only_ancestors():
    assert lib_run.RunnerWatch.of(0) is None
    assert lib_run.RunnerWatch.of(os.getpid()) is None  # itself: no ancestor
    parent = lib_run.RunnerWatch.of(os.getppid())
    assert parent is not None and parent.alive()
    parent.close()
    child = subprocess.Popen(["sleep", "600"])
    try:
        assert lib_run.RunnerWatch.of(child.pid) is None  # a child is no runner of this process
        watch = lib_run.RunnerWatch(child.pid)  # as a grandchild would open it
        assert watch.fd is not None and watch.alive()
        child.kill()
        child.wait()
        assert not watch.alive()
        watch.close()
    finally:
        child.kill()


LAUNCHERS = {  # how the runner starts a trainer: one process, or a torchrun DDP group whose workers' parent is the agent
    "process": ["-m", "lenet5.train"],
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lenet5.train", "--"],
}


@pytest.mark.e2e
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_trainer_whose_runner_was_killed_stops_with_a_checkpoint_and_resumes_exactly(tmp_path, launcher):
    """The runner is SIGKILLed mid-run: its trainer (every torchrun worker) notices at its next step, checkpoints,
    and --resume finishes it unchanged."""
    from lib.results import RUNNER_ENV

    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, *LAUNCHERS[launcher]]
    flags = ["--device", "cpu", "--monitor", "off", "--epochs", "3", "--batch-size", "4", "--optimizer", "adam"]
    straight = subprocess.run([*command, "--output-dir", str(tmp_path / "straight"), *flags],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=PATIENCE_S)
    assert straight.returncode == 0, straight.stderr

    # A stand-in runner: names itself to its trainer as the real one does, starts it, then waits.
    out, pid_file = tmp_path / "orphaned", tmp_path / "trainer.pid"
    runner_code = (
        "import os, subprocess, sys, time\n"
        f"env = {{**os.environ, {RUNNER_ENV!r}: str(os.getpid())}}\n"
        f"p = subprocess.Popen([*{command!r}, '--output-dir', {str(out)!r}, *{flags!r}], env=env,\n"
        "                     stdout=subprocess.DEVNULL, stderr=open(sys.argv[1] + '.err', 'w'))\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(3600)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", runner_code, str(out)], cwd=REPO, env=env, start_new_session=True)
    try:
        wait_until(lambda: (read_json(out / "metrics.json") or {}).get("history"), "the first epoch's metrics", runner)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        wait_until(lambda: (read_json(out / "run.json") or {}).get("status") == "interrupted", "the orphan to stop")
    finally:
        if runner.poll() is None:
            runner.kill()
    record = read_json(out / "run.json")
    assert record["exit_code"] == 143 and record["error"].startswith("stopped by SIGTERM at epoch")
    trainer_pid = int(pid_file.read_text())  # torchrun's agent ends once every worker has
    wait_until(lambda: not os.path.exists(f"/proc/{trainer_pid}") or "Z" in open(f"/proc/{trainer_pid}/stat").read().split()[2],
               "the orphan to exit")

    resumed = subprocess.run([*command, "--output-dir", str(out), *flags, "--resume"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=PATIENCE_S)
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_json(tmp_path / "straight" / "metrics.json"), read_json(out / "metrics.json")
    assert without_times(a["history"]) == without_times(b["history"])
    assert final_figures(a["final"]) == final_figures(b["final"])
