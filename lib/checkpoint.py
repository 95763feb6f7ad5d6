"""Checkpoints that resume a run exactly where it stopped.

`save()` writes atomically (temporary file, fsync, rename). A checkpoint holds
whatever the trainer passes plus every RNG state (`rng_state()`): Python,
NumPy, torch CPU and CUDA, and the data loader's generator.
`load()` raises `CorruptCheckpoint` rather than guessing; the file is kept.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


class CorruptCheckpoint(Exception):
    pass


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


def save(path: str | os.PathLike, payload: dict) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    try:
        # weights_only=False: the payload holds RNG states (numpy arrays, tuples), written by us.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CorruptCheckpoint(
            f"{path} cannot be read ({type(e).__name__}: {e}); it was kept as it is. "
            f"Move it aside to restart this run from the beginning."
        ) from None
