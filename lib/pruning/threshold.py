"""Exact, deterministic selection of the lowest scores across many tensors.

`lowest_keep(sources, n_prune)` returns keep-masks that prune exactly the
`n_prune` lowest scores over all tensors together, for tensors of any size:

- exact: scores become int32 keys that sort like the floats, and a radix
  select finds the k-th key (on the CPU two passes of 16 bits, on CUDA three
  of 11/11/10 bits), not `torch.quantile` (refused above 16M elements by
  older releases, seconds on tens of millions) and not sampling; up to
  `SMALL` entries (`SMALL_CPU` on the CPU) one stable sort does the same
  job faster;
- deterministic: ties at the threshold are pruned in flat index order,
  tensor by tensor in the order given;
- bounded memory: a source may be a callable returning a tensor. On CUDA,
  and on the CPU up to `SMALL` entries, the keys of all sources are held
  for the update as one tensor (4 bytes per entry, freed after), which turns
  hundreds of small passes (synchronising on CUDA) into a few large ones.
  Beyond, the CPU calls each source again on each pass (three; two for
  `lowest_keep_nonnegative` with the C kernels), so
  one tensor's keys exist at a time and a caller may make them all in one
  buffer (`reevaluates`): holding 85M keys instead cost as much in page
  faults (70 000 per update) as the recomputation, and varied twice as much.

Scores are compared as float32 (wider or narrower floats are converted first);
-inf sorts first (already-pruned entries), NaN is an error, -0.0 equals 0.0.
`lowest_keep_keys` takes key sources instead of scores. A pruner whose scores
are never negative (magnitude, state) calls `lowest_keep_nonnegative` with
its scores and masks, already-pruned entries below all others: on the CPU
the C kernels (`native`) make the keys, filter and count them inside each
pass, and when few keys share the k-th key's high 16 bits (the usual case)
the second pass writes the masks and settles those few apart, so the scores
are evaluated twice instead of three times; without the kernels (no C
compiler) the keys are made by `nonnegative_keys` in two in-place passes and
selected as above. Both give the same masks. `lowest_keep_held` takes such
a group's scores already in one tensor and writes the masks in place: on
the CPU below `native.PARALLEL_FROM` entries (LeNet-5) in one kernel call.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

from lib.pruning import native
from lib.pruning.masking import mask_multiply_

Source = Union[torch.Tensor, Callable[[], torch.Tensor]]

SMALL = 1 << 21  # up to this many entries one stable sort is cheaper than the radix passes (CUDA)
# On the CPU the radix passes win from about 8K entries (LeNet-5's 62K: 0.2-0.3 against 0.3-0.8 ms; 1M: 2-3 against 15-18 ms).
SMALL_CPU = 1 << 13
# With the C kernels, when at most 1/FEW_CANDIDATES of the keys share the k-th key's high 16 bits, the last
# pass records them and settles them apart (one pass fewer); more (many equal scores) take the low-bit pass.
FEW_CANDIDATES = 16
INF_KEY = 0x7F800000  # the bits of +inf: the largest key of a non-negative, non-NaN float32
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


def nonnegative_keys(scores: torch.Tensor, keep: torch.Tensor, check: bool = True) -> torch.Tensor:
    """Order keys of non-negative scores, with the entries outside `keep` below all others.

    `scores` is consumed (a float32 result is overwritten in place and
    returned as int32). Non-negative floats compare like their bit patterns,
    so kept entries get bits + 1 (>= 1) and the others 0: two in-place
    passes, against `order_keys`' sign handling plus a -inf fill for pruned
    entries. With `check`, one min/max pass over the bits first rejects NaN
    (above the bits of +inf) and negative scores (the sign bit).
    """
    x = scores.detach()
    if x.dtype != torch.float32:
        x = x.float()
    keys = x.contiguous().view(-1).view(torch.int32)
    if check and keys.numel():
        low, high = torch.stack(torch.aminmax(keys)).tolist()  # one device sync
        if high > INF_KEY:
            raise ValueError("pruning scores contain NaN; check the weights and the optimizer state for divergence")
        if low < 0:
            raise ValueError("a pruning method that promises non-negative scores produced negative ones (or a negative NaN)")
    keys.add_(1)
    mask_multiply_([keys], [keep.reshape(-1)])
    return keys


def radix_levels(device: torch.device) -> tuple[tuple[int, int], ...]:
    """(shift, width) of each radix pass over the 32 key bits.

    CPU: two passes of 16 bits (bincount is sequential there, fewer passes
    win). CUDA: three passes of 11/11/10 bits, whose histograms fit in shared
    memory (65536 bins do not, and their global atomics serialise on the few
    bins that similar scores share).
    """
    return ((21, 11), (10, 11), (0, 10)) if device.type == "cuda" else ((16, 16), (0, 16))


def _pick(histogram: torch.Tensor, k: int) -> tuple[int, int, int]:
    """Bin holding the k-th smallest (1-based) entry, how many entries lie below that bin, and how many in it."""
    cum = histogram.cumsum(0)
    b = int(torch.searchsorted(cum, torch.tensor([k], dtype=cum.dtype)).item())
    return b, int(cum[b - 1]) if b > 0 else 0, int(histogram[b])


KeySource = Callable[[bool], torch.Tensor]  # check_nan -> int32 keys
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _bin_histogram(key: torch.Tensor, prefix: int, shift: int, width: int, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Histogram of the `width`-bit digit at `shift` over the keys whose higher bits equal `prefix`.

    Without selecting those keys (boolean indexing costs a nonzero pass that
    is slow on the CPU): keys are clamped to one below and one above the
    prefix's range, so the others land in two dump bins that are cut off.
    `scratch` (int32, at least the size of `key`) takes the clamped keys.
    """
    unit = 1 << shift
    lo = prefix << (shift + width)  # the first key with this prefix
    hi = lo + ((1 << width) << shift)  # one past the last
    below = lo - unit >= INT32_MIN  # room for a dump bin below (not for the lowest prefix)
    first = lo - unit if below else lo
    out = None if scratch is None else scratch[: key.numel()]
    part = torch.clamp(key, first, min(hi, INT32_MAX), out=out).sub_(first).bitwise_right_shift_(shift)
    start = 1 if below else 0
    return torch.bincount(part, minlength=start + (1 << width) + 1)[start : start + (1 << width)]


