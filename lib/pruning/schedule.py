"""Sparsity schedules shared by every pruning method, in optimizer steps.

With p = clamp((t - warmup) / (ramp_end - warmup), 0, 1) and s_f the target:
linear s_f * p; cubic s_f * p**3 (the reference documents', late-heavy);
gradual s_f * (1 - (1 - p)**3) (Zhu and Gupta's, which most libraries call
cubic). Every ramp is 0 through warmup and exactly s_f from ramp end on.
`oneshot` is no ramp: s_f from step 0 on (warmup and ramp end 0), for
pruning a trained model once before fine-tuning it; the run sets the masks
before its first optimizer step (lib/run.py), so only a method whose scores
exist before training can take it (magnitude).
Epoch-based (`quantum` = steps per epoch): t is rounded down to whole
epochs, and `from_percent(..., unit="epoch")` puts warmup and ramp end on
epoch boundaries. See docs/pruning.md, "Schedules".
"""

from __future__ import annotations

from dataclasses import dataclass

RAMPS = ("linear", "cubic", "gradual")
ONESHOT = "oneshot"
SCHEDULES = RAMPS + (ONESHOT,)
UNITS = ("step", "epoch")


@dataclass(frozen=True)
class SparsitySchedule:
    target: float
    warmup: int  # no pruning up to and including this step
    ramp_end: int  # target reached at this step
    kind: str = "cubic"
    quantum: int = 1  # the schedule moves every `quantum` steps (steps per epoch when epoch-based)

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown sparsity schedule {self.kind!r}; valid: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"target sparsity {self.target} is outside [0, 1)")
        if self.warmup < 0 or self.ramp_end < self.warmup:
            raise ValueError(f"schedule needs 0 <= warmup ({self.warmup}) <= ramp_end ({self.ramp_end})")
        if self.quantum < 1:
            raise ValueError(f"schedule quantum must be >= 1 step, got {self.quantum}")

    @classmethod
    def from_percent(
        cls,
        target: float,
        total_steps: int,
        warmup_pct: float,
        ramp_end_pct: float,
        kind: str,
        unit: str = "step",
        steps_per_epoch: int = 1,
    ):
        """Warmup and ramp end given as percentages of the run's total steps.

        unit="epoch": both are rounded to whole epochs of `steps_per_epoch`
        steps (ramp end up, at least one epoch after warmup, never past the
        run) and the schedule moves once per epoch. `oneshot` has neither: the
        target from step 0.
        """
        if not 0 <= warmup_pct < ramp_end_pct <= 100:
            raise ValueError(
                f"pruning warmup ({warmup_pct}%) must be below the ramp end ({ramp_end_pct}%), both within 0-100"
            )
        if unit not in UNITS:
            raise ValueError(f"unknown schedule unit {unit!r}; valid: {', '.join(UNITS)}")
        if kind == ONESHOT:
            return cls(target, 0, 0, kind)
        if unit == "epoch":
            q = max(1, int(steps_per_epoch))
            epochs = max(1, total_steps // q)
            warmup_e = int(epochs * warmup_pct / 100)
            ramp_e = min(max(warmup_e + 1, -(-epochs * ramp_end_pct // 100)), max(epochs, warmup_e + 1))
            return cls(target, warmup_e * q, int(ramp_e) * q, kind, quantum=q)
        warmup = int(total_steps * warmup_pct / 100)
        ramp_end = max(warmup + 1, int(round(total_steps * ramp_end_pct / 100)))
        return cls(target, warmup, min(ramp_end, max(total_steps, warmup + 1)), kind)

    def __call__(self, step: int) -> float:
        if self.kind == ONESHOT:
            return self.target
        step = step // self.quantum * self.quantum
        if step <= self.warmup:
            return 0.0
        p = min(1.0, (step - self.warmup) / max(1, self.ramp_end - self.warmup))
        if self.kind == "gradual":
            return self.target * (1.0 - (1.0 - p) ** 3)
        return self.target * p ** (3 if self.kind == "cubic" else 1)
