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
    with pytest.raises(checkpoint.CorruptCheckpoint, match="checkpoint.pt cannot be read"):
        checkpoint.load(path)
    assert path.read_bytes() == b"not a checkpoint"


def test_set_aside_keeps_every_corrupt_checkpoint(tmp_path):
    for n in range(3):
        (tmp_path / "checkpoint.pt").write_bytes(bytes([n]))
        checkpoint.set_aside(tmp_path / "checkpoint.pt")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.pt.corrupt", "checkpoint.pt.corrupt.2", "checkpoint.pt.corrupt.3"]
    assert [(tmp_path / n).read_bytes() for n in names] == [b"\x00", b"\x01", b"\x02"]


def test_a_full_disk_while_saving_is_an_oserror_naming_the_checkpoint_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno
    import io

    from lib import atomic

    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, {"epoch": 1})
    real = io.BufferedWriter.write

    def full(self, data):  # the disk fills up after 1 kB of a file
        if self.tell() + len(data) > 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: type("Full", (io.BufferedWriter,), {"write": full})(io.FileIO(fd, "w")))
    with pytest.raises(OSError) as caught:
        checkpoint.save(path, {"epoch": 2, "w": torch.zeros(10_000)})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    monkeypatch.undo()
    assert checkpoint.load(path) == {"epoch": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
