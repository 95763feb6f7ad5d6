"""lib.pruning.layer_adaptive: 0.7x to 1.3x by depth, cap 0.95, achieved sparsity and exact rescale."""

from __future__ import annotations

import pytest

from lib.pruning.layer_adaptive import LayerAdaptive

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
