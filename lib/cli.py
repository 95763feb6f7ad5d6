"""Command-line flags every trainer shares, and their validation.

A model's `get_args_parser()` starts from `parser()` here and adds its own
flags; the matrix runner only ever passes flags defined here or there.
`--dry-run` parses and validates, then exits without training: the tests use
it to prove every argv the runner generates is accepted.
"""

from __future__ import annotations

import argparse

from lib import optim, pruning
from lib.matrix import ADAMWPRUNE_PRUNING
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
    _optimizer_flags(g)
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


def _optimizer_flags(g) -> None:
    """The optimizer family's settings and the learning-rate schedule (lib.optim)."""
    d, sd = optim.DEFAULTS, optim.SCHEDULE_DEFAULTS
    g.add_argument("--nesterov", action="store_true", help="SGD: Nesterov momentum")
    g.add_argument("--optimizer-kernels", default=d["kernels"], choices=optim.KERNELS,
                   help="fused: torch's fused SGD/Adam/AdamW kernels where the parameters allow; torch: torch's own choice")
    g.add_argument("--beta1", type=float, default=d["betas"][0], help="Adam family: first-moment decay")
    g.add_argument("--beta2", type=float, default=d["betas"][1], help="Adam family: second-moment decay")
    g.add_argument("--eps", type=float, default=d["eps"], help="Adam family: denominator epsilon")
    g.add_argument("--adamwprune-base", default=d["base"], choices=optim.BASES, help="the optimizer AdamWPrune updates with")
    g.add_argument("--adamwadv-clip-norm", type=float, default=d["clip_norm"], help="AdamWAdv: gradient-norm clip (0 = off)")
    g.add_argument("--adamwadv-schedule", default=d["adamwadv_schedule"], choices=optim.ADAMWADV_SCHEDULES,
                   help="AdamWAdv: its own cosine annealing to --lr-min, or the shared --lr-schedule")
    g.add_argument("--spam-theta", type=float, default=d["spam_theta"], help="AdamWSpam: spike threshold (0 = no clipping)")
    g.add_argument("--spam-interval", type=int, default=d["spam_interval"], help="AdamWSpam: momentum reset interval in steps (0 = never)")
    g.add_argument("--spam-warmup", type=int, default=d["spam_warmup"], help="AdamWSpam: cosine warmup steps after each reset")
    g.add_argument("--spam-clip-delay", type=int, default=d["spam_clip_delay"], help="AdamWSpam: steps after a reset before spike clipping")
    g.add_argument("--lr-schedule", default="constant", choices=optim.SCHEDULES, help="learning-rate schedule, stepped per optimizer step")
    g.add_argument("--lr-min", type=float, default=sd["min_lr"], help="learning rate at the end of cosine annealing")
    g.add_argument("--lr-warmup", type=float, default=sd["warmup_percent"], help="warmup_cosine: %% of training steps of linear warmup")
    g.add_argument("--lr-step-every", type=float, default=sd["step_percent"], help="step: %% of training steps between decays")
    g.add_argument("--lr-step-gamma", type=float, default=sd["gamma"], help="step: decay factor")


def _check_optimizer(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.optimizer == "adamwprune" and args.pruning_method not in ADAMWPRUNE_PRUNING:
        p.error(
            f"--optimizer adamwprune runs only with --pruning-method {' or '.join(ADAMWPRUNE_PRUNING)}, "
            f"got {args.pruning_method!r}"
        )
    if args.momentum < 0:
        p.error(f"--momentum must be >= 0, got {args.momentum}")
    if args.optimizer == "sgd" and args.nesterov and args.momentum == 0:
        p.error("--nesterov needs --momentum > 0")
    for flag, value in (("--beta1", args.beta1), ("--beta2", args.beta2)):
        if not 0 <= value < 1:
            p.error(f"{flag} must be in [0, 1), got {value}")
    if not args.eps > 0:
        p.error(f"--eps must be positive, got {args.eps}")
    if args.adamwadv_clip_norm < 0:
        p.error(f"--adamwadv-clip-norm must be >= 0 (0 = off), got {args.adamwadv_clip_norm}")
    if args.spam_theta < 0 or args.spam_interval < 0 or args.spam_warmup < 0:
        p.error("--spam-theta, --spam-interval and --spam-warmup must be >= 0 (0 turns clipping / resets / warmup off)")
    if args.spam_clip_delay < 1:
        p.error(f"--spam-clip-delay must be at least 1 step, got {args.spam_clip_delay}")
    cosine = args.lr_schedule in ("cosine", "warmup_cosine") or (
        "adamwadv" in (args.optimizer, args.adamwprune_base if args.optimizer == "adamwprune" else None)
        and args.adamwadv_schedule == "cosine"
    )
    if not 0 <= args.lr_min or (cosine and args.lr_min > args.lr):
        p.error(f"--lr-min must be within [0, --lr {args.lr}], got {args.lr_min}")
    if not 0 < args.lr_warmup < 100:
        p.error(f"--lr-warmup must be within (0, 100) % of training steps, got {args.lr_warmup}")
    if not 0 < args.lr_step_every <= 100:
        p.error(f"--lr-step-every must be within (0, 100] % of training steps, got {args.lr_step_every}")
    if not 0 < args.lr_step_gamma <= 1:
        p.error(f"--lr-step-gamma must be within (0, 1], got {args.lr_step_gamma}")


def _pruning_flags(g) -> None:
    """The pruning family's settings (lib.pruning); see lib/Kconfig.pruning for their meaning."""
    g.add_argument("--pruning-unit", default="step", choices=UNITS,
                   help="step: the schedule moves every step, --pruning-frequency counts steps; epoch: per epoch")
    g.add_argument("--pruning-scope", default="global", choices=("global", "layer"),
                   help="magnitude and movement: one global threshold, or every layer at the scheduled level")
    g.add_argument("--pruning-remask", default="update", choices=pruning.REMASK,
                   help="zero pruned weights and optimizer moments after every step, or only when masks change")
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
    _check_optimizer(p, args)
    _check_pruning(p, args)
    if not getattr(args, "monitor_interval", 1.0) > 0:
        p.error(f"--monitor-interval must be > 0 seconds, got {args.monitor_interval}")
    return args
