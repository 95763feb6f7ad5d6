"""Pruning methods behind one interface (`lib.pruning.base.Pruner`).

`build(method, model, schedule, frequency, optimizer)` returns the pruner for a method
name, or None for "none".
"""

from __future__ import annotations

from lib.pruning.base import Pruner, prunable_parameters, sparsity_report  # noqa: F401
from lib.pruning.magnitude import MagnitudePruner
from lib.pruning.schedule import SparsitySchedule  # noqa: F401

METHODS = {"none": None, "magnitude": MagnitudePruner}


def build(
    method: str, model, schedule: SparsitySchedule, frequency: int = 1, optimizer=None, include_tied_head: bool = False
) -> Pruner | None:
    """`include_tied_head`: also prune an output head whose weight is the token embedding (GPT-2)."""
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; valid: {', '.join(METHODS)}")
    cls = METHODS[method]
    if cls is None:
        return None
    if include_tied_head:
        return cls(model, schedule, frequency, optimizer=optimizer, include_tied_head=True)
    return cls(model, schedule, frequency, optimizer=optimizer)
