"""lib.optim.adamwspam: spike clipping, momentum reset, post-reset cosine warmup, step counting."""

from __future__ import annotations

import math

import pytest
import torch

from lib import optim
from lib.optim.adamwspam import AdamWSpam, warmup_factor

BETAS = (0.9, 0.999)

pytestmark = pytest.mark.usefixtures("one_thread")


def param(n: int = 8) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.linspace(-1, 1, n, dtype=torch.float64))


def gradients(n_steps: int, n: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=g, dtype=torch.float64) for _ in range(n_steps)]


def step_with(opt, p, grad) -> torch.Tensor:
    """One step with a given gradient; returns the change of p."""
    before = p.detach().clone()
    p.grad = grad.clone()
    opt.step()
    return p.detach() - before


def test_injected_spike_is_clipped_to_sqrt_theta_v():
    p = param()
    opt = AdamWSpam([p], lr=1e-3, theta=5000.0, interval=0, clip_delay=5)
    for g in gradients(10):
        step_with(opt, p, g)
    state = opt.state[p]
    m0, v0 = state["exp_avg"].clone(), state["exp_avg_sq"].clone()
    spike = gradients(1, seed=3)[0]
    spike[2] = -1e4 * v0[2].sqrt()  # g**2 = 1e8 v >> theta * v
    step_with(opt, p, spike)
    seen = (state["exp_avg"] - BETAS[0] * m0) / (1 - BETAS[0])  # the gradient the moments absorbed
    expected = spike.clone()
    expected[2] = -math.sqrt(5000.0 * v0[2].item())
    torch.testing.assert_close(seen, expected, rtol=1e-9, atol=0)
    seen_sq = (state["exp_avg_sq"] - BETAS[1] * v0) / (1 - BETAS[1])
    torch.testing.assert_close(seen_sq, expected.square(), rtol=1e-9, atol=0)


def test_no_clipping_before_step_clip_delay():
    p = param()
    opt = AdamWSpam([p], lr=1e-3, theta=1.0, interval=0, clip_delay=4)
    grads = gradients(3)
    grads[2] = grads[2] * 1e3  # a spike at step 3 < clip_delay passes unclipped
    for g in grads[:2]:
        step_with(opt, p, g)
    v0, m0 = opt.state[p]["exp_avg_sq"].clone(), opt.state[p]["exp_avg"].clone()
    step_with(opt, p, grads[2])
    seen = (opt.state[p]["exp_avg"] - BETAS[0] * m0) / (1 - BETAS[0])
    torch.testing.assert_close(seen, grads[2], rtol=1e-9, atol=1e-15)
    assert bool((grads[2].square() > v0).any())  # it would have been clipped with the delay over


def clipped_steps(n_steps: int, interval: int, clip_delay: int) -> list[int]:
    """The steps at which AdamWSpam clipped. With theta 1 a constant gradient g is always a spike
    (v = g**2 (1 - beta2**k) < g**2), so it is clipped whenever clipping is on."""
    p = param(4)
    opt = AdamWSpam([p], lr=1e-3, theta=1.0, interval=interval, warmup=0, clip_delay=clip_delay)
    out = []
    for t in range(1, n_steps + 1):
        g = torch.full((4,), 0.5, dtype=torch.float64)
        m0 = opt.state[p]["exp_avg"].clone() if opt.state[p] else torch.zeros(4, dtype=torch.float64)
        if interval and t % interval == 0:
            m0.zero_()  # the reset step zeroes the moments before the update
        step_with(opt, p, g)
        seen = (opt.state[p]["exp_avg"] - BETAS[0] * m0) / (1 - BETAS[0])
        if not torch.allclose(seen, g, rtol=1e-9, atol=0):
            out.append(t)
    return out


@pytest.mark.parametrize("interval, clip_delay", [(10, 3), (500, 20), (0, 5)])
def test_clipping_starts_where_the_reference_implementation_starts_it(interval, clip_delay):
    """The reference code (SPAM-Optimizer, Huang et al. 2025) clips at step t when t >= clip_delay and
    t % DeltaT >= clip_delay: in the first cycle from t = clip_delay (t = 20 by default, not 21),
    after each reset from clip_delay steps past it."""
    n = 3 * interval if interval else 12
    reference = [t for t in range(1, n + 1) if t >= clip_delay and (interval == 0 or t % interval >= clip_delay)]
    assert clipped_steps(n, interval, clip_delay) == reference
    assert reference[0] == clip_delay


