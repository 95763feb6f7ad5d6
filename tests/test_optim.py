"""lib.optim: building each optimizer, exactness against torch, AdamWPrune, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib import optim

SPAM_SHORT = dict(spam_interval=7, spam_warmup=4, spam_clip_delay=2)  # resets inside a short test

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3))


def batches(n: int, seed: int = 1, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, size, 6, generator=g)
    w = torch.randn(6, 3, generator=g)
    return [(xi, (xi @ w).argmax(1)) for xi in x]


def train(model, opt, data, scheduler=None) -> list[float]:
    losses = []
    for x, y in data:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses


def variants():
    """(name, settings) for every optimizer and every AdamWPrune base."""
    out = [(name, {}) for name in optim.OPTIMIZERS if name != "adamwprune"]
    return out + [("adamwprune", {"base": base}) for base in optim.BASES]


@pytest.mark.parametrize("name, settings", variants(), ids=lambda v: v if isinstance(v, str) else v.get("base", ""))
def test_each_optimizer_lowers_the_loss(name, settings):
    model = tiny_model()
    data = batches(1) * 60  # one fixed batch: a deterministic problem
    opt = optim.build(name, model, lr=0.01 if name != "sgd" else 0.1, weight_decay=1e-4, **settings)
    losses = train(model, opt, data)
    assert losses[-1] < 0.5 * losses[0], f"{name}: {losses[0]:.3f} -> {losses[-1]:.3f}"


KERNELS = [("fused", {"fused": True}), ("torch", {})]  # our setting -> torch's keyword


@pytest.mark.parametrize("kernels,torch_kw", KERNELS)
def test_adamw_matches_torch_adamw_exactly(kernels, torch_kw):
    ours, ref = tiny_model(), tiny_model()
    kw = dict(lr=3e-3, betas=(0.85, 0.99), eps=1e-7)
    opt = optim.build("adamw", ours, weight_decay=0.05, kernels=kernels, **kw)
    ref_opt = torch.optim.AdamW(optim.param_groups(ref, 0.05), **kw, **torch_kw)
    data = batches(40)
    train(ours, opt, data)
    train(ref, ref_opt, data)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_weight_decay_skips_biases_and_norm_weights():
    opt = optim.build("adamw", tiny_model(), lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) == 2 and len(no_decay["params"]) == 4  # 2 weights; 2 biases + LayerNorm weight/bias


@pytest.mark.parametrize("kernels,torch_kw", KERNELS)
def test_sgd_nesterov_matches_torch(kernels, torch_kw):
    ours, ref = tiny_model(), tiny_model()
    opt = optim.build("sgd", ours, lr=0.05, weight_decay=1e-3, momentum=0.8, nesterov=True, kernels=kernels)
    ref_opt = torch.optim.SGD(optim.param_groups(ref, 1e-3), lr=0.05, momentum=0.8, nesterov=True, **torch_kw)
    data = batches(20)
    train(ours, opt, data)
    train(ref, ref_opt, data)
    assert opt.param_groups[0]["nesterov"] is True
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adamwprune"])
def test_fused_and_torch_kernels_give_the_same_training_up_to_rounding(name):
    finals = {}
    for kernels in optim.KERNELS:
        model = tiny_model()
        opt = optim.build(name, model, lr=1e-2, weight_decay=0.01, kernels=kernels)
        assert bool(opt.defaults.get("fused")) == (kernels == "fused")
        train(model, opt, batches(30))
        finals[kernels] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(finals["fused"], finals["torch"]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_own_multi_tensor_optimizers_are_not_fused():
    for name in ("adamwadv", "adamwspam"):
        assert not optim.build(name, tiny_model(), lr=1e-3).defaults.get("fused")


def test_adamwadv_is_amsgrad_adamw_after_clipping_its_own_gradients():
    ours, ref = tiny_model(), tiny_model()
    opt = optim.build("adamwadv", ours, lr=1e-2, weight_decay=0.01, clip_norm=0.05)
    ref_opt = torch.optim.AdamW(optim.param_groups(ref, 0.01), lr=1e-2, amsgrad=True)
    for x, y in batches(25):
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if o is ref_opt:
                torch.nn.utils.clip_grad_norm_([p for g in ref_opt.param_groups for p in g["params"]], 0.05)
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    assert all("max_exp_avg_sq" in opt.state[p] for p in ours.parameters())


def test_adamwadv_clipping_is_inside_step():
    model = tiny_model()
    opt = optim.build("adamwadv", model, lr=1e-3, clip_norm=1.0)
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    opt.step()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    assert norm == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("base", optim.BASES)
def test_adamwprune_without_pruning_is_its_base_bit_for_bit(base):
    pruned, ref = tiny_model(), tiny_model()
    settings = dict(SPAM_SHORT, spam_theta=50.0)  # AdamWSpam resets, warms up and clips within 100 steps
    opt = optim.build("adamwprune", pruned, lr=5e-3, weight_decay=0.01, base=base, **settings)
    ref_opt = optim.build(base, ref, lr=5e-3, weight_decay=0.01, **settings)
    assert isinstance(opt, type(ref_opt)) and isinstance(opt, optim.AdamWPrune) and opt.base == base
    sched = optim.build_scheduler("warmup_cosine", opt, 100)
    ref_sched = optim.build_scheduler("warmup_cosine", ref_opt, 100)
    data = batches(100)
    train(pruned, opt, data, sched)
    train(ref, ref_opt, data, ref_sched)
    for a, b in zip(pruned.parameters(), ref.parameters()):
        assert torch.equal(a, b)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[a][key], ref_opt.state[b][key])


def test_adamwprune_base_really_changes_the_update():
    finals = {}
    for base in optim.BASES:
        model = tiny_model()
        opt = optim.build("adamwprune", model, lr=5e-3, weight_decay=0.05, base=base, **SPAM_SHORT)
        train(model, opt, batches(12))
        finals[base] = torch.cat([p.detach().flatten() for p in model.parameters()])
    for i, a in enumerate(optim.BASES):
        for b in optim.BASES[i + 1:]:
            assert not torch.equal(finals[a], finals[b]), f"bases {a} and {b} gave the same weights"


@pytest.mark.parametrize("name, settings", [v for v in variants() if v[0] != "sgd"], ids=str)
def test_adam_family_exposes_moments_to_the_state_pruner(name, settings):
    model = tiny_model()
    opt = optim.build(name, model, lr=1e-3, **settings)
    train(model, opt, batches(3))
    for p in model.parameters():
        assert opt.state[p]["exp_avg"].shape == p.shape and opt.state[p]["exp_avg_sq"].shape == p.shape
        assert bool((opt.state[p]["exp_avg_sq"] >= 0).all())


def test_adamwprune_moments_hook():
    model = tiny_model()
    opt = optim.build("adamwprune", model, lr=1e-3, base="adamwspam")
    w = model[0].weight
    m, v = opt.moments(w)
    assert torch.equal(m, torch.zeros_like(w)) and torch.equal(v, torch.zeros_like(w))  # before any step
    train(model, opt, batches(2))
    m, v = opt.moments(w)
    assert m is opt.state[w]["exp_avg"] and v is opt.state[w]["exp_avg_sq"]


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(name="lion"), "unknown optimizer 'lion'; valid: sgd, adam, adamw, adamwadv, adamwspam, adamwprune"),
        (dict(lr=-0.1), "learning rate must be positive"),
        (dict(lr=0.0), "learning rate must be positive"),
        (dict(weight_decay=-1.0), "weight decay must be >= 0"),
        (dict(name="adamwprune", base="sgd"), "unknown AdamWPrune base 'sgd'; valid: adam, adamw, adamwadv, adamwspam"),
        (dict(name="adamwprune", base="nope"), "valid: adam, adamw, adamwadv, adamwspam"),
        (dict(betas=(1.0, 0.999)), "betas must lie in [0, 1)"),
        (dict(name="sgd", momentum=0.0, nesterov=True), "Nesterov momentum needs"),
        (dict(name="adamwadv", clip_norm=-1.0), "clip norm must be >= 0"),
        (dict(name="adamwspam", spam_clip_delay=0), "clip delay must be >= 1"),
        (dict(name="adamwspam", spam_theta=-1.0), "theta must be >= 0"),
        (dict(adamwadv_schedule="linear"), "valid: cosine, shared"),
        (dict(kernels="triton"), "unknown optimizer kernels 'triton'; valid: fused, torch"),
    ],
)
def test_bad_input_is_a_value_error_listing_valid_choices(call, message):
    kw = dict(name="adamw", lr=1e-3)
    kw.update(call)
    with pytest.raises(ValueError) as err:
        optim.build(kw.pop("name"), tiny_model(), **kw)
    assert message in str(err.value)


def test_unknown_setting_is_rejected():
    with pytest.raises(TypeError, match="unknown optimizer setting"):
        optim.build("adamw", tiny_model(), lr=1e-3, spam_thta=3.0)


@pytest.mark.parametrize("base", optim.BASES)
def test_adamwprune_moments_drive_state_pruning(base):
    """The state pruner (lib/pruning/state.py) reads AdamWPrune's moments through its hook, for every base."""
    from lib import pruning

    model = tiny_model()
    opt = optim.build("adamwprune", model, lr=5e-3, weight_decay=0.01, base=base, **SPAM_SHORT)
    schedule = pruning.SparsitySchedule(target=0.5, warmup=5, ramp_end=30)
    pruner = pruning.build("state", model, schedule, 5, opt, variant="bitter0")
    for x, y in batches(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        pruner.mask_gradients()
        opt.step()
        pruner.step()
    for name, p in pruner.params:
        pruned = ~pruner.masks[name]
        assert bool((p[pruned] == 0).all())
        for key in ("exp_avg", "exp_avg_sq"):  # pruned entries keep no optimizer state
            assert bool((opt.state[p][key][pruned] == 0).all())
    kept = sum(int(m.sum()) for m in pruner.masks.values())
    total = sum(m.numel() for m in pruner.masks.values())
    assert abs(1 - kept / total - 0.5) < 0.01
