"""lib.pruning.movement: scores accumulate -grad * w over training; masks keep the top scores."""

from __future__ import annotations

import torch
from torch import nn

from lib.pruning import SparsitySchedule
from lib.pruning.movement import MovementPruner


def test_scores_are_the_running_sum_of_minus_grad_times_weight():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = MovementPruner(model, SparsitySchedule(0.5, 100, 200), 1, optimizer=opt)
    expected = [torch.zeros_like(p) for _, p in pruner.params]
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        for e, (_, p) in zip(expected, pruner.params):
            e -= p.grad * p.detach()  # read before the step, with the weights the gradient belongs to
        pruner.mask_gradients()
        opt.step()
        pruner.step()
    for e, s in zip(expected, pruner.movement):
        torch.testing.assert_close(s, e)


def test_masks_keep_the_top_scores_not_the_distance_from_initialisation():
    model = nn.Sequential(nn.Linear(4, 1, bias=False))
    w = model[0].weight
    with torch.no_grad():
        w.copy_(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    pruner = MovementPruner(model, SparsitySchedule(0.5, 0, 1), 1)
    # Weights 0 and 1 move away from zero (gradient opposite to w), 2 and 3 towards it.
    w.grad = torch.tensor([[-1.0, -1.0, 1.0, 1.0]])
    pruner.mask_gradients()
    pruner.update_masks(0.5)
    assert pruner.mask_list()[0].tolist() == [[True, True, False, False]]  # the larger weights go


def test_movement_state_is_four_bytes_per_parameter_plus_the_mask():
    model = nn.Sequential(nn.Linear(10, 10))
    pruner = MovementPruner(model, SparsitySchedule(0.5, 0, 1))
    assert pruner.state_bytes() == 100 * (4 + 1)
    assert set(pruner.state_dict()) >= {"masks", "movement", "step_count", "sparsity"}
