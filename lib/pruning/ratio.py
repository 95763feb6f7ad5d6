"""RATIO: prune attention and MLP weights so that a target MLP:attention ratio holds.

`pruning_budgets(A, M, S, r)` gives the attention and MLP prune fractions
(alpha, mu) with alpha * A + mu * M = S * (A + M) and M(1 - mu) = r * A(1 -
alpha) (derivation and feasibility in docs/pruning.md), or raises
`InfeasibleBudget`. `RatioPlan` turns them into per-group prune counts at
any scheduled level s (fractions scaled by s / S; coupling and other
parameters pruned at s) and verifies the final ratio within a tolerance.
`ratio_plan(model, optimizer, S)` is the same selection called from code,
once, at the target: what a state-pruning run with `--ratio-preserve` would
keep given the optimizer's current moments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lib.pruning.schedule import SparsitySchedule

CLAMP = 1e-12  # fractions this close to 0 are 0 (floating-point noise at the feasibility edge)


class InfeasibleBudget(ValueError):
    """No pair of prune fractions in [0, 1] satisfies both constraints."""


class RatioViolation(ValueError):
    """The pruned model's MLP:attention ratio is outside the tolerance."""


def min_feasible_sparsity(attention_params: float, mlp_params: float, ratio: float) -> float:
    A, M, r = float(attention_params), float(mlp_params), float(ratio)
    return max(0.0, 1 - (1 + r) * A / (A + M), 1 - (1 + r) * M / (r * (A + M)))


def pruning_budgets(attention_params: float, mlp_params: float, target_sparsity: float, ratio: float = 2.5) -> tuple[float, float]:
    """(alpha, mu): the attention and MLP prune fractions meeting both constraints exactly."""
    A, M, S, r = float(attention_params), float(mlp_params), float(target_sparsity), float(ratio)
    if A <= 0 or M <= 0:
        raise InfeasibleBudget(
            f"ratio-preserving pruning needs attention and MLP parameters, got attention={A:g}, mlp={M:g}"
        )
    if not 0.0 <= S < 1.0:
        raise InfeasibleBudget(f"target sparsity {S} is outside [0, 1)")
    if not r > 0:
        raise InfeasibleBudget(f"MLP:attention ratio must be positive, got {r}")
    kept_attention = (1.0 - S) * (A + M) / (1.0 + r)
    kept_mlp = r * kept_attention
    alpha = 1.0 - kept_attention / A
    mu = 1.0 - kept_mlp / M
    alpha = 0.0 if -CLAMP < alpha < 0 else alpha
    mu = 0.0 if -CLAMP < mu < 0 else mu
    if not (0.0 <= alpha <= 1.0 and 0.0 <= mu <= 1.0):
        raise InfeasibleBudget(
            f"no prune fractions reach sparsity {S} with MLP:attention ratio {r} from attention={A:g}, mlp={M:g} "
            f"(would need attention {alpha:.4f}, MLP {mu:.4f}; fractions must lie in [0, 1]); "
            f"feasible sparsity for this model and ratio: >= {min_feasible_sparsity(A, M, r):.6f}"
        )
    return alpha, mu


@dataclass
class RatioPlan:
    """Per-group prune counts that keep the MLP:attention ratio; groups are lists of tensor indices."""

    sizes: list[int]
    roles: list[str]
    target: float
    ratio: float = 2.5
    tolerance: float = 0.2
    alpha: float = field(init=False)
    mu: float = field(init=False)

    def __post_init__(self):
        if self.tolerance < 0:
            raise ValueError(f"ratio tolerance must be >= 0, got {self.tolerance}")
        self.groups = {role: [i for i, r in enumerate(self.roles) if r == role] for role in ("attention", "mlp", "coupling", "other")}
        self.alpha, self.mu = pruning_budgets(self.params("attention"), self.params("mlp"), self.target, self.ratio)

    def params(self, role: str) -> int:
        return sum(self.sizes[i] for i in self.groups[role])

    def counts(self, sparsity: float) -> list[tuple[list[int], int]]:
        """(tensor indices, entries to prune) per group at scheduled level `sparsity`."""
        scale = sparsity / self.target if self.target else 0.0
        fractions = {"attention": self.alpha * scale, "mlp": self.mu * scale, "coupling": sparsity, "other": sparsity}
        return [
            (idx, int(round(fractions[role] * self.params(role))))
            for role, idx in self.groups.items()
            if idx
        ]

    def verify(self, kept: list[int]) -> float:
        """Achieved kept-MLP : kept-attention ratio from per-tensor kept counts; raises outside tolerance."""
        kept_attention = sum(kept[i] for i in self.groups["attention"])
        kept_mlp = sum(kept[i] for i in self.groups["mlp"])
        achieved = kept_mlp / kept_attention if kept_attention else float("inf")
        if abs(achieved - self.ratio) > self.tolerance:
            raise RatioViolation(
                f"MLP:attention ratio after pruning is {achieved:.4f}, outside {self.ratio} +/- {self.tolerance} "
                f"(kept attention {kept_attention}, kept MLP {kept_mlp})"
            )
        return achieved


@dataclass
class RatioResult:
    """What `ratio_plan` chose: per-group budgets, the masks (True = keep) and the achieved ratio."""

    target_sparsity: float
    ratio: float
    achieved_ratio: float
    groups: dict[str, dict]  # role -> params, pruned, kept, prune_fraction
    masks: dict[str, torch.Tensor]  # parameter name -> bool mask of its shape

    @property
    def sparsity(self) -> float:
        total = sum(g["params"] for g in self.groups.values())
        return sum(g["pruned"] for g in self.groups.values()) / total if total else 0.0


def ratio_plan(model: nn.Module, optimizer, target_sparsity: float, variant: str = "bitter9", ratio: float = 2.5,
               tolerance: float = 0.2, **options) -> RatioResult:
    """The RATIO masks of `model` at `target_sparsity`, scored by state-pruning `variant` over `optimizer`'s moments.

    The model and the optimizer are left untouched (no weight zeroed, no mask
    buffer left behind). `options` are `StatePruner`'s (structure_weights,
    include_tied_head, preserve, ...). Raises `InfeasibleBudget` when no
    budgets reach the sparsity at that ratio, and `RatioViolation` (naming the
    achieved and the target ratio) when the selection misses the tolerance.
    """
    from lib.pruning.state import RatioSettings, StatePruner  # state imports this module

    pruner = StatePruner(model, SparsitySchedule(target_sparsity, 0, 0, "oneshot"), optimizer=optimizer,
                         variant=variant, ratio=RatioSettings(ratio, tolerance), **options)
    try:
        pruner.update_masks(target_sparsity)  # verifies the ratio at the target
        masks = {name: mask.clone() for name, mask in pruner.masks.items()}
    finally:
        pruner.remove_masks()
    plan = pruner.ratio_plan
    groups = {}
    for role, idx in plan.groups.items():
        if idx:
            params = plan.params(role)
            kept = sum(int(masks[pruner.params[i][0]].sum()) for i in idx)
            groups[role] = {"params": params, "pruned": params - kept, "kept": kept,
                            "prune_fraction": (params - kept) / params}
    return RatioResult(target_sparsity, ratio, pruner.ratio_achieved, groups, masks)
