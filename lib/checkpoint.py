"""Checkpoints that resume a run exactly where it stopped.

`save()` writes atomically (`lib.atomic`: temporary file, fsync, rename). A checkpoint holds
whatever the trainer passes plus every RNG state (`rng_state()`): Python,
NumPy, torch CPU and CUDA, and the data loader's generator.
`load()` raises `CorruptCheckpoint` rather than guessing; a run that cannot
resume from its checkpoint keeps it under another name (`set_aside`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from lib.atomic import atomic_open
from lib.results import CORRUPT


class CorruptCheckpoint(Exception):
    """A checkpoint that does not load, or not as a resumable bundle of this harness."""


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return the generator the data loader shuffles with."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(loader_generator: torch.Generator | None = None) -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    """Restore `rng_state()`'s states; they may arrive on the run's device (a checkpoint loaded with
    map_location="cuda"), while generators take CPU byte tensors."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if loader_generator is not None and state.get("loader") is not None:
        loader_generator.set_state(state["loader"].cpu())


class _Writes:
    """A file for torch.save that keeps the OSError of a failed write: torch reports it as a RuntimeError."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` atomically; a full or read-only disk is an OSError (lib.fs_errors), not torch's RuntimeError."""
    with atomic_open(path, "wb") as f:
        out = _Writes(f)
        try:
            torch.save(payload, out)
        except RuntimeError:
            if out.error is not None:
                raise out.error from None
            raise


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """The payload of `path`; `CorruptCheckpoint` (the file untouched) when it does not load."""
    try:
        # weights_only=False: the payload holds RNG states (numpy arrays, tuples), written by us.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        detail = " ".join(str(e).split())[:300]
        raise CorruptCheckpoint(f"{path} cannot be read ({type(e).__name__}: {detail})") from None


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a checkpoint that cannot be resumed to `<name>.corrupt` (`.corrupt.2`, ... beside earlier ones); the new path."""
    path = Path(path)
    aside, n = path.with_name(f"{path.name}{CORRUPT}"), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}{CORRUPT}.{n}")
    os.replace(path, aside)
    return aside
