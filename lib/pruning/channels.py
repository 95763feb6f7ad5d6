"""Channel units: which weight slices one output channel, neuron or attention head owns, and compaction.

Torch-Pruning's dependency graph (`torch_pruning.DependencyGraph`, traced
once with `example_inputs`) gives the coupling groups: every output channel
of a convolution or neuron of a linear layer together with everything that
must go with it (the next layers' inputs, batch norms, the other branches of
a residual addition, a flattened feature map's block of linear inputs). Each
group becomes a `ChannelGroup`: its units and, for every parameter it
touches, a `Slice` saying which unit owns each position along one dimension.

A group is kept only when masking it is exactly removing it:
- every parameter it touches is among the pruner's (`channel_params`);
- every layer it touches is a Linear, a convolution (ungrouped or
  depthwise) or a BatchNorm, or a parameter-free op (activations, pooling,
  additions, reshapes); LayerNorm and GroupNorm (their statistics change
  when a channel goes), embeddings and anything else drop the group;
- it does not prune the model's output features (the classifier's classes,
  a language model's vocabulary).
So GPT-2's residual stream (it touches the tied token embedding and output
head, and the LayerNorms) is left alone.

Attention heads follow a convention, the one case Torch-Pruning cannot do
here: it traces scaled_dot_product_attention as an element-wise op, so its
group couples the fused q, k, v projection's 3 * C outputs one to one with
the output projection's C inputs, and tells no heads apart. A module with
an integer `n_head` and Linear layers `c_attn` (q, k and v stacked along
its outputs) and `c_proj` (GPT-2's `CausalSelfAttention`) is one group of
`n_head` units; head h owns
rows h*d .. (h+1)*d - 1 of each of q, k and v in `c_attn` (and its bias),
and the same columns of `c_proj` (d = c_attn.out_features / 3 / n_head).
The graph's own groups through `c_attn`'s outputs are replaced by it.

A unit's mask is the product over dimensions: position j of dimension d of
a tensor is kept when the unit owning it (if any) is kept. Zeroing a unit's
slices (weights, biases and norm scale and shift) and removing it are the
same function; `compact` removes every all-zero unit with Torch-Pruning's
pruning functions and fixes `n_head`. `export_compact` writes the compact
module itself (its classes are the model's own), which `load_compact` (or
plain `torch.load(path, weights_only=False)`) reads without this package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch_pruning as tp
from torch import nn

from lib import checkpoint
from lib.pruning.base import MASK_PREFIX, prunable_parameters

KINDS = ("channel", "head", "neuron")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCHNORM = nn.modules.batchnorm._BatchNorm
# Torch-Pruning's stand-ins for parameter-free operations (additions, activations, reshapes, splits, ...)
_OPS = tuple(getattr(tp.ops, n) for n in ("_ElementWiseOp", "_ReshapeOp", "_SplitOp", "_ConcatOp", "_UnbindOp",
                                          "_ExpandOp", "_SliceOp", "_OutputOp") if hasattr(tp.ops, n))


@dataclass
class Slice:
    param: int  # index into the pruner's params list
    dim: int  # which dimension of that tensor
    owner: torch.Tensor  # long, length = tensor.shape[dim]; owner[j] = unit index of position j, -1 = none


@dataclass
class ChannelGroup:
    name: str  # the root module's name, e.g. "features.0" or "transformer.h.0.attn" (heads)
    units: int  # channels (or attention heads) in this coupling group
    slices: list[Slice]
    kind: str  # "channel" | "head" | "neuron"


# Parameters ------------------------------------------------------------------------------------------------------


def _embedding_weights(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def channel_params(model: nn.Module, params: Sequence[tuple[str, torch.Tensor]], example_inputs=None) -> list[tuple[str, nn.Parameter]]:
    """`params` plus the biases and BatchNorm scales and shifts that channel units also cover, in module order after `params`.

    Without `example_inputs`: every bias of a layer whose weight is in
    `params` and every BatchNorm's weight and bias (the candidates; a caller
    drops those no group touches, as `Pruner` does). With `example_inputs`:
    only those a kept group of `channel_groups` touches (what gets masked).
    An embedding, or an output head tied to one, in `params` is a ValueError.
    """
    params = list(params)
    embeddings = _embedding_weights(model)
    tied = [n for n, p in params if id(p) in embeddings]
    if tied:
        raise ValueError(f"channel granularity cannot prune {', '.join(tied)}: embeddings and output heads tied to them "
                         "have no channel units (leave --prune-embeddings and --prune-tied-head off, or use element)")
    given = {id(p) for _, p in params}
    have = set(given)
    extra = []
    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.Linear,) + _CONV) and id(module.weight) in given:
            attrs = ["bias"]
        elif isinstance(module, _BATCHNORM):
            attrs = ["weight", "bias"]
        else:
            continue
        for attr in attrs:
            p = getattr(module, attr, None)
            if isinstance(p, nn.Parameter) and id(p) not in have:
                have.add(id(p))
                extra.append((f"{mod_name}.{attr}" if mod_name else attr, p))
    out = params + extra
    if example_inputs is None:
        return out
    return _touched(out, len(params), channel_groups(model, out, example_inputs))


def _touched(params: list, n_given: int, groups: Sequence[ChannelGroup]) -> list:
    """The first `n_given` of `params` (the caller's) and those of the rest that a group touches."""
    touched = {s.param for g in groups for s in g.slices}
    return [e for i, e in enumerate(params) if i < n_given or i in touched]


# Tracing ---------------------------------------------------------------------------------------------------------


def _call(model: nn.Module, inputs):
    """The model on `example_inputs`: a dict is keywords, a tuple or list positional arguments, anything else the one argument."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _first_tensor(out):
    """The tensor a model's output leads with: itself, element 0 of a tuple or list (GPT-2's (logits, loss)), a dict's first value."""
    while not torch.is_tensor(out):
        if isinstance(out, (tuple, list)) and out:
            out = out[0]
        elif isinstance(out, dict) and out:
            out = next(iter(out.values()))
        else:
            raise ValueError(f"the model's output ({type(out).__name__}) leads with no tensor to trace channel dependencies from")
    return out


