"""lib.classifier: the epoch loop's optimizer step under an fp16-style gradient scaler, with movement pruning.

Autocast to fp16 needs CUDA, but the scaler does not: a CPU GradScaler
scales the float32 loss the same way, and an input far out of range makes
one step's scaled gradients overflow, as an fp16 step would.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lib import classifier
from lib.pruning import SparsitySchedule
from lib.pruning.movement import MovementPruner

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def data(overflowing_first_batch: bool) -> DataLoader:
    """Three batches of 8 (the first one far out of range when asked), then in order."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 6, generator=g), torch.randint(0, 3, (24,), generator=g)
    if overflowing_first_batch:
        x[:8] *= 1e30  # the loss stays finite; scaled by the scaler it is not
    else:
        x, y = x[8:], y[8:]
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def movement_run(loader: DataLoader, scaler=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner = MovementPruner(model, SparsitySchedule(0.5, 1000, 2000), 1, optimizer=opt)  # no mask update in 3 steps
    classifier.train_one_epoch(model, loader, opt, pruner, CPU, 0, scaler=scaler)
    return model, pruner


def test_movement_scores_under_a_scaler_are_the_unscaled_runs():
    _, plain = movement_run(data(False))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    _, scaled = movement_run(data(False), scaler)
    assert scaler.get_scale() == 2.0**16  # no step overflowed
    for a, b in zip(plain.movement, scaled.movement):
        assert torch.equal(a, b)  # scaling by a power of two and unscaling are exact


def test_a_step_the_scaler_skips_adds_nothing_to_the_movement_scores():
    plain_model, plain = movement_run(data(False))  # the two in-range batches only
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    scaled_model, scaled = movement_run(data(True), scaler)
    assert scaler.get_scale() == 2.0**39  # the first step overflowed: skipped, and the scale backed off
    for a, b in zip(plain.movement, scaled.movement):
        assert torch.isfinite(b).all() and torch.equal(a, b)
    for a, b in zip(plain_model.parameters(), scaled_model.parameters()):
        assert torch.equal(a, b)
