"""Movement pruning (Sanh, Wolf and Rush, 2020), first order: `S <- S - dL/dW * W` every optimizer step.

Scores (float32, 4 bytes per prunable parameter, checkpointed) add the
gradient read in `mask_gradients()` before it is masked, and nothing on a
step with `accumulate=False`. `mode` (`MODES`): "grow" masks only grow, like
every method here; "topk" is the reference code's hard top-k: every update
keeps the top scores afresh, so pruned weights can return. Pruned weights are
zeroed in place, so "topk" keeps each one's value from when it was pruned
(`pruned_values`): its score keeps moving and it returns with that value.
How this differs from the reference: docs/pruning.md, "Movement pruning".
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
        # topk: each pruned weight's value when it was pruned (zero where the weight is live)
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

    def due(self, level: float) -> bool:
        """topk: every `frequency` steps once the level is above 0, and at ramp end."""
        if self.mode == "grow":
            return super().due(level)
        ramp_end = self.step_count >= self.schedule.ramp_end and level != self.sparsity
        return level > 0 and (self.step_count % self.frequency == 0 or ramp_end)

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
        return super().state_bytes() + sum(t.numel() * t.element_size() for t in self.movement + (self.pruned_values or []))

    def summary(self) -> dict:
        return {**super().summary(), "movement_mode": self.mode}
