"""Zeroing the pruned entries of tensors in place: `t *= mask` for boolean masks, fast on the CPU too.

`mask_multiply_(tensors, masks)` zeroes every tensor where its mask is
False. On a GPU it is one multi-tensor multiply kernel. On the CPU, when
every pair is contiguous, one call of the C kernels (`native`, `mask_zero`)
clears the pruned entries' bits, all tensors in one loop: right after
backward, LeNet-5's five gradients took 117-141 us against 160-192 us for
torch's multiplies, in alternating steps on a slow stretch of this machine
(the first operation after backward pays for cold caches either way).
A cleared entry is +0.0 where a multiply leaves -0.0 for negative entries
(and NaN for NaN); both are zero for every comparison the harness makes.

Without the kernels (no C compiler, `native.disabled()`) or for a
non-contiguous pair, torch multiplies. The masks are then read as uint8 (a
view of the same bytes: torch stores bool as 0 or 1), whose conversion to
float is vectorised where bool's is not: 2-3x faster for every size
measured (85M entries: 16 against 29 ms). A multiply by a mask of another
dtype first turns the whole mask into a fresh tensor of the tensor's dtype;
for large tensors that allocation (page faults on fresh memory) costs
several times the multiply itself (30 ms against 6 ms for one 14M-entry
tensor on two cores here), so each large mask goes through one small
staging buffer of the tensor's dtype, a chunk at a time. Tensors up to
`CPU_CHUNK` entries go through one multi-tensor call instead: their
temporary masks come from recycled memory, and one call saves the Python
loop (LeNet-5's five masks: 16 us, against 27 us read as bool and 118 us in
a loop). The buffer lives for one call: no state per parameter is added.
"""

from __future__ import annotations

import torch

from lib.pruning import native

CPU_CHUNK = 1 << 20  # entries of the CPU staging buffer (4 MiB of float32), and the size up to which no staging is done


def multiplier_factors(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """What the multiply reads for each bool mask: a uint8 view on the CPU (the same bytes), the mask elsewhere."""
    return [m.view(torch.uint8) if m.dtype == torch.bool and m.device.type == "cpu" else m for m in masks]


@torch.no_grad()
def mask_multiply_(tensors: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    """`t *= mask` for every pair, in place; masks are bool tensors of the same shapes."""
    multiply_by_factors_(tensors, multiplier_factors(masks))


class StandingMasks:
    """Masks read once for zeroing tensors of their shapes again and again: gradients after every backward.

    `zero_(tensors)` zeroes `tensors[i]` where `masks[i]` is False and skips
    None entries (parameters without gradient). On the CPU the kernels get
    the masks' addresses and sizes read beforehand (`native.PreparedMasks`)
    and only the tensors' addresses per call: right after backward, the
    Python that reads tensors runs from cold caches and cost more than the
    zeroing itself (LeNet-5's five gradients: 68-75 against 110-119 us per
    call reading every mask and tensor each time, in alternating steps on a
    slow stretch of this machine). Otherwise it is `mask_multiply_` with the
    masks read once as `multiplier_factors`. Built for masks that stay the
    same tensors (their contents may change): a replaced mask needs a new
    StandingMasks.
    """

    def __init__(self, masks: list[torch.Tensor]):
        self.masks = list(masks)
        self.factors = multiplier_factors(self.masks)
        self.prepared = native.PreparedMasks.of(self.factors) if self.masks else None  # None off the CPU

    def zero_(self, tensors: list[torch.Tensor | None]) -> None:
        """Zero the pruned entries of each tensor in place (outside no_grad: call it under no_grad for weights)."""
        if self.prepared is not None and (kernels := native.kernels()) is not None and kernels.zero_prepared(tensors, self.prepared):
            return
        live = [i for i, t in enumerate(tensors) if t is not None]
        multiply_by_factors_([tensors[i] for i in live], [self.factors[i] for i in live])


def multiply_by_factors_(tensors: list[torch.Tensor], factors: list[torch.Tensor]) -> None:
    """`mask_multiply_` with the masks already as `multiplier_factors`, outside any no_grad context.

    For tensors autograd does not track (gradients) and for callers that
    keep the factors (`StandingMasks`); small tensors go straight to one call.
    """
    if not tensors:
        return
    if tensors[0].device.type == "cpu" and (kernels := native.kernels()) is not None and kernels.zero(tensors, factors):
        return
    if tensors[0].device.type != "cpu" or all(t.numel() <= CPU_CHUNK for t in tensors):
        torch._foreach_mul_(tensors, factors)
        return
    small, large = [], []
    for t, m in zip(tensors, factors):
        staged = t.numel() > CPU_CHUNK and t.is_contiguous() and m.is_contiguous()
        (large if staged else small).append((t, m))
    if small:
        torch._foreach_mul_([t for t, _ in small], [m for _, m in small])
    stages: dict[torch.dtype, torch.Tensor] = {}
    for t, m in large:
        stage = stages.setdefault(t.dtype, torch.empty(CPU_CHUNK, dtype=t.dtype))
        flat_t, flat_m = t.view(-1), m.view(-1)
        for start in range(0, flat_t.numel(), CPU_CHUNK):
            end = min(start + CPU_CHUNK, flat_t.numel())
            chunk = stage[: end - start]
            chunk.copy_(flat_m[start:end])
            flat_t[start:end].mul_(chunk)