def _trace(model: nn.Module, example_inputs) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of `model`, traced in eval mode (no running statistics move), mode restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, forward_fn=_call, output_transform=_first_tensor, verbose=False)
    finally:
        model.train(was_training)


def _touches(module, out: bool) -> list[tuple[str, int]] | None:
    """(attribute, dim) of the parameters pruning `module`'s outputs (or inputs) cuts; None when that cannot be masked exactly."""
    if isinstance(module, nn.Linear):
        return [("weight", 0), ("bias", 0)] if out else [("weight", 1)]
    if isinstance(module, _CONV):
        t = module.transposed
        if module.groups == 1:
            return [("weight", int(t)), ("bias", 0)] if out else [("weight", int(not t))]
        if not t and module.groups == module.in_channels == module.out_channels:  # depthwise: in and out are one
            return [("weight", 0), ("bias", 0)]
        return None
    if isinstance(module, _BATCHNORM):
        return [("weight", 0), ("bias", 0)]
    if isinstance(module, _OPS):
        return []
    return None


def head_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every attention module by the convention (integer `n_head`, Linear `c_attn` and `c_proj`)."""
    out = []
    for name, m in model.named_modules():
        n_head, qkv, proj = getattr(m, "n_head", None), getattr(m, "c_attn", None), getattr(m, "c_proj", None)
        if (isinstance(n_head, int) and n_head > 0 and isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)
                and qkv.out_features % (3 * n_head) == 0 and proj.in_features == qkv.out_features // 3):
            out.append((name, m))
    return out


@dataclass
class _Traced:
    """A kept group and how to prune its units: Torch-Pruning's root (module, pruning function), or the attention module."""

    group: ChannelGroup
    root: nn.Module
    handler: object = None  # None: a head group (root is the attention module)


def _head_group(name: str, attn: nn.Module, index: dict[int, int]) -> ChannelGroup | None:
    """The head group of one attention module, or None when one of its tensors is not a pruner parameter."""
    qkv, proj, h = attn.c_attn, attn.c_proj, attn.n_head
    width = qkv.out_features // 3
    d = width // h
    rows = (torch.arange(qkv.out_features, device=qkv.weight.device) % width) // d  # q, k and v rows of head h
    cols = torch.arange(width, device=proj.weight.device) // d
    tensors = [(qkv.weight, 0, rows), (proj.weight, 1, cols)]
    if qkv.bias is not None:
        tensors.append((qkv.bias, 0, rows))
    if any(id(t) not in index for t, _, _ in tensors):
        return None
    return ChannelGroup(name, h, [Slice(index[id(t)], dim, owner) for t, dim, owner in tensors], "head")


