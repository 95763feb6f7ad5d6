"""Movement pruning (Sanh, Wolf and Rush, 2020), first-order and hard top-k.

Each prunable weight carries a score S accumulated over training from the
gradient the optimizer is about to use:

    S <- S - dL/dW * W          every optimizer step

so weights moving away from zero gain score and weights shrinking towards
zero lose it. Masks keep the top scores. It is not a difference against the
initial weights. The gradient is read in `mask_gradients()` (after backward,
before the optimizer step, before masking: a pruned weight is zero, so it adds
nothing). Scores are float32, 4 bytes per prunable parameter on top of the
1-byte mask, and are saved in the checkpoint so a resumed run continues them.
"""

from __future__ import annotations

import torch

from lib.pruning.base import Pruner


class MovementPruner(Pruner):
    name = "movement"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.movement = [torch.zeros_like(p, dtype=torch.float32) for _, p in self.params]

    @torch.no_grad()
    def mask_gradients(self) -> None:
        live = [(s, p.grad, p) for (_, p), s in zip(self.params, self.movement) if p.grad is not None]
        if live:
            scores, grads, weights = map(list, zip(*live))
            torch._foreach_addcmul_(scores, grads, weights, value=-1.0)
        super().mask_gradients()

    def score(self, index):
        return self.movement[index]

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["movement"] = {n: s.clone() for (n, _), s in zip(self.params, self.movement)}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        scores = state.get("movement")
        if scores is None:
            raise ValueError("pruner state has no movement scores: the checkpoint was written by another pruning method")
        for (n, _), s in zip(self.params, self.movement):
            s.copy_(scores[n])

    def state_bytes(self) -> int:
        return super().state_bytes() + sum(s.numel() * s.element_size() for s in self.movement)
