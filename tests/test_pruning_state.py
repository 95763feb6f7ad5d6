"""lib.pruning.state: every bitter formula on hand-made tensors, and the state pruner on real optimizers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib import optim, pruning
from lib.pruning import SparsitySchedule, native
from lib.pruning.state import EPS, VARIANTS, StatePruner, importance

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
def test_importance_does_not_touch_its_inputs(dtype):
    w, m, v = (torch.tensor(x, dtype=dtype) for x in (W, M, V))
    before = [t.clone() for t in (w, m, v)]
    for variant in VARIANTS:
        got = importance(variant, w, m, v, structure_weight=S)  # float32 inputs: the C kernel on the CPU
        with native.disabled():  # torch operations for both: the float32 formula of other dtypes' values
            assert torch.equal(importance(variant, w, m, v, structure_weight=S),
                               importance(variant, w.float(), m.float(), v.float(), structure_weight=S))
        assert got.dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip((w, m, v), before))


def step_by_step(variant: str, w, m, v, s: float) -> torch.Tensor:
    """`variant`'s float32 operations in importance()'s order, each one correctly rounded (done in float64, rounded once)."""
    w, m, v = (t.double() for t in (w, m, v))
    eps, s = torch.tensor(EPS).item(), torch.tensor(s).item()  # as float32 values

    def r(x):  # round to float32 (exact for +, *, / and sqrt of float32 inputs: 53 >= 2 * 24 + 2 bits)
        return x.float().double()

    if variant == "bitter0":
        out = r(r(r(m.abs() * w) * w) / r(r(v.sqrt()) + eps))
    elif variant in ("bitter3", "bitter4", "bitter8"):
        out = r(r(r(m.abs() + eps).sqrt()) * w).abs()
    elif variant == "bitter7":
        out = r(r(r(r(v.abs() + eps).sqrt()).sqrt()) * w).abs()
    else:  # bitter9
        out = r(r(r(r(v.abs().sqrt()).sqrt()) + eps) * w).abs()
    return r(out * s).float() if VARIANTS[variant].structure_aware else out.float()


@pytest.mark.parametrize("parallel", [False, True])
def test_the_c_kernel_computes_every_variant_correctly_rounded(parallel, monkeypatch):
    """On the CPU, float32 scores come from csrc/state_scores.c in one pass: exactly the step-by-step float32 result.

    torch's own CPU sqrt is not always correctly rounded: its operations may
    differ in the last bit, never by more.
    """
    kernels = native.kernels()
    assert kernels is not None, "the C kernels did not build"
    if parallel:  # split over two threads however small
        monkeypatch.setattr(native, "PARALLEL_FROM", 0)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    taken = []
    scores = kernels.state_scores
    monkeypatch.setattr(kernels, "state_scores", lambda *a: taken.append(scores(*a)) or taken[-1])
    g = torch.Generator().manual_seed(0)
    w, m, v = (torch.randn(3001, generator=g) * scale for scale in (0.05, 1e-3, 1e-6))
    v[::7] = v[::7].abs()  # mostly non-negative, as Adam keeps it; negative entries test |v|
    w[::11], m[::13], v[::17] = 0.0, 0.0, 0.0
    for variant in ("bitter0", "bitter3", "bitter4", "bitter7", "bitter8", "bitter9"):
        vv = v.abs() if variant == "bitter0" else v  # bitter0 takes sqrt(v) as it stands
        got = importance(variant, w, m, vv, structure_weight=S)
        assert taken.pop() is True
        want = step_by_step(variant, w, m, vv, S)
        assert torch.equal(got, want), variant
        with native.disabled():
            torch.testing.assert_close(importance(variant, w, m, vv, structure_weight=S), got, rtol=2.5e-7, atol=0)
    importance("bitter7", w.bfloat16(), m, v)  # other dtypes are left to torch
    importance("bitter7", w[:3000].view(1000, 3)[:, 0], m[:1000], v[:1000])  # so are strided tensors
    assert taken == []


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
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        pruner.mask_gradients()
        opt.step()
        pruner.step()


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
