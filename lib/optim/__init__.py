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
are what a trainer calls with the flags of `lib.cli`; `build_scheduler` and
`current_lr` come from `lib.optim.schedules`.
"""

from __future__ import annotations

import torch
from torch import nn

from lib.optim.adamwadv import AdamWAdv
from lib.optim.adamwprune import CLASSES as ADAMWPRUNE_CLASSES
from lib.optim.adamwprune import AdamWPrune
from lib.optim.adamwspam import AdamWSpam
from lib.optim.schedules import SCHEDULE_DEFAULTS, SCHEDULES, build_scheduler, current_lr

__all__ = [
    "OPTIMIZERS", "BASES", "SCHEDULES", "DEFAULTS", "SCHEDULE_DEFAULTS", "AdamWAdv", "AdamWSpam", "AdamWPrune",
    "param_groups", "build", "build_scheduler", "current_lr", "from_args", "scheduler_from_args",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "adamwadv", "adamwspam", "adamwprune")
BASES = tuple(ADAMWPRUNE_CLASSES)  # adam, adamw, adamwadv, adamwspam
ADAM_FAMILY = OPTIMIZERS[1:]
ADAMWADV_SCHEDULES = ("cosine", "shared")
KERNELS = ("fused", "torch")
FUSED = {"sgd", "adam", "adamw"}  # torch optimizers with fused kernels

# Every setting beyond lr / weight decay / momentum, with its default (the
# Kconfig defaults of lib/Kconfig.optimizers; the flags of lib/cli.py).
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
    """Build `args.optimizer` from a trainer's parsed flags (see lib.cli)."""
    d = DEFAULTS
    return build(
        args.optimizer, model, args.lr, args.weight_decay, getattr(args, "momentum", 0.9),
        nesterov=getattr(args, "nesterov", d["nesterov"]),
        betas=(getattr(args, "beta1", d["betas"][0]), getattr(args, "beta2", d["betas"][1])),
        eps=getattr(args, "eps", d["eps"]),
        clip_norm=getattr(args, "adamwadv_clip_norm", d["clip_norm"]),
        adamwadv_schedule=getattr(args, "adamwadv_schedule", d["adamwadv_schedule"]),
        spam_theta=getattr(args, "spam_theta", d["spam_theta"]),
        spam_interval=getattr(args, "spam_interval", d["spam_interval"]),
        spam_warmup=getattr(args, "spam_warmup", d["spam_warmup"]),
        spam_clip_delay=getattr(args, "spam_clip_delay", d["spam_clip_delay"]),
        base=getattr(args, "adamwprune_base", d["base"]),
        kernels=getattr(args, "optimizer_kernels", d["kernels"]),
    )


def scheduler_from_args(args, optimizer: torch.optim.Optimizer, total_steps: int):
    """The learning-rate scheduler the flags ask for (lib.cli's --lr-* flags)."""
    d = SCHEDULE_DEFAULTS
    return build_scheduler(
        getattr(args, "lr_schedule", "constant"), optimizer, total_steps,
        min_lr=getattr(args, "lr_min", d["min_lr"]),
        warmup_percent=getattr(args, "lr_warmup", d["warmup_percent"]),
        step_percent=getattr(args, "lr_step_every", d["step_percent"]),
        gamma=getattr(args, "lr_step_gamma", d["gamma"]),
    )
