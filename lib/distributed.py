"""One run on several processes: torchrun's environment -> torch.distributed.

`torchrun` (python -m torch.distributed.run) starts one process per GPU (or
CPU worker) and sets RANK, LOCAL_RANK and WORLD_SIZE. `setup()` reads them
and joins the process group: NCCL when the run is on CUDA, gloo on the CPU.
Without those variables it does nothing and the helpers answer for a single
process (rank 0 of 1), so a trainer calls the same functions either way.
Rank 0 alone writes results (`is_main()`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # None: not distributed

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun(env=None) -> bool:
    env = os.environ if env is None else env
    return all(k in env for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def setup(device_type: str = "cpu") -> Context:
    """Join the process group torchrun set up (no-op for a single process).

    `device_type` is where the model runs: "cuda" uses NCCL and binds this
    process to GPU LOCAL_RANK, anything else uses gloo.
    """
    if not launched_by_torchrun():
        return Context()
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if world < 2:
        return Context()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"process {rank} wants GPU {local_rank} but only {torch.cuda.device_count()} are visible: "
                "lower the number of DDP processes (CONFIG_DDP_PROCS)"
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Context(rank, local_rank, world, backend)


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def device_for(ctx: Context, device_type: str) -> torch.device:
    """This process's device: cuda:LOCAL_RANK under DDP on GPUs."""
    if device_type == "cuda":
        return torch.device("cuda", ctx.local_rank if ctx.distributed else torch.cuda.current_device())
    return torch.device(device_type)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (identity for one process)."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_flag(value: bool, device: torch.device) -> bool:
    """Rank 0's `value` on every process (for decisions only rank 0 may take, e.g. time limits)."""
    if world_size() == 1:
        return value
    t = torch.tensor([1 if value else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_objects(obj) -> list:
    """Every process's `obj`, in rank order (a one-element list for one process)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
