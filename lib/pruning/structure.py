"""Structural role of a parameter: attention, mlp, coupling or other.

`classify_parameter(name, module)` decides by the owning module's type where
that says something (`nn.MultiheadAttention`, or a class whose name says
attention / MLP / feed-forward), and by the parameter's dotted name
otherwise. Coupling (cross-paths between attention and MLP) is checked first
because such names often also contain "attn" or "mlp"; then attention, then
MLP. Matching is per name component, so "attn.c_proj" is attention and
"mlp.c_proj" is MLP.

`StructureWeights` holds the per-role multipliers used by the structure-aware
state variants (attention 2.5, MLP 1.0, coupling 3.0, other 1.0 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

ROLES = ("attention", "mlp", "coupling", "other")

COUPLING_KEYS = ("cross", "coupler", "coupling", "gate_to_heads", "recip")
ATTENTION_KEYS = ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv", "query", "key", "value", "q_latent", "v_up")
MLP_KEYS = ("mlp", "ffn", "feed_forward", "feedforward", "c_fc", "fc1", "fc2", "up_proj", "down_proj", "gate_proj")


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
    parts = [p.lower() for p in name.split(".")]
    for role, keys in (("coupling", COUPLING_KEYS), ("attention", ATTENTION_KEYS), ("mlp", MLP_KEYS)):
        if any(k in part for part in parts for k in keys):
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
    """Role of each named parameter of `model`, looking at every enclosing module's type.

    The nearest enclosing module whose type says attention / MLP / coupling
    decides (an nn.Linear inside an nn.MultiheadAttention is attention);
    failing that, the name patterns of `classify_parameter` do.
    """
    roles = {}
    for name in names:
        path = name.split(".")[:-1]
        role = None
        for depth in range(len(path), 0, -1):  # the model itself is not a role
            role = _role_of_type(model.get_submodule(".".join(path[:depth])))
            if role is not None:
                break
        roles[name] = role or classify_parameter(name, None)
    return roles
