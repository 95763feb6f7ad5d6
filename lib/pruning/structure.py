"""Structural role of a parameter (attention, mlp, coupling or other) and the per-role weights.

`classify_parameter(name, module)` goes by the owning module's type where it
says something, else by the dotted name: coupling keys first (such names
often contain "attn" or "mlp" too), then attention, then MLP. Names match
by whole tokens (`name_tokens`): a key matches when its tokens appear
consecutively in one name component, the last possibly plural, so
"self_attn.k_proj" is attention and "monkey" (which contains "key") is not.
`StructureWeights` holds the structure-aware variants' multipliers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

ROLES = ("attention", "mlp", "coupling", "other")

COUPLING_KEYS = ("cross", "coupler", "coupling", "gate_to_heads", "recip")
ATTENTION_KEYS = ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv", "wqkv", "query", "key", "value", "q_latent", "v_up")
MLP_KEYS = ("mlp", "ffn", "feed_forward", "feedforward", "c_fc", "fc1", "fc2", "up_proj", "down_proj", "gate_proj")


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TOKEN = re.compile(r"[a-z]+|[0-9]+")


def name_tokens(component: str) -> tuple[str, ...]:
    """Lower-case tokens of one name component: split at `_`, letter/digit boundaries and camelCase humps."""
    return tuple(_TOKEN.findall(_CAMEL.sub("_", component).lower()))


_ROLE_KEYS = [(role, [name_tokens(k) for k in keys]) for role, keys in
              (("coupling", COUPLING_KEYS), ("attention", ATTENTION_KEYS), ("mlp", MLP_KEYS))]


def _contains(tokens: tuple[str, ...], key: tuple[str, ...]) -> bool:
    """`key`'s tokens appear consecutively in `tokens`, its last one possibly with a plural "s" ("attentions")."""
    n, head, last = len(key), key[:-1], key[-1]
    return any(
        tokens[i : i + n - 1] == head and tokens[i + n - 1] in (last, last + "s") for i in range(len(tokens) - n + 1)
    )


def _role_of_type(module: nn.Module | None) -> str | None:
    if module is None:
        return None
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    cls = type(module).__name__.lower()
    if any(k in cls for k in ("coupler", "coupling")):
        return "coupling"
    if "attention" in cls or cls.endswith("attn"):
        return "attention"
    if "mlp" in cls or "feedforward" in cls:
        return "mlp"
    return None


def classify_parameter(name: str, module: nn.Module | None = None) -> str:
    """attention | mlp | coupling | other for the parameter `name` owned by `module`."""
    role = _role_of_type(module)
    if role is not None:
        return role
    parts = [name_tokens(p) for p in name.split(".")]
    for role, keys in _ROLE_KEYS:
        if any(_contains(tokens, key) for tokens in parts for key in keys):
            return role
    return "other"


@dataclass(frozen=True)
class StructureWeights:
    attention: float = 2.5
    mlp: float = 1.0
    coupling: float = 3.0
    other: float = 1.0

    def __post_init__(self):
        for role in ROLES:
            if not getattr(self, role) > 0:
                raise ValueError(f"structure weight for {role} must be positive, got {getattr(self, role)}")

    def __getitem__(self, role: str) -> float:
        if role not in ROLES:
            raise KeyError(f"unknown structural role {role!r}; valid: {', '.join(ROLES)}")
        return getattr(self, role)


def classify_model(model: nn.Module, names: list[str]) -> dict[str, str]:
    """Role of each named parameter: the nearest enclosing module whose type says one, else the name (`classify_parameter`)."""
    roles = {}
    for name in names:
        path = name.split(".")[:-1]  # enclosing modules, nearest first; the model itself has no role
        owners = (model.get_submodule(".".join(path[:depth])) for depth in range(len(path), 0, -1))
        roles[name] = next((r for r in map(_role_of_type, owners) if r), None) or classify_parameter(name)
    return roles
