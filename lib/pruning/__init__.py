"""Pruning methods behind one interface (`lib.pruning.base.Pruner`).

`build(method, model, schedule, frequency, optimizer, **settings)` returns the
pruner for a method name, or None for "none". `from_args(args, model,
optimizer, total_steps, steps_per_epoch)` is what a trainer calls with its
parsed flags: it builds the schedule (step- or epoch-based) and the pruner
from `PruningSettings`. The family's flags, checks and typed settings are
`lib.pruning.settings` (`add_arguments`, `check`, `PruningSettings`).

    none       dense baseline
    magnitude  |w|, global or per-layer (`scope`)
    movement   scores accumulated from -grad * w (Sanh et al. 2020)
    state      importance from the optimizer's moments, one of `VARIANTS`
"""

from __future__ import annotations

from lib.pruning.base import REMASK, SCOPES, Pruner, prunable_parameters, sparsity_report  # noqa: F401
from lib.pruning.budget import budget_record, extend  # noqa: F401
from lib.pruning.layer_adaptive import LayerAdaptive
from lib.pruning.schedule import UNITS, SparsitySchedule  # noqa: F401
from lib.pruning.settings import METHODS, SCOPED_METHODS, PruningSettings, add_arguments, check  # noqa: F401
from lib.pruning.state import VARIANTS, RatioSettings, StatePruner, importance  # noqa: F401
from lib.pruning.structure import StructureWeights, classify_parameter  # noqa: F401


def build(
    method: str,
    model,
    schedule: SparsitySchedule,
    frequency: int = 1,
    optimizer=None,
    include_tied_head: bool = False,
    *,
    variant: str | None = None,
    scope: str = "global",
    structure_weights: StructureWeights | None = None,
    ratio: RatioSettings | None = None,
    layer_adaptive: LayerAdaptive | None = None,
    include_embeddings: bool = False,
    include_norms: bool = False,
    include_biases: bool = False,
    remask: str = "update",
    movement_mode: str = "grow",
    bitter7_eps: str = "inside",
) -> Pruner | None:
    """The pruner for `method`.

    `include_tied_head`: also prune an output head whose weight is the token
    embedding (GPT-2). `variant` (bitter*) is required by, and only valid
    for, "state"; `scope` applies to magnitude and movement; `ratio` (RATIO
    group budgets) and `structure_weights` apply to state pruning; `remask`
    ("step" or "update") says when pruned weights and moments are zeroed;
    `movement_mode` ("grow" or "topk") applies to movement, `bitter7_eps`
    ("inside" or "outside" the fourth root) to state pruning.
    """
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; valid: {', '.join(METHODS)}")
    cls = METHODS[method]
    if variant is not None and method != "state":
        raise ValueError(f"a pruning variant ({variant}) applies only to the 'state' method, not {method!r}")
    if ratio is not None and method != "state":
        raise ValueError(f"ratio-preserving budgets apply only to the 'state' method, not {method!r}")
    if cls is None:
        return None
    common = dict(
        optimizer=optimizer,
        include_tied_head=include_tied_head,
        layer_adaptive=layer_adaptive,
        include_embeddings=include_embeddings,
        include_norms=include_norms,
        include_biases=include_biases,
        remask=remask,
    )
    if method == "state":
        if variant is None:
            raise ValueError(f"state pruning needs a variant; valid: {', '.join(VARIANTS)}")
        return cls(model, schedule, frequency, variant=variant, structure_weights=structure_weights, ratio=ratio,
                   bitter7_eps=bitter7_eps, **common)
    if scope not in ("global", "layer"):
        raise ValueError(f"unknown pruning scope {scope!r} for {method}; valid: global, layer")
    if method == "movement":
        common["mode"] = movement_mode
    return cls(model, schedule, frequency, scope=scope, **common)


def from_args(args, model, optimizer, total_steps: int, steps_per_epoch: int = 1, include_tied_head: bool = False):
    """Schedule + pruner from a trainer's parsed flags (`PruningSettings`); None for "none".

    `include_tied_head`: the trainer's own flag (GPT-2's --prune-tied-head).
    """
    s = PruningSettings.from_args(args)
    if s.pruning_method == "none":
        return None
    return build(
        s.pruning_method,
        model,
        s.schedule(total_steps, steps_per_epoch),
        s.frequency(steps_per_epoch),
        optimizer,
        include_tied_head,
        variant=s.pruning_variant if s.pruning_method == "state" else None,
        scope=s.pruning_scope if s.pruning_method in SCOPED_METHODS else "global",
        structure_weights=s.structure_weights(),
        ratio=s.ratio_settings(),
        layer_adaptive=LayerAdaptive(rescale=not s.layer_adaptive_keep_levels),
        include_embeddings=s.prune_embeddings,
        include_norms=s.prune_norms,
        include_biases=s.prune_biases,
        remask=s.pruning_remask,
        movement_mode=s.pruning_movement_mode,
        bitter7_eps=s.pruning_bitter7_eps,
    )
