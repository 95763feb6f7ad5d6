"""Layer classes of prunable tensors, per-class sparsity targets (`--pruning-layer-targets`) and the preserve list.

`CLASSES`: embedding, attention, mlp, coupling, conv, classifier, norm, other.
`classify(model, entries)` gives each prunable tensor its class, in this
order: a weight tied to an embedding and used by a Linear, or any tensor of
the model's last Linear (in module order), is the classifier (the output
layer); an `nn.Embedding`'s is embedding; a normalisation layer's is norm;
then attention, MLP or coupling (an attention-MLP coupling such as GPT-2's
R-MLP `ReciprocalCoupler`) by `structure.classify_model` (the enclosing
module's type, else whole name tokens); then a convolution's is conv; else other. A
bias has its layer's class. `module_class(model, name)` is the class a
module's weight would have (a channel coupling group belongs to the class of
its root module).

`parse_targets("mlp=0.6 attention=0.3")` -> {"mlp": 0.6, "attention": 0.3}
and `parse_preserve("classifier.* *.lm_head.*")` -> the fnmatch patterns;
`match_preserve(names, patterns)` -> the names matched (a pattern that matches
nothing is an error naming it). What the pruner does with them:
docs/pruning.md, "Layer targets and the preserve list".
"""

from __future__ import annotations

import fnmatch
import math
import re

from torch import nn

from lib.pruning.structure import classify_model

CLASSES = ("embedding", "attention", "mlp", "coupling", "conv", "classifier", "norm", "other")
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._BatchNorm,
              nn.modules.instancenorm._InstanceNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def parse_targets(text: str | None) -> dict[str, float]:
    """CLASS=FRACTION items separated by spaces or commas; a fraction in [0, 1); each class once."""
    out: dict[str, float] = {}
    for item in re.split(r"[\s,]+", (text or "").strip()):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or name not in CLASSES:
            raise ValueError(f"layer target {item!r}: write CLASS=FRACTION, CLASS one of: {', '.join(CLASSES)}")
        try:
            fraction = float(value)
        except ValueError:
            fraction = math.nan
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"layer target {item!r}: the fraction must be a number in [0, 1)")
        if name in out:
            raise ValueError(f"layer target {item!r}: class {name} is given twice")
        out[name] = fraction
    return out


def check_targets(targets: dict[str, float]) -> dict[str, float]:
    """`targets` as a dict of known classes to fractions in [0, 1) (a ValueError listing the classes otherwise)."""
    for name, fraction in targets.items():
        if name not in CLASSES:
            raise ValueError(f"unknown layer class {name!r}; valid: {', '.join(CLASSES)}")
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"layer target {name}={fraction}: the fraction must be in [0, 1)")
    return dict(targets)


def parse_preserve(text: str | None) -> list[str]:
    """The fnmatch patterns of `--pruning-preserve`, space-separated."""
    return (text or "").split()


def match_preserve(names: list[str], patterns: list[str]) -> set[str]:
    """The names some pattern matches (fnmatch, case-sensitive); a pattern matching none is a ValueError naming it."""
    hit: set[str] = set()
    for pattern in patterns:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
            raise ValueError(f"preserve pattern {pattern!r} matches no prunable parameter; prunable: {shown}")
        hit.update(matched)
    return hit


def _output_parts(model: nn.Module) -> tuple[nn.Module | None, set[int]]:
    """The model's last Linear and the ids of weights both an embedding's and a Linear's (tied output heads)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    tied = {id(m.weight) for m in linears} & embedded
    return (linears[-1] if linears else None), tied


def _class_of(module: nn.Module, param, role: str, last_linear, tied: set[int]) -> str:
    if (param is not None and id(param) in tied) or module is last_linear:
        return "classifier"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, NORM_TYPES):
        return "norm"
    if role in ("attention", "mlp", "coupling"):
        return role
    if isinstance(module, CONV_TYPES):
        return "conv"
    return "other"


def classify(model: nn.Module, entries) -> dict[str, str]:
    """Class of each prunable tensor; `entries` are (name, parameter, owning module, ...) as `prunable_entries` gives."""
    last_linear, tied = _output_parts(model)
    roles = classify_model(model, [e[0] for e in entries])
    return {e[0]: _class_of(e[2], e[1], roles[e[0]], last_linear, tied) for e in entries}


def module_class(model: nn.Module, name: str) -> str:
    """The class of the module `name` (its weight's class; a module without weight by its type and name)."""
    module = model.get_submodule(name)
    last_linear, tied = _output_parts(model)
    weight = getattr(module, "weight", None)
    role = classify_model(model, [f"{name}.weight" if name else "weight"])
    return _class_of(module, weight if isinstance(weight, nn.Parameter) else None, next(iter(role.values())),
                     last_linear, tied)
