"""The pruning family's flags, their checks and its typed settings.

Each flag is its Kconfig symbol (lib/Kconfig.pruning) by `lib.config`'s
naming rule, and its default is the symbol's default: `PRUNING_FREQUENCY` ->
`--pruning-frequency`, `PRUNE_BIASES` -> `--prune-biases`, `choice
PRUNING_SCHEDULE` -> `--pruning-schedule`. The run's own axes (method,
target sparsity, variant, budget extension) come from `lib.matrix`.
`PruningSettings` is what `lib.pruning.from_args` builds a pruner from.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib.pruning.base import REMASK
from lib.pruning.granularity import CHANNEL, ELEMENT, FORMS, NM, Granularity
from lib.pruning.layer_adaptive import LayerAdaptive, check_target
from lib.pruning.layer_types import parse_preserve, parse_targets
from lib.pruning.magnitude import MagnitudePruner
from lib.pruning.movement import MODES as MOVEMENT_MODES
from lib.pruning.movement import MovementPruner
from lib.pruning.schedule import SCHEDULES, UNITS, SparsitySchedule
from lib.pruning.state import BITTER7_EPS, VARIANTS, RatioSettings, StatePruner
from lib.pruning.structure import StructureWeights
from lib.settings import Settings

METHODS = {"none": None, "magnitude": MagnitudePruner, "movement": MovementPruner, "state": StatePruner}
SCOPES = ("global", "layer")  # --pruning-scope: magnitude and movement (state pruning allocates by its variant)


def add_arguments(parser) -> None:
    weights, ratio = StructureWeights(), RatioSettings()
    g = parser.add_argument_group("pruning (lib/Kconfig.pruning)")
    g.add_argument("--pruning-method", default="none", help=f"one of: {', '.join(METHODS)}")
    g.add_argument("--target-sparsity", type=float, default=0.0, help="fraction of prunable weights set to zero")
    g.add_argument("--pruning-variant", default=None, help=f"state pruning: one of {', '.join(VARIANTS)}")
    g.add_argument("--budget-extension", type=float, default=0.0,
                   help="train this many %% longer (the matrix passes PRUNING_<VARIANT>_BUDGET_PERCENT); recorded in run.json")
    g.add_argument("--pruning-schedule", default="cubic", choices=SCHEDULES, help="how the sparsity ramps up")
    g.add_argument("--pruning-unit", default="step", choices=UNITS,
                   help="step: the schedule moves every step, --pruning-frequency counts steps; epoch: per epoch")
    g.add_argument("--pruning-warmup-percent", type=float, default=10, help="%% of training before the first mask update")
    g.add_argument("--pruning-ramp-end-percent", type=float, default=75, help="%% of training at which the target is reached")
    g.add_argument("--pruning-frequency", type=int, default=50, help="optimizer steps (or epochs) between mask updates")
    g.add_argument("--pruning-remask", default="update", choices=REMASK,
                   help="zero pruned weights and optimizer moments after every step, or only when masks change")
    g.add_argument("--pruning-scope", default="global", choices=SCOPES,
                   help="magnitude and movement: one global threshold, or every layer at the scheduled level")
    g.add_argument("--pruning-movement-mode", default="grow", choices=MOVEMENT_MODES,
                   help="movement: grow (masks only grow) or topk (every update keeps the top scores afresh; pruned weights can return)")
    g.add_argument("--pruning-bitter7-eps", default="inside", choices=BITTER7_EPS,
                   help="bitter7: eps inside the fourth root, |w| * (|v| + eps)^0.25, or after it, |w| * (|v|^0.25 + eps)")
    g.add_argument("--pruning-granularity", default=ELEMENT,
                   help=f"what one decision prunes: {FORMS} (N:M: every M consecutive input weights keep at least N)")
    g.add_argument("--pruning-layer-targets", default="",
                   help="per-class fractions, e.g. 'mlp=0.6 attention=0.3' (classes: embedding, attention, mlp, coupling, "
                        "conv, classifier, norm, other); unlisted classes follow --target-sparsity")
    g.add_argument("--pruning-preserve", default="",
                   help="fnmatch patterns of parameter names never pruned, e.g. 'classifier.* *.lm_head.*'")
    g.add_argument("--prune-embeddings", action="store_true", help="also prune embedding tables")
    g.add_argument("--prune-norms", action="store_true", help="also prune normalisation weights")
    g.add_argument("--prune-biases", action="store_true", help="also prune biases")
    g.add_argument("--layer-adaptive-keep-levels", action="store_true",
                   help="bitter4: keep the depth-scaled levels instead of rescaling them to hit the target exactly")
    g.add_argument("--structure-weight-attention", type=float, default=weights.attention, help="bitter8/9: weight of attention parameters")
    g.add_argument("--structure-weight-mlp", type=float, default=weights.mlp, help="bitter8/9: weight of MLP parameters")
    g.add_argument("--structure-weight-coupling", type=float, default=weights.coupling, help="bitter8/9: weight of coupling parameters")
    g.add_argument("--ratio-preserve", action="store_true",
                   help="state pruning: RATIO budgets keeping kept-MLP : kept-attention at --ratio")
    g.add_argument("--ratio", type=float, default=ratio.ratio, help="RATIO: final MLP:attention ratio of kept parameters")
    g.add_argument("--ratio-tolerance", type=float, default=ratio.tolerance, help="RATIO: accepted absolute deviation of the final ratio")


def check(p, args) -> None:
    """Reject a bad pruning flag with one line naming it."""
    method, variant, target = args.pruning_method, args.pruning_variant, args.target_sparsity
    if method not in METHODS:
        p.error(f"--pruning-method {method!r} is unknown; valid: {', '.join(METHODS)}")
    if not 0.0 <= target < 1.0:
        p.error(f"--target-sparsity must be in [0, 1), got {target}")
    if method == "none" and target:
        p.error("--target-sparsity needs a --pruning-method other than 'none'")
    if method != "none" and not target:
        p.error(f"--pruning-method {method} needs --target-sparsity > 0")
    if method == "state":
        if variant not in VARIANTS:
            got = f"{variant!r} is unknown" if variant else "is missing"
            p.error(f"--pruning-variant {got}; state pruning needs one of: {', '.join(VARIANTS)}")
        if VARIANTS[variant].layer_adaptive:
            if args.ratio_preserve:
                p.error(f"--ratio-preserve cannot be combined with --pruning-variant {variant} (layer-adaptive); pick one")
            try:
                check_target(target, rescale=not args.layer_adaptive_keep_levels)
            except ValueError as e:
                p.error(f"--target-sparsity {target} with --pruning-variant {variant}: {e}")
    elif variant is not None:
        p.error(f"--pruning-variant applies only to --pruning-method state, not {method!r}")
    if args.budget_extension < 0:
        p.error(f"--budget-extension must be >= 0 %, got {args.budget_extension}")
    if not 0 <= args.pruning_warmup_percent < args.pruning_ramp_end_percent <= 100:
        p.error("need 0 <= --pruning-warmup-percent < --pruning-ramp-end-percent <= 100 (percent of training)")
    if args.pruning_frequency < 1:
        p.error(f"--pruning-frequency must be at least 1, got {args.pruning_frequency}")
    for name in ("structure_weight_attention", "structure_weight_mlp", "structure_weight_coupling", "ratio"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.ratio_tolerance < 0:
        p.error(f"--ratio-tolerance must be >= 0, got {args.ratio_tolerance}")
    _check_structure(p, args)


def _check_structure(p, args) -> None:
    """Granularity, layer targets and the preserve list, alone and with the other settings."""
    method, variant, target = args.pruning_method, args.pruning_variant, args.target_sparsity
    try:
        g = Granularity.parse(args.pruning_granularity)
    except ValueError:
        if ":" in str(args.pruning_granularity):
            p.error(f"--pruning-granularity {args.pruning_granularity}: N:M needs whole numbers 0 < N < M, e.g. 2:4")
        p.error(f"--pruning-granularity {args.pruning_granularity!r} is unknown; valid: {FORMS}")
    try:
        targets = parse_targets(args.pruning_layer_targets)
    except ValueError as e:
        p.error(f"--pruning-layer-targets: {e}")
    adaptive = method == "state" and variant in VARIANTS and VARIANTS[variant].layer_adaptive
    if g.kind != ELEMENT and method == "none":
        p.error(f"--pruning-granularity {g} needs a --pruning-method other than 'none'")
    if g.kind == NM:
        for name, level in [("--target-sparsity", target)] + [(f"--pruning-layer-targets {c}", t) for c, t in targets.items()]:
            if level > g.max_sparsity:
                p.error(f"{name} {level} is above what --pruning-granularity {g} allows: at most (M-N)/M = {g.max_sparsity:g}")
    if g.kind == CHANNEL and args.prune_embeddings:
        p.error("--pruning-granularity channel cannot take --prune-embeddings: an embedding table has no channels to remove; drop one")
    if g.kind == CHANNEL and method != "state" and args.pruning_scope == "layer":
        p.error("--pruning-scope layer does not apply to --pruning-granularity channel (every coupling group prunes the "
                "same unit fraction already); use global")
    if g.kind != ELEMENT and method == "state" and args.ratio_preserve:
        p.error(f"--ratio-preserve selects single weights; it cannot be combined with --pruning-granularity {g}")
    if g.kind != ELEMENT and adaptive:
        p.error(f"--pruning-variant {variant} (layer-adaptive) selects single weights; it cannot be combined with --pruning-granularity {g}")
    if targets and method == "state" and args.ratio_preserve:
        p.error("--pruning-layer-targets and --ratio-preserve both set per-class levels; use one")
    if targets and adaptive:
        p.error(f"--pruning-layer-targets and --pruning-variant {variant} (layer-adaptive) both set per-layer levels; use one")


@dataclass(frozen=True)
class PruningSettings(Settings):
    pruning_method: str
    target_sparsity: float
    pruning_variant: str | None
    pruning_schedule: str
    pruning_unit: str
    pruning_warmup_percent: float
    pruning_ramp_end_percent: float
    pruning_frequency: int
    pruning_remask: str
    pruning_scope: str
    pruning_movement_mode: str
    pruning_bitter7_eps: str
    pruning_granularity: str
    pruning_layer_targets: str
    pruning_preserve: str
    prune_embeddings: bool
    prune_norms: bool
    prune_biases: bool
    layer_adaptive_keep_levels: bool
    structure_weight_attention: float
    structure_weight_mlp: float
    structure_weight_coupling: float
    ratio_preserve: bool
    ratio: float
    ratio_tolerance: float

    def schedule(self, total_steps: int, steps_per_epoch: int = 1) -> SparsitySchedule:
        return SparsitySchedule.from_percent(
            self.target_sparsity, total_steps, self.pruning_warmup_percent, self.pruning_ramp_end_percent,
            self.pruning_schedule, unit=self.pruning_unit, steps_per_epoch=steps_per_epoch,
        )

    def frequency(self, steps_per_epoch: int = 1) -> int:
        """Optimizer steps between mask updates (--pruning-frequency counts epochs when the unit is epoch)."""
        return self.pruning_frequency * (max(1, steps_per_epoch) if self.pruning_unit == "epoch" else 1)

    def options(self, include_tied_head: bool = False) -> dict:
        """The keywords of the method's pruner class (`lib.pruning.build`); `include_tied_head` is the trainer's."""
        options = dict(include_tied_head=include_tied_head, include_embeddings=self.prune_embeddings,
                       include_norms=self.prune_norms, include_biases=self.prune_biases, remask=self.pruning_remask,
                       layer_adaptive=LayerAdaptive(rescale=not self.layer_adaptive_keep_levels),
                       granularity=self.pruning_granularity, layer_targets=parse_targets(self.pruning_layer_targets),
                       preserve=parse_preserve(self.pruning_preserve))
        if self.pruning_method == "state":
            weights = StructureWeights(self.structure_weight_attention, self.structure_weight_mlp, self.structure_weight_coupling)
            ratio = RatioSettings(self.ratio, self.ratio_tolerance) if self.ratio_preserve else None
            return {**options, "variant": self.pruning_variant, "structure_weights": weights, "ratio": ratio,
                    "bitter7_eps": self.pruning_bitter7_eps}
        if self.pruning_method == "movement":
            options["mode"] = self.pruning_movement_mode
        return {**options, "scope": self.pruning_scope}