def kth_key(keys: Sequence[KeySource], k: int, device: torch.device, largest: int = 0) -> tuple[int, int, int]:
    """The k-th smallest key (1-based) over all key sources, how many keys lie below it, and how many equal it.

    On the CPU, given `largest` (the most keys one source returns), the
    shifted and clamped keys of every pass go to one scratch tensor of that
    size instead of a fresh one per source: fresh host memory costs page
    faults comparable to the pass itself (85M keys: 12 ms against 31 ms).
    """
    scratch = torch.empty(largest, dtype=torch.int32) if device.type == "cpu" and largest else None
    prefix, below, equal = None, 0, 0
    for level, (shift, width) in enumerate(radix_levels(device)):
        bins = 1 << width
        hist = None
        for source in keys:
            key = source(level == 0)
            if prefix is None:
                out = None if scratch is None else scratch[: key.numel()]
                h = torch.bincount(torch.bitwise_right_shift(key, shift, out=out).add_(bins // 2), minlength=bins)
            elif device.type == "cuda":  # the few keys in the chosen bin (bincount's atomics choke on dump bins)
                h = torch.bincount((key[(key >> (shift + width)) == prefix] >> shift) & (bins - 1), minlength=bins)
            else:
                h = _bin_histogram(key, prefix, shift, width, scratch)
            hist = h if hist is None else hist + h
        b, under, equal = _pick(hist.cpu(), k - below)
        below += under
        prefix = b - bins // 2 if prefix is None else (prefix << width) | b
    return prefix, below, equal


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
    return lowest_keep_keys([_keys_of(s) for s in sources], n_prune, sizes, device)


def holds_one_tensor(total: int, device: torch.device) -> bool:
    """Whether the selection over `total` entries on `device` concatenates the keys of all sources into one tensor."""
    return device.type != "cpu" or total <= SMALL


def reevaluates(total: int, sources: int, device: torch.device) -> bool:
    """Whether the selection calls each of `sources` key sources once per pass (three times), not once.

    A caller may then let every source write into one shared buffer: each
    source's keys are used up before the next source is called.
    """
    return not holds_one_tensor(total, device) and sources > 1


def lowest_keep_keys(
    keys: Sequence[KeySource],
    n_prune: int,
    sizes: Sequence[int],
    device: torch.device,
    out: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """`lowest_keep` over int32 order keys (see `order_keys`) instead of scores.

    Each key source is called with `check_nan` (true on its first call of an
    update) and returns flat int32 keys; a caller that can make keys more
    cheaply than `order_keys` (non-negative scores: `nonnegative_keys`)
    passes them here. `out` (flat bool tensors, one per source) receives the
    keep-masks, which are then returned: on the CPU the last pass writes
    them directly, without a fresh mask to copy from. A source's keys are
    always made before its `out` is written, so `out` may be the masks the
    sources read.
    """
    keys = list(keys)
    total = sum(sizes)
    if not 0 <= n_prune <= total:
        raise ValueError(f"cannot prune {n_prune} of {total} entries")
    cpu = device.type == "cpu"
    if total <= (min(SMALL, SMALL_CPU) if cpu else SMALL):
        keeps = _lowest_keep_sorted([k(True) for k in keys], n_prune)
    elif holds_one_tensor(total, device):
        # one tensor of keys: a few large passes instead of many small ones (synchronising on CUDA;
        # on the CPU each source's passes cost a 65536-bin histogram, more than LeNet-5's keys themselves)
        held = [k(True) for k in keys]
        flat = held[0] if len(held) == 1 else torch.cat(held)
        del held
        keeps = list(_lowest_keep_radix([_held(flat)], n_prune, device, total)[0].split(list(sizes)))
    else:
        if not reevaluates(total, len(keys), device):
            keys = [_held(keys[0](True))]  # one source: its keys are made once
        return _lowest_keep_radix(keys, n_prune, device, max(sizes), out)
    if out is None:
        return keeps
    for o, keep in zip(out, keeps):
        o.copy_(keep)
    return list(out)


ScoreSource = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # -> (scores >= 0, bool mask of entries still kept)


def lowest_keep_nonnegative(
    sources: Sequence[ScoreSource],
    n_prune: int,
    sizes: Sequence[int],
    device: torch.device,
    out: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """`lowest_keep_keys` over non-negative scores, the entries outside each mask below all others.

    Each source returns freshly computed scores (which the selection may
    overwrite) and the mask of the entries still kept, both flat. On the
    CPU with the C kernels (`native.kernels()`) and more than `SMALL_CPU`
    entries, a kernel pass makes the keys and counts their high 16 bits;
    a second writes the masks and records the entries sharing the k-th
    key's high bits, settled apart (`_split_and_settle`), unless they are
    many; otherwise the keys are made by `nonnegative_keys`. Either way the
    masks are the same, bit for bit; `out` as in `lowest_keep_keys`.
    """
    total = sum(sizes)
    kernels = native.kernels() if device.type == "cpu" and total > min(SMALL, SMALL_CPU) else None
    if kernels is None or n_prune == 0:
        return lowest_keep_keys([lambda check, s=s: nonnegative_keys(*s(), check) for s in sources], n_prune, sizes, device, out)
    if not 0 <= n_prune <= total:
        raise ValueError(f"cannot prune {n_prune} of {total} entries")
    sources = list(sources)
    if not reevaluates(total, len(sources), device):
        sources = [(lambda pair: lambda: pair)(_flat_pair(*s())) for s in sources]  # made once, used on every pass
    else:
        sources = [lambda s=s: _flat_pair(*s()) for s in sources]
    outs = list(out) if out is not None else [None] * len(sources)
    hist = native.histogram_buffer()
    for source in sources:
        kernels.histogram(*source(), None, hist, check=True)
    prefix, below, candidates = _pick(hist[: native.BINS], n_prune)  # the high 16 bits of the k-th key
    if candidates <= max(total // FEW_CANDIDATES, SMALL_CPU):
        return _split_and_settle(kernels, sources, outs, prefix, n_prune - below, candidates)
    # many keys share the k-th key's high bits (equal scores): count their low 16 bits, then one comparison pass
    hist.zero_()
    for source in sources:
        kernels.histogram(*source(), prefix, hist)
    b, under, equal = _pick(hist[: native.BINS], n_prune - below)
    threshold, ties_left = (prefix << 16) | b, n_prune - below - under  # ties_left >= 1: the k-th entry itself is pruned
    keeps = []
    for source, o in zip(sources, outs):
        scores, mask = source()
        if ties_left == equal or ties_left == 0:  # all remaining ties pruned / none: one kernel pass
            keep = kernels.keep(scores, mask, threshold, inclusive=ties_left == 0, out=o)
        else:
            keep, ties_left, equal = _keep_sharing_ties(nonnegative_keys(scores, mask, False), threshold, ties_left, equal, o)
        keeps.append(keep)
    return keeps


def lowest_keep_held(scores: torch.Tensor, masks: Sequence[torch.Tensor], n_prune: int) -> list[torch.Tensor]:
    """`lowest_keep_nonnegative` over scores held in one tensor, written into the masks.

    `scores` (non-negative; may be overwritten) is the flat concatenation
    of the scores of the tensors whose bool `masks` (any shapes) are given
    in the same order; the masks are updated in place and returned. On the
    CPU with the C kernels and fewer than `native.PARALLEL_FROM` entries
    (LeNet-5) one kernel call does the whole selection and writes the masks
    (`select_small`); otherwise the masks are concatenated for
    `lowest_keep_nonnegative` and its keep-masks copied back.
    """
    sizes = [m.numel() for m in masks]
    total = sum(sizes)
    if scores.numel() != total:
        raise ValueError(f"{scores.numel()} scores for masks of {total} entries")
    kernels = native.kernels() if scores.device.type == "cpu" and total < native.PARALLEL_FROM else None
    if kernels is not None and 0 < n_prune <= total and all(m.is_contiguous() for m in masks):
        kernels.select_small(scores.detach().float().reshape(-1).contiguous(), list(masks), n_prune)
        return list(masks)
    flat = torch.cat([m.reshape(-1) for m in masks]) if len(masks) > 1 else masks[0].reshape(-1)
    out = [flat] if len(masks) == 1 and flat.data_ptr() == masks[0].data_ptr() else None  # one mask: in place
    keep = lowest_keep_nonnegative([lambda: (scores.reshape(-1), flat)], n_prune, [total], scores.device, out)[0]
    for m, k in zip(masks, keep.split(sizes)):
        if k.data_ptr() != m.data_ptr():
            m.copy_(k.view(m.shape))
    return list(masks)


def _split_and_settle(kernels, sources: list, outs: list, prefix: int, rank: int, candidates: int) -> list[torch.Tensor]:
    """The last pass when few keys share the k-th key's high bits `prefix`: every mask written but theirs, then theirs.

    `kernels.split` writes each mask (high bits above `prefix`: kept) and
    records the candidates in flat order; the `rank` lowest of them are
    pruned (ties in flat order), the others set kept. One score evaluation
    and one pass fewer than counting their low bits over all entries.
    """
    index = torch.empty(candidates, dtype=torch.int64)
    keys = torch.empty(candidates, dtype=torch.int32)
    spans, used = [], 0
    for source, o in zip(sources, outs):
        scores, mask = source()
        o = torch.empty_like(mask) if o is None else o
        got = kernels.split(scores, mask, prefix, o, index[used:], keys[used:])
        spans.append((o, used, used + got))
        used += got
    if candidates <= SMALL_CPU:
        kept = _lowest_keep_sorted([keys], rank)[0]
    else:
        b, under, equal = _pick(torch.bincount(keys & 0xFFFF, minlength=native.BINS), rank)
        kept = _keep_sharing_ties(keys, (prefix << 16) | b, rank - under, equal, None)[0]
    for o, a, z in spans:
        if z > a:
            o[index[a:z][kept[a:z]]] = True
    return [o for o, _, _ in spans]


def _flat_pair(scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores as flat contiguous float32 and the mask as a flat contiguous bool tensor, as the kernels read them."""
    return scores.detach().float().reshape(-1).contiguous(), mask.reshape(-1).contiguous()


def _lowest_keep_radix(
    keys: list[KeySource], n_prune: int, device: torch.device, largest: int, out: Sequence[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    outs = list(out) if out is not None else [None] * len(keys)
    if n_prune == 0:
        keeps = [torch.ones_like(k(True), dtype=torch.bool) for k in keys]  # still rejects NaN scores
        return keeps if out is None else [o.copy_(keep) for o, keep in zip(outs, keeps)]
    threshold, below, equal = kth_key(keys, n_prune, device, largest)
    ties_left = n_prune - below  # >= 1: the k-th entry itself is pruned
    keeps = []
    for source, o in zip(keys, outs):
        key = source(False)
        if ties_left == equal:  # every remaining tie is pruned (the usual case: one entry at the threshold)
            keep = torch.gt(key, threshold, out=o)
        elif ties_left == 0:  # the quota of ties is used up: the rest stay
            keep = torch.ge(key, threshold, out=o)
        else:
            keep, ties_left, equal = _keep_sharing_ties(key, threshold, ties_left, equal, o)
        keeps.append(keep)
    return keeps


def _keep_sharing_ties(key: torch.Tensor, threshold: int, ties_left: int, equal: int, out: torch.Tensor | None):
    """Keep-mask of one source when only `ties_left` of the `equal` keys at the threshold are still to be pruned.

    They are the first in flat order. Returns the mask and the quota and tie count left for the sources after it.
    """
    keep = torch.gt(key, threshold, out=out)
    ties = (key == threshold).nonzero().flatten()
    keep[ties[ties_left:]] = True  # ties beyond the quota stay
    return keep, ties_left - min(ties_left, ties.numel()), equal - ties.numel()


def _lowest_keep_sorted(keys: list[torch.Tensor], n_prune: int) -> list[torch.Tensor]:
    """The same result by one stable sort (cheaper up to `SMALL` or `SMALL_CPU` entries)."""
    flat = torch.cat(keys)
    order = torch.sort(flat, stable=True).indices
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:n_prune]] = False
    return list(keep.split([k.numel() for k in keys]))


def keep_top(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Boolean masks keeping all but the round(sparsity * N) lowest scores (flat, one per tensor)."""
    total = sum(s.numel() for s in scores)
    return lowest_keep(scores, int(round(sparsity * total)), [s.numel() for s in scores], scores[0].device)
