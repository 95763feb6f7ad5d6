"""The pruner interface every method implements.

A pruner owns one boolean mask per prunable weight (1 byte per parameter).
Each optimizer step goes:

    loss.backward()
    pruner.mask_gradients()   # pruned entries get no gradient
    optimizer.step()
    pruner.step()             # maybe update masks on schedule, then re-mask

so pruned weights stay exactly zero. A method only supplies `scores()`:
higher means more important. Masks are chosen globally over all prunable
weights with an exact, deterministic threshold (`keep_top`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from lib.pruning.schedule import SparsitySchedule

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Per-parameter optimizer state zeroed with the weights (SGD, Adam family).
MOMENT_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def prunable_parameters(model: nn.Module, include_tied_head: bool = False) -> list[tuple[str, nn.Parameter]]:
    """Weights of linear and convolution layers.

    Biases, normalisation layers and embeddings are never included; a linear
    layer whose weight is shared with an embedding (a tied output head) is
    left out unless `include_tied_head`.
    """
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out, seen = [], set()
    for mod_name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_TYPES):
            continue
        w = module.weight
        if id(w) in seen or (id(w) in embedding_weights and not include_tied_head):
            continue
        seen.add(id(w))
        out.append((f"{mod_name}.weight" if mod_name else "weight", w))
    return out


def keep_top(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Boolean masks keeping all but the round(sparsity * N) lowest scores.

    Exact for any size (kthvalue, not quantile or sampling) and deterministic:
    ties at the threshold are pruned in flat index order.
    """
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores])
    n_prune = int(round(sparsity * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if n_prune > 0:
        threshold = torch.kthvalue(flat.cpu(), n_prune).values.to(flat.device)
        below = flat < threshold
        keep &= ~below
        ties = (flat == threshold).nonzero().flatten()
        keep[ties[: n_prune - int(below.sum())]] = False
    return list(keep.split([s.numel() for s in scores]))


class Pruner(ABC):
    """Gradual global pruning driven by a `SparsitySchedule`."""

    name = "base"

    def __init__(
        self,
        model: nn.Module,
        schedule: SparsitySchedule,
        frequency: int = 1,
        include_tied_head: bool = False,
        optimizer: torch.optim.Optimizer | None = None,
    ):
        if frequency < 1:
            raise ValueError(f"mask update frequency must be >= 1, got {frequency}")
        self.schedule = schedule
        self.frequency = frequency
        self.optimizer = optimizer  # its per-parameter moments are zeroed where weights are pruned
        self.params = prunable_parameters(model, include_tied_head)
        if not self.params:
            raise ValueError(f"{type(model).__name__} has no prunable (linear or convolution) weights")
        self.masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in self.params}
        self.step_count = 0
        self.sparsity = 0.0  # the level the masks currently implement

    # -- what a method supplies ------------------------------------------------
    @abstractmethod
    def scores(self) -> list[torch.Tensor]:
        """Importance of every prunable weight, one tensor per entry of `self.params`."""

    def observe(self) -> None:
        """Called after every optimizer step, before any mask update (e.g. to accumulate scores)."""

    # -- the training-loop hooks -------------------------------------------------
    @torch.no_grad()
    def mask_gradients(self) -> None:
        for name, p in self.params:
            if p.grad is not None:
                p.grad.mul_(self.masks[name])

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero pruned weights, and the optimizer's moments for them."""
        for name, p in self.params:
            mask = self.masks[name]
            p.mul_(mask)
            state = self.optimizer.state.get(p, {}) if self.optimizer is not None else {}
            for key in MOMENT_KEYS:
                if torch.is_tensor(state.get(key)) and state[key].shape == p.shape:
                    state[key].mul_(mask)

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        self.observe()
        wanted = self.schedule(self.step_count)
        final = self.step_count >= self.schedule.ramp_end
        due = self.step_count % self.frequency == 0 or final
        if due and wanted > self.sparsity:
            self.update_masks(wanted)
        self.apply_masks()

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        # Already-pruned entries score -inf, so masks only ever grow.
        scores = [s.float().masked_fill(~self.masks[n], float("-inf")) for (n, _), s in zip(self.params, self.scores())]
        for (name, p), keep in zip(self.params, keep_top(scores, sparsity)):
            self.masks[name] = keep.view_as(p)
        self.sparsity = sparsity

    # -- checkpointing and reporting ---------------------------------------------
    def state_dict(self) -> dict:
        return {"masks": {n: m.clone() for n, m in self.masks.items()}, "step_count": self.step_count, "sparsity": self.sparsity}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.masks) ^ set(state["masks"])
        if missing:
            raise ValueError(f"pruner state does not match the model (differs in: {', '.join(sorted(missing))})")
        self.masks = {n: state["masks"][n].to(self.masks[n].device) for n in self.masks}
        self.step_count = int(state["step_count"])
        self.sparsity = float(state["sparsity"])


def sparsity_report(model: nn.Module, include_tied_head: bool = False) -> dict:
    """Zero fractions over prunable weights and over all parameters, plus a per-layer table."""
    prunable = prunable_parameters(model, include_tied_head)
    layers = {n: (int((p == 0).sum()), p.numel()) for n, p in prunable}
    z_p = sum(z for z, _ in layers.values())
    n_p = sum(n for _, n in layers.values())
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    zeros = sum(int((p == 0).sum()) for p in params)
    return {
        "sparsity_prunable": z_p / max(1, n_p),
        "sparsity_global": zeros / max(1, total),
        "params": total,
        "nonzero_params": total - zeros,
        "layers": {n: {"params": c, "sparsity": z / c} for n, (z, c) in layers.items()},
    }
