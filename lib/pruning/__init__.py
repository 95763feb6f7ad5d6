"""Pruning methods behind one interface (`lib.pruning.base.Pruner`); design in docs/pruning.md.

`from_args(args, model, optimizer, total_steps, steps_per_epoch,
example_inputs=...)` is what a trainer calls with its parsed flags
(`lib.pruning.settings`); `build(method, model, schedule, frequency,
optimizer, **options)` builds a pruner from the method's own constructor
keywords. Both return None for "none". Every method selects at every
granularity (`lib.pruning.granularity`: element, N:M, channel), with
per-class targets and a preserve list (`lib.pruning.layer_types`).

    none       dense baseline
    magnitude  |w|, global or per-layer (`scope`)
    movement   scores accumulated from -grad * w (Sanh et al. 2020)
    state      importance from the optimizer's moments, one of `VARIANTS`
"""

from __future__ import annotations

from lib.pruning.base import REMASK, SCOPES, Pruner, prunable_parameters, sparsity_report  # noqa: F401
from lib.pruning.budget import budget_record  # noqa: F401
from lib.pruning.granularity import Granularity  # noqa: F401
from lib.pruning.layer_types import CLASSES  # noqa: F401
from lib.pruning.ratio import RatioViolation, ratio_plan  # noqa: F401
from lib.pruning.schedule import UNITS, SparsitySchedule  # noqa: F401
from lib.pruning.settings import METHODS, PruningSettings, add_arguments, check  # noqa: F401
from lib.pruning.state import VARIANTS, RatioSettings, StatePruner, importance  # noqa: F401
from lib.pruning.structure import StructureWeights, classify_parameter  # noqa: F401
from lib.pruning import settings


def build(method: str, model, schedule: SparsitySchedule, frequency: int = 1, optimizer=None, **options) -> Pruner | None:
    """The pruner for `method`; `options` are its class's keywords (variant, ratio, scope, mode, remask, ...)."""
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; valid: {', '.join(METHODS)}")
    if options.get("variant") is not None and method != "state":
        raise ValueError(f"a pruning variant ({options['variant']}) applies only to the 'state' method, not {method!r}")
    if options.get("ratio") is not None and method != "state":
        raise ValueError(f"ratio-preserving budgets apply only to the 'state' method, not {method!r}")
    if options.get("ratio") is not None and Granularity.parse(options.get("granularity", "element")).kind != "element":
        raise ValueError(f"ratio-preserving budgets select single weights: granularity {options['granularity']} is not supported; use element")
    if options.get("ratio") is not None and options.get("layer_targets"):
        raise ValueError("layer targets and ratio-preserving budgets both set per-class levels; use one")
    if METHODS[method] is None:
        return None
    if method == "state" and options.get("variant") is None:
        raise ValueError(f"state pruning needs a variant; valid: {', '.join(VARIANTS)}")
    if method != "state" and options.get("scope", "global") not in settings.SCOPES:
        raise ValueError(f"unknown pruning scope {options['scope']!r} for {method}; valid: {', '.join(settings.SCOPES)}")
    return METHODS[method](model, schedule, frequency, optimizer=optimizer, **options)


def from_args(args, model, optimizer, total_steps: int, steps_per_epoch: int = 1, include_tied_head: bool = False,
              example_inputs=None):
    """Schedule + pruner from a trainer's parsed flags; None for "none".

    `include_tied_head`: GPT-2's --prune-tied-head; `example_inputs`: a batch
    the model accepts, on its device (channel granularity traces the model with it).
    """
    s = PruningSettings.from_args(args)
    if s.pruning_method == "none":
        return None
    schedule = s.schedule(total_steps, steps_per_epoch)
    return build(s.pruning_method, model, schedule, s.frequency(steps_per_epoch), optimizer,
                 **s.options(include_tied_head), example_inputs=example_inputs)
