"""Exact, deterministic selection of the lowest scores across many tensors.

`lowest_keep(sources, n_prune)` returns keep-masks that prune exactly the
`n_prune` lowest scores over all tensors together, for tensors of any size:

- exact: scores become int32 keys that sort like the floats, and a radix
  select finds the k-th key (on the CPU two passes of 16 bits, on CUDA three
  of 11/11/10 bits), not `torch.quantile` (refused above 16M elements by
  older releases, seconds on tens of millions) and not sampling; up to
  `SMALL` entries one stable sort does the same job faster;
- deterministic: ties at the threshold are pruned in flat index order,
  tensor by tensor in the order given;
- lean on the CPU: a source may be a callable returning a tensor; on the CPU
  callables are re-evaluated on each of the three passes, so at most one
  tensor's scores exist at a time (compute traded for host memory). On CUDA
  the keys of all sources are held at once for the update (4 bytes per
  entry, freed after), which turns hundreds of small synchronising passes
  into a few large ones.

Scores are compared as float32 (wider or narrower floats are converted first);
-inf sorts first (already-pruned entries), NaN is an error, -0.0 equals 0.0.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

Source = Union[torch.Tensor, Callable[[], torch.Tensor]]

SMALL = 1 << 21  # up to this many entries one stable sort is cheaper than the radix passes
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


def radix_levels(device: torch.device) -> tuple[tuple[int, int], ...]:
    """(shift, width) of each radix pass over the 32 key bits.

    CPU: two passes of 16 bits (bincount is sequential there, fewer passes
    win). CUDA: three passes of 11/11/10 bits, whose histograms fit in shared
    memory (65536 bins do not, and their global atomics serialise on the few
    bins that similar scores share).
    """
    return ((21, 11), (10, 11), (0, 10)) if device.type == "cuda" else ((16, 16), (0, 16))


def _pick(histogram: torch.Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th smallest (1-based) entry, and how many entries lie below that bin."""
    cum = histogram.cumsum(0)
    b = int(torch.searchsorted(cum, torch.tensor([k], dtype=cum.dtype)).item())
    return b, int(cum[b - 1]) if b > 0 else 0


KeySource = Callable[[bool], torch.Tensor]  # check_nan -> int32 keys


def kth_key(keys: Sequence[KeySource], k: int, device: torch.device) -> tuple[int, int]:
    """The k-th smallest key (1-based) over all key sources, and how many keys lie below it."""
    prefix, below = None, 0
    for level, (shift, width) in enumerate(radix_levels(device)):
        bins = 1 << width
        hist = None
        for source in keys:
            key = source(level == 0)
            if prefix is None:
                part = (key >> shift) + bins // 2
            else:
                part = (key[(key >> (shift + width)) == prefix] >> shift) & (bins - 1)
            h = torch.bincount(part, minlength=bins)
            hist = h if hist is None else hist + h
        b, under = _pick(hist.cpu(), k - below)
        below += under
        prefix = b - bins // 2 if prefix is None else (prefix << width) | b
    return prefix, below


def _keys_of(source: Source) -> KeySource:
    def keys(check_nan: bool) -> torch.Tensor:
        return order_keys(source() if callable(source) else source, check_nan)

    return keys


def _held(keys: torch.Tensor) -> KeySource:
    return lambda check_nan: keys


def lowest_keep(
    sources: Sequence[Source], n_prune: int, sizes: Sequence[int] | None = None, device: torch.device | None = None
) -> list[torch.Tensor]:
    """Flat boolean keep-masks, one per source, pruning exactly the n_prune lowest scores.

    `sizes` (the element count of each source) and `device` (where the scores
    live) save evaluating callables just to learn them.
    """
    sources = list(sources)
    if sizes is None or device is None:
        first = [s() if callable(s) else s for s in sources]
        sizes, device = [t.numel() for t in first], first[0].device
    total = sum(sizes)
    if not 0 <= n_prune <= total:
        raise ValueError(f"cannot prune {n_prune} of {total} entries")
    if total <= SMALL or len(sources) == 1 or device.type == "cuda":
        # Hold the keys: one tensor of them (small, single, or on a GPU).
        keys = [order_keys(s() if callable(s) else s) for s in sources]
        if total <= SMALL:
            return _lowest_keep_sorted(keys, n_prune)
        flat = keys[0] if len(keys) == 1 else torch.cat(keys)
        del keys
        return list(_lowest_keep_radix([_held(flat)], n_prune, device)[0].split(list(sizes)))
    return _lowest_keep_radix([_keys_of(s) for s in sources], n_prune, device)


def _lowest_keep_radix(keys: list[KeySource], n_prune: int, device: torch.device) -> list[torch.Tensor]:
    if n_prune == 0:
        return [torch.ones_like(k(True), dtype=torch.bool) for k in keys]  # still rejects NaN scores
    threshold, below = kth_key(keys, n_prune, device)
    ties_left = n_prune - below  # >= 1: the k-th entry itself is pruned
    keeps = []
    for source in keys:
        key = source(False)
        keep = key > threshold
        if ties_left:
            ties = (key == threshold).nonzero().flatten()
            keep[ties[ties_left:]] = True  # ties beyond the quota stay
            ties_left -= min(ties_left, ties.numel())
        else:
            keep |= key == threshold
        keeps.append(keep)
    return keeps


def _lowest_keep_sorted(keys: list[torch.Tensor], n_prune: int) -> list[torch.Tensor]:
    """The same result by one stable sort (cheaper up to `SMALL` entries)."""
    flat = torch.cat(keys)
    order = torch.sort(flat, stable=True).indices
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:n_prune]] = False
    return list(keep.split([k.numel() for k in keys]))


def keep_top(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Boolean masks keeping all but the round(sparsity * N) lowest scores (flat, one per tensor)."""
    total = sum(s.numel() for s in scores)
    return lowest_keep(scores, int(round(sparsity * total)), [s.numel() for s in scores], scores[0].device)
