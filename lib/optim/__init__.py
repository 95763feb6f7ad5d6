"""The optimizer family, built by name, and the learning-rate schedules.

`build(name, model, lr, weight_decay, momentum, **settings)` returns one of
OPTIMIZERS: torch's SGD (momentum, optional Nesterov), Adam and AdamW, and this
package's AdamWAdv, AdamWSpam and AdamWPrune (on a base from BASES). Weight
decay goes to weights only: biases and normalisation parameters (every
parameter with fewer than two dimensions) sit in a group without decay.
`WEIGHT_DECAY` means the same number for every optimizer: an L2 term for SGD
and Adam, decoupled decay for the AdamW family; nothing rescales it, nor the
learning rate.

`kernels="fused"` (the default) gives torch's SGD, Adam and AdamW (and
AdamWPrune on an Adam or AdamW base) torch's fused kernels: one kernel per
step instead of several passes per tensor, and on the CPU it also dodges
`sqrt` being twice as slow on zeros, which pruned moments are full of
(an AdamW step over a GPT-2-sized stack on two cores here: 52 ms fused,
147 ms torch's per-tensor loop, 356 ms once half the moments are zero).
`kernels="torch"` keeps torch's own choice (multi-tensor on a GPU, a loop
per tensor on the CPU). Parameters that fused kernels cannot take (not
floating point, or on a device without them) get torch's choice either way.
AdamWAdv and AdamWSpam have their own multi-tensor steps.

`from_args(args, model)` and `scheduler_from_args(args, optimizer, total_steps)`
are what a trainer calls with its parsed flags; the family's flags, checks
and typed settings are `lib.optim.settings` (`add_arguments`, `check`,
`OptimizerSettings`). `build_scheduler` and `current_lr` come from
`lib.optim.schedules`.
"""

from __future__ import annotations

import torch
from torch import nn

from lib.optim.adamwadv import AdamWAdv
from lib.optim.adamwprune import CLASSES as ADAMWPRUNE_CLASSES
from lib.optim.adamwprune import AdamWPrune
from lib.optim.adamwspam import AdamWSpam
from lib.optim.schedules import SCHEDULE_DEFAULTS, SCHEDULES, build_scheduler, current_lr
from lib.optim.settings import (
    ADAM_FAMILY, ADAMWADV_SCHEDULES, BASES, DEFAULTS, KERNELS, OPTIMIZERS, OptimizerSettings, add_arguments, check,
)

__all__ = [
    "OPTIMIZERS", "BASES", "ADAM_FAMILY", "KERNELS", "SCHEDULES", "DEFAULTS", "SCHEDULE_DEFAULTS", "AdamWAdv",
    "AdamWSpam", "AdamWPrune", "OptimizerSettings", "add_arguments", "check", "param_groups", "build",
    "build_scheduler", "current_lr", "from_args", "scheduler_from_args",
]

FUSED = {"sgd", "adam", "adamw"}  # torch optimizers with fused kernels


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _check(name: str, lr: float, weight_decay: float, momentum: float, s: dict) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    if not weight_decay >= 0:
        raise ValueError(f"weight decay must be >= 0, got {weight_decay}")
    if name == "sgd":
        if not momentum >= 0:
            raise ValueError(f"SGD momentum must be >= 0, got {momentum}")
        if s["nesterov"] and momentum == 0:
            raise ValueError("Nesterov momentum needs an SGD momentum > 0")
    beta1, beta2 = s["betas"]
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"Adam betas must lie in [0, 1), got ({beta1}, {beta2})")
    if not s["eps"] > 0:
        raise ValueError(f"Adam epsilon must be positive, got {s['eps']}")
    if s["adamwadv_schedule"] not in ADAMWADV_SCHEDULES:
        raise ValueError(f"unknown AdamWAdv schedule {s['adamwadv_schedule']!r}; valid: {', '.join(ADAMWADV_SCHEDULES)}")
    if s["kernels"] not in KERNELS:
        raise ValueError(f"unknown optimizer kernels {s['kernels']!r}; valid: {', '.join(KERNELS)}")
    if name == "adamwprune" and s["base"] not in BASES:
        raise ValueError(f"unknown AdamWPrune base {s['base']!r}; valid: {', '.join(BASES)}")


def _fusable(groups: list[dict]) -> bool:
    """True when torch's fused kernels take every parameter (floating point, on a device that has them)."""
    try:  # a private helper of torch's; the devices of torch 2.4+ otherwise
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:
        devices = {"cpu", "cuda"}
    return all(p.is_floating_point() and p.device.type in devices for g in groups for p in g["params"])


def _make(name: str, groups: list[dict], lr: float, momentum: float, s: dict, cls=None) -> torch.optim.Optimizer:
    fused = {"fused": True} if name in FUSED and s["kernels"] == "fused" and _fusable(groups) else {}
    adam = dict(lr=lr, betas=tuple(s["betas"]), eps=s["eps"])
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=bool(s["nesterov"]), **fused)
    if name == "adam":
        return (cls or torch.optim.Adam)(groups, **adam, **fused)
    if name == "adamw":
        return (cls or torch.optim.AdamW)(groups, **adam, **fused)
    if name == "adamwadv":
        return (cls or AdamWAdv)(groups, **adam, clip_norm=s["clip_norm"], cosine=s["adamwadv_schedule"] == "cosine")
    if name == "adamwspam":
        return (cls or AdamWSpam)(
            groups, **adam, theta=s["spam_theta"], interval=s["spam_interval"],
            warmup=s["spam_warmup"], clip_delay=s["spam_clip_delay"],
        )
    return _make(s["base"], groups, lr, momentum, s, ADAMWPRUNE_CLASSES[s["base"]])  # adamwprune


def build(
    name: str, model: nn.Module, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, **settings
) -> torch.optim.Optimizer:
    """The optimizer `name` over `model`'s parameters; `settings` are keys of DEFAULTS."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown optimizer setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    _check(name, lr, weight_decay, momentum, s)
    return _make(name, param_groups(model, weight_decay), lr, momentum, s)


def from_args(args, model: nn.Module) -> torch.optim.Optimizer:
    """Build `--optimizer` from a trainer's parsed flags (see `lib.optim.settings`)."""
    s = OptimizerSettings.from_args(args)
    return build(s.optimizer, model, s.lr, s.weight_decay, s.sgd_momentum, **s.build_settings())


def scheduler_from_args(args, optimizer: torch.optim.Optimizer, total_steps: int):
    """The learning-rate scheduler the flags ask for (--lr-schedule and its --lr-* settings)."""
    s = OptimizerSettings.from_args(args)
    return build_scheduler(s.lr_schedule, optimizer, total_steps, **s.schedule_settings())