def test_both_moments_are_zeroed_at_the_reset_step():
    p = param()
    opt = AdamWSpam([p], lr=1e-3, interval=5, warmup=2, clip_delay=2)
    for g in gradients(3):
        step_with(opt, p, g)
    step_with(opt, p, torch.zeros(8, dtype=torch.float64))  # step 4: moments only decay
    assert bool((opt.state[p]["exp_avg_sq"] > 0).all()) and bool((opt.state[p]["exp_avg"] != 0).any())
    exp_avg, exp_avg_sq = opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]
    step_with(opt, p, torch.zeros(8, dtype=torch.float64))  # step 5 = the reset step
    assert torch.count_nonzero(opt.state[p]["exp_avg"]) == 0
    assert torch.count_nonzero(opt.state[p]["exp_avg_sq"]) == 0
    # zeroed in place: a pruner holding the tensors sees the reset
    assert opt.state[p]["exp_avg"] is exp_avg and opt.state[p]["exp_avg_sq"] is exp_avg_sq
    g = gradients(1, seed=9)[0]
    step_with(opt, p, g)  # step 6 starts from zero moments
    torch.testing.assert_close(opt.state[p]["exp_avg"], (1 - BETAS[0]) * g, rtol=1e-12, atol=0)


def test_warmup_factor_is_the_papers_cosine():
    n = 150
    for k in range(n):
        assert warmup_factor(k, n) == pytest.approx(1 - 0.99 * (1 + math.cos(math.pi * k / (n + 1))) / 2, abs=1e-15)
    assert warmup_factor(0, n) == pytest.approx(0.01)
    assert warmup_factor(n, n) == 1.0 and warmup_factor(10 * n, n) == 1.0
    values = [warmup_factor(k, n) for k in range(n + 1)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert warmup_factor(0, 0) == 1.0  # no warmup


def test_each_update_is_scaled_by_the_warmup_factor_of_its_step():
    """Recompute every step's update from the optimizer's own state: only the factor is unknown."""
    p = param()
    interval, warmup, lr, eps = 6, 4, 1e-2, 1e-8
    opt = AdamWSpam([p], lr=lr, eps=eps, theta=0.0, interval=interval, warmup=warmup, clip_delay=1)
    factors = []
    for g in gradients(20):
        delta = step_with(opt, p, g)
        s = opt.state[p]
        bc1, bc2 = 1 - BETAS[0] ** s["step"], 1 - BETAS[1] ** s["step"]
        unit = -lr / bc1 * s["exp_avg"] / (s["exp_avg_sq"].sqrt() / math.sqrt(bc2) + eps)
        factors.append((delta / unit).mean().item())
    expected = []
    for t in range(1, 21):
        expected.append(1.0 if t < interval else warmup_factor(t % interval, warmup))
    assert factors == pytest.approx(expected, rel=1e-6)
    assert expected[5] == pytest.approx(0.01)  # step 6: the first reset


def test_every_step_counts_once_and_lr_is_never_rewritten():
    p, q = param(), param(4)
    opt = AdamWSpam([{"params": [p]}, {"params": [q], "weight_decay": 0.0}], lr=1e-2, interval=4, warmup=3)
    for i, g in enumerate(gradients(11)):
        assert opt.lr_factor() == pytest.approx(1.0 if i + 1 < 4 else warmup_factor((i + 1) % 4, 3))
        p.grad, q.grad = g.clone(), g[:4].clone()
        opt.step()
    assert [grp["global_step"] for grp in opt.param_groups] == [11, 11]
    assert opt.state[p]["step"] == 11 and opt.state[q]["step"] == 11
    assert [grp["lr"] for grp in opt.param_groups] == [1e-2, 1e-2]


def test_a_parameter_without_gradient_still_advances_the_phase():
    p, q = param(), param(4)
    opt = AdamWSpam([p, q], lr=1e-2, interval=3, warmup=2)
    for g in gradients(5):
        p.grad, q.grad = g.clone(), None
        opt.step()
    assert opt.param_groups[0]["global_step"] == 5 and q not in opt.state


def test_with_clipping_and_resets_off_it_is_adamw_bit_for_bit():
    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    spam = optim.build("adamwspam", a, lr=1e-2, weight_decay=0.1, spam_theta=0.0, spam_interval=0)
    ref = torch.optim.AdamW(optim.param_groups(b, 0.1), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        x = torch.randn(8, 5, generator=g)
        for model, opt in ((a, spam), (b, ref)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)


def test_paper_defaults():
    opt = AdamWSpam([param()])
    group = opt.param_groups[0]
    assert (group["theta"], group["interval"], group["warmup"], group["clip_delay"]) == (5000.0, 500, 150, 20)
    assert optim.DEFAULTS["spam_theta"] == 5000.0 and optim.DEFAULTS["spam_interval"] == 500
    assert optim.DEFAULTS["spam_warmup"] == 150


def test_a_clipped_step_leaves_p_grad_as_backward_made_it():
    p = param()
    opt = AdamWSpam([p], lr=1e-3, theta=1.0, interval=0, clip_delay=2)
    for g in gradients(3):
        step_with(opt, p, g)
    spike = gradients(1, seed=5)[0] * 1e3
    m0 = opt.state[p]["exp_avg"].clone()
    p.grad = spike.clone()
    opt.step()
    absorbed = (opt.state[p]["exp_avg"] - BETAS[0] * m0) / (1 - BETAS[0])
    assert bool((absorbed.abs() < spike.abs()).any())  # the moments absorbed the clipped gradient
    assert torch.equal(p.grad, spike)  # p.grad is untouched
