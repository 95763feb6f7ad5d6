"""Command-line flags every trainer shares, and their validation.

A model's `get_args_parser()` starts from `parser()` here and adds its own
flags; the matrix runner only ever passes flags defined here or there.
`--dry-run` parses and validates, then exits without training: the tests use
it to prove every argv the runner generates is accepted.
"""

from __future__ import annotations

import argparse

from lib import optim, pruning
from lib.pruning.schedule import POWERS

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
    g = p.add_argument_group("monitoring and tracking")
    g.add_argument("--monitor", default="auto", choices=("auto", "nvidia", "amd", "cpu", "off"),
                   help="memory monitor backend (memory.json); a backend that cannot run falls back to process memory")
    g.add_argument("--monitor-interval", type=float, default=1.0, help="seconds between memory samples")
    g.add_argument("--tracker", default="none",
                   help="comma-separated experiment trackers: trackio, wandb, or none; one that cannot run is a warning")
    g.add_argument("--tracking-dir", default="tracking", help="where trackio's database and wandb's offline runs go")
    return p


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
    if not getattr(args, "monitor_interval", 1.0) > 0:
        p.error(f"--monitor-interval must be > 0 seconds, got {args.monitor_interval}")
    return args
