"""lib.checkpoint: RNG round trip, atomic save, corrupt files are reported and kept."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lib import checkpoint


def draw(gen):
    return (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=gen)))


def test_rng_state_round_trip():
    gen = checkpoint.seed_everything(5)
    state = checkpoint.rng_state(gen)
    first = draw(gen)
    checkpoint.seed_everything(99)
    checkpoint.set_rng_state(state, gen)
    assert draw(gen) == first


def test_save_load(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"epoch": 3, "w": torch.arange(4)})
    out = checkpoint.load(path)
    assert out["epoch"] == 3 and torch.equal(out["w"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_corrupt_checkpoint_is_kept_and_explained(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CorruptCheckpoint, match="kept"):
        checkpoint.load(path)
    assert path.read_bytes() == b"not a checkpoint"
