"""The pruner interface every method implements (the training-loop contract is in docs/pruning.md).

A pruner owns one bool mask per prunable tensor (1 byte per parameter), a
non-persistent buffer `pruning_mask_<attr>` on the owning module (it follows
`model.to()`, stays out of `model.state_dict()`) saved through
`Pruner.state_dict()`. Per optimizer step: backward, `mask_gradients()`,
`optimizer.step()`, `step()`; pruned weights and their optimizer moments stay
exactly zero. A method supplies `score(i)` (higher = keep); the allocation
says how many entries each group of tensors prunes, and each group loses
exactly that many, already-pruned entries first (`threshold.lowest_keep`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from lib.pruning.layer_adaptive import LayerAdaptive
from lib.pruning.masking import mask_multiply_
from lib.pruning.schedule import SparsitySchedule
from lib.pruning.threshold import lowest_keep

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._BatchNorm,
              nn.modules.instancenorm._InstanceNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
MOMENT_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")  # zeroed with the weights
SCOPES = ("global", "layer", "adaptive")
REMASK = ("step", "update")  # zero pruned weights and moments after every step, or only when masks change
MASK_PREFIX = "pruning_mask_"


def prunable_entries(
    model: nn.Module,
    include_tied_head: bool = False,
    *,
    include_embeddings: bool = False,
    include_norms: bool = False,
    include_biases: bool = False,
) -> list[tuple[str, nn.Parameter, nn.Module, str]]:
    """(name, parameter, owning module, attribute) of every prunable tensor, in module order, each tensor once.

    Linear and convolution weights; embeddings, norm weights and biases only
    when asked; a weight tied to an embedding only with `include_tied_head`
    (or the embeddings).
    """
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out, seen = [], set()
    for mod_name, module in model.named_modules():
        attrs = []
        if isinstance(module, PRUNABLE_TYPES):
            w = module.weight
            if id(w) not in embedding_weights or include_tied_head or include_embeddings:
                attrs.append("weight")
        elif isinstance(module, nn.Embedding) and include_embeddings:
            attrs.append("weight")
        elif isinstance(module, NORM_TYPES) and include_norms and isinstance(getattr(module, "weight", None), nn.Parameter):
            attrs.append("weight")
        if include_biases and isinstance(module, PRUNABLE_TYPES + NORM_TYPES) and isinstance(getattr(module, "bias", None), nn.Parameter):
            attrs.append("bias")
        for attr in attrs:
            p = getattr(module, attr)
            if id(p) in seen:
                continue
            seen.add(id(p))
            out.append((f"{mod_name}.{attr}" if mod_name else attr, p, module, attr))
    return out


def prunable_parameters(model: nn.Module, include_tied_head: bool = False, **include) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every prunable tensor; see `prunable_entries` for what counts."""
    return [(n, p) for n, p, _, _ in prunable_entries(model, include_tied_head, **include)]


