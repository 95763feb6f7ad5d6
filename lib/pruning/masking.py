"""Zeroing pruned entries in place: `t *= mask` for bool masks, one `torch._foreach_mul_`.

On the CPU the masks are read as uint8 (the same bytes), whose conversion in
the multiply is vectorised where bool's is not. A pruned negative entry
becomes -0.0.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def mask_multiply_(tensors: list[torch.Tensor | None], masks: list[torch.Tensor]) -> None:
    """`t *= mask` for every pair whose tensor is not None, in place."""
    pairs = [(t, m.view(torch.uint8) if m.device.type == "cpu" else m) for t, m in zip(tensors, masks) if t is not None]
    if pairs:
        torch._foreach_mul_([t for t, _ in pairs], [m for _, m in pairs])
