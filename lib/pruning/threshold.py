"""Exact, deterministic selection of the lowest scores across many tensors.

`lowest_keep(sources, n_prune)` returns keep-masks that prune exactly the
`n_prune` lowest scores over all tensors together, for tensors of any size:

- exact: a two-level radix select on the float32 bit patterns (16 high bits,
  then 16 low bits), not `torch.quantile` (refused above 16M elements by older
  releases, slow on tens of millions) and not sampling;
- deterministic: ties at the threshold are pruned in flat index order, tensor
  by tensor in the order given;
- lean: above `SMALL` entries, no concatenation of all scores. A source is a tensor or a callable
  returning one; callables are re-evaluated on each of the three passes, so at
  most one tensor's scores exist at a time (the caller trades compute for
  memory).

Scores are compared as float32 (wider or narrower floats are converted first);
-inf sorts first (already-pruned entries), NaN is an error, -0.0 equals 0.0.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

Source = Union[torch.Tensor, Callable[[], torch.Tensor]]

_BINS = 1 << 16
SMALL = 1 << 21  # up to this many entries one stable sort is cheaper than three radix passes
_NEG_ZERO_KEY = -1  # the key of -0.0 (bits 0x80000000); mapped to the key of +0.0


def order_keys(scores: torch.Tensor, check_nan: bool = True) -> torch.Tensor:
    """Flat int32 keys whose signed order is the float order of `scores`.

    Non-negative floats already compare like their bit patterns (the keys are
    then a view, no copy); for negative ones the 31 magnitude bits are flipped.
    """
    x = scores.detach().reshape(-1)
    if x.dtype != torch.float32:
        x = x.float()
    x = x.contiguous()
    if check_nan and torch.isnan(x).any():
        raise ValueError("pruning scores contain NaN; check the weights and the optimizer state for divergence")
    bits = x.view(torch.int32)
    negative = bits < 0
    if not negative.any():
        return bits
    keys = torch.where(negative, bits ^ 0x7FFFFFFF, bits)
    return keys.masked_fill_(keys == _NEG_ZERO_KEY, 0)  # -0.0 ties with +0.0


def _evaluate(source: Source, check_nan: bool = False) -> torch.Tensor:
    return order_keys(source() if callable(source) else source, check_nan)


def _pick(histogram: torch.Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th smallest (1-based) entry, and how many entries lie below that bin."""
    cum = histogram.cumsum(0)
    b = int(torch.searchsorted(cum, torch.tensor([k], dtype=cum.dtype)).item())
    return b, int(cum[b - 1]) if b > 0 else 0


def kth_key(sources: Sequence[Source], k: int) -> tuple[int, int]:
    """The int32 key of the k-th smallest score (1-based) over all sources, and how many lie below it."""
    hist = torch.zeros(_BINS, dtype=torch.int64)
    for s in sources:
        keys = _evaluate(s, check_nan=True)
        hist += torch.bincount((keys >> 16) + (_BINS // 2), minlength=_BINS).cpu()
    high, below_high = _pick(hist, k)
    hist.zero_()
    for s in sources:
        keys = _evaluate(s)
        in_bin = keys[((keys >> 16) + (_BINS // 2)) == high]
        hist += torch.bincount(in_bin & 0xFFFF, minlength=_BINS).cpu()
    low, below_low = _pick(hist, k - below_high)
    return ((high - _BINS // 2) << 16) | low, below_high + below_low


def lowest_keep(sources: Sequence[Source], n_prune: int, sizes: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Flat boolean keep-masks, one per source, pruning exactly the n_prune lowest scores.

    `sizes` (the element count of each source) saves evaluating callables just to count them.
    """
    sources = list(sources)
    if len(sources) == 1 and callable(sources[0]):
        sources = [sources[0]()]  # a single tensor is evaluated once and kept
    if sizes is None:
        sizes = [(s() if callable(s) else s).numel() for s in sources]
    total = sum(sizes)
    if not 0 <= n_prune <= total:
        raise ValueError(f"cannot prune {n_prune} of {total} entries")
    if n_prune in (0, total):
        keys = [_evaluate(s, check_nan=True) for s in sources]
        return [torch.full_like(k, n_prune == 0, dtype=torch.bool) for k in keys]
    if total <= SMALL:
        return _lowest_keep_sorted([_evaluate(s, check_nan=True) for s in sources], n_prune)
    threshold, below = kth_key(sources, n_prune)
    ties_left = n_prune - below  # >= 1: the k-th entry itself is pruned
    keeps = []
    for s in sources:
        keys = _evaluate(s)
        keep = keys > threshold
        if ties_left:
            ties = (keys == threshold).nonzero().flatten()
            keep[ties[ties_left:]] = True  # ties beyond the quota stay
            ties_left -= min(ties_left, ties.numel())
        else:
            keep |= keys == threshold
        keeps.append(keep)
    return keeps


def _lowest_keep_sorted(keys: list[torch.Tensor], n_prune: int) -> list[torch.Tensor]:
    """Same result as the radix path, by one stable sort (cheaper below `SMALL` entries)."""
    flat = torch.cat(keys)
    order = torch.sort(flat, stable=True).indices
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:n_prune]] = False
    return list(keep.split([k.numel() for k in keys]))


def keep_top(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Boolean masks keeping all but the round(sparsity * N) lowest scores (flat, one per tensor)."""
    total = sum(s.numel() for s in scores)
    return lowest_keep(scores, int(round(sparsity * total)), [s.numel() for s in scores])
