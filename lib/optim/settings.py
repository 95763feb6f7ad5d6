"""The optimizer family's flags, their checks and its typed settings.

Each flag is its Kconfig symbol (lib/Kconfig.optimizers) by `lib.config`'s
naming rule, and its default is the symbol's default: `WEIGHT_DECAY` ->
`--weight-decay`, `ADAM_BETA2` -> `--adam-beta2`, `choice LR_SCHEDULE` ->
`--lr-schedule`. `DEFAULTS` holds the defaults of `lib.optim.build`'s keyword
settings, the same numbers. `--lr` comes from the trainer (`lib.cli`), since
every model has its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib.optim.adamwprune import CLASSES as ADAMWPRUNE_CLASSES
from lib.optim.schedules import SCHEDULE_DEFAULTS, SCHEDULES
from lib.settings import Settings

OPTIMIZERS = ("sgd", "adam", "adamw", "adamwadv", "adamwspam", "adamwprune")
BASES = tuple(ADAMWPRUNE_CLASSES)  # adam, adamw, adamwadv, adamwspam
ADAM_FAMILY = OPTIMIZERS[1:]
ADAMWADV_SCHEDULES = ("cosine", "shared")
KERNELS = ("fused", "torch")

# `lib.optim.build`'s settings beyond lr / weight decay / momentum, with their defaults.
DEFAULTS = {
    "nesterov": False,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "clip_norm": 1.0,  # AdamWAdv
    "adamwadv_schedule": "cosine",  # AdamWAdv: its own cosine annealing, or "shared"
    "spam_theta": 5000.0,  # AdamWSpam, the paper's defaults
    "spam_interval": 500,
    "spam_warmup": 150,
    "spam_clip_delay": 20,
    "base": "adamw",  # AdamWPrune
    "kernels": "fused",  # fused kernels where torch has them: the same update, fewer memory passes
}


def add_arguments(parser) -> None:
    d, sd = DEFAULTS, SCHEDULE_DEFAULTS
    g = parser.add_argument_group("optimizer (lib/Kconfig.optimizers)")
    g.add_argument("--optimizer", default="sgd", help=f"one of: {', '.join(OPTIMIZERS)}")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="L2 for SGD and Adam, decoupled for the AdamW family")
    g.add_argument("--optimizer-kernels", default=d["kernels"], choices=KERNELS,
                   help="fused: torch's fused SGD/Adam/AdamW kernels where the parameters allow; torch: torch's own choice")
    g.add_argument("--sgd-momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--sgd-nesterov", action="store_true", help="SGD: Nesterov momentum")
    g.add_argument("--adam-beta1", type=float, default=d["betas"][0], help="Adam family: first-moment decay")
    g.add_argument("--adam-beta2", type=float, default=d["betas"][1], help="Adam family: second-moment decay")
    g.add_argument("--adam-eps", type=float, default=d["eps"], help="Adam family: denominator epsilon")
    g.add_argument("--adamwprune-base", default=d["base"], choices=BASES, help="the optimizer AdamWPrune updates with")
    g.add_argument("--adamwadv-clip-norm", type=float, default=d["clip_norm"], help="AdamWAdv: gradient-norm clip (0 = off)")
    g.add_argument("--adamwadv-schedule", default=d["adamwadv_schedule"], choices=ADAMWADV_SCHEDULES,
                   help="AdamWAdv: its own cosine annealing to --lr-min, or the shared --lr-schedule")
    g.add_argument("--adamwspam-theta", type=float, default=d["spam_theta"], help="AdamWSpam: spike threshold (0 = no clipping)")
    g.add_argument("--adamwspam-interval", type=int, default=d["spam_interval"],
                   help="AdamWSpam: momentum reset interval in steps (0 = never)")
    g.add_argument("--adamwspam-warmup", type=int, default=d["spam_warmup"], help="AdamWSpam: cosine warmup steps after each reset")
    g.add_argument("--adamwspam-clip-delay", type=int, default=d["spam_clip_delay"],
                   help="AdamWSpam: steps after a reset before spike clipping")
    g.add_argument("--lr-schedule", default="constant", choices=SCHEDULES, help="learning-rate schedule, stepped per optimizer step")
    g.add_argument("--lr-min", type=float, default=sd["min_lr"], help="learning rate at the end of cosine annealing")
    g.add_argument("--lr-warmup-percent", type=float, default=sd["warmup_percent"],
                   help="warmup_cosine: %% of training steps of linear warmup")
    g.add_argument("--lr-step-percent", type=float, default=sd["step_percent"], help="step: %% of training steps between decays")
    g.add_argument("--lr-step-gamma", type=float, default=sd["gamma"], help="step: decay factor")


def check(p, args) -> None:
    """Reject a bad optimizer flag with one line naming it."""
    if args.optimizer not in OPTIMIZERS:
        p.error(f"--optimizer {args.optimizer!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
    if args.lr <= 0:
        p.error(f"--lr must be positive, got {args.lr}")
    if args.weight_decay < 0:
        p.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.sgd_momentum < 0:
        p.error(f"--sgd-momentum must be >= 0, got {args.sgd_momentum}")
    if args.optimizer == "sgd" and args.sgd_nesterov and args.sgd_momentum == 0:
        p.error("--sgd-nesterov needs --sgd-momentum > 0")
    for flag, value in (("--adam-beta1", args.adam_beta1), ("--adam-beta2", args.adam_beta2)):
        if not 0 <= value < 1:
            p.error(f"{flag} must be in [0, 1), got {value}")
    if not args.adam_eps > 0:
        p.error(f"--adam-eps must be positive, got {args.adam_eps}")
    if args.adamwadv_clip_norm < 0:
        p.error(f"--adamwadv-clip-norm must be >= 0 (0 = off), got {args.adamwadv_clip_norm}")
    for flag in ("theta", "interval", "warmup"):
        if getattr(args, f"adamwspam_{flag}") < 0:
            p.error(f"--adamwspam-{flag} must be >= 0 (0 turns it off), got {getattr(args, f'adamwspam_{flag}')}")
    if args.adamwspam_clip_delay < 1:
        p.error(f"--adamwspam-clip-delay must be at least 1 step, got {args.adamwspam_clip_delay}")
    base = args.adamwprune_base if args.optimizer == "adamwprune" else args.optimizer
    cosine = args.lr_schedule in ("cosine", "warmup_cosine") or (base == "adamwadv" and args.adamwadv_schedule == "cosine")
    if not 0 <= args.lr_min or (cosine and args.lr_min > args.lr):
        p.error(f"--lr-min must be within [0, --lr {args.lr}], got {args.lr_min}")
    if not 0 < args.lr_warmup_percent < 100:
        p.error(f"--lr-warmup-percent must be within (0, 100) % of training steps, got {args.lr_warmup_percent}")
    if not 0 < args.lr_step_percent <= 100:
        p.error(f"--lr-step-percent must be within (0, 100] % of training steps, got {args.lr_step_percent}")
    if not 0 < args.lr_step_gamma <= 1:
        p.error(f"--lr-step-gamma must be within (0, 1], got {args.lr_step_gamma}")


@dataclass(frozen=True)
class OptimizerSettings(Settings):
    """What `lib.optim.from_args` and `scheduler_from_args` build from."""

    optimizer: str
    lr: float
    weight_decay: float
    optimizer_kernels: str
    sgd_momentum: float
    sgd_nesterov: bool
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    adamwprune_base: str
    adamwadv_clip_norm: float
    adamwadv_schedule: str
    adamwspam_theta: float
    adamwspam_interval: int
    adamwspam_warmup: int
    adamwspam_clip_delay: int
    lr_schedule: str
    lr_min: float
    lr_warmup_percent: float
    lr_step_percent: float
    lr_step_gamma: float

    def build_settings(self) -> dict:
        """The keyword settings of `lib.optim.build` (keys of DEFAULTS)."""
        return dict(
            nesterov=self.sgd_nesterov,
            betas=(self.adam_beta1, self.adam_beta2),
            eps=self.adam_eps,
            clip_norm=self.adamwadv_clip_norm,
            adamwadv_schedule=self.adamwadv_schedule,
            spam_theta=self.adamwspam_theta,
            spam_interval=self.adamwspam_interval,
            spam_warmup=self.adamwspam_warmup,
            spam_clip_delay=self.adamwspam_clip_delay,
            base=self.adamwprune_base,
            kernels=self.optimizer_kernels,
        )

    def schedule_settings(self) -> dict:
        """The keyword settings of `lib.optim.build_scheduler`."""
        return dict(
            min_lr=self.lr_min,
            warmup_percent=self.lr_warmup_percent,
            step_percent=self.lr_step_percent,
            gamma=self.lr_step_gamma,
        )