def _traced_groups(model: nn.Module, params: Sequence[tuple[str, torch.Tensor]], example_inputs):
    """The dependency graph and the kept groups (see the module docstring), in the model's module order."""
    DG = _trace(model, example_inputs)
    index = {id(p): i for i, (_, p) in enumerate(params)}
    names = {m: n for n, m in model.named_modules()}
    heads = head_modules(model)
    head_cut = {(id(m.c_attn), True) for _, m in heads} | {(id(m.c_proj), False) for _, m in heads}
    kept = []
    for group in DG.get_all_groups():
        slices, ok = {}, True
        for item in group:
            node, module, handler = item.dep.target, item.dep.target.module, item.dep.handler
            out = DG.is_out_channel_pruning_fn(handler)
            touches = _touches(module, out)
            if touches is None or (id(module), out) in head_cut:
                ok = False  # cannot be masked exactly (embeddings, norms with statistics, ...) or the heads' (the convention's)
            elif out and (not node.outputs or node.type == tp.ops.OPTYPE.OUTPUT):
                ok = False  # the model's output features
            if not ok:
                break
            idxs = torch.as_tensor(list(item.idxs), dtype=torch.long)
            roots = torch.as_tensor(list(item.root_idxs), dtype=torch.long)
            for attr, dim in touches:
                t = getattr(module, attr, None)
                if not isinstance(t, nn.Parameter):
                    continue
                if id(t) not in index:
                    ok = False
                    break
                key = (index[id(t)], dim)
                owner = slices.get(key)
                if owner is None:
                    owner = slices[key] = torch.full((t.shape[dim],), -1, dtype=torch.long)
                owner[idxs] = roots
            if not ok:
                break
        if not ok or not slices:
            continue
        root, handler = group[0].dep.target.module, group[0].dep.handler
        units = len(group[0].idxs)
        kind = "channel" if isinstance(root, _CONV) else "neuron"
        out_slices = [Slice(p, dim, owner.to(params[p][1].device)) for (p, dim), owner in slices.items()]
        kept.append(_Traced(ChannelGroup(names[root], units, out_slices, kind), root, handler))
    for name, attn in heads:
        g = _head_group(name, attn, index)
        if g is not None:
            kept.append(_Traced(g, attn))
    order = {m: i for i, m in enumerate(model.modules())}
    kept.sort(key=lambda t: order[t.root])
    return DG, kept


def channel_groups(model: nn.Module, params: Sequence[tuple[str, torch.Tensor]], example_inputs) -> list[ChannelGroup]:
    """The coupling groups whose units masking `params` (a `channel_params` list) removes exactly; see the module docstring.

    `example_inputs`: a batch the model accepts (a tensor, a tuple of
    positional arguments or a dict of keywords), on the model's device.
    No such group is a ValueError.
    """
    params = list(params)
    _, kept = _traced_groups(model, params, example_inputs)
    if not kept:
        raise ValueError(f"{type(model).__name__} has no prunable channel group: every coupling group touches the output "
                         "features, an embedding, a LayerNorm, a preserved or unsupported layer")
    return [t.group for t in kept]


# Units -----------------------------------------------------------------------------------------------------------


