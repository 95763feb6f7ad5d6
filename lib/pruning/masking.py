"""Zeroing the pruned entries of tensors in place: `t *= mask` for bool masks, one multi-tensor call.

`mask_multiply_(tensors, masks)` multiplies each tensor by its bool mask
(same shape) with `torch._foreach_mul_`, skipping None tensors (parameters
without a gradient). On the CPU the masks are read as uint8, a view of the
same bytes (torch stores bool as 0 or 1), whose conversion in the multiply
is vectorised where bool's is not. A pruned entry becomes 0.0, or -0.0 for a
negative one (equal as numbers).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def mask_multiply_(tensors: list[torch.Tensor | None], masks: list[torch.Tensor]) -> None:
    """`t *= mask` for every pair whose tensor is not None, in place."""
    pairs = [(t, m.view(torch.uint8) if m.device.type == "cpu" else m) for t, m in zip(tensors, masks) if t is not None]
    if pairs:
        torch._foreach_mul_([t for t, _ in pairs], [m for _, m in pairs])
