"""lib.optim.schedules: each schedule's curve, one step per optimizer step, no compounding."""

from __future__ import annotations

import math

import pytest
import torch

from lib import optim

BASE = 0.1


def make_opt(name: str = "sgd", lr: float = BASE, **settings):
    model = torch.nn.Linear(3, 2)
    return optim.build(name, model, lr=lr, **settings)


def lrs(opt, scheduler, steps: int) -> list[float]:
    """The learning rate each of `steps` optimizer steps runs with."""
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: a no-op that keeps torch's call-order check quiet
        scheduler.step()
    return out


def cosine(t, total, lo, hi=BASE):
    return lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * t / total))


def test_constant():
    opt = make_opt()
    assert lrs(opt, optim.build_scheduler("constant", opt, 50), 50) == [BASE] * 50


def test_step_decay_every_percent_of_the_run():
    opt = make_opt()
    got = lrs(opt, optim.build_scheduler("step", opt, 100, step_percent=30, gamma=0.5), 100)
    expected = [BASE * 0.5 ** (t // 30) for t in range(100)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[29] == BASE and got[30] == pytest.approx(BASE / 2) and got[90] == pytest.approx(BASE / 8)


def test_cosine_anneals_to_the_minimum():
    opt = make_opt()
    sched = optim.build_scheduler("cosine", opt, 40, min_lr=1e-3)
    got = lrs(opt, sched, 40)
    assert got == pytest.approx([cosine(t, 40, 1e-3) for t in range(40)], rel=1e-12)
    assert got[0] == BASE and opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # after the last step


def test_linear_warmup_then_cosine():
    opt = make_opt()
    sched = optim.build_scheduler("warmup_cosine", opt, 100, min_lr=0.0, warmup_percent=10)
    got = lrs(opt, sched, 100)
    assert got[:10] == pytest.approx([BASE * (t + 1) / 10 for t in range(10)], rel=1e-12)
    assert got[9] == pytest.approx(BASE)
    assert got[10:] == pytest.approx([cosine(t - 10, 90, 0.0) for t in range(10, 100)], rel=1e-12, abs=1e-15)


def test_scaled_from_the_base_lr_never_compounded():
    opt = make_opt()
    sched = optim.build_scheduler("cosine", opt, 20, min_lr=0.0)
    lrs(opt, sched, 7)
    opt.param_groups[0]["lr"] = 123.0  # whatever the current value, the next one comes from the base
    lrs(opt, sched, 1)
    assert opt.param_groups[0]["lr"] == pytest.approx(cosine(8, 20, 0.0))


def test_each_group_follows_its_own_base():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.2}, {"params": [model.bias], "lr": 0.02}], lr=0.2)
    sched = optim.build_scheduler("cosine", opt, 10, min_lr=1e-3)
    lrs(opt, sched, 5)
    assert opt.param_groups[0]["lr"] == pytest.approx(cosine(5, 10, 1e-3, 0.2))
    assert opt.param_groups[1]["lr"] == pytest.approx(cosine(5, 10, 1e-3, 0.02))


def test_adamwadv_anneals_itself_unless_told_to_share():
    own = make_opt("adamwadv", lr=1e-2)
    got = lrs(own, optim.build_scheduler("constant", own, 30, min_lr=1e-4), 30)
    assert got == pytest.approx([cosine(t, 30, 1e-4, 1e-2) for t in range(30)], rel=1e-12)
    shared = make_opt("adamwadv", lr=1e-2, adamwadv_schedule="shared")
    assert lrs(shared, optim.build_scheduler("constant", shared, 30), 30) == [1e-2] * 30
    pruned = make_opt("adamwprune", lr=1e-2, base="adamwadv")  # the base decides, as for the update
    assert lrs(pruned, optim.build_scheduler("step", pruned, 30, min_lr=1e-4), 3)[2] == pytest.approx(cosine(2, 30, 1e-4, 1e-2))


def test_current_lr_includes_the_spam_warmup():
    opt = make_opt("adamwspam", lr=1e-2, spam_interval=3, spam_warmup=2)
    sched = optim.build_scheduler("constant", opt, 10)
    seen = []
    for _ in range(6):
        seen.append(optim.current_lr(opt))
        opt.step()
        sched.step()
    w = optim.adamwspam.warmup_factor
    assert seen == pytest.approx([1e-2, 1e-2, 1e-2 * w(0, 2), 1e-2 * w(1, 2), 1e-2, 1e-2 * w(0, 2)])


def test_state_dict_round_trip():
    opt = make_opt()
    sched = optim.build_scheduler("warmup_cosine", opt, 50, min_lr=1e-4)
    lrs(opt, sched, 17)
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    opt2 = make_opt()
    sched2 = optim.build_scheduler("warmup_cosine", opt2, 50, min_lr=1e-4)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert lrs(opt2, sched2, 33) == lrs(opt, sched, 33)


@pytest.mark.parametrize(
    "name, kw, message",
    [
        ("linear", {}, "unknown learning-rate schedule 'linear'; valid: constant, step, cosine, warmup_cosine"),
        ("cosine", {"min_lr": 1.0}, "exceeds the learning rate"),
        ("cosine", {"min_lr": -1.0}, "must be >= 0"),
        ("warmup_cosine", {"warmup_percent": 0}, "warmup must be within"),
        ("step", {"gamma": 0.0}, "gamma must be within"),
        ("step", {"step_percent": 0}, "step interval must be within"),
    ],
)
def test_bad_schedule_settings(name, kw, message):
    opt = make_opt()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        optim.build_scheduler(name, opt, 10, **kw)
