"""Tracker project names: `{model}-{5 hex chars}` from the checkout's path.

Every run started from one checkout of this repository lands in the same
project per model, and two checkouts on one machine do not mix. The hash is
of the resolved directory that holds `lib/`, so it does not depend on the
current directory or on how the trainer was started.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def checkout_hash(root: str | Path | None = None) -> str:
    path = Path(root).resolve() if root is not None else CHECKOUT
    return hashlib.sha256(str(path).encode()).hexdigest()[:5]


def project_name(model: str, root: str | Path | None = None) -> str:
    return f"{model}-{checkout_hash(root)}"
