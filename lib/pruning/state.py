"""State-based pruning (AdamWPrune): importance from the optimizer's Adam moments.

`importance(variant, weight, exp_avg, exp_avg_sq, structure_weight)` is the
one place the bitter formulas live (w weight, m exp_avg, v exp_avg_sq,
s structural weight, eps 1e-8):

    bitter0  |w| * |m| * |w| / (sqrt(v) + eps)     hybrid momentum-stability
    bitter1  |w|                                    magnitude
    bitter2  |w|                                    + training budget (21 %)
    bitter3  |w| * sqrt(|m| + eps)                  + training budget (30 %)
    bitter4  |w| * sqrt(|m| + eps)                  + layer-adaptive sparsity, budget (30 %)
    bitter7  |w| * (|v| + eps) ** 0.25              conservative variance
    bitter8  s * |w| * sqrt(|m| + eps)              structure-aware momentum
    bitter9  s * |w| * (|v| ** 0.25 + eps)          structure-aware variance

bitter0 follows the variant documentation (seed 001), not the README's
momentum x stability description (seed 004): see docs/pruning.md.

`StatePruner` reads the moments of any optimizer whose `state[p]` holds
"exp_avg" and "exp_avg_sq" (or that offers `moments(p)`, as AdamWPrune does),
keeps nothing but the boolean masks (1 byte per prunable parameter), and
allocates globally, layer-adaptively (bitter4), or by RATIO group budgets
(`ratio=RatioSettings(...)`). Budget extensions are not applied here: they are
explicit training-length settings (see `lib.pruning.budget`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lib.pruning import native
from lib.pruning.base import Pruner
from lib.pruning.ratio import RatioPlan
from lib.pruning.structure import StructureWeights, classify_model

EPS = 1e-8


@dataclass(frozen=True)
class Variant:
    formula: str
    uses_moments: bool = True
    layer_adaptive: bool = False
    structure_aware: bool = False
    budget_percent: int = 0  # the training-budget extension the variant was defined with


VARIANTS = {
    "bitter0": Variant("|w| * |m| * |w| / (sqrt(v) + eps)"),
    "bitter1": Variant("|w|", uses_moments=False),
    "bitter2": Variant("|w|", uses_moments=False, budget_percent=21),
    "bitter3": Variant("|w| * sqrt(|m| + eps)", budget_percent=30),
    "bitter4": Variant("|w| * sqrt(|m| + eps)", layer_adaptive=True, budget_percent=30),
    "bitter7": Variant("|w| * (|v| + eps) ** 0.25"),
    "bitter8": Variant("s * |w| * sqrt(|m| + eps)", structure_aware=True),
    "bitter9": Variant("s * |w| * (|v| ** 0.25 + eps)", structure_aware=True),
}


def check_variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise ValueError(f"unknown state-pruning variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def importance(
    variant: str,
    weight: torch.Tensor,
    exp_avg: torch.Tensor | None,
    exp_avg_sq: torch.Tensor | None,
    structure_weight: float = 1.0,
    eps: float = EPS,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Importance of every entry of `weight` under `variant` (float32; higher = keep).

    Written into `out` (float32, the shape of `weight`) when given, else into
    one new tensor; every other factor is computed in place: on the CPU fresh
    memory costs page faults comparable to several passes over it (bitter7
    on 85M weights: 138 ms against 246 ms with a second temporary). |w| * x
    is computed as |w * x|, the same float for the x >= 0 every factor here is.

    On the CPU, contiguous float32 inputs take one pass of the C kernels
    (`native`, csrc/state_scores.c) through the same float32 operations in
    the same order, where the torch operations make up to six passes and,
    on a small model, cost more in overhead than in arithmetic (LeNet-5's
    five layers after training steps: 0.18-0.22 against 0.25-0.33 ms, of
    which the C itself takes about 15 us; GPT-2 stack bitter7 updates 229-264
    against 318-321 ms). Each operation there is correctly rounded; torch's
    CPU sqrt is not always, so the torch operations (other dtypes, strided
    tensors, no C compiler) may differ in the last bit.
    """
    check_variant(variant)
    if variant in ("bitter1", "bitter2"):
        return abs_float(weight, out)
    if exp_avg is None or exp_avg_sq is None:
        raise ValueError(f"{variant} needs the optimizer's exp_avg and exp_avg_sq (formula {VARIANTS[variant].formula})")
    w = weight.detach()
    scale = structure_weight if VARIANTS[variant].structure_aware else 1.0
    simple = w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous() and isinstance(scale, (int, float))
    fast = native.kernels() if simple else None
    if fast is not None:  # one pass in C of the operations below, each correctly rounded (csrc/state_scores.c)
        target = torch.empty(w.shape, dtype=torch.float32) if out is None else out
        if fast.state_scores(native.STATE_FORMS[variant], w, exp_avg.detach(), exp_avg_sq.detach(), scale, eps, target):
            return target
    if variant == "bitter0":  # |m| * w * w, the same float as |m| * |w| * |w|
        return abs_float(exp_avg, out).mul_(w).mul_(w).div_(exp_avg_sq.detach().float().sqrt().add_(eps))
    if variant in ("bitter3", "bitter4", "bitter8"):
        score = abs_float(exp_avg, out).add_(eps).sqrt_().mul_(w).abs_()
    elif variant == "bitter7":  # x ** 0.25 as sqrt(sqrt(x)): within an ulp of pow, three times faster on the CPU
        score = abs_float(exp_avg_sq, out).add_(eps).sqrt_().sqrt_().mul_(w).abs_()
    else:  # bitter9
        score = abs_float(exp_avg_sq, out).sqrt_().sqrt_().add_(eps).mul_(w).abs_()
    return score.mul_(structure_weight) if VARIANTS[variant].structure_aware else score


