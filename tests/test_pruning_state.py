"""lib.pruning.state: every bitter formula on hand-made tensors, the variant registry, and the state pruner on real optimizers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib import optim, pruning
from lib.pruning import SparsitySchedule
from lib.pruning.state import EPS, VARIANTS, StatePruner, importance, register_variant
from pruning_loop import train_steps

# Hand-made tensors: w, m (exp_avg), v (exp_avg_sq), s (structural weight).
W = [-2.0, 0.5, 0.0, 3.0]
M = [0.1, -0.04, 0.3, 0.0]
V = [0.04, 1e-4, 0.09, 0.0]
S = 2.5


def by_hand(variant: str) -> list[float]:
    """The issue's table, written out entry by entry with math (no torch)."""
    out = []
    for w, m, v in zip(W, M, V):
        w = abs(w)
        out.append(
            {
                "bitter0": w * abs(m) * w / (math.sqrt(v) + EPS),
                "bitter1": w,
                "bitter2": w,
                "bitter3": w * math.sqrt(abs(m) + EPS),
                "bitter4": w * math.sqrt(abs(m) + EPS),
                "bitter7": w * (abs(v) + EPS) ** 0.25,
                "bitter8": S * w * math.sqrt(abs(m) + EPS),
                "bitter9": S * w * (abs(v) ** 0.25 + EPS),
            }[variant]
        )
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_importance_matches_the_formula(variant):
    got = importance(variant, torch.tensor(W), torch.tensor(M), torch.tensor(V), structure_weight=S)
    assert got.tolist() == pytest.approx(by_hand(variant), rel=1e-6, abs=1e-12)
    assert got.dtype == torch.float32


def test_importance_values_spelled_out():
    # A few numbers worked by hand, so a wrong formula cannot hide behind a wrong reference.
    w, m, v = torch.tensor([-2.0]), torch.tensor([0.16]), torch.tensor([0.0625])
    assert importance("bitter0", w, m, v).item() == pytest.approx(2 * 0.16 * 2 / 0.25)  # 2.56
    assert importance("bitter3", w, m, v).item() == pytest.approx(2 * 0.4, rel=1e-6)  # sqrt(0.16) = 0.4
    assert importance("bitter7", w, m, v).item() == pytest.approx(2 * 0.5, rel=1e-6)  # 0.0625^0.25 = 0.5
    assert importance("bitter9", w, m, v, structure_weight=3.0).item() == pytest.approx(3 * 2 * 0.5, rel=1e-6)
    assert importance("bitter1", w, m, v).item() == 2.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_importance_does_not_touch_its_inputs_and_is_float32(dtype):
    w, m, v = (torch.tensor(x, dtype=dtype) for x in (W, M, V))
    before = [t.clone() for t in (w, m, v)]
    for variant in VARIANTS:
        got = importance(variant, w, m, v, structure_weight=S)
        assert got.dtype == torch.float32
        assert torch.equal(got, importance(variant, w.float(), m.float(), v.float(), structure_weight=S))
    assert all(torch.equal(a, b) for a, b in zip((w, m, v), before))


def test_bitter7_eps_inside_and_outside_the_fourth_root():
    """Seed 001's code and seed 003: (|v| + eps) ** 0.25 (default); seed 000: |v| ** 0.25 + eps."""
    w, m, v = torch.tensor([2.0, 3.0]), torch.zeros(2), torch.tensor([0.0625, 0.0])
    inside = importance("bitter7", w, m, v)
    outside = importance("bitter7", w, m, v, bitter7_eps="outside")
    assert inside.tolist() == pytest.approx([2 * (0.0625 + EPS) ** 0.25, 3 * EPS ** 0.25], rel=1e-6)
    assert outside.tolist() == pytest.approx([2 * (0.5 + EPS), 3 * EPS], rel=1e-6)
    assert torch.equal(outside, importance("bitter9", w, m, v, structure_weight=1.0))
    with pytest.raises(ValueError, match="bitter7_eps.*'middle'; valid: inside, outside"):
        importance("bitter7", w, m, v, bitter7_eps="middle")


def test_bitter7_eps_placements_prune_different_weights_when_second_moments_are_tiny():
    """With v far below eps, eps inside the root ranks those weights by |w| * eps ** 0.25; outside, by |w| * v ** 0.25.

    Weight a is large with v = 0 (no gradient); weight b is small with a tiny v.
    Inside: a's score 1.0 * 0.01 beats b's 0.1 * (1e-12 + 1e-8) ** 0.25 (about 0.001), so b is pruned.
    Outside: a's score 1.0 * 1e-8 loses to b's 0.1 * 1e-3, so a is pruned.
    """
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.1]]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.state[model.weight] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros(1, 2),
                               "exp_avg_sq": torch.tensor([[0.0, 1e-12]])}
    kept = {}
    for placement in ("inside", "outside"):
        pruner = StatePruner(model, SparsitySchedule(0.5, 0, 1), 1, optimizer=opt, variant="bitter7", bitter7_eps=placement)
        pruner.update_masks(0.5)
        kept[placement] = pruner.mask_list()[0].tolist()
        assert pruner.summary()["bitter7_eps"] == placement
    assert kept == {"inside": [[True, False]], "outside": [[False, True]]}
    with pytest.raises(ValueError, match="valid: inside, outside"):
        StatePruner(model, SparsitySchedule(0.5, 0, 1), 1, optimizer=opt, variant="bitter7", bitter7_eps="around")


@pytest.fixture
def registered():
    """Register variants for one test and remove them after it."""
    names = []

    def register(name, *args, **kw):
        names.append(name)
        return register_variant(name, *args, **kw)

    yield register
    for name in names:
        VARIANTS.pop(name, None)


