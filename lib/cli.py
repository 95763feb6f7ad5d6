"""Command-line flags every trainer shares, and their validation.

A model's `get_args_parser()` starts from `parser()` here and adds its own
flags; the matrix runner only ever passes flags defined here or there.
`--dry-run` parses and validates, then exits without training: the tests use
it to prove every argv the runner generates is accepted.
"""

from __future__ import annotations

import argparse

from lib import optim, pruning
from lib.pruning.schedule import POWERS, UNITS

AMP_MODES = ("off", "bf16", "fp16")


def parser(description: str, *, epochs: int, batch_size: int, lr: float) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default="runs/manual", help="run directory (run.json, metrics.json, checkpoints)")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.add_argument("--data-dir", default="data", help="datasets are read from / downloaded to here")
    g.add_argument("--resume", action="store_true", help="continue from output-dir/checkpoint.pt if it exists")
    g.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    g.add_argument("--dry-run", action="store_true", help="validate the arguments and exit")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=epochs)
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--lr", type=float, default=lr, help="learning rate")
    g.add_argument("--optimizer", default="sgd", help=f"one of: {', '.join(optim.OPTIMIZERS)}")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--amp", default="off", choices=AMP_MODES, help="mixed precision (autocast; fp16 adds a gradient scaler); CUDA only, ignored on CPU")
    g.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    g = p.add_argument_group("pruning")
    g.add_argument("--pruning-method", default="none", help=f"one of: {', '.join(pruning.METHODS)}")
    g.add_argument("--target-sparsity", type=float, default=0.0, help="fraction of prunable weights set to zero")
    g.add_argument("--pruning-schedule", default="cubic", choices=tuple(POWERS))
    g.add_argument("--pruning-warmup", type=float, default=10, help="%% of training steps before the first mask update")
    g.add_argument("--pruning-ramp-end", type=float, default=75, help="%% of training steps at which the target is reached")
    g.add_argument("--pruning-frequency", type=int, default=10, help="optimizer steps between mask updates")
    _pruning_flags(g)
    g = p.add_argument_group("monitoring and tracking")
    g.add_argument("--monitor", default="auto", choices=("auto", "nvidia", "amd", "cpu", "off"),
                   help="memory monitor backend (memory.json); a backend that cannot run falls back to process memory")
    g.add_argument("--monitor-interval", type=float, default=1.0, help="seconds between memory samples")
    g.add_argument("--tracker", default="none",
                   help="comma-separated experiment trackers: trackio, wandb, or none; one that cannot run is a warning")
    g.add_argument("--tracking-dir", default="tracking", help="where trackio's database and wandb's offline runs go")
    return p


def _pruning_flags(g) -> None:
    """The pruning family's settings (lib.pruning); see lib/Kconfig.pruning for their meaning."""
    g.add_argument("--pruning-unit", default="step", choices=UNITS,
                   help="step: the schedule moves every step, --pruning-frequency counts steps; epoch: per epoch")
    g.add_argument("--pruning-scope", default="global", choices=("global", "layer"),
                   help="magnitude and movement: one global threshold, or every layer at the scheduled level")
    g.add_argument("--pruning-variant", default=None, help=f"state pruning: one of {', '.join(pruning.VARIANTS)}")
    g.add_argument("--budget-extension", type=float, default=0.0,
                   help="train this many %% longer (bitter2: 21, bitter3/4: 30 in the matrix); recorded in run.json")
    g.add_argument("--no-layer-adaptive-rescale", dest="layer_adaptive_rescale", action="store_false",
                   help="bitter4: keep the depth-scaled levels instead of rescaling them to hit the target exactly")
    g.add_argument("--structure-weight-attention", type=float, default=2.5, help="bitter8/9: weight of attention parameters")
    g.add_argument("--structure-weight-mlp", type=float, default=1.0, help="bitter8/9: weight of MLP parameters")
    g.add_argument("--structure-weight-coupling", type=float, default=3.0, help="bitter8/9: weight of coupling parameters")
    g.add_argument("--ratio-preserve", action="store_true",
                   help="state pruning: RATIO budgets keeping kept-MLP : kept-attention at --ratio")
    g.add_argument("--ratio", type=float, default=2.5, help="RATIO: final MLP:attention ratio of kept parameters")
    g.add_argument("--ratio-tolerance", type=float, default=0.2, help="RATIO: accepted absolute deviation of the final ratio")
    g.add_argument("--prune-embeddings", action="store_true", help="also prune embedding tables")
    g.add_argument("--prune-norms", action="store_true", help="also prune normalisation weights")
    g.add_argument("--prune-biases", action="store_true", help="also prune biases")


def _check_pruning(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    method, variant = args.pruning_method, args.pruning_variant
    if method == "state":
        if variant not in pruning.VARIANTS:
            got = f"{variant!r} is unknown" if variant else "is missing"
            p.error(f"--pruning-variant {got}; state pruning needs one of: {', '.join(pruning.VARIANTS)}")
        able = getattr(optim, "ADAM_FAMILY", ("adam", "adamw"))
        if args.optimizer not in able:
            p.error(
                f"--pruning-method state reads the optimizer's exp_avg/exp_avg_sq, which {args.optimizer!r} does not keep; "
                f"valid optimizers: {', '.join(able)}"
            )
        if variant == "bitter4" and args.ratio_preserve:
            p.error("--ratio-preserve cannot be combined with --pruning-variant bitter4 (layer-adaptive); pick one")
    elif variant is not None:
        p.error(f"--pruning-variant applies only to --pruning-method state, not {method!r}")
    if args.budget_extension < 0:
        p.error(f"--budget-extension must be >= 0 %, got {args.budget_extension}")
    for role in ("attention", "mlp", "coupling"):
        if not getattr(args, f"structure_weight_{role}") > 0:
            p.error(f"--structure-weight-{role} must be positive, got {getattr(args, f'structure_weight_{role}')}")
    if not args.ratio > 0 or args.ratio_tolerance < 0:
        p.error(f"--ratio must be positive and --ratio-tolerance >= 0, got {args.ratio} and {args.ratio_tolerance}")


def check(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Reject bad values with one line naming the flag and the valid choices."""
    if args.optimizer not in optim.OPTIMIZERS:
        p.error(f"--optimizer {args.optimizer!r} is unknown; valid: {', '.join(optim.OPTIMIZERS)}")
    if args.pruning_method not in pruning.METHODS:
        p.error(f"--pruning-method {args.pruning_method!r} is unknown; valid: {', '.join(pruning.METHODS)}")
    if args.lr <= 0:
        p.error(f"--lr must be positive, got {args.lr}")
    if args.weight_decay < 0:
        p.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be at least 1")
    if not 0.0 <= args.target_sparsity < 1.0:
        p.error(f"--target-sparsity must be in [0, 1), got {args.target_sparsity}")
    if args.pruning_method == "none" and args.target_sparsity:
        p.error("--target-sparsity needs a --pruning-method other than 'none'")
    if args.pruning_method != "none" and not args.target_sparsity:
        p.error(f"--pruning-method {args.pruning_method} needs --target-sparsity > 0")
    if not 0 <= args.pruning_warmup < args.pruning_ramp_end <= 100:
        p.error("need 0 <= --pruning-warmup < --pruning-ramp-end <= 100 (percent of training steps)")
    if args.pruning_frequency < 1:
        p.error("--pruning-frequency must be at least 1")
    _check_pruning(p, args)
    if not getattr(args, "monitor_interval", 1.0) > 0:
        p.error(f"--monitor-interval must be > 0 seconds, got {args.monitor_interval}")
    return args
