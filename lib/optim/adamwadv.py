"""AdamWAdv: AdamW with AMSGrad and gradient-norm clipping inside its own step.

The clipping covers exactly the parameters this optimizer updates, so a
training loop needs no extra call: `optimizer.step()` clips the global L2 norm
of their gradients to `clip_norm` (0 turns clipping off), then takes an
AMSGrad AdamW step. The gradients are clipped in place, as
`torch.nn.utils.clip_grad_norm_` does.

The third ingredient, cosine annealing to a minimum learning rate, is a
learning-rate schedule, so it lives with the schedules: with `cosine=True`
the optimizer asks `lib.optim.schedules.build_scheduler` for the cosine
schedule in place of the shared one (see docs/optimizers.md).
"""

from __future__ import annotations

import torch


class AdamWAdv(torch.optim.AdamW):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        clip_norm: float = 1.0,
        cosine: bool = True,
    ):
        if not clip_norm >= 0:
            raise ValueError(f"AdamWAdv clip norm must be >= 0 (0 = off), got {clip_norm}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=True)
        self.clip_norm = float(clip_norm)
        # Read by build_scheduler: this optimizer anneals with the cosine schedule.
        self.schedule_override = "cosine" if cosine else None

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.clip_norm > 0:
            params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            if params:
                torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        super().step()
        return loss
