"""Pruning methods behind one interface (`lib.pruning.base.Pruner`).

`build(method, model, schedule, frequency, optimizer, **settings)` returns the
pruner for a method name, or None for "none". `from_args(args, model,
optimizer, total_steps, steps_per_epoch)` is what a trainer calls with the
flags of `lib.cli`: it builds the schedule (step- or epoch-based) and the
pruner with every setting.

    none       dense baseline
    magnitude  |w|, global or per-layer (`scope`)
    movement   scores accumulated from -grad * w (Sanh et al. 2020)
    state      importance from the optimizer's moments, one of `VARIANTS`
"""

from __future__ import annotations

from lib.pruning.base import REMASK, SCOPES, Pruner, prunable_parameters, sparsity_report  # noqa: F401
from lib.pruning.budget import budget_record, extend  # noqa: F401
from lib.pruning.layer_adaptive import LayerAdaptive
from lib.pruning.magnitude import MagnitudePruner
from lib.pruning.movement import MovementPruner
from lib.pruning.schedule import UNITS, SparsitySchedule  # noqa: F401
from lib.pruning.state import VARIANTS, RatioSettings, StatePruner, importance  # noqa: F401
from lib.pruning.structure import StructureWeights, classify_parameter  # noqa: F401

METHODS = {"none": None, "magnitude": MagnitudePruner, "movement": MovementPruner, "state": StatePruner}
# Methods whose allocation the `scope` setting chooses (state: the variant decides).
SCOPED_METHODS = ("magnitude", "movement")


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
) -> Pruner | None:
    """The pruner for `method`.

    `include_tied_head`: also prune an output head whose weight is the token
    embedding (GPT-2). `variant` (bitter*) is required by, and only valid
    for, "state"; `scope` applies to magnitude and movement; `ratio` (RATIO
    group budgets) and `structure_weights` apply to state pruning; `remask`
    ("step" or "update") says when pruned weights and moments are zeroed.
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
        return cls(model, schedule, frequency, variant=variant, structure_weights=structure_weights, ratio=ratio, **common)
    if scope not in ("global", "layer"):
        raise ValueError(f"unknown pruning scope {scope!r} for {method}; valid: global, layer")
    return cls(model, schedule, frequency, scope=scope, **common)


def _yes(value) -> bool:
    return value in (True, "yes", "y", "true", "1", 1)


def from_args(args, model, optimizer, total_steps: int, steps_per_epoch: int = 1, include_tied_head: bool | None = None):
    """Schedule + pruner from a trainer's parsed flags (see lib.cli); None for "none".

    Flags a trainer does not define take the defaults of `lib.cli`.
    """
    method = args.pruning_method
    if method == "none":
        return None
    unit = getattr(args, "pruning_unit", "step")
    schedule = SparsitySchedule.from_percent(
        args.target_sparsity,
        total_steps,
        args.pruning_warmup,
        args.pruning_ramp_end,
        args.pruning_schedule,
        unit=unit,
        steps_per_epoch=steps_per_epoch,
    )
    frequency = args.pruning_frequency * (max(1, steps_per_epoch) if unit == "epoch" else 1)
    ratio = None  # RATIO budgets apply to state pruning runs only
    if method == "state" and _yes(getattr(args, "ratio_preserve", "no")):
        ratio = RatioSettings(getattr(args, "ratio", 2.5), getattr(args, "ratio_tolerance", 0.2))
    if include_tied_head is None:
        include_tied_head = _yes(getattr(args, "prune_tied_head", "no"))
    return build(
        method,
        model,
        schedule,
        frequency,
        optimizer,
        include_tied_head,
        variant=getattr(args, "pruning_variant", None) if method == "state" else None,
        scope=getattr(args, "pruning_scope", "global") if method in SCOPED_METHODS else "global",
        structure_weights=StructureWeights(
            attention=getattr(args, "structure_weight_attention", 2.5),
            mlp=getattr(args, "structure_weight_mlp", 1.0),
            coupling=getattr(args, "structure_weight_coupling", 3.0),
        ),
        ratio=ratio,
        layer_adaptive=LayerAdaptive(rescale=_yes(getattr(args, "layer_adaptive_rescale", "yes"))),
        include_embeddings=_yes(getattr(args, "prune_embeddings", "no")),
        include_norms=_yes(getattr(args, "prune_norms", "no")),
        include_biases=_yes(getattr(args, "prune_biases", "no")),
        remask=getattr(args, "pruning_remask", "update"),
    )
