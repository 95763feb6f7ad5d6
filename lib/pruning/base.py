"""The pruner interface every method implements.

A pruner owns one boolean mask per prunable tensor (1 byte per parameter),
registered on the owning module as a non-persistent buffer
(`pruning_mask_<attr>`: it follows `model.to(device)` but stays out of
`model.state_dict()`, so best.pt loads into a plain model) and saved in
checkpoint.pt through `Pruner.state_dict()`. Each optimizer step goes:

    loss.backward()
    pruner.mask_gradients()   # pruned entries get no gradient
    optimizer.step()
    pruner.step()             # maybe update masks on schedule; when they
                              # change, zero weights and the optimizer's moments

so pruned weights stay exactly zero: between mask updates the masked gradient
keeps them and their moments at exactly zero for every optimizer of lib.optim
(all update elementwise from the gradient, the weight and moments that are
already zero). `remask="step"` re-zeroes them after every step instead, three
more memory passes per step, for optimizers from elsewhere. Zeroing is one
multi-tensor multiply by the masks (`masking.mask_multiply_`).

A method supplies `score(i)` for its i-th tensor: higher means more
important. How many entries each group of tensors loses is the allocation:
"global" (one group: all prunable weights), "layer" (every tensor at the
scheduled level) or "adaptive" (by depth, see `layer_adaptive`); subclasses
may group tensors otherwise (RATIO). Each group prunes exactly its count,
already-pruned entries first (masks only grow), the rest by score with ties
in flat index order (`threshold.lowest_keep`, exact and deterministic on
every device).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from lib.pruning.layer_adaptive import LayerAdaptive
from lib.pruning.masking import mask_multiply_
from lib.pruning.schedule import SparsitySchedule
from lib.pruning.threshold import keep_top, lowest_keep  # noqa: F401  (keep_top is public API)

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = tuple(
    t
    for t in (
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
        nn.modules.batchnorm._BatchNorm,
        nn.modules.instancenorm._InstanceNorm,
    )
    if t is not None
)
# Per-parameter optimizer state zeroed with the weights (SGD, Adam family).
MOMENT_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
SCOPES = ("global", "layer", "adaptive")
# When pruned weights and moments are zeroed: after every step, or only when masks change.
REMASK = ("step", "update")
MASK_PREFIX = "pruning_mask_"


def prunable_entries(
    model: nn.Module,
    include_tied_head: bool = False,
    *,
    include_embeddings: bool = False,
    include_norms: bool = False,
    include_biases: bool = False,
) -> list[tuple[str, nn.Parameter, nn.Module, str]]:
    """(name, parameter, owning module, attribute) of every prunable tensor, in module order.

    By default: weights of linear and convolution layers. Embeddings, norm
    weights and biases join only when asked; a linear layer whose weight is
    shared with an embedding (a tied output head) is left out unless
    `include_tied_head` (or the embedding itself is included). A shared
    tensor appears once.
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
        include_tied_head: bool = False,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        scope: str = "global",
        remask: str = "update",
        layer_adaptive: LayerAdaptive | None = None,
        include_embeddings: bool = False,
        include_norms: bool = False,
        include_biases: bool = False,
    ):
        if frequency < 1:
            raise ValueError(f"mask update frequency must be >= 1, got {frequency}")
        if scope not in SCOPES:
            raise ValueError(f"unknown pruning scope {scope!r}; valid: {', '.join(SCOPES)}")
        self.schedule = schedule
        self.frequency = frequency
        self.optimizer = optimizer  # its per-parameter moments are zeroed where weights are pruned
        self.scope = scope
        if remask not in REMASK:
            raise ValueError(f"unknown re-mask mode {remask!r}; valid: {', '.join(REMASK)}")
        self.remask = remask
        self.layer_adaptive = layer_adaptive or LayerAdaptive()
        include = dict(include_embeddings=include_embeddings, include_norms=include_norms, include_biases=include_biases)
        entries = prunable_entries(model, include_tied_head, **include)
        if not entries:
            raise ValueError(f"{type(model).__name__} has no prunable (linear or convolution) weights")
        if scope == "adaptive":  # refused now, not at the last mask update
            self.layer_adaptive.check([p.numel() for _, p, _, _ in entries], schedule.target)
        self.params = [(n, p) for n, p, _, _ in entries]
        self._buffers = []  # (module, buffer name) holding each mask
        for _, p, module, attr in entries:
            buf = MASK_PREFIX + attr
            module.register_buffer(buf, torch.ones_like(p, dtype=torch.bool), persistent=False)
            self._buffers.append((module, buf))
        self.sizes = [p.numel() for _, p in self.params]
        self.step_count = 0
        self.sparsity = 0.0  # the scheduled level the masks currently implement

    # -- masks ----------------------------------------------------------------------
    def mask_list(self) -> list[torch.Tensor]:
        """The mask tensors, in the order of `self.params` (read from the module buffers)."""
        return [getattr(module, buf) for module, buf in self._buffers]

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return {n: m for (n, _), m in zip(self.params, self.mask_list())}

    # -- what a method supplies ------------------------------------------------
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

    # -- the training-loop hooks -------------------------------------------------
    def mask_gradients(self, accumulate: bool = True) -> None:
        """Zero the gradients of pruned entries (between backward and the optimizer step).

        `accumulate=False`: the gradients are not finite (a step the gradient
        scaler skips); methods that learn from gradients leave their scores alone.
        """
        mask_multiply_([p.grad for _, p in self.params], self.mask_list())  # a None gradient (no part in this backward) is skipped

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
        """After every optimizer step: update the masks when the schedule says so."""
        self.step_count += 1
        final = self.step_count >= self.schedule.ramp_end
        updated = (self.step_count % self.frequency == 0 or final) and self.schedule(self.step_count) > self.sparsity
        if updated:
            self.update_masks(self.schedule(self.step_count))  # (update_masks and apply_masks run under no_grad)
        if updated or self.remask == "step":
            self.apply_masks()

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

    # -- checkpointing and reporting ---------------------------------------------
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
    """Zero fractions over prunable weights and over all parameters, plus a per-layer table.

    `params` (a pruner's `params`) fixes what counts as prunable; by default,
    the default selection of `prunable_parameters`.
    """
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