def test_a_registered_variant_runs_through_the_pruner(registered):
    """A formula registered here is all a new variant needs in code: build, train a few steps, exact sparsity."""
    calls = []

    def gradient_energy(w, m, v, eps):  # |w| * |m| / (sqrt(v) + eps): a signal-to-noise score
        calls.append(1)
        return (m.abs() / (v.sqrt() + eps)).mul_(w.abs()).float()

    spec = registered("snr", "|w| * |m| / (sqrt(v) + eps)", gradient_energy)
    assert VARIANTS["snr"] is spec and spec.uses_moments and not spec.structure_aware
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    pruner = pruning.build("state", model, SparsitySchedule(0.5, 2, 6), 1, opt, variant="snr")
    train(model, opt, pruner, 8)
    assert calls and pruner.sparsity == 0.5
    pruned = sum(int((~m).sum()) for m in pruner.mask_list())
    assert pruned == round(0.5 * sum(pruner.sizes))
    for (_, p), mask in zip(pruner.params, pruner.mask_list()):
        assert not p[~mask].any() and not opt.state[p]["exp_avg_sq"][~mask].any()
    with pytest.raises(ValueError, match="already registered"):
        register_variant("snr", "x", gradient_energy)
    with pytest.raises(ValueError, match="Kconfig symbol"):
        register_variant("Bad-Name", "x", gradient_energy)


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(ValueError, match="bitter5.*valid: bitter0, bitter1, bitter2, bitter3, bitter4, bitter7, bitter8, bitter9"):
        importance("bitter5", torch.ones(2), torch.ones(2), torch.ones(2))


def test_moment_variants_need_moments():
    with pytest.raises(ValueError, match="exp_avg"):
        importance("bitter7", torch.ones(2), None, None)
    assert importance("bitter1", torch.tensor([-3.0]), None, None).item() == 3.0


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(16, 16)
        self.mlp = nn.Linear(16, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.relu(self.mlp(torch.relu(self.attn(x)))))


def train(model, opt, pruner, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    train_steps(pruner, opt, lambda: nn.functional.cross_entropy(model(x), y), steps)


OPTIMIZERS = {
    "torch-adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2),
    "adamwprune": lambda m: optim.build("adamwprune", m, 1e-2, 0.01),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("variant", ["bitter0", "bitter3", "bitter7"])
def test_pruned_entries_are_the_lowest_importances_of_the_real_moments(opt_name, variant):
    torch.manual_seed(1)
    model = Net()
    opt = OPTIMIZERS[opt_name](model)
    warm = StatePruner(model, SparsitySchedule(0.1, 1000, 2000), 1, optimizer=opt, variant=variant)
    train(model, opt, warm, 3)  # three real optimizer steps: the moments exist
    pruner = StatePruner(model, SparsitySchedule(0.6, 0, 1), 1, optimizer=opt, variant=variant)
    scores = torch.cat([importance(variant, p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]).flatten()
                        for _, p in pruner.params])
    pruner.update_masks(0.6)
    pruned = torch.cat([(~m).flatten() for m in pruner.mask_list()])
    assert int(pruned.sum()) == round(0.6 * scores.numel())
    assert scores[pruned].max() <= scores[~pruned].min()
    pruner.apply_masks()  # what pruner.step() does after an update
    train(model, opt, pruner, 2)
    for (_, p), mask in zip(pruner.params, pruner.mask_list()):
        state = opt.state[p]
        assert (p[~mask] == 0).all()
        assert (state["exp_avg"][~mask] == 0).all() and (state["exp_avg_sq"][~mask] == 0).all()


def test_sgd_has_no_moments_and_says_so():
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = StatePruner(model, SparsitySchedule(0.5, 1, 2), 1, optimizer=opt, variant="bitter7")
    with pytest.raises(ValueError, match="exp_avg.*SGD.*Adam-family"):
        train(model, opt, pruner, 2)


def test_state_pruning_without_an_optimizer_is_refused():
    with pytest.raises(ValueError, match="needs the optimizer"):
        StatePruner(Net(), SparsitySchedule(0.5, 1, 2), variant="bitter0")


def test_structure_weights_shift_the_budget_towards_mlp():
    # Same weights and moments everywhere: bitter8 with attention weighted 2.5x prunes the MLP first.
    model = Net()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = StatePruner(model, SparsitySchedule(0.3, 0, 1), 1, optimizer=opt, variant="bitter8")
    assert pruner.roles == ["attention", "mlp", "other"]
    pruner.update_masks(0.3)
    masks = dict(zip([n for n, _ in pruner.params], pruner.mask_list()))
    assert masks["attn.weight"].all()


def test_bitter4_is_layer_adaptive_and_hits_the_target():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    pruner = pruning.build("state", model, SparsitySchedule(0.6, 2, 20), 1, opt, variant="bitter4")
    assert pruner.scope == "adaptive"
    train(model, opt, pruner, 25)
    layer = [float((~m).float().mean()) for m in pruner.mask_list()]
    assert layer[0] < layer[1] < layer[2]  # deeper layers pruned harder
    total = sum(int((~m).sum()) for m in pruner.mask_list())
    assert total == round(0.6 * sum(pruner.sizes))


def test_state_variant_is_saved_nowhere_but_masks_are_one_byte():
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = StatePruner(model, SparsitySchedule(0.5, 1, 2), optimizer=opt, variant="bitter9")
    assert pruner.state_bytes() == sum(pruner.sizes)  # 1 byte per prunable parameter
