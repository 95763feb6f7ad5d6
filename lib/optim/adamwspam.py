"""AdamWSpam: spike-aware Adam with momentum reset and decoupled weight decay.

After Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM
Training" (ICLR 2025, arXiv 2501.06842). With t the optimizer step (1, 2, ...,
counted once per `step()` call, the same for every parameter group):

* Momentum reset: at every step t with t % interval == 0 both moments
  (`exp_avg`, `exp_avg_sq`) are zeroed, in place, before that step's update.
  interval = 0 never resets.
* Spike-aware clipping: a gradient entry with g**2 > theta * v, v being the
  second moment before this step's update, is replaced by
  sign(g) * sqrt(theta * v). Clipping is on at step t when
  (t mod interval) >= clip_delay (t >= clip_delay with interval 0), the
  reference implementation's rule: right after a reset v is zero and every
  entry would be clipped to zero, so clipping waits `clip_delay` steps. The
  count starts at the reset step, and at step 0 before the first reset, so
  in the first cycle clipping starts at t = clip_delay, when v has absorbed
  clip_delay - 1 updates (clip_delay after a reset). theta = 0 turns it off.
* Warmup after each reset: k steps after a reset (k = 0 on the reset step) the
  update is scaled by 1 - 0.99 * (1 + cos(pi * k / (warmup + 1))) / 2 while
  k < warmup, and by 1 afterwards: the cosine warmup of the paper's reference
  implementation (it starts at 0.01). Training start is not a reset. The factor
  multiplies the scheduled learning rate of that step only; `group["lr"]` is
  never changed, so nothing compounds.
* Decoupled weight decay: p <- p * (1 - lr * weight_decay), from the scheduled
  learning rate (not warmup-scaled), as the reference implementation does.
* Bias correction counts every update a parameter has received, resets
  included (the paper's t), as torch's Adam does with `state["step"]`.

Defaults are the paper's: theta 5000, interval 500, warmup 150; clip_delay 20
is the reference implementation's. Where this differs from the reference
code (eps placement, weight-decay order, eps default, p.grad left untouched,
interval 0): docs/optimizers.md.

The step counter lives in each parameter group (`group["global_step"]`), so
`state_dict()` carries it and the reset phase resumes exactly. Moments live in
`state[p]["exp_avg"]` / `state[p]["exp_avg_sq"]`, the keys the state pruner reads.
A group is updated with multi-tensor (foreach) kernels.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


def warmup_factor(k: int, warmup: int) -> float:
    """Update scale k steps after a momentum reset (k = 0 on the reset step)."""
    if k >= warmup:
        return 1.0
    return 1.0 - 0.99 * (1.0 + math.cos(math.pi * k / (warmup + 1))) / 2.0


def _phase(t: int, interval: int) -> tuple[bool, int | None, int]:
    """(reset at step t?, steps since the last reset or None before the first, the clipping count at step t).

    The clipping count is t mod interval (t without resets): the reference
    implementation's `current_step % DeltaT`, with current_step = t.
    """
    if interval > 0 and t >= interval:
        since = t % interval
        return since == 0, since, since
    return False, None, t


class AdamWSpam(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        theta: float = 5000.0,
        interval: int = 500,
        warmup: int = 150,
        clip_delay: int = 20,
    ):
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"eps and weight decay must be >= 0, got {eps} and {weight_decay}")
        if not theta >= 0:
            raise ValueError(f"AdamWSpam theta must be >= 0 (0 = no spike clipping), got {theta}")
        if interval < 0 or warmup < 0:
            raise ValueError(f"AdamWSpam interval and warmup must be >= 0, got {interval} and {warmup}")
        if clip_delay < 1:
            raise ValueError(f"AdamWSpam clip delay must be >= 1 step, got {clip_delay}")
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, theta=float(theta),
            interval=int(interval), warmup=int(warmup), clip_delay=int(clip_delay), global_step=0,
        )
        super().__init__(params, defaults)

    def lr_factor(self) -> float:
        """The warmup factor the next step will apply (1 outside a post-reset warmup)."""
        group = self.param_groups[0]
        _, since, _ = _phase(group["global_step"] + 1, group["interval"])
        return 1.0 if since is None else warmup_factor(since, group["warmup"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["global_step"] += 1
            reset, since, count = _phase(group["global_step"], group["interval"])
            scale = 1.0 if since is None else warmup_factor(since, group["warmup"])
            clip = group["theta"] > 0 and count >= group["clip_delay"]
            params, grads, exp_avgs, exp_avg_sqs = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamWSpam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
            if params:
                self._update(group, params, grads, exp_avgs, exp_avg_sqs, reset, clip, scale)
        return loss

    def _update(self, group, params, grads, exp_avgs, exp_avg_sqs, reset: bool, clip: bool, scale: float) -> None:
        """One step over a group's parameters, with multi-tensor (foreach) kernels."""
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        if reset:
            torch._foreach_zero_(exp_avgs + exp_avg_sqs)
        if clip:
            # |g| > sqrt(theta v)  <=>  g**2 > theta v; clamping to +-sqrt(theta v) keeps the sign
            bounds = torch._foreach_mul(exp_avg_sqs, group["theta"])
            torch._foreach_sqrt_(bounds)
            grads = torch._foreach_maximum(grads, torch._foreach_neg(bounds))
            torch._foreach_minimum_(grads, bounds)
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
        steps = [self.state[p]["step"] for p in params]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, [math.sqrt(1.0 - beta2**t) for t in steps])
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denom, [-lr * scale / (1.0 - beta1**t) for t in steps])
