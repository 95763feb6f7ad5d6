"""lib.pruning.ratio: budgets from the two constraints, infeasible requests, plans verified in training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.pruning import SparsitySchedule
from lib.pruning.ratio import InfeasibleBudget, RatioPlan, RatioViolation, min_feasible_sparsity, pruning_budgets, ratio_plan
from lib.pruning.state import RatioSettings, StatePruner, importance
from pruning_loop import train_steps

CASES = [
    (1.57e6, 3.93e6, 0.5, 2.5),  # the reference document's example
    (1.0e6, 2.5e6, 0.3, 2.5),  # already at the ratio: prune both groups alike
    (2.36e6, 4.72e6, 0.7, 2.5),  # GPT-2 block sizes (4 x 768^2 attention, 8 x 768^2 MLP)
    (1000, 9000, 0.9, 4.0),
    (5.0e5, 1.0e6, 0.6, 1.0),
    (3, 7, 0.5, 2.0),
]


@pytest.mark.parametrize("A, M, S, r", CASES)
def test_both_constraints_hold_to_1e9(A, M, S, r):
    alpha, mu = pruning_budgets(A, M, S, r)
    assert 0 <= alpha <= 1 and 0 <= mu <= 1
    assert abs((alpha * A + mu * M) / (A + M) - S) < 1e-9  # total sparsity
    assert abs(M * (1 - mu) / (A * (1 - alpha)) - r) < 1e-9  # final ratio


def test_the_reference_example_prunes_about_half_of_each_group():
    # The reference document claims 0.56 / 0.48. By hand: kept attention = 0.5 * 5.5e6 / 3.5 = 785714.29,
    # alpha = 1 - 785714.29 / 1.57e6 = 0.499545; kept MLP = 2.5 * 785714.29, mu = 1 - 1964285.71 / 3.93e6 = 0.500182.
    alpha, mu = pruning_budgets(1.57e6, 3.93e6, 0.5, 2.5)
    assert alpha == pytest.approx(0.499545, abs=1e-6) and mu == pytest.approx(0.500182, abs=1e-6)


@pytest.mark.parametrize("A, M, S, r", [
    (1.0e6, 1.0e6, 0.1, 2.5),  # 1:1 model, little sparsity: MLP would have to grow
    (1.0e6, 9.0e6, 0.2, 1.0),  # attention would need a negative prune fraction
    (0, 1.0e6, 0.5, 2.5),
    (1.0e6, 1.0e6, 1.0, 2.5),
    (1.0e6, 1.0e6, 0.5, -1.0),
])
def test_infeasible_requests_are_clear_errors(A, M, S, r):
    with pytest.raises(InfeasibleBudget) as err:
        pruning_budgets(A, M, S, r)
    assert str(err.value)


def test_the_error_gives_the_feasible_range():
    with pytest.raises(InfeasibleBudget, match=r"feasible sparsity for this model and ratio: >= 0\.3"):
        pruning_budgets(1.0e6, 1.0e6, 0.1, 2.5)
    assert min_feasible_sparsity(1.0e6, 1.0e6, 2.5) == pytest.approx(0.3)
    alpha, mu = pruning_budgets(1.0e6, 1.0e6, 0.3, 2.5)  # the edge itself is feasible
    assert mu == 0.0 and alpha == pytest.approx(0.6)


def test_plan_counts_scale_with_the_schedule_and_keep_other_groups_at_the_level():
    plan = RatioPlan([100, 300, 50], ["attention", "mlp", "other"], target=0.5, ratio=2.5, tolerance=0.01)
    groups = dict((tuple(i), n) for i, n in plan.counts(0.5))
    assert groups[(0,)] == round(plan.alpha * 100) and groups[(1,)] == round(plan.mu * 300) and groups[(2,)] == 25
    half = dict((tuple(i), n) for i, n in plan.counts(0.25))
    assert half[(0,)] == round(plan.alpha * 50) and half[(2,)] == round(0.25 * 50)
    assert plan.verify([100 - groups[(0,)], 300 - groups[(1,)], 25]) == pytest.approx(2.5, abs=0.01)
    with pytest.raises(RatioViolation, match="outside 2.5 \\+/- 0.01"):
        plan.verify([50, 150, 25])


class Tiny(nn.Module):
    """Attention 2 x 32x32, MLP 32x64 + 64x32, an unclassified head."""

    def __init__(self):
        super().__init__()
        self.attn_q = nn.Linear(32, 32)
        self.attn_o = nn.Linear(32, 32)
        self.mlp_up = nn.Linear(32, 64)
        self.mlp_down = nn.Linear(64, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = x + self.attn_o(torch.tanh(self.attn_q(x)))
        return self.head(x + self.mlp_down(torch.relu(self.mlp_up(x))))


@pytest.mark.parametrize("variant", ["bitter7", "bitter9"])
def test_state_pruning_with_ratio_budgets_reaches_target_and_ratio(variant):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    pruner = StatePruner(model, SparsitySchedule(0.6, 2, 20, "linear"), 2, optimizer=opt, variant=variant,
                         ratio=RatioSettings(ratio=2.5, tolerance=0.01))
    x, y = torch.randn(32, 32), torch.randint(0, 4, (32,))
    train_steps(pruner, opt, lambda: nn.functional.cross_entropy(model(x), y), 25)
    kept = {n: int(m.sum()) for (n, _), m in zip(pruner.params, pruner.mask_list())}
    kept_attention = kept["attn_q.weight"] + kept["attn_o.weight"]
    kept_mlp = kept["mlp_up.weight"] + kept["mlp_down.weight"]
    assert abs(kept_mlp / kept_attention - 2.5) <= 0.01
    assert pruner.summary()["ratio"]["achieved_ratio"] == pytest.approx(kept_mlp / kept_attention)
    pruned = sum(pruner.sizes) - sum(kept.values())
    assert abs(pruned / sum(pruner.sizes) - 0.6) < 1e-3


def test_a_pruner_resumed_after_the_target_keeps_the_achieved_ratio():
    """The masks no longer change after the target, so a resumed run never verifies again: loading does."""
    torch.manual_seed(0)

    def pruner(model):  # each on its own model: a pruner's masks live with the model's weights
        return StatePruner(model, SparsitySchedule(0.6, 2, 10, "linear"), 2, variant="bitter9",
                           optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                           ratio=RatioSettings(ratio=2.5, tolerance=0.05))

    model = Tiny()
    first = pruner(model)
    x, y = torch.randn(32, 32), torch.randint(0, 4, (32,))
    for _ in range(12):
        first.optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        first.mask_gradients()
        first.optimizer.step()
        first.step()
    state, summary = first.state_dict(), first.summary()
    assert summary["ratio"]["achieved_ratio"] is not None
    resumed = pruner(Tiny())
    resumed.load_state_dict(state)
    assert resumed.summary()["ratio"] == summary["ratio"]
    before = pruner(Tiny())
    before.load_state_dict({**state, "sparsity": 0.3})  # a checkpoint before the target: verified once it is reached
    assert before.ratio_achieved is None


def test_a_model_without_attention_cannot_keep_a_ratio():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(InfeasibleBudget, match="needs attention and MLP parameters"):
        StatePruner(model, SparsitySchedule(0.5, 1, 2), optimizer=torch.optim.AdamW(model.parameters()),
                    variant="bitter7", ratio=RatioSettings())


def _trained_tiny(steps: int = 5):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 32), torch.randint(0, 4, (32,))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def test_ratio_plan_keeps_the_best_scored_entries_of_each_group_at_the_ratio():
    model, opt = _trained_tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = ratio_plan(model, opt, 0.6, variant="bitter9", ratio=2.5, tolerance=0.01)
    # the model is left as it was: weights untouched, no mask buffer
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert not [b for b, _ in model.named_buffers() if "pruning_mask" in b]
    g = result.groups
    assert g["attention"]["params"] == 2 * 32 * 32 and g["mlp"]["params"] == 2 * 32 * 64
    assert g["mlp"]["kept"] / g["attention"]["kept"] == pytest.approx(result.achieved_ratio)
    assert abs(result.achieved_ratio - 2.5) <= 0.01 and result.sparsity == pytest.approx(0.6, abs=1e-3)
    assert g["other"]["prune_fraction"] == pytest.approx(0.6, abs=0.01)
    # within a group, every kept entry scores at least as high as every pruned one (bitter9, structure weights)
    weights = {"attention": 2.5, "mlp": 1.0, "other": 1.0}
    for role, names in (("attention", ["attn_q.weight", "attn_o.weight"]), ("mlp", ["mlp_up.weight", "mlp_down.weight"])):
        scores, keep = [], []
        for n in names:
            p = model.get_parameter(n)
            s = opt.state[p]
            scores.append(importance("bitter9", p, s["exp_avg"], s["exp_avg_sq"], weights[role]).flatten())
            keep.append(result.masks[n].flatten())
        scores, keep = torch.cat(scores), torch.cat(keep)
        assert int(keep.sum()) == g[role]["kept"]
        assert scores[keep].min() >= scores[~keep].max()


def test_ratio_plan_names_both_ratios_when_the_selection_misses_the_tolerance():
    model, opt = _trained_tiny()
    # at 50 % the whole-entry counts give 2194 / 878 = 2.4989, not exactly 2.5
    with pytest.raises(RatioViolation, match=r"ratio after pruning is 2\.4989, outside 2\.5 \+/- 0"):
        ratio_plan(model, opt, 0.5, ratio=2.5, tolerance=0.0)
    assert not [b for b, _ in model.named_buffers() if "pruning_mask" in b]
    with pytest.raises(InfeasibleBudget, match="feasible sparsity"):
        ratio_plan(model, opt, 0.05, ratio=2.5)
