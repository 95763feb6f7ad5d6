"""Learning-rate schedules, stepped once per optimizer step.

`build_scheduler(name, optimizer, total_steps, ...)` returns a torch
`LambdaLR` whose multiplier is a `Factor` of t, the number of optimizer steps
already taken (the step about to run uses factor(t)). Every value is computed
from each group's base learning rate, never from the current one, so nothing
compounds, and the scheduler's `state_dict()` resumes it exactly.

    constant       1
    step           gamma ** (t // every), every = step_percent % of the run
    cosine         floor + (1 - floor) * (1 + cos(pi * t / T)) / 2, floor = min_lr / lr
    warmup_cosine  (t + 1) / W for t < W (W = warmup_percent % of the run),
                   then the cosine above over the remaining T - W steps

An optimizer with a `schedule_override` attribute (AdamWAdv with its cosine
annealing on) gets that schedule instead of the shared one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "step", "cosine", "warmup_cosine")
# The Kconfig defaults of LR_MIN, LR_WARMUP_PERCENT, LR_STEP_PERCENT, LR_STEP_GAMMA.
SCHEDULE_DEFAULTS = {"min_lr": 1e-6, "warmup_percent": 5.0, "step_percent": 30.0, "gamma": 0.1}


@dataclass
class Factor:
    """The learning-rate multiplier at step t (a plain object, so LambdaLR can save it)."""

    kind: str
    total: int
    floor: float = 0.0
    warmup: int = 0
    every: int = 1
    gamma: float = 1.0

    def __call__(self, t: int) -> float:
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** (t // self.every)
        if self.kind == "warmup_cosine" and t < self.warmup:
            return (t + 1) / self.warmup
        start = self.warmup if self.kind == "warmup_cosine" else 0
        progress = min(1.0, (t - start) / max(1, self.total - start))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _steps(total_steps: int, percent: float) -> int:
    return max(1, int(round(total_steps * percent / 100)))


def build_scheduler(
    name: str,
    optimizer: Optimizer,
    total_steps: int,
    *,
    min_lr: float = SCHEDULE_DEFAULTS["min_lr"],
    warmup_percent: float = SCHEDULE_DEFAULTS["warmup_percent"],
    step_percent: float = SCHEDULE_DEFAULTS["step_percent"],
    gamma: float = SCHEDULE_DEFAULTS["gamma"],
) -> LambdaLR:
    """The scheduler for schedule `name` over a run of `total_steps` optimizer steps."""
    name = getattr(optimizer, "schedule_override", None) or name
    if name not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    if total_steps < 1:
        raise ValueError(f"a schedule needs at least one training step, got {total_steps}")
    if min_lr < 0:
        raise ValueError(f"minimum learning rate must be >= 0, got {min_lr}")
    if not 0 < warmup_percent < 100:
        raise ValueError(f"warmup must be within (0, 100) % of the run, got {warmup_percent}")
    if not 0 < step_percent <= 100:
        raise ValueError(f"step interval must be within (0, 100] % of the run, got {step_percent}")
    if not 0 < gamma <= 1:
        raise ValueError(f"step decay factor gamma must be within (0, 1], got {gamma}")
    factors = []
    for group in optimizer.param_groups:
        base = group.get("initial_lr", group["lr"])
        if name in ("cosine", "warmup_cosine") and min_lr > base:
            raise ValueError(f"minimum learning rate {min_lr} exceeds the learning rate {base}")
        warmup = min(_steps(total_steps, warmup_percent), total_steps - 1) if name == "warmup_cosine" else 0
        factors.append(
            Factor(name, total_steps, floor=min_lr / base, warmup=warmup, every=_steps(total_steps, step_percent), gamma=gamma)
        )
    return LambdaLR(optimizer, factors)


def current_lr(optimizer: Optimizer) -> float:
    """The learning rate the next step applies (first group), AdamWSpam's warmup included."""
    factor = optimizer.lr_factor() if hasattr(optimizer, "lr_factor") else 1.0
    return optimizer.param_groups[0]["lr"] * factor
