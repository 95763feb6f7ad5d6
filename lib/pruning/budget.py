"""Training-budget extensions: an explicit, recorded change of the run's length.

A variant never implies one: the extension is a setting (`--budget-extension
PERCENT`), `extend()` computes the new length and the trainer records
`budget_record()` in run.json.
"""

from __future__ import annotations


def extend(base: int, percent: float) -> int:
    """base steps or epochs lengthened by `percent` %, rounded to the nearest whole unit."""
    if percent < 0:
        raise ValueError(f"budget extension must be >= 0 %, got {percent}")
    if base < 1:
        raise ValueError(f"training length must be at least 1, got {base}")
    return max(base, int(base * (100 + percent) / 100 + 0.5))


def budget_record(base: int, percent: float, unit: str) -> dict:
    """The run.json entry: what was asked, in which unit, and the length actually trained."""
    return {"extension_percent": percent, "unit": unit, "base": base, "trained": extend(base, percent)}
