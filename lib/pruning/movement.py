"""Movement pruning (Sanh, Wolf and Rush, 2020), first-order and hard top-k.

Each prunable weight carries a score S accumulated over training from the
gradient the optimizer is about to use:

    S <- S - dL/dW * W          every optimizer step

so weights moving away from zero gain score and weights shrinking towards
zero lose it. Masks keep the top scores. It is not a difference against the
initial weights. The gradient is read in `mask_gradients()` (after backward,
before the optimizer step, before masking); on a step whose gradients are
not finite (`accumulate=False`: the fp16 gradient scaler skips that step)
scores are left as they are. Scores are float32, 4 bytes per prunable
parameter on top of the 1-byte mask, and are saved in the checkpoint so a
resumed run continues them.

`mode` (`MODES`) says what a mask update does:

- "grow" (default): masks only grow, like every method of this package. A
  pruned weight is zero, so its score stops moving (-dL/dW * 0), and it
  never returns.
- "topk": Sanh et al.'s hard top-k, as in their reference code. Each mask
  update starts from a clean slate and keeps the top (1 - s) of the scores
  (per matrix with scope "layer", which is the reference's allocation; one
  global top-k with scope "global"), so pruned weights return when their
  score climbs back. The reference recomputes the top-k at every forward:
  here it is recomputed every `frequency` steps (1 reproduces the reference)
  and at ramp end, and keeps being recomputed at the final level after it.
  The reference multiplies a dense weight by the mask in the forward, so a
  pruned weight keeps its value and its score keeps moving (straight-through
  gradient dL/dS = dL/dW' * W with W' = W * M). This package zeroes pruned
  weights in place instead, so the pruner keeps the value each pruned weight
  had when it was pruned (`pruned_values`, the weight's dtype, zero where a
  weight is live: its bytes again per prunable parameter): the score of a
  pruned weight accumulates -dL/dW' * (that value), with dL/dW' the gradient
  read before masking, and a returning weight comes back with that value and
  optimizer moments restarted from zero. Differences that remain: in the
  reference a pruned weight still drifts under its optimizer's decaying
  moments and weight decay (here it is frozen), and its scores are a
  parameter trained by the optimizer (Adam, its own learning rate) rather
  than the running sum above.
"""

from __future__ import annotations

import torch

from lib.pruning.base import Pruner

MODES = ("grow", "topk")


class MovementPruner(Pruner):
    name = "movement"

    def __init__(self, *args, mode: str = "grow", **kwargs):
        if mode not in MODES:
            raise ValueError(f"unknown movement-pruning mode {mode!r}; valid: {', '.join(MODES)}")
        super().__init__(*args, **kwargs)
        self.mode = mode
        self.movement = [torch.zeros_like(p, dtype=torch.float32) for _, p in self.params]
        # topk: the value of each pruned weight, kept for its score and its return (zero where the weight is live)
        self.pruned_values = [torch.zeros_like(p) for _, p in self.params] if mode == "topk" else None

    @torch.no_grad()
    def mask_gradients(self, accumulate: bool = True) -> None:
        held = self.pruned_values or [None] * len(self.params)
        live = [(s, p.grad, p, v) for (_, p), s, v in zip(self.params, self.movement, held) if p.grad is not None]
        if live and accumulate:
            scores, grads, weights, values = map(list, zip(*live))
            torch._foreach_addcmul_(scores, grads, weights, value=-1.0)
            if self.pruned_values is not None:  # pruned entries: their weight is zero, their kept value is not
                torch._foreach_addcmul_(scores, grads, values, value=-1.0)
        super().mask_gradients()

    def score(self, index):
        return self.movement[index]

    def step(self) -> None:
        """grow: the base schedule. topk: recompute the masks every `frequency` steps once the level is above 0."""
        if self.mode == "grow":
            return super().step()
        self.step_count += 1
        level = self.schedule(self.step_count)
        due = self.step_count % self.frequency == 0 or (
            self.step_count >= self.schedule.ramp_end and level != self.sparsity
        )
        if level > 0 and due:
            self.update_masks(level)
            self.apply_masks()
        elif self.remask == "step":
            self.apply_masks()

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        if self.mode == "grow":
            return super().update_masks(sparsity)
        masks = self.mask_list()
        before = [m.clone() for m in masks]
        for m in masks:
            m.fill_(True)
        super().update_masks(sparsity)  # the lowest scores of each group go, from a clean slate
        for (_, p), held, old, new in zip(self.params, self.pruned_values, before, masks):
            value = torch.where(old, p, held)  # live weights as trained, pruned ones as they were pruned
            held.copy_(value.masked_fill(new, 0))
            p.copy_(value.masked_fill_(~new, 0))

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["movement"] = {n: s.clone() for (n, _), s in zip(self.params, self.movement)}
        state["movement_mode"] = self.mode
        if self.pruned_values is not None:
            state["movement_pruned_values"] = {n: v.clone() for (n, _), v in zip(self.params, self.pruned_values)}
        return state

    def load_state_dict(self, state: dict) -> None:
        scores = state.get("movement")
        if scores is None:
            raise ValueError("pruner state has no movement scores: the checkpoint was written by another pruning method")
        mode = state.get("movement_mode", "grow")
        if mode != self.mode:
            raise ValueError(f"pruner state was written in movement mode {mode!r}; this run uses {self.mode!r}")
        super().load_state_dict(state)
        for (n, _), s in zip(self.params, self.movement):
            s.copy_(scores[n])
        if self.pruned_values is not None:
            for (n, _), v in zip(self.params, self.pruned_values):
                v.copy_(state["movement_pruned_values"][n])

    def state_bytes(self) -> int:
        held = sum(v.numel() * v.element_size() for v in self.pruned_values or ())
        return super().state_bytes() + sum(s.numel() * s.element_size() for s in self.movement) + held

    def summary(self) -> dict:
        return {**super().summary(), "movement_mode": self.mode}
