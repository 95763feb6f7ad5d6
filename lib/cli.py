"""The flags every trainer shares: the run's own, then each settings family's.

A model's `get_args_parser()` starts from `parser()` here and adds its own
flags; the matrix runner only ever passes flags defined here or there (the
tests parse every argv it generates). The run and training flags are
defined here (lib/Kconfig.general's DEVICE, DATA_DIR, AMP, COMPILE,
WORKERS) and the fine-tuning flags (lib/Kconfig.finetune: `--init-from`
and the length and learning-rate shares it applies, lib/run.py); each
family owns its flags, checks and typed settings:
`lib.optim`, `lib.pruning`, `lib.monitor`, `lib.tracking` (`add_arguments`,
`check`). Abbreviated flags are refused, so a flag the runner spells by the
naming rule of `lib.config` never silently matches a longer one. `--dry-run`
parses and validates, then exits without training.
"""

from __future__ import annotations

import argparse

from lib import monitor, optim, pruning, tracking
from lib.matrix import ADAMWPRUNE_PRUNING, ONESHOT_METHODS
from lib.pruning.schedule import ONESHOT

AMP_MODES = ("off", "bf16", "fp16")
FAMILIES = (optim, pruning, monitor, tracking)


def parser(description: str, *, epochs: int | None = None, batch_size: int, lr: float) -> argparse.ArgumentParser:
    """The shared flags, with the model's defaults; `epochs=None` (iteration-based trainers): no --epochs."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False
    )
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default="runs/manual", help="run directory (run.json, metrics.json, checkpoints)")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.add_argument("--data-dir", default="data", help="datasets are read from / downloaded to here")
    g.add_argument("--resume", action="store_true", help="continue from output-dir/checkpoint.pt if it exists")
    g.add_argument("--dry-run", action="store_true", help="validate the arguments and exit")
    g.add_argument("--bench-inference", action="store_true", help="once completed, measure the model at inference into metrics.json")
    g = p.add_argument_group("training (lib/Kconfig.general and the model's menu)")
    if epochs is not None:
        g.add_argument("--epochs", type=int, default=epochs)
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--lr", type=float, default=lr, help="learning rate")
    g.add_argument("--amp", default="off", choices=AMP_MODES,
                   help="mixed precision (autocast; fp16 adds a gradient scaler); CUDA only, ignored on CPU")
    g.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    g.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    g = p.add_argument_group("fine-tuning (lib/Kconfig.finetune): start from a completed run's weights")
    g.add_argument("--init-from", default=None, metavar="BEST_PT",
                   help="a completed run's best.pt: train from its weights (the run must be completed); run.json records it as the parent")
    g.add_argument("--finetune-length-percent", type=float, default=25,
                   help="with --init-from: train this %% of the configured epochs or iterations (at least one)")
    g.add_argument("--finetune-lr-percent", type=float, default=10,
                   help="with --init-from: train at this %% of --lr")
    for family in FAMILIES:
        family.add_arguments(p)
    return p


def _check_pairs(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The rules that join two families: which optimizer runs with which pruning method."""
    if args.optimizer == "adamwprune" and args.pruning_method not in ADAMWPRUNE_PRUNING:
        p.error(
            f"--optimizer adamwprune runs only with --pruning-method {' or '.join(ADAMWPRUNE_PRUNING)}, "
            f"got {args.pruning_method!r}"
        )
    if args.pruning_method == "state" and args.optimizer not in optim.ADAM_FAMILY:
        p.error(
            f"--pruning-method state reads the optimizer's exp_avg/exp_avg_sq, which {args.optimizer!r} does not keep; "
            f"valid optimizers: {', '.join(optim.ADAM_FAMILY)}"
        )


def _check_finetune(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The fine-tuning shares, and the one-shot schedule's need for scores that exist before training."""
    for name in ("finetune_length_percent", "finetune_lr_percent"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.pruning_schedule == ONESHOT and args.pruning_method not in ONESHOT_METHODS + ("none",):
        p.error(f"--pruning-schedule oneshot sets the masks before the first step, from scores only "
                f"{' or '.join(ONESHOT_METHODS)} has then; --pruning-method {args.pruning_method} learns its scores while "
                f"training: use another schedule")


def check(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Reject bad values with one line naming the flag and the valid choices."""
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if p.get_default("epochs") is not None and args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    for check_family in (optim.check, pruning.check, monitor.check):  # tracking: a bad name is a run-time warning
        check_family(p, args)
    _check_pairs(p, args)
    _check_finetune(p, args)
    return args