def unit_scores(groups: Sequence[ChannelGroup], scores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per group, float tensor [units]: the sum of `scores` (one per parameter) over every entry each unit's slices cover."""
    out = []
    for g in groups:
        total = None
        for s in g.slices:
            score = scores[s.param].detach()
            score = score.float() if not score.is_floating_point() or score.element_size() < 4 else score
            per = score.movedim(s.dim, 0).reshape(score.shape[s.dim], -1).sum(1)
            owner = s.owner.to(per.device)
            if total is None:
                total = torch.zeros(g.units, dtype=per.dtype, device=per.device)
            has = owner >= 0
            total.index_add_(0, owner[has], per[has].to(total.dtype))
        out.append(total)
    return out


def _dim_keeps(groups: Sequence[ChannelGroup], keeps: Sequence[torch.Tensor]) -> dict[int, dict[int, torch.Tensor]]:
    """{param: {dim: bool keep vector along dim}}: a position is kept when every unit owning it is kept."""
    out: dict[int, dict[int, torch.Tensor]] = {}
    for g, keep in zip(groups, keeps):
        keep = keep.reshape(-1).bool()
        for s in g.slices:
            owner = s.owner.to(keep.device)
            vec = torch.cat([keep, keep.new_ones(1)])[owner]  # owner -1 (no unit) reads the trailing True
            dims = out.setdefault(s.param, {})
            dims[s.dim] = dims[s.dim] & vec if s.dim in dims else vec
    return out


def unit_masks(groups: Sequence[ChannelGroup], keeps: Sequence[torch.Tensor], params) -> list[torch.Tensor]:
    """Per parameter, a bool mask of its shape: the product over its dimensions of the kept positions (`keeps`: per group, [units])."""
    dims = _dim_keeps(groups, keeps)
    masks = []
    for i, (_, p) in enumerate(params):
        mask = torch.ones(p.shape, dtype=torch.bool, device=p.device)
        for dim, vec in dims.get(i, {}).items():
            shape = [1] * p.dim()
            shape[dim] = -1
            mask &= vec.to(p.device).view(shape)
        masks.append(mask)
    return masks


def select_units(
    groups: Sequence[ChannelGroup],
    unit_scores: Sequence[torch.Tensor],
    params,
    level: float,
    kept: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Per group, a bool keep vector [units]: every group prunes the same fraction of its units, the lowest-scoring.

    The zeros over `params` (the tensors the groups index) come nearest
    round(level * their entries), at most all but one unit per group: the
    pruner's own selection (`granularity.ChannelSelection`) with one
    allocation group. `kept` (per group, bool [units]): the units still kept;
    pruned ones stay pruned.
    """
    from lib.pruning.granularity import ChannelSelection, UnitPlan  # granularity sits above this module

    if not 0.0 <= level <= 1.0:
        raise ValueError(f"channel selection level must be in [0, 1], got {level}")
    params = list(params)
    if kept is None:
        kept = [torch.ones(g.units, dtype=torch.bool, device=s.device) for g, s in zip(groups, unit_scores)]
    device = unit_scores[0].device if len(unit_scores) else None
    plan = UnitPlan(list(range(len(groups))), list(range(len(params))))
    selection = ChannelSelection(groups, [p.shape for _, p in params], [plan], device)
    keeps, _ = selection.select(unit_scores, kept, [int(round(level * sum(p.numel() for _, p in params)))])
    return keeps


# Compaction and export -------------------------------------------------------------------------------------------


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _output(model: nn.Module, example_inputs) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return _first_tensor(_call(model, example_inputs)).detach().clone()
    finally:
        model.train(was_training)


def compact(model: nn.Module, example_inputs) -> dict:
    """Remove, in place, every unit whose slices are all exactly zero; returns what changed.

    The units are `channel_groups` over the default prunable weights
    (`prunable_parameters`) and their `channel_params`; a group keeps at
    least one unit. Torch-Pruning's pruning group (from its root layer)
    removes a channel or neuron with everything coupled to it; a head goes
    with `prune_linear_out_channels` on its q, k, v rows of `c_attn` and
    `prune_linear_in_channels` on its `c_proj` columns, and `n_head` drops.
    A pruner's mask buffers (`pruning_mask_*`) no longer fit and are removed;
    the layers get new Parameter objects (an optimizer made before holds the
    old ones): the compact model is for inference and export.

    Returns {"params_before", "params_after" (every parameter of the model),
    "prunable_before", "prunable_after" (the `channel_params`), "groups":
    {name: {"kind", "units_before", "units_after"}}, "max_abs_diff": the
    largest difference of the outputs on `example_inputs` before and after
    (eval mode; 0 up to rounding when removal is exact)}.
    """
    given = prunable_parameters(model)
    params = channel_params(model, given)
    DG, traced = _traced_groups(model, params, example_inputs)
    if not traced:
        raise ValueError(f"{type(model).__name__} has no prunable channel group to compact")
    groups = [t.group for t in traced]
    names = [n for n, _ in _touched(params, len(given), groups)]
    alive = [u > 0 for u in unit_scores(groups, [(p != 0).float() for _, p in params])]
    before = _output(model, example_inputs)
    report = {"params_before": _param_count(model),
              "prunable_before": sum(model.get_parameter(n).numel() for n in names), "groups": {}}
    heads = []
    for t, keep in zip(traced, alive):
        if not bool(keep.any()):
            keep = keep.clone()
            keep[0] = True  # a layer keeps at least one unit (an all-zero one computes the same zeros)
        dead = torch.nonzero(~keep).flatten().tolist()
        report["groups"][t.group.name] = {"kind": t.group.kind, "units_before": t.group.units, "units_after": t.group.units - len(dead)}
        if not dead:
            continue
        if t.handler is None:
            heads.append((t.root, dead))
        else:
            DG.get_pruning_group(t.root, t.handler, dead).prune()
    for attn, dead in heads:  # after the graph's groups: pruning c_attn directly leaves the graph's split sizes stale
        d = attn.c_attn.out_features // 3 // attn.n_head
        width = attn.c_attn.out_features // 3
        cols = [h * d + j for h in dead for j in range(d)]
        tp.prune_linear_out_channels(attn.c_attn, [part * width + c for part in range(3) for c in cols])
        tp.prune_linear_in_channels(attn.c_proj, cols)
        attn.n_head -= len(dead)
    for module in model.modules():
        for buf in [b for b in module._buffers if b.startswith(MASK_PREFIX)]:
            delattr(module, buf)
    after = _output(model, example_inputs)
    report["params_after"] = _param_count(model)
    report["prunable_after"] = sum(model.get_parameter(n).numel() for n in names)
    report["max_abs_diff"] = float((before - after).abs().max()) if before.shape == after.shape else float("inf")
    return report


def export_compact(model: nn.Module, path: str | os.PathLike) -> None:
    """Write the (compacted) module itself, atomically: it loads with plain torch (`load_compact`), no lib.pruning needed."""
    checkpoint.save(path, model)


def load_compact(path: str | os.PathLike, map_location="cpu") -> nn.Module:
    """The module `export_compact` wrote (`torch.load(path, weights_only=False)`: the file is trusted, written by the harness)."""
    return torch.load(path, map_location=map_location, weights_only=False)
