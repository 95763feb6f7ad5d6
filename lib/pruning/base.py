"""The pruner interface every method implements (the training-loop contract is in docs/pruning.md).

A pruner owns one bool mask per prunable tensor (1 byte per parameter), a
non-persistent buffer `pruning_mask_<attr>` on the owning module (it follows
`model.to()`, stays out of `model.state_dict()`) saved through
`Pruner.state_dict()`. Per optimizer step: backward, `mask_gradients()`,
`optimizer.step()`, `step()`; pruned weights and their optimizer moments stay
exactly zero. A method supplies `score(i)` (higher = keep); the allocation
says how many entries each group of tensors prunes, and each group loses
exactly that many, already-pruned entries first (`threshold.lowest_keep`),
at the pruner's granularity (`granularity`: element, N:M or channel).
Layer classes with their own targets are allocation groups of their own;
preserved tensors (`preserve`) get no mask (`layer_types`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace

import torch
from torch import nn

from lib.pruning import layer_types
from lib.pruning.granularity import CHANNEL, ELEMENT, NM, ChannelSelection, Granularity, UnitPlan, nm_eligible, nm_keep
from lib.pruning.layer_adaptive import LayerAdaptive
from lib.pruning.layer_types import CONV_TYPES, NORM_TYPES
from lib.pruning.masking import mask_multiply_
from lib.pruning.schedule import SparsitySchedule
from lib.pruning.threshold import lowest_keep

PRUNABLE_TYPES = (nn.Linear,) + CONV_TYPES
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
        granularity: str | Granularity = ELEMENT,
        layer_targets: dict[str, float] | None = None,
        preserve: list[str] | tuple[str, ...] = (),
        example_inputs=None,
        **include,
    ):
        """`optimizer`: its moments are zeroed with pruned weights; `include`: `prunable_entries`'s switches.

        `granularity`: element, channel or "N:M" (`granularity.Granularity`);
        `layer_targets`: {class: fraction} (`layer_types.CLASSES`), each class
        its own allocation group; `preserve`: fnmatch patterns of parameter
        names never pruned; `example_inputs`: a batch the model accepts
        (channel granularity traces the model's channel dependencies with it).
        """
        if frequency < 1:
            raise ValueError(f"mask update frequency must be >= 1, got {frequency}")
        if scope not in SCOPES:
            raise ValueError(f"unknown pruning scope {scope!r}; valid: {', '.join(SCOPES)}")
        if remask not in REMASK:
            raise ValueError(f"unknown re-mask mode {remask!r}; valid: {', '.join(REMASK)}")
        self.granularity = Granularity.parse(granularity)
        self.layer_targets = layer_types.check_targets(layer_targets or {})
        self._check_combination(scope, schedule.target)
        self.schedule = schedule
        self.frequency = frequency
        self.optimizer = optimizer
        self.scope = scope
        self.remask = remask
        self.layer_adaptive = layer_adaptive or LayerAdaptive()
        entries = prunable_entries(model, include_tied_head, **include)
        if not entries:
            raise ValueError(f"{type(model).__name__} has no prunable (linear or convolution) weights")
        groups, asked = None, {e[0] for e in entries}
        if self.granularity.kind == CHANNEL:
            entries, groups = _channel_entries(model, entries, example_inputs)
        class_of = layer_types.classify(model, entries)
        numel = {e[0]: e[1].numel() for e in entries}
        preserved = layer_types.match_preserve([e[0] for e in entries], list(preserve))
        self.preserved = [e[0] for e in entries if e[0] in preserved]
        if groups is not None:
            entries, groups = _without_preserved(entries, groups, preserved, asked)
        else:
            entries = [e for e in entries if e[0] not in preserved]
        self.dense_tensors = []  # N:M: tensors whose input dimension M does not tile
        if self.granularity.kind == NM:
            self.dense_tensors = [e[0] for e in entries if not nm_eligible(e[1].shape, self.granularity.m)]
            entries = [e for e in entries if e[0] not in self.dense_tensors]
        if not entries:
            raise ValueError(f"nothing left to prune in {type(model).__name__}: every prunable tensor is preserved"
                             + (f" or has an input dimension {self.granularity} cannot group" if self.dense_tensors else ""))
        self.params = [(n, p) for n, p, _, _ in entries]
        self.sizes = [p.numel() for _, p in self.params]
        self.classes = [class_of[n] for n, _ in self.params]
        # Every class's prunable parameters, preserved and N:M-dense ones included (what a class target is a fraction of)
        self.class_params = {c: {"params": 0, "preserved": 0} for c in layer_types.CLASSES}
        for n in [n for n, _ in self.params] + self.preserved + self.dense_tensors:
            self.class_params[class_of[n]]["params"] += numel[n]
            if n in preserved:
                self.class_params[class_of[n]]["preserved"] += numel[n]
        self.class_params = {c: v for c, v in self.class_params.items() if v["params"]}
        self._plan_classes()
        if scope == "adaptive":  # refused now, not at the last mask update
            self.layer_adaptive.check(self.sizes, schedule.target)
        self._buffers = [(module, MASK_PREFIX + attr) for _, _, module, attr in entries]  # where each mask lives
        for (_, p), (module, buf) in zip(self.params, self._buffers):
            module.register_buffer(buf, torch.ones_like(p, dtype=torch.bool), persistent=False)
        self.channel = None
        if groups is not None:
            self._plan_channels(model, groups)
        self._check_reachable()
        self.step_count = 0
        self.sparsity = 0.0  # the scheduled level the masks currently implement

    def _check_combination(self, scope: str, target: float) -> None:
        """Refuse settings that do not go together, each with one line."""
        g = self.granularity
        if scope == "adaptive" and g.kind != ELEMENT:
            raise ValueError(f"layer-adaptive levels (bitter4) select single weights: granularity {g} is not supported; use element")
        if scope == "adaptive" and self.layer_targets:
            raise ValueError("layer targets and layer-adaptive levels (bitter4) both set per-layer levels; use one")
        if scope == "layer" and g.kind == CHANNEL:
            raise ValueError("channel granularity prunes the same unit fraction of every coupling group already; "
                             "scope 'layer' does not apply (use 'global')")
        if g.kind == NM:
            for name, level in [("target sparsity", target)] + [(f"layer target {c}", t) for c, t in self.layer_targets.items()]:
                if level > g.max_sparsity:
                    raise ValueError(f"{name} {level} is above what {g} allows: at most (M-N)/M = {g.max_sparsity:g}")

    def _plan_classes(self) -> None:
        """Allocation groups: each listed class its own, the unlisted tensors share the run's target (or go by scope)."""
        self._class_groups = []  # (class, tensor indices, the class's parameters incl. preserved, its target)
        for c, t in self.layer_targets.items():
            if c not in self.class_params:
                present = ", ".join(self.class_params)
                raise ValueError(f"layer target {c}={t}: the model has no prunable parameters of class {c}; it has: {present}")
            idx = [i for i, k in enumerate(self.classes) if k == c]
            self._class_groups.append((c, idx, self.class_params[c]["params"], t))
        self._share = [i for i, k in enumerate(self.classes) if k not in self.layer_targets]

    def _class_count(self, c_total: int, c_target: float, sparsity: float) -> int:
        """Entries a listed class prunes at scheduled level `sparsity`: its target scaled by the schedule's progress."""
        progress = sparsity / self.schedule.target if self.schedule.target else 0.0
        return int(round(c_target * c_total * progress))

    def _plan_channels(self, model: nn.Module, groups) -> None:
        self.channel_groups = groups
        root = [layer_types.module_class(model, g.name) for g in groups]
        plans = [UnitPlan([j for j, c in enumerate(root) if c == cls], list(idx)) for cls, idx, _, _ in self._class_groups]
        if self._share:
            plans.append(UnitPlan([j for j, c in enumerate(root) if c not in self.layer_targets], list(self._share)))
        self.channel = ChannelSelection(groups, [p.shape for _, p in self.params], plans, self.params[0][1].device)

    def _check_reachable(self) -> None:
        """Refuse a class target the preserve list (or the granularity) puts out of reach, naming both numbers."""
        for k, (c, idx, total, target) in enumerate(self._class_groups):
            need = int(round(target * total))
            if self.channel is not None:
                can, how = self.channel.capacity(k), f"; {self.granularity} granularity keeps a unit in every coupling group"
            elif self.granularity.kind == NM:
                g = self.granularity
                can, how = sum(self.sizes[i] for i in idx) * (g.m - g.n) // g.m, f"; {g} prunes at most {g.max_sparsity:g} of the rest"
            else:
                can, how = sum(self.sizes[i] for i in idx), ""
            if need > can:
                preserved = self.class_params[c]["preserved"]
                dense = total - preserved - sum(self.sizes[i] for i in idx)
                why = f"{preserved} are preserved" + (f", {dense} are in tensors {self.granularity} leaves dense" if dense else "")
                raise ValueError(f"{c}: target {target:g} of {total} parameters needs {need} zeros, but {why}{how}: "
                                 f"at most {can / total:.2f} is reachable")

    def mask_list(self) -> list[torch.Tensor]:
        """The masks, in the order of `self.params`, read from the module buffers."""
        return [getattr(module, buf) for module, buf in self._buffers]

    def remove_masks(self) -> None:
        """Take the mask buffers off the model's modules (the pruner is done with the model; the weights stay as they are)."""
        for module, buf in self._buffers:
            if buf in module._buffers:
                delattr(module, buf)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return {n: m for (n, _), m in zip(self.params, self.mask_list())}

    @abstractmethod
    def score(self, index: int) -> torch.Tensor:
        """Importance of every entry of the `index`-th prunable tensor (higher = keep)."""

    def allocation(self, sparsity: float) -> list[tuple[list[int], int]]:
        """Groups of tensor indices and how many entries each group prunes at `sparsity`.

        A class with a layer target is one group at its own level; the other
        tensors are one group (global), one group each (layer) or the
        layer-adaptive plan's (adaptive).
        """
        out = [(idx, self._class_count(total, target, sparsity)) for _, idx, total, target in self._class_groups if idx]
        share = self._share
        if not share:
            return out
        if self.scope == "global":
            return out + [(share, int(round(sparsity * sum(self.sizes[i] for i in share))))]
        if self.scope == "layer":
            return out + [([i], int(round(sparsity * self.sizes[i]))) for i in share]
        counts = self.layer_adaptive.counts(self.sizes, sparsity)  # adaptive: no layer targets, so share is every tensor
        return out + [([i], c) for i, c in enumerate(counts)]

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
        if self.channel is not None:
            self._update_channels(sparsity)
            self.sparsity = sparsity
            return
        masks = self.mask_list()
        g = self.granularity
        for idx, n_prune in self.allocation(sparsity):
            group = [masks[i] for i in idx]
            total = sum(m.numel() for m in group)
            pruned = total - int(torch.stack([m.count_nonzero() for m in group]).sum())
            n_prune = min(max(n_prune, pruned), total)  # masks only grow
            if n_prune == pruned:
                continue
            scores = [self.score(i) for i in idx]
            keeps = nm_keep(scores, group, n_prune, g.n, g.m) if g.kind == NM else lowest_keep(scores, n_prune, group)
            for mask, keep in zip(group, keeps):
                mask.copy_(keep.view(mask.shape))
        self.sparsity = sparsity

    def _channel_needs(self, sparsity: float) -> list[int]:
        """Zeros each channel plan's tensors should hold at `sparsity` (listed classes first, then the shared rest)."""
        need = [self._class_count(total, target, sparsity) for _, _, total, target in self._class_groups]
        if self._share:
            need.append(int(round(sparsity * sum(self.sizes[i] for i in self._share))))
        return need

    def _unit_kept(self, masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per coupling group, the units with an entry still kept (a pruned unit has every entry masked)."""
        from lib.pruning import channels

        return [u > 0 for u in channels.unit_scores(self.channel_groups, [m.float() for m in masks])]

    def _update_channels(self, sparsity: float) -> None:
        from lib.pruning import channels

        masks = self.mask_list()
        scores = channels.unit_scores(self.channel_groups, [self.score(i) for i in range(len(self.params))])
        keeps, _ = self.channel.select(scores, self._unit_kept(masks), self._channel_needs(sparsity))
        for mask, new in zip(masks, channels.unit_masks(self.channel_groups, keeps, self.params)):
            mask.copy_(new.view(mask.shape))

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
        zeros = [int(m.numel() - m.count_nonzero()) for m in masks]
        pruned = sum(zeros)
        out = {
            "method": self.name,
            "scope": self.scope,
            "granularity": str(self.granularity),
            "scheduled_sparsity": self.sparsity,
            "achieved_sparsity": pruned / max(1, sum(self.sizes)),
            "prunable_params": sum(self.sizes),
            "classes": {
                c: {
                    "params": v["params"],
                    "preserved": v["preserved"],
                    "target": self.layer_targets.get(c, self.schedule.target),
                    "achieved": sum(z for z, k in zip(zeros, self.classes) if k == c) / v["params"],
                }
                for c, v in self.class_params.items()
            },
            "preserved": list(self.preserved),
        }
        if self.granularity.kind == NM:
            out["pattern"] = str(self.granularity)
            out["dense_tensors"] = list(self.dense_tensors)
        if self.channel is not None:
            kept = self._unit_kept(masks)
            out["units"] = {
                g.name: {"kind": g.kind, "units": g.units, "pruned": int(k.numel() - k.count_nonzero())}
                for g, k in zip(self.channel_groups, kept)
            }
        if self.scope == "adaptive":
            out["layer_levels"] = {
                n: s for (n, _), s in zip(self.params, self.layer_adaptive.levels(self.sizes, self.schedule.target))
            }
        return out


def _channel_entries(model: nn.Module, entries: list, example_inputs) -> tuple[list, list]:
    """Channel granularity: `channels.channel_params` as prunable entries, and the coupling groups over them."""
    from lib.pruning import channels

    if example_inputs is None:
        raise ValueError("channel granularity needs example_inputs (a batch the model accepts) to trace its channel dependencies")
    params = channels.channel_params(model, [(n, p) for n, p, _, _ in entries])
    groups = channels.channel_groups(model, params, example_inputs)
    out = []
    for name, p in params:
        path, _, attr = name.rpartition(".")
        out.append((name, p, model.get_submodule(path), attr))
    return out, groups


def _without_preserved(entries: list, groups: list, preserved: set[str], asked: set[str]) -> tuple[list, list]:
    """Drop preserved tensors, every coupling group touching one, and the tensors `channel_params` added
    (biases, norms; not in `asked`) that no remaining group touches.

    The kept groups' slices are re-indexed into the remaining entries.
    """
    drop = {i for i, e in enumerate(entries) if e[0] in preserved}
    groups = [g for g in groups if not any(s.param in drop for s in g.slices)]
    touched = {s.param for g in groups for s in g.slices}
    keep = [i for i, e in enumerate(entries) if i not in drop and (i in touched or e[0] in asked)]
    index = {old: new for new, old in enumerate(keep)}
    groups = [replace(g, slices=[replace(s, param=index[s.param]) for s in g.slices]) for g in groups]
    return [entries[i] for i in keep], groups


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
