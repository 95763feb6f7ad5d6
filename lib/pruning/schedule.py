"""Sparsity schedules shared by every pruning method.

s(t) = s_final * p**k with p = clamp((t - warmup) / (ramp_end - warmup), 0, 1):
k = 1 is the linear ramp, k = 3 the cubic one. Steps are optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass

POWERS = {"linear": 1, "cubic": 3}


@dataclass(frozen=True)
class SparsitySchedule:
    target: float
    warmup: int  # no pruning up to and including this step
    ramp_end: int  # target reached at this step
    kind: str = "cubic"

    def __post_init__(self):
        if self.kind not in POWERS:
            raise ValueError(f"unknown sparsity schedule {self.kind!r}; valid: {', '.join(POWERS)}")
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"target sparsity {self.target} is outside [0, 1)")
        if self.warmup < 0 or self.ramp_end < self.warmup:
            raise ValueError(f"schedule needs 0 <= warmup ({self.warmup}) <= ramp_end ({self.ramp_end})")

    @classmethod
    def from_percent(cls, target: float, total_steps: int, warmup_pct: float, ramp_end_pct: float, kind: str):
        """Warmup and ramp end given as percentages of the run's total steps."""
        if not 0 <= warmup_pct < ramp_end_pct <= 100:
            raise ValueError(
                f"pruning warmup ({warmup_pct}%) must be below the ramp end ({ramp_end_pct}%), both within 0-100"
            )
        warmup = int(total_steps * warmup_pct / 100)
        ramp_end = max(warmup + 1, int(round(total_steps * ramp_end_pct / 100)))
        return cls(target, warmup, min(ramp_end, max(total_steps, warmup + 1)), kind)

    def __call__(self, step: int) -> float:
        if step <= self.warmup:
            return 0.0
        p = min(1.0, (step - self.warmup) / max(1, self.ramp_end - self.warmup))
        return self.target * p ** POWERS[self.kind]
