"""State-based pruning (AdamWPrune): importance from the optimizer's Adam moments.

`VARIANTS` registers each variant's formula over w (weight), m (exp_avg), v
(exp_avg_sq) and eps 1e-8; `importance(variant, weight, exp_avg, exp_avg_sq,
structure_weight)` is the one place scores are computed. The formulas'
sources and bitter7's eps placement (`bitter7_eps`): docs/pruning.md.

Adding a variant is `register_variant(name, formula, score, ...)` here, a
Kconfig bool `PRUNING_STATE_<NAME>` and a test. A score function takes (w,
m, v, eps), m and v None for a variant without moments, and returns a new
float32 tensor of non-negative scores, its inputs untouched.

`StatePruner` reads exp_avg and exp_avg_sq from `optimizer.state[p]` (or
`optimizer.moments(p)`), keeps nothing but the masks, and allocates
globally, by depth (bitter4) or by RATIO group budgets. Budget extensions
are training-length settings (`lib.pruning.budget`), never applied here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

from lib.pruning.base import Pruner
from lib.pruning.ratio import RatioPlan
from lib.pruning.structure import StructureWeights, classify_model

EPS = 1e-8
BITTER7_EPS = ("inside", "outside")  # where bitter7 adds eps: inside the fourth root (default) or after it

Formula = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None", float], torch.Tensor]


@dataclass(frozen=True)
class Variant:
    name: str
    formula: str  # the formula as documented
    score: Formula  # (w, m, v, eps) -> float32 scores, before the structural weight
    uses_moments: bool = True
    layer_adaptive: bool = False
    structure_aware: bool = False  # scores multiplied by the tensor's structural weight
    budget_percent: int = 0  # the training-budget extension the variant was defined with


VARIANTS: dict[str, Variant] = {}


def register_variant(name: str, formula: str, score: Formula, **flags) -> Variant:
    """Add a state-pruning variant; `flags` are Variant's booleans and budget_percent. Its Kconfig bool is PRUNING_STATE_<NAME>."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"state-pruning variant name {name!r} must be lower-case letters, digits and _ (it names a Kconfig symbol)")
    if name in VARIANTS:
        raise ValueError(f"state-pruning variant {name!r} is already registered")
    VARIANTS[name] = Variant(name, formula, score, **flags)
    return VARIANTS[name]


def _abs32(x: torch.Tensor) -> torch.Tensor:
    """|x| as a new float32 tensor."""
    x = x.detach()
    return x.abs() if x.dtype == torch.float32 else x.float().abs_()


# Each factor is computed in place on one new tensor; |w| * x as |w * x| (the same float for x >= 0);
# x ** 0.25 as sqrt(sqrt(x)) (within an ulp of pow, and cheaper).
def _magnitude(w, m, v, eps):
    return _abs32(w)


def _momentum_stability(w, m, v, eps):  # |m| * w * w: the same float as |m| * |w| * |w|
    return _abs32(m).mul_(w).mul_(w).div_(v.detach().float().sqrt().add_(eps))


def _momentum(w, m, v, eps):
    return _abs32(m).add_(eps).sqrt_().mul_(w).abs_()


def _variance_eps_inside(w, m, v, eps):
    return _abs32(v).add_(eps).sqrt_().sqrt_().mul_(w).abs_()


def _variance_eps_outside(w, m, v, eps):
    return _abs32(v).sqrt_().sqrt_().add_(eps).mul_(w).abs_()


register_variant("bitter0", "|w| * |m| * |w| / (sqrt(v) + eps)", _momentum_stability)
register_variant("bitter1", "|w|", _magnitude, uses_moments=False)
register_variant("bitter2", "|w|", _magnitude, uses_moments=False, budget_percent=21)
register_variant("bitter3", "|w| * sqrt(|m| + eps)", _momentum, budget_percent=30)
register_variant("bitter4", "|w| * sqrt(|m| + eps)", _momentum, layer_adaptive=True, budget_percent=30)
register_variant("bitter7", "|w| * (|v| + eps) ** 0.25", _variance_eps_inside)
register_variant("bitter8", "s * |w| * sqrt(|m| + eps)", _momentum, structure_aware=True)
register_variant("bitter9", "s * |w| * (|v| ** 0.25 + eps)", _variance_eps_outside, structure_aware=True)


