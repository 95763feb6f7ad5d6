"""Exact, deterministic selection of the lowest scores across many tensors, in torch operations.

`lowest_keep(scores, n_prune, kept)` returns one flat bool keep-mask per
score tensor, pruning exactly `n_prune` entries of the group: entries
already pruned (False in `kept`) first, then the lowest scores as float32
(-0.0 == 0.0), ties in flat index order (tensor by tensor, then row-major);
a NaN score is a ValueError. It equals a stable sort with pruned entries
first (the tests' oracle) on every device and thread count. How: each score
becomes an int32 key with the float's order (`order_keys`), and a radix
select over 11, 11 and 10 bits with `torch.bincount` finds the k-th key.
"""

from __future__ import annotations

from typing import Sequence

import torch

INF_KEY = 0x7F800000  # the key of +inf; -INF_KEY is the key of -inf, keys beyond them are NaNs
PRUNED_KEY = -(1 << 31)  # below the key of every float: the key of already-pruned entries
LEVELS = ((21, 11), (10, 11), (0, 10))  # (shift, width) of the radix digits, most significant first


def _flat32(scores: list[torch.Tensor]) -> torch.Tensor:
    """The scores, converted to float32, as one new flat tensor: tensor by tensor, each in row-major order."""
    sizes = [s.numel() for s in scores]
    values = torch.empty(sum(sizes), dtype=torch.float32, device=scores[0].device)
    for s, part in zip(scores, values.split(sizes)):
        part.view(s.shape).copy_(s.detach())
    return values


def order_keys(scores: torch.Tensor) -> torch.Tensor:
    """Flat int32 keys whose signed order is the float32 order of `scores` (new tensor); -0.0 and 0.0 get 0, NaNs beyond +-INF_KEY."""
    return _to_signed_(_flat32([scores]).view(torch.int32))


def _to_signed_(bits: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns (sign and magnitude) to two's complement keys of the same order, in place."""
    sign = bits >> 31  # -1 for negative floats (and -0.0), else 0
    return bits.bitwise_and_(0x7FFFFFFF).bitwise_xor_(sign).sub_(sign)


def lowest_keep(
    scores: Sequence[torch.Tensor], n_prune: int, kept: Sequence[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Flat bool keep-masks, one per tensor of `scores`, pruning exactly `n_prune` entries (see the module docstring).

    `kept` (bool tensors, one per score tensor, any shapes with the same
    element counts) marks the entries still kept; the others are pruned first.
    """
    scores = list(scores)
    sizes = [s.numel() for s in scores]
    total = sum(sizes)
    if not 0 <= n_prune <= total:
        raise ValueError(f"cannot prune {n_prune} of {total} entries")
    keys = _flat32(scores).view(torch.int32)  # non-negative floats already compare like their bits
    if total:
        low, high = torch.stack(torch.aminmax(keys)).tolist()  # one device sync
        if low < 0:  # negative scores (or -0.0)
            low, high = torch.stack(torch.aminmax(_to_signed_(keys))).tolist()
        if high > INF_KEY or low < -INF_KEY:
            raise ValueError("pruning scores contain NaN: the weights, gradients or optimizer moments have diverged")
    parts = keys.split(sizes)
    if kept is not None:
        for part, mask in zip(parts, kept):
            part.masked_fill_(mask.reshape(-1).logical_not(), PRUNED_KEY)
    if n_prune == 0:
        keep = torch.ones(total, dtype=torch.bool, device=keys.device)
    else:
        kth, below, equal = kth_key(keys, n_prune)
        keep = keys > kth
        ties_left = n_prune - below  # of the `equal` entries at the k-th key, the first ties_left are pruned
        if ties_left < equal:
            tie = keys == kth
            keep |= tie & (tie.cumsum(0, dtype=torch.int32) > ties_left)
    return list(keep.split(sizes))


def kth_key(keys: torch.Tensor, k: int) -> tuple[int, int, int]:
    """The k-th smallest (1-based) of flat int32 `keys`, how many keys lie below it, and how many equal it."""
    candidates, prefix, below = keys, None, 0
    for shift, width in LEVELS:
        digits = candidates >> shift
        if prefix is None:  # the top digit, signed: offset to 0 .. 2^width - 1
            digits.add_(1 << (width - 1))
        else:  # the candidates share the higher digits
            digits.bitwise_and_((1 << width) - 1)
        hist = torch.bincount(digits, minlength=1 << width)
        cum = hist.cumsum(0)
        b = int(torch.searchsorted(cum, torch.tensor([k - below], dtype=cum.dtype, device=cum.device)))
        in_bin = int(hist[b])
        below += int(cum[b]) - in_bin
        prefix = b - (1 << (width - 1)) if prefix is None else (prefix << width) | b
        if in_bin < candidates.numel():  # narrow down to the chosen bin (all-equal keys skip the copy)
            candidates = candidates[digits == b]
    return prefix, below, in_bin


def keep_top(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Flat bool masks keeping all but the round(sparsity * N) lowest scores over all tensors together."""
    return lowest_keep(scores, int(round(sparsity * sum(s.numel() for s in scores))))
