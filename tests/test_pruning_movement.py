"""lib.pruning.movement: scores accumulate -grad * w over training; masks keep the top scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.pruning import SparsitySchedule
from lib.pruning.movement import MovementPruner
from pruning_loop import train_steps


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


def set_grads(model, grads):
    for p, g in zip(model.parameters(), grads):
        p.grad = torch.tensor(g)


def returning_weight_run(mode: str):
    """Two steps on four weights: weights 2 and 3 pruned at step 1; at step 2 weight 2's score climbs back."""
    model = nn.Sequential(nn.Linear(4, 1, bias=False))
    w = model[0].weight
    with torch.no_grad():
        w.copy_(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    pruner = MovementPruner(model, SparsitySchedule(0.5, 0, 1), 1, scope="layer", mode=mode)
    set_grads(model, [[[-1.0, -1.0, 1.0, 1.0]]])  # scores 0.1, 0.2, -0.3, -0.4
    pruner.mask_gradients()
    pruner.step()
    assert pruner.mask_list()[0].tolist() == [[True, True, False, False]]
    torch.testing.assert_close(w.detach(), torch.tensor([[0.1, 0.2, 0.0, 0.0]]))
    # Weight 2 (pruned, kept value 0.3) gets a gradient that would move it away from zero: -(-10) * 0.3 = +3.
    set_grads(model, [[[2.0, 1.0, -10.0, 0.0]]])
    pruner.mask_gradients()
    pruner.step()
    return pruner, w


def test_topk_mode_brings_back_a_pruned_weight_whose_score_rises_with_its_value():
    pruner, w = returning_weight_run("topk")
    torch.testing.assert_close(pruner.movement[0], torch.tensor([[0.1 - 0.2, 0.2 - 0.2, -0.3 + 3.0, -0.4]]))
    assert pruner.mask_list()[0].tolist() == [[False, True, True, False]]  # weight 2 is back, weight 0 goes
    torch.testing.assert_close(w.detach(), torch.tensor([[0.0, 0.2, 0.3, 0.0]]))  # with the value it had
    torch.testing.assert_close(pruner.pruned_values[0], torch.tensor([[0.1, 0.0, 0.0, 0.4]]))


def test_grow_mode_is_unchanged_a_pruned_weight_stays_pruned():
    pruner, w = returning_weight_run("grow")
    torch.testing.assert_close(pruner.movement[0], torch.tensor([[0.1 - 0.2, 0.2 - 0.2, -0.3, -0.4]]))
    pruner.update_masks(0.5)
    assert pruner.mask_list()[0].tolist() == [[True, True, False, False]]
    assert w[0, 2:].tolist() == [0.0, 0.0]
    assert pruner.pruned_values is None


def train(pruner, model, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 12, generator=g)
    y = torch.randn(64, 3, generator=g)
    return train_steps(pruner, opt, lambda: nn.functional.mse_loss(model(x), y), steps,
                       after_step=lambda: (pruner.schedule(pruner.step_count), [m.clone() for m in pruner.mask_list()]))


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def test_topk_mode_with_layer_scope_prunes_every_matrix_at_the_level_at_every_step():
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    pruner = MovementPruner(model, SparsitySchedule(0.7, 2, 12, kind="gradual"), 1, optimizer=opt, scope="layer",
                            mode="topk")
    history = train(pruner, model, opt, 30)
    returned = 0
    for (level, masks), (_, before) in zip(history[1:], history):
        for m, n in zip(masks, pruner.sizes):
            assert int((~m).sum()) == round(level * n)  # each matrix at the scheduled level, not only the total
        returned += sum(int((m & ~b).sum()) for m, b in zip(masks, before))
    assert history[-1][0] == 0.7
    assert returned > 0  # masks were recomputed, not only grown
    for (_, p), m in zip(pruner.params, pruner.mask_list()):
        assert (p[~m] == 0).all()  # pruned weights are zero in the model
    for v, m in zip(pruner.pruned_values, pruner.mask_list()):
        assert (v[m] == 0).all() and (v[~m] != 0).any()  # values kept only for pruned weights


def test_topk_mode_keeps_moving_the_scores_of_pruned_weights():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner = MovementPruner(model, SparsitySchedule(0.5, 0, 1), 1, optimizer=opt, scope="layer", mode="topk")
    train(pruner, model, opt, 1)
    pruned = [~m.clone() for m in pruner.mask_list()]
    before = [s.clone() for s in pruner.movement]
    pruner.frequency = 1000  # no mask update: watch the scores alone
    train(pruner, model, opt, 3, seed=1)
    assert all((s[p] != b[p]).any() for s, b, p in zip(pruner.movement, before, pruned))


def test_topk_mode_recomputes_every_frequency_steps_and_at_ramp_end():
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    pruner = MovementPruner(model, SparsitySchedule(0.6, 1, 7), 3, optimizer=opt, mode="topk")
    calls = []
    update = pruner.update_masks
    pruner.update_masks = lambda s: (calls.append((pruner.step_count, s)), update(s))
    train(pruner, model, opt, 16)
    # warmup through step 1; every 3rd step, the ramp end (7) off that grid, then every 3rd at the final level
    assert [t for t, _ in calls] == [3, 6, 7, 9, 12, 15]
    assert [s for _, s in calls] == [pruner.schedule(t) for t, _ in calls] and calls[-1][1] == 0.6
    total = sum(int((~m).sum()) for m in pruner.mask_list())
    assert total == round(0.6 * sum(pruner.sizes))  # one global top-k with the default scope


def test_topk_mode_state_round_trips_and_modes_do_not_mix():
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    pruner = MovementPruner(model, SparsitySchedule(0.5, 0, 4), 1, optimizer=opt, scope="layer", mode="topk")
    train(pruner, model, opt, 6)
    state = pruner.state_dict()
    other = MovementPruner(mlp(), SparsitySchedule(0.5, 0, 4), 1, scope="layer", mode="topk")
    other.load_state_dict(state)
    for a, b in zip(pruner.pruned_values + pruner.movement + pruner.mask_list(),
                    other.pruned_values + other.movement + other.mask_list()):
        assert torch.equal(a, b)
    assert other.state_bytes() == sum(pruner.sizes) * (4 + 4 + 1)  # scores, kept values (float32), mask
    grow = MovementPruner(mlp(), SparsitySchedule(0.5, 0, 4), 1, scope="layer")
    with pytest.raises(ValueError, match="movement mode 'topk'; this run uses 'grow'"):
        grow.load_state_dict(state)
    assert pruner.summary()["movement_mode"] == "topk"


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: grow, topk"):
        MovementPruner(mlp(), SparsitySchedule(0.5, 0, 1), mode="reference")