def _variant(variant: str, bitter7_eps: str = "inside") -> tuple[Variant, Formula]:
    """The registered `variant` and its score function (bitter7's with eps inside or outside the fourth root)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown state-pruning variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if bitter7_eps not in BITTER7_EPS:
        raise ValueError(f"unknown bitter7 eps placement (bitter7_eps) {bitter7_eps!r}; valid: {', '.join(BITTER7_EPS)}")
    spec = VARIANTS[variant]
    return spec, _variance_eps_outside if variant == "bitter7" and bitter7_eps == "outside" else spec.score


def importance(
    variant: str,
    weight: torch.Tensor,
    exp_avg: torch.Tensor | None,
    exp_avg_sq: torch.Tensor | None,
    structure_weight: float = 1.0,
    eps: float = EPS,
    bitter7_eps: str = "inside",
) -> torch.Tensor:
    """Importance of every entry of `weight` under `variant`: a new float32 tensor, higher = keep."""
    spec, score = _variant(variant, bitter7_eps)
    if not spec.uses_moments:
        return score(weight.detach(), None, None, eps)
    if exp_avg is None or exp_avg_sq is None:
        raise ValueError(f"{variant} needs the optimizer's exp_avg and exp_avg_sq (formula {spec.formula})")
    out = score(weight.detach(), exp_avg.detach(), exp_avg_sq.detach(), eps)
    return out.mul_(structure_weight) if spec.structure_aware else out


@dataclass(frozen=True)
class RatioSettings:
    ratio: float = 2.5
    tolerance: float = 0.2


class StatePruner(Pruner):
    """Masks from `importance(variant, ...)` over the optimizer's moments."""

    name = "state"

    def __init__(
        self,
        model,
        schedule,
        frequency: int = 1,
        *,
        variant: str = "bitter7",
        structure_weights: StructureWeights | None = None,
        ratio: RatioSettings | None = None,
        bitter7_eps: str = "inside",
        **kwargs,
    ):
        """`kwargs`: `Pruner`'s keywords; the allocation follows the variant (global, adaptive or RATIO)."""
        self.spec, _ = _variant(variant, bitter7_eps)  # an unknown variant or placement is refused now
        self.variant, self.bitter7_eps = variant, bitter7_eps
        if self.spec.uses_moments and kwargs.get("optimizer") is None:
            raise ValueError(f"state pruning ({variant}) needs the optimizer whose moments it reads")
        if self.spec.layer_adaptive and ratio is not None:
            raise ValueError(
                f"{variant} allocates by depth (layer-adaptive) and RATIO allocates by attention/MLP budgets; "
                "use one: a non-adaptive variant with ratio preservation, or bitter4 without it"
            )
        kwargs["scope"] = "adaptive" if self.spec.layer_adaptive else "global"
        super().__init__(model, schedule, frequency, **kwargs)
        self.structure_weights = structure_weights or StructureWeights()
        self.roles = list(classify_model(model, [n for n, _ in self.params]).values())
        self.weights = [self.structure_weights[r] if self.spec.structure_aware else 1.0 for r in self.roles]
        self.ratio_achieved = None
        self.ratio_plan = None if ratio is None else RatioPlan(self.sizes, self.roles, schedule.target, ratio.ratio, ratio.tolerance)

    def moments(self, p: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if hasattr(self.optimizer, "moments"):
            return self.optimizer.moments(p)
        state = self.optimizer.state.get(p)
        if not state:
            return torch.zeros_like(p), torch.zeros_like(p)  # not stepped yet: the moments are zero
        if "exp_avg" not in state or "exp_avg_sq" not in state:
            raise ValueError(
                f"state pruning ({self.variant}) reads exp_avg and exp_avg_sq, which "
                f"{type(self.optimizer).__name__} does not keep; use an Adam-family optimizer (adamwprune for the matrix)"
            )
        return state["exp_avg"], state["exp_avg_sq"]

    def score(self, index):
        p = self.params[index][1]
        m, v = self.moments(p) if self.spec.uses_moments else (None, None)
        return importance(self.variant, p, m, v, self.weights[index], bitter7_eps=self.bitter7_eps)

    def allocation(self, sparsity):
        if self.ratio_plan is not None:
            return self.ratio_plan.counts(sparsity)
        return super().allocation(sparsity)

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        super().update_masks(sparsity)
        self._verify_ratio()

    def _verify_ratio(self) -> None:
        """RATIO: once the masks implement the target, the achieved ratio (verified against the tolerance)."""
        if self.ratio_plan is not None and self.sparsity >= self.schedule.target:
            kept = [int(m.sum()) for m in self.mask_list()]
            self.ratio_achieved = self.ratio_plan.verify(kept)

    def load_state_dict(self, state: dict) -> None:
        """The masks of a checkpoint; a resume after the target keeps the achieved ratio (the masks no longer change)."""
        super().load_state_dict(state)
        self._verify_ratio()

    def summary(self) -> dict:
        out = super().summary()
        out["variant"] = self.variant
        if self.variant == "bitter7":
            out["bitter7_eps"] = self.bitter7_eps
        if self.ratio_plan is not None:
            out["ratio"] = {
                "target_ratio": self.ratio_plan.ratio,
                "tolerance": self.ratio_plan.tolerance,
                "attention_prune_fraction": self.ratio_plan.alpha,
                "mlp_prune_fraction": self.ratio_plan.mu,
                "achieved_ratio": self.ratio_achieved,
            }
        return out
