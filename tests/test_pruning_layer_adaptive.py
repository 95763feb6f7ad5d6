"""lib.pruning.layer_adaptive: 0.7x to 1.3x by depth, cap 0.95, achieved sparsity and exact rescale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.pruning import SparsitySchedule
from lib.pruning.layer_adaptive import CAP, LayerAdaptive, check_target
from lib.pruning.state import StatePruner

SIZES = [150, 2400, 48000, 10080, 840]  # LeNet-5's prunable tensors


def test_scales_run_from_low_to_high_by_depth():
    assert LayerAdaptive().scales(4) == pytest.approx([0.7, 0.9, 1.1, 1.3])
    assert LayerAdaptive().scales(1) == [1.0]


def test_without_rescale_the_levels_are_scaled_and_capped_and_the_achieved_sparsity_is_reported():
    plan = LayerAdaptive(rescale=False)
    assert plan.levels(SIZES, 0.5) == pytest.approx([0.35, 0.425, 0.5, 0.575, 0.65])
    assert plan.levels(SIZES, 0.9)[-1] == 0.95  # 1.17 capped
    achieved = plan.achieved(SIZES, 0.5)
    want = sum(round(n * s) for n, s in zip(SIZES, plan.levels(SIZES, 0.5))) / sum(SIZES)
    assert achieved == want and abs(achieved - 0.5) > 1e-3  # not the target: hence the report


@pytest.mark.parametrize("target", [0.1, 0.5, 0.7, 0.9, 0.93, 0.95])
def test_rescale_hits_the_global_target_exactly(target):
    plan = LayerAdaptive()
    counts = plan.counts(SIZES, target)
    assert sum(counts) == round(target * sum(SIZES))
    levels = plan.levels(SIZES, target)
    assert sum(n * s for n, s in zip(SIZES, levels)) == pytest.approx(target * sum(SIZES))
    assert all(c <= 0.95 * n + 1e-9 for c, n in zip(counts, SIZES))
    assert levels == sorted(levels)  # still deeper = sparser


def test_rescale_above_the_cap_is_refused():
    with pytest.raises(ValueError, match="above the layer-adaptive cap 0.95"):
        LayerAdaptive().counts(SIZES, 0.97)


def test_bad_settings():
    with pytest.raises(ValueError, match="cap"):
        LayerAdaptive(cap=1.0)
    with pytest.raises(ValueError, match="low"):
        LayerAdaptive(low=1.5, high=1.3)


@pytest.mark.parametrize("target", [0.95, 0.96, 0.99])
def test_a_target_at_or_above_the_cap_is_refused_before_the_run(target):
    with pytest.raises(ValueError, match=f"target sparsity {target} is at or above the layer-adaptive .* cap 0.95"):
        check_target(target)
    with pytest.raises(ValueError, match="at or above"):
        LayerAdaptive().check(SIZES, target)
    check_target(target, rescale=False)  # kept levels: clipped at the cap, the achieved sparsity reported
    LayerAdaptive(rescale=False).check(SIZES, target)


def test_targets_below_the_cap_pass_the_checks():
    assert CAP == 0.95
    for target in (0.0, 0.5, 0.9, 0.9499):
        check_target(target)
        LayerAdaptive().check(SIZES, target)
    check_target(0.97, cap=0.98)


def test_the_exact_check_refuses_what_rounding_under_the_cap_cannot_reach():
    # Two layers of 10: at most floor(9.5) = 9 each, 18 in all; 0.94 asks for round(18.8) = 19.
    with pytest.raises(ValueError, match="at most 18"):
        LayerAdaptive().check([10, 10], 0.94)
    LayerAdaptive().check([10, 10], 0.9)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(20, 30), nn.Linear(30, 30), nn.Linear(30, 10)


@pytest.mark.parametrize("target", [0.95, 0.97])
def test_bitter4_is_refused_when_the_pruner_is_built_not_at_the_last_mask_update(target):
    model = Net()
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="layer-adaptive"):
        StatePruner(model, SparsitySchedule(target, 10, 1000), 10, optimizer=opt, variant="bitter4")
    assert not [n for n, _ in model.named_buffers()]  # refused before any mask buffer is registered


def test_bitter4_below_the_cap_reaches_its_target():
    model = Net()
    opt = torch.optim.AdamW(model.parameters())
    pruner = StatePruner(model, SparsitySchedule(0.94, 0, 1), 1, optimizer=opt, variant="bitter4")
    pruner.step()
    assert sum(int((~m).sum()) for m in pruner.mask_list()) == round(0.94 * sum(pruner.sizes))