def abs_float(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """|x| as float32, into `out` or a new tensor."""
    x = x.detach()
    if out is None:
        return x.abs() if x.dtype == torch.float32 else x.float().abs_()
    return torch.abs(x, out=out) if x.dtype == torch.float32 else out.copy_(x).abs_()


@dataclass(frozen=True)
class RatioSettings:
    ratio: float = 2.5
    tolerance: float = 0.2


class StatePruner(Pruner):
    """Masks from `importance(variant, ...)` over the optimizer's moments."""

    name = "state"
    nonnegative_scores = True  # |w| times non-negative factors, a new tensor each call

    def __init__(
        self,
        model,
        schedule,
        frequency: int = 1,
        include_tied_head: bool = False,
        optimizer=None,
        *,
        variant: str = "bitter7",
        structure_weights: StructureWeights | None = None,
        ratio: RatioSettings | None = None,
        **kwargs,
    ):
        self.variant = variant
        spec = check_variant(variant)
        if spec.uses_moments and optimizer is None:
            raise ValueError(f"state pruning ({variant}) needs the optimizer whose moments it reads")
        if spec.layer_adaptive and ratio is not None:
            raise ValueError(
                f"{variant} allocates by depth (layer-adaptive) and RATIO allocates by attention/MLP budgets; "
                "use one: a non-adaptive variant with ratio preservation, or bitter4 without it"
            )
        kwargs["scope"] = "adaptive" if spec.layer_adaptive else "global"
        super().__init__(model, schedule, frequency, include_tied_head, optimizer, **kwargs)
        self.structure_weights = structure_weights or StructureWeights()
        self.roles = list(classify_model(model, [n for n, _ in self.params]).values())
        self.weights = [self.structure_weights[r] for r in self.roles] if spec.structure_aware else [1.0] * len(self.roles)
        self.ratio_plan = None
        self.ratio_achieved = None
        if ratio is not None:
            self.ratio_plan = RatioPlan(self.sizes, self.roles, schedule.target, ratio.ratio, ratio.tolerance)

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
        return self._importance(index)

    def score_into(self, index, out):
        p = self.params[index][1]
        return self._importance(index, out.view(p.shape)).view(-1)

    def _importance(self, index: int, out: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params[index][1]
        if VARIANTS[self.variant].uses_moments:
            m, v = self.moments(p)
        else:
            m = v = None
        return importance(self.variant, p, m, v, self.weights[index], out=out)

    def allocation(self, sparsity):
        if self.ratio_plan is not None:
            return self.ratio_plan.counts(sparsity)
        return super().allocation(sparsity)

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        super().update_masks(sparsity)
        if self.ratio_plan is not None and sparsity >= self.schedule.target:
            kept = [int(m.sum()) for m in self.mask_list()]
            self.ratio_achieved = self.ratio_plan.verify(kept)

    def summary(self) -> dict:
        out = super().summary()
        out["variant"] = self.variant
        if self.ratio_plan is not None:
            out["ratio"] = {
                "target_ratio": self.ratio_plan.ratio,
                "tolerance": self.ratio_plan.tolerance,
                "attention_prune_fraction": self.ratio_plan.alpha,
                "mlp_prune_fraction": self.ratio_plan.mu,
                "achieved_ratio": self.ratio_achieved,
            }
        return out