class Pruner(ABC):
    """Gradual pruning driven by a `SparsitySchedule`."""

    name = "base"

    def __init__(
        self,
        model: nn.Module,
        schedule: SparsitySchedule,
        frequency: int = 1,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        include_tied_head: bool = False,
        scope: str = "global",
        remask: str = "update",
        layer_adaptive: LayerAdaptive | None = None,
        **include,
    ):
        """`optimizer`: its moments are zeroed with pruned weights; `include`: `prunable_entries`'s switches."""
        if frequency < 1:
            raise ValueError(f"mask update frequency must be >= 1, got {frequency}")
        if scope not in SCOPES:
            raise ValueError(f"unknown pruning scope {scope!r}; valid: {', '.join(SCOPES)}")
        if remask not in REMASK:
            raise ValueError(f"unknown re-mask mode {remask!r}; valid: {', '.join(REMASK)}")
        self.schedule = schedule
        self.frequency = frequency
        self.optimizer = optimizer
        self.scope = scope
        self.remask = remask
        self.layer_adaptive = layer_adaptive or LayerAdaptive()
        entries = prunable_entries(model, include_tied_head, **include)
        if not entries:
            raise ValueError(f"{type(model).__name__} has no prunable (linear or convolution) weights")
        self.params = [(n, p) for n, p, _, _ in entries]
        self.sizes = [p.numel() for _, p in self.params]
        if scope == "adaptive":  # refused now, not at the last mask update
            self.layer_adaptive.check(self.sizes, schedule.target)
        self._buffers = [(module, MASK_PREFIX + attr) for _, _, module, attr in entries]  # where each mask lives
        for (_, p), (module, buf) in zip(self.params, self._buffers):
            module.register_buffer(buf, torch.ones_like(p, dtype=torch.bool), persistent=False)
        self.step_count = 0
        self.sparsity = 0.0  # the scheduled level the masks currently implement

    def mask_list(self) -> list[torch.Tensor]:
        """The masks, in the order of `self.params`, read from the module buffers."""
        return [getattr(module, buf) for module, buf in self._buffers]

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return {n: m for (n, _), m in zip(self.params, self.mask_list())}

    @abstractmethod
    def score(self, index: int) -> torch.Tensor:
        """Importance of every entry of the `index`-th prunable tensor (higher = keep)."""

    def allocation(self, sparsity: float) -> list[tuple[list[int], int]]:
        """Groups of tensor indices and how many entries each group prunes at `sparsity`."""
        if self.scope == "global":
            return [(list(range(len(self.sizes))), int(round(sparsity * sum(self.sizes))))]
        if self.scope == "layer":
            return [([i], int(round(sparsity * n))) for i, n in enumerate(self.sizes)]
        counts = self.layer_adaptive.counts(self.sizes, sparsity)
        return [([i], c) for i, c in enumerate(counts)]

    def mask_gradients(self, accumulate: bool = True) -> None:
        """Zero the gradients of pruned entries (between backward and the optimizer step).

        `accumulate=False`: the gradients are not finite (a step the gradient
        scaler skips); methods that learn from gradients leave their scores alone.
        """
        mask_multiply_([p.grad for _, p in self.params], self.mask_list())

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero pruned weights, and the optimizer's moments for them."""
        tensors, masks = [], []  # each weight and moment, with its mask
        for (_, p), mask in zip(self.params, self.mask_list()):
            tensors.append(p)
            masks.append(mask)
            state = self.optimizer.state.get(p) if self.optimizer is not None else None
            for key in MOMENT_KEYS if state else ():
                t = state.get(key)
                if torch.is_tensor(t) and t.shape == p.shape:
                    tensors.append(t)
                    masks.append(mask)
        mask_multiply_(tensors, masks)

    def step(self) -> None:
        """After every optimizer step: update the masks when `due` and zero what they prune (every step with remask "step")."""
        self.step_count += 1
        level = self.schedule(self.step_count)
        if self.due(level):
            self.update_masks(level)
            self.apply_masks()
        elif self.remask == "step":
            self.apply_masks()

    def due(self, level: float) -> bool:
        """Whether this step updates the masks to `level`: every `frequency` steps and from ramp end on, while it rises."""
        return (self.step_count % self.frequency == 0 or self.step_count >= self.schedule.ramp_end) and level > self.sparsity

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        """Masks at scheduled level `sparsity`: each allocation group prunes exactly its count, never fewer than before."""
        masks = self.mask_list()
        for idx, n_prune in self.allocation(sparsity):
            group = [masks[i] for i in idx]
            total = sum(m.numel() for m in group)
            pruned = total - int(torch.stack([m.count_nonzero() for m in group]).sum())
            n_prune = min(max(n_prune, pruned), total)  # masks only grow
            if n_prune == pruned:
                continue
            for mask, keep in zip(group, lowest_keep([self.score(i) for i in idx], n_prune, group)):
                mask.copy_(keep.view(mask.shape))
        self.sparsity = sparsity

    def state_dict(self) -> dict:
        return {"masks": {n: m.clone() for n, m in self.masks.items()}, "step_count": self.step_count, "sparsity": self.sparsity}

    def load_state_dict(self, state: dict) -> None:
        mine = self.masks
        missing = set(mine) ^ set(state["masks"])
        if missing:
            raise ValueError(f"pruner state does not match the model (differs in: {', '.join(sorted(missing))})")
        for n, m in mine.items():
            if state["masks"][n].shape != m.shape:
                raise ValueError(f"pruner state does not match the model ({n}: {tuple(state['masks'][n].shape)} vs {tuple(m.shape)})")
            m.copy_(state["masks"][n].to(device=m.device, dtype=torch.bool))
        self.step_count = int(state["step_count"])
        self.sparsity = float(state["sparsity"])

    def state_bytes(self) -> int:
        """Bytes the pruner keeps between steps (masks plus any method state)."""
        return sum(m.numel() * m.element_size() for m in self.mask_list())

    def summary(self) -> dict:
        """What the masks implement, for metrics.json."""
        masks = self.mask_list()
        pruned = sum(int(m.numel() - m.sum()) for m in masks)
        out = {
            "method": self.name,
            "scope": self.scope,
            "scheduled_sparsity": self.sparsity,
            "achieved_sparsity": pruned / max(1, sum(self.sizes)),
            "prunable_params": sum(self.sizes),
        }
        if self.scope == "adaptive":
            out["layer_levels"] = {
                n: s for (n, _), s in zip(self.params, self.layer_adaptive.levels(self.sizes, self.schedule.target))
            }
        return out


def sparsity_report(model: nn.Module, include_tied_head: bool = False, params: list | None = None) -> dict:
    """Zero fractions over prunable weights (a pruner's `params`, else the default selection) and all parameters, per layer."""
    prunable = params if params is not None else prunable_parameters(model, include_tied_head)
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
