"""lib.distributed: single-process answers, a real two-process gloo group, and a run on one resumed on the other."""

import json
import os
import socket

import torch
import torch.multiprocessing as mp

from conftest import PATIENCE_S
from lib import distributed


def test_single_process_without_torchrun(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    ctx = distributed.setup("cpu")
    assert ctx == distributed.Context() and not ctx.distributed and ctx.is_main
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.tensor([2.0])
    assert distributed.all_reduce_sum(t) is t and t.item() == 2.0
    assert distributed.broadcast_flag(True, torch.device("cpu")) is True
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    distributed.barrier()
    distributed.teardown(ctx)


def test_launched_by_torchrun_reads_the_environment():
    assert distributed.launched_by_torchrun({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert not distributed.launched_by_torchrun({"RANK": "0"})


def test_a_world_of_one_is_not_distributed(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.setup("cpu").distributed


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = distributed.setup("cpu")
    try:
        total = distributed.all_reduce_sum(torch.tensor([float(rank + 1)]))
        flag = distributed.broadcast_flag(rank == 0, torch.device("cpu"))  # rank 0's value everywhere
        gathered = distributed.gather_objects(f"rank{rank}")
        queue.put((rank, ctx.backend, ctx.world_size, distributed.is_main(), total.item(), flag, gathered))
    finally:
        distributed.teardown(ctx)


def test_two_processes_with_gloo():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=PATIENCE_S) for _ in procs)  # waits for each answer; the bound only ends a hang
    for p in procs:
        p.join(timeout=PATIENCE_S)
        assert p.exitcode == 0
    assert results == [
        (0, "gloo", 2, True, 3.0, True, ["rank0", "rank1"]),
        (1, "gloo", 2, False, 3.0, True, ["rank0", "rank1"]),
    ]


def _fit_worker(rank: int, port: int, out: str, queue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from test_run import fit_tiny, parse

    queue.put((rank, fit_tiny(parse(out, "--epochs", "2", "--batch-size", "8"))))


def test_a_run_of_two_processes_resumes_on_one(tmp_path, capsys):
    """classifier.fit on a gloo group of two; then --resume in this one process: only rank 0's RNG state carries over."""
    from test_run import fit_tiny, parse

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_fit_worker, args=(r, port, str(out), queue)) for r in range(2)]
    for p in procs:
        p.start()
    assert sorted(queue.get(timeout=300) for _ in procs) == [(0, 0), (1, 0)]
    for p in procs:
        p.join(timeout=60)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert len(state["rng"]) == 2 and state["epoch"] == 2
    capsys.readouterr()
    assert fit_tiny(parse(out, "--epochs", "3", "--batch-size", "8", "--resume")) == 0
    assert "written by 2 process(es); only process 0's RNG state carries over" in capsys.readouterr().out
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert len(torch.load(out / "checkpoint.pt", weights_only=False)["rng"]) == 1
