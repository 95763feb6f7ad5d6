"""lib.pruning.base through every method: masks hold for 200 steps, targets are met, state is lean."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib import optim, pruning
from lib.pruning import SparsitySchedule, VARIANTS
from lib.pruning.base import prunable_parameters
from pruning_loop import train_steps

# Every method and allocation the product offers.
METHODS = [("magnitude", {}), ("magnitude", {"scope": "layer"}), ("movement", {}), ("movement", {"scope": "layer"})]
METHODS += [("state", {"variant": v}) for v in VARIANTS]
IDS = [f"{m}-{kw.get('variant', kw.get('scope', 'global'))}" for m, kw in METHODS]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(32, 32)
        self.norm = nn.LayerNorm(32)
        self.mlp = nn.Linear(32, 16)
        self.emb = nn.Embedding(10, 32)

    def forward(self, x):
        return self.mlp(torch.relu(self.norm(self.attn(x))))


def run(method, kw, schedule, steps, frequency=5, check=None):
    """`steps` optimizer steps with the pruning hooks in the training loops' order.

    Gradients are drawn at random (deterministically) instead of back-propagated:
    the hooks only see gradients, and this keeps 200 steps of every method fast.
    """
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    pruner = pruning.build(method, model, schedule, frequency, opt, **kw)
    g = torch.Generator().manual_seed(1)
    params = [p for p in model.parameters()]
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        pruner.mask_gradients()
        opt.step()
        pruner.step()
        if check:
            check(pruner, opt)
    return model, opt, pruner


def pruned_fraction(pruner):
    return sum(int((p == 0).sum()) for _, p in pruner.params) / sum(pruner.sizes)


@pytest.mark.parametrize("method, kw", METHODS, ids=IDS)
def test_pruned_weights_stay_exactly_zero_for_200_steps(method, kw):
    ever_pruned = {}

    def check(pruner, opt):
        for (name, p), mask in zip(pruner.params, pruner.mask_list()):
            before = ever_pruned.get(name)
            if before is not None:
                assert not (mask & before).any(), f"{name}: a pruned entry came back"
            ever_pruned[name] = ~mask
            assert (p[~mask] == 0).all(), f"{name}: a pruned weight is not zero"
            assert (opt.state[p]["exp_avg"][~mask] == 0).all() and (opt.state[p]["exp_avg_sq"][~mask] == 0).all()

    _, _, pruner = run(method, kw, SparsitySchedule(0.7, 20, 150, "cubic"), 200, check=check)
    assert abs(pruned_fraction(pruner) - 0.7) <= 1e-3


@pytest.mark.parametrize("kind", ["linear", "cubic"])
@pytest.mark.parametrize("unit", ["step", "epoch"])
def test_final_sparsity_within_a_tenth_of_a_percent_for_every_method_and_schedule(kind, unit):
    steps_per_epoch = 3
    for method, kw in METHODS:
        schedule = SparsitySchedule.from_percent(0.8, 15, 10, 75, kind, unit=unit, steps_per_epoch=steps_per_epoch)
        frequency = steps_per_epoch if unit == "epoch" else 2
        _, _, pruner = run(method, kw, schedule, 15, frequency=frequency)
        assert abs(pruned_fraction(pruner) - 0.8) <= 1e-3, (method, kw)
        assert pruner.sparsity == 0.8


def test_masks_are_non_persistent_bool_buffers_that_follow_the_module():
    model = Net()
    pruner = pruning.build("magnitude", model, SparsitySchedule(0.5, 0, 1), 1)
    assert all(m.dtype == torch.bool for m in pruner.mask_list())
    assert model.attn.pruning_mask_weight is pruner.mask_list()[0]
    assert not any("pruning_mask" in k for k in model.state_dict())  # best.pt loads into a plain model
    pruner.update_masks(0.5)
    model.to(torch.float64)  # buffers follow the module (bool stays bool); the pruner reads them afresh
    assert int((~pruner.mask_list()[0]).sum()) + int((~pruner.mask_list()[1]).sum()) == round(0.5 * sum(pruner.sizes))


def test_state_dict_roundtrip_restores_masks_and_counters():
    _, _, a = run("movement", {}, SparsitySchedule(0.6, 2, 10), 12)
    model = Net()
    b = pruning.build("movement", model, SparsitySchedule(0.6, 2, 10), 5)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.mask_list(), b.mask_list()))
    assert all(torch.equal(x, y) for x, y in zip(a.movement, b.movement))
    assert (b.step_count, b.sparsity) == (12, 0.6)
    c = pruning.build("magnitude", Net(), SparsitySchedule(0.6, 2, 10), 5)
    with pytest.raises(ValueError, match="no movement scores"):
        b.load_state_dict(c.state_dict())


def test_embeddings_norms_biases_and_a_tied_head_are_excluded_by_default():
    model = Net()
    assert [n for n, _ in prunable_parameters(model)] == ["attn.weight", "mlp.weight"]
    names = [n for n, _ in prunable_parameters(model, include_embeddings=True, include_norms=True, include_biases=True)]
    assert names == ["attn.weight", "attn.bias", "norm.weight", "norm.bias", "mlp.weight", "mlp.bias", "emb.weight"]

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(10, 4)
            self.body = nn.Linear(4, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.wte.weight

    assert [n for n, _ in prunable_parameters(Tied())] == ["body.weight"]
    assert [n for n, _ in prunable_parameters(Tied(), include_tied_head=True)] == ["body.weight", "head.weight"]


def test_sparsity_report_over_prunable_and_all_parameters():
    model, _, pruner = run("magnitude", {}, SparsitySchedule(0.5, 0, 1), 2)
    report = pruning.sparsity_report(model, params=pruner.params)
    assert report["sparsity_prunable"] == pytest.approx(0.5, abs=1e-3)
    total = sum(p.numel() for p in model.parameters())
    assert report["sparsity_global"] == pytest.approx(round(0.5 * sum(pruner.sizes)) / total, abs=1e-3)
    assert set(report["layers"]) == {"attn.weight", "mlp.weight"}
    summary = pruner.summary()
    assert summary["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3) and summary["scheduled_sparsity"] == 0.5


def test_layer_scope_prunes_every_layer_to_the_level():
    _, _, pruner = run("magnitude", {"scope": "layer"}, SparsitySchedule(0.5, 0, 1), 2)
    assert [float((~m).float().mean()) for m in pruner.mask_list()] == [0.5, 0.5]


def test_bad_build_arguments_list_the_valid_choices():
    model = Net()
    s = SparsitySchedule(0.5, 0, 1)
    with pytest.raises(ValueError, match="valid: none, magnitude, movement, state"):
        pruning.build("random", model, s)
    with pytest.raises(ValueError, match="state pruning needs a variant; valid: bitter0"):
        pruning.build("state", model, s, optimizer=torch.optim.AdamW(model.parameters()))
    with pytest.raises(ValueError, match="only to the 'state' method"):
        pruning.build("magnitude", model, s, variant="bitter7")
    with pytest.raises(ValueError, match="valid: global, layer"):
        pruning.build("movement", model, s, scope="blockwise")


OPTIMIZER_CASES = [(name, {}) for name in optim.OPTIMIZERS]
OPTIMIZER_CASES += [("adamwspam", {"spam_interval": 40, "spam_theta": 5.0}), ("sgd", {"nesterov": True})]
OPTIMIZER_CASES += [("adamwprune", {"base": b}) for b in optim.BASES]


@pytest.mark.parametrize("name, settings", OPTIMIZER_CASES, ids=[f"{n}-{'-'.join(map(str, s.values()))}" for n, s in OPTIMIZER_CASES])
def test_remask_on_update_keeps_zeros_exact_with_every_optimizer(name, settings):
    # Only gradients are masked between mask updates: every optimizer shipped must keep zeros zero.
    torch.manual_seed(0)
    model = Net()
    opt = optim.build(name, model, 1e-2, 0.1, **settings)
    method, kw = ("state", {"variant": "bitter7"}) if name != "sgd" else ("magnitude", {})
    pruner = pruning.build(method, model, SparsitySchedule(0.7, 20, 150, "cubic"), 5, opt, remask="update", **kw)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        pruner.mask_gradients()
        opt.step()
        pruner.step()
        for (_, p), mask in zip(pruner.params, pruner.mask_list()):
            assert (p[~mask] == 0).all()
            for value in opt.state[p].values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    assert (value[~mask] == 0).all()
    assert abs(pruned_fraction(pruner) - 0.7) <= 1e-3


def test_remask_mode_is_checked():
    with pytest.raises(ValueError, match="valid: step, update"):
        pruning.build("magnitude", Net(), SparsitySchedule(0.5, 0, 1), remask="sometimes")


@pytest.mark.parametrize("method,kw", [("magnitude", {}), ("magnitude", {"scope": "layer"}),
                                       ("movement", {}), ("state", {"variant": "bitter7"}), ("state", {"variant": "bitter4"})])
def test_each_group_prunes_its_lowest_scores_after_the_entries_already_pruned(method, kw):
    """An update prunes exactly each allocation group's count: the old masks' entries, then the lowest scores."""
    torch.manual_seed(0)
    model = Net()
    opt = optim.build("adamw", model, lr=1e-2)
    pruner = pruning.build(method, model, SparsitySchedule(0.6, 0, 10), 2, opt, **kw)
    x = torch.randn(16, 32)
    train_steps(pruner, opt, lambda: model(x).square().mean(), 6)  # masks at an earlier level, moments and movement scores that exist
    before = [m.clone() for m in pruner.mask_list()]
    scores = [pruner.score(i).float().reshape(-1) for i in range(len(pruner.params))]
    pruner.update_masks(0.6)
    for idx, n_prune in pruner.allocation(0.6):
        was = torch.cat([before[i].reshape(-1) for i in idx])
        now = torch.cat([pruner.mask_list()[i].reshape(-1) for i in idx])
        s = torch.cat([scores[i] for i in idx])
        assert int((~now).sum()) == max(n_prune, int((~was).sum()))
        assert not (now & ~was).any()  # masks only grow
        newly = ~now & was
        if newly.any():
            assert s[newly].max() <= s[now].min()


def test_masks_of_channels_last_weights_match_the_contiguous_model():
    """Scores and masks are compared in flat row-major order, whatever the memory layout."""
    masks = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = optim.build("adamw", model, lr=1e-2)
        pruner = pruning.build("magnitude", model, SparsitySchedule(0.5, 0, 1), 1, opt)
        assert pruner.mask_list()[0].is_contiguous() != channels_last
        model(torch.randn(2, 3, 8, 8)).square().mean().backward()
        opt.step()
        pruner.step()
        masks.append(pruner.masks)
        assert sum(int((~m).sum()) for m in pruner.mask_list()) == round(0.5 * sum(pruner.sizes))
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])


def test_gradient_masking_skips_parameters_without_gradients_and_follows_replaced_buffers():
    torch.manual_seed(0)
    model = Net()
    pruner = pruning.build("magnitude", model, SparsitySchedule(0.5, 0, 1), 1)
    pruner.update_masks(0.5)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model.attn.weight.grad = None  # took no part in this backward
    pruner.mask_gradients()
    assert model.attn.weight.grad is None
    assert torch.equal(model.mlp.weight.grad, model.mlp.pruning_mask_weight.float())
    # a buffer replaced by a new tensor (as model.to(device) does) is what the next masking reads
    model.mlp.pruning_mask_weight = torch.zeros_like(model.mlp.pruning_mask_weight)
    model.mlp.weight.grad = torch.ones_like(model.mlp.weight)
    pruner.mask_gradients()
    assert not model.mlp.weight.grad.any()


def test_re_masking_reaches_moments_that_appear_after_an_earlier_update():
    """apply_masks reads the optimizer state on each call: moments created after the first update are zeroed too."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = pruning.build("magnitude", model, SparsitySchedule(0.5, 0, 1), 1, opt)
    pruner.update_masks(0.25)
    pruner.apply_masks()  # no optimizer state yet: the weights alone
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # momentum buffers everywhere, pruned entries included (their gradient was not masked)
    pruner.update_masks(0.5)
    pruner.apply_masks()
    for (_, p), mask in zip(pruner.params, pruner.mask_list()):
        assert not p[~mask].any() and not opt.state[p]["momentum_buffer"][~mask].any()
        assert opt.state[p]["momentum_buffer"][mask].all()
