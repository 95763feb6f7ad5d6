"""lib.pruning.threshold: exact, deterministic lowest-k selection across tensors of any size."""

from __future__ import annotations

import pytest
import torch

from lib.pruning import native, threshold
from lib.pruning.threshold import keep_top, lowest_keep, order_keys


def reference(tensors, n_prune):
    """Prune the n lowest by a stable sort of everything: ties go in flat index order."""
    flat = torch.cat([t.reshape(-1) for t in tensors]) + 0.0  # -0.0 == 0.0
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:n_prune]] = False
    return keep


PATHS = ["sort", "radix-cpu", "radix-cpu-flat", "radix-cuda"]


def force(path, monkeypatch):
    """Make these small inputs take `path` through lowest_keep_keys."""
    if path == "radix-cpu-flat":
        monkeypatch.setattr(threshold, "SMALL_CPU", 0)  # one concatenated tensor of keys, as up to SMALL entries
    elif path != "sort":
        monkeypatch.setattr(threshold, "SMALL", 0)  # the radix select over each source


@pytest.mark.parametrize("path", PATHS)
def test_matches_a_stable_sort_with_ties_infinities_and_signed_zeros(path, monkeypatch):
    force(path, monkeypatch)
    # "cuda": the GPU path (keys held at once, 11/11/10-bit passes), run here on CPU tensors
    device = torch.device("cuda" if path == "radix-cuda" else "cpu")
    g = torch.Generator().manual_seed(0)
    for trial in range(150):
        tensors = [torch.randint(-4, 5, (int(torch.randint(1, 40, (), generator=g)),), generator=g).float() / 3
                   for _ in range(int(torch.randint(1, 5, (), generator=g)))]
        tensors[0][0] = float("-inf") if trial % 3 == 0 else tensors[0][0]
        tensors[-1][-1] = -0.0 if trial % 4 == 0 else tensors[-1][-1]
        n = sum(t.numel() for t in tensors)
        k = int(torch.randint(0, n + 1, (), generator=g))
        got = torch.cat(lowest_keep(tensors, k, [t.numel() for t in tensors], device))
        assert torch.equal(got, reference(tensors, k)), f"trial {trial}"


@pytest.mark.parametrize("device,sources,evaluations", [("cpu", 3, 3), ("cpu", 1, 1), ("cuda", 3, 1)])
def test_callables_are_evaluated_per_pass_on_the_cpu_else_once_with_the_same_masks(device, sources, evaluations, monkeypatch):
    """The CPU calls several sources on each pass (histogram of the high bits, of the low bits, then the masks)."""
    monkeypatch.setattr(threshold, "SMALL", 0)
    tensors = [torch.randn(1000, generator=torch.Generator().manual_seed(i)) for i in range(sources)]
    calls = []

    def source(i):
        def f():
            calls.append(i)
            return tensors[i]
        return f

    # "cuda": the GPU path (keys held as one tensor), run here on CPU tensors
    lazy = lowest_keep([source(i) for i in range(sources)], 1234 * sources // 3, [1000] * sources, torch.device(device))
    eager = lowest_keep(tensors, 1234 * sources // 3)
    assert all(torch.equal(a, b) for a, b in zip(lazy, eager))
    assert calls.count(0) == evaluations
    assert threshold.reevaluates(1000 * sources, sources, torch.device(device)) == (evaluations == 3)


def test_exact_above_the_sixteen_million_elements_quantile_refuses():
    n = (1 << 24) + 5
    x = torch.rand(n, generator=torch.Generator().manual_seed(3))
    k = n // 3
    keep = lowest_keep([x], k)[0]
    assert int((~keep).sum()) == k
    assert x[~keep].max() <= x[keep].min()
    assert x[~keep].max() == torch.kthvalue(x, k).values


def test_all_ties_are_broken_in_index_order():
    keep = lowest_keep([torch.zeros(5), torch.zeros(5)], 7)
    assert torch.cat(keep).tolist() == [False] * 7 + [True] * 3


def test_edges_and_errors():
    x = torch.tensor([3.0, 1.0, 2.0])
    assert lowest_keep([x], 0)[0].all() and not lowest_keep([x], 3)[0].any()
    assert keep_top([x], 1 / 3)[0].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="NaN"):
        lowest_keep([torch.tensor([1.0, float("nan")])], 1)
    with pytest.raises(ValueError, match="cannot prune 4 of 3"):
        lowest_keep([x], 4)


def test_keys_keep_float_order_for_every_dtype():
    x = torch.tensor([-float("inf"), -2.5, -1e-30, -0.0, 0.0, 1e-30, 2.5, float("inf")])
    keys = order_keys(x)
    assert torch.equal(torch.sort(keys, stable=True).indices, torch.arange(8))
    assert keys[3] == keys[4]  # -0.0 ties with +0.0
    assert torch.equal(order_keys(x.to(torch.bfloat16)), order_keys(x.to(torch.bfloat16).float()))


@pytest.mark.parametrize("path", PATHS)
def test_nonnegative_keys_select_like_masked_scores(path, monkeypatch):
    """Keys made in place from non-negative scores prune what -inf-filled scores prune, pruned entries first.

    Every other trial writes the masks into `out`: the very masks the key sources read, as Pruner does.
    """
    force(path, monkeypatch)
    device = torch.device("cuda" if path == "radix-cuda" else "cpu")
    g = torch.Generator().manual_seed(1)
    for trial in range(100):
        sizes = [int(torch.randint(1, 40, (), generator=g)) for _ in range(int(torch.randint(1, 5, (), generator=g)))]
        scores = [torch.randint(0, 6, (n,), generator=g).float() / 4 for n in sizes]  # ties and exact zeros
        scores[0][0] = float("inf") if trial % 5 == 0 else scores[0][0]
        kept = [torch.rand(n, generator=g) > 0.3 for n in sizes]
        pruned = sum(int((~m).sum()) for m in kept)
        k = int(torch.randint(pruned, sum(sizes) + 1, (), generator=g))
        masked = [s.masked_fill(~m, float("-inf")) for s, m in zip(scores, kept)]
        was_kept = torch.cat(kept)
        sources = [lambda check, s=s, m=m: threshold.nonnegative_keys(s.clone(), m, check) for s, m in zip(scores, kept)]
        out = kept if trial % 2 else None
        keeps = threshold.lowest_keep_keys(sources, k, sizes, device, out=out)
        if out is not None:
            assert all(a is b for a, b in zip(keeps, out))
        got = torch.cat(keeps)
        assert torch.equal(got, reference(masked, k)), f"trial {trial}"
        assert not (got & ~was_kept).any()  # masks only grow


@pytest.mark.parametrize("path", ["c-kernels-split", "c-kernels-count", "torch"])
@pytest.mark.parametrize("setting", ["SMALL_CPU", "SMALL"], ids=["held", "per-pass"])
def test_lowest_keep_nonnegative_prunes_what_masked_scores_prune(path, setting, monkeypatch):
    """Non-negative scores with masks: the C kernels and torch operations give the reference masks, ties shared in order.

    "held": sources called once (SMALL_CPU = 0: above it, the kernels run); "per-pass": called on every pass (SMALL = 0).
    The kernels' last pass either records the keys in the k-th key's 16-bit bin and settles them apart ("split": with
    SMALL_CPU = 0 by their low bits' histogram, else by a sort) or counts their low bits over all keys first ("count").
    """
    if path == "torch":
        monkeypatch.setattr(native, "kernels", lambda: None)
    else:
        assert native.kernels() is not None, "the C kernels did not build"
        monkeypatch.setattr(threshold, "FEW_CANDIDATES", 1 if path.endswith("split") else 10**9)
        if path.endswith("count"):
            monkeypatch.setattr(threshold, "SMALL_CPU", 0)
    monkeypatch.setattr(threshold, setting, 0)
    g = torch.Generator().manual_seed(2)
    for trial in range(100):
        sizes = [int(torch.randint(1, 40, (), generator=g)) for _ in range(int(torch.randint(1, 5, (), generator=g)))]
        scores = [torch.randint(0, 6, (n,), generator=g).float() / 4 for n in sizes]
        scores[-1][0] = float("inf") if trial % 5 == 0 else scores[-1][0]
        kept = [torch.rand(n, generator=g) > 0.3 for n in sizes]
        pruned = sum(int((~m).sum()) for m in kept)
        k = int(torch.randint(pruned, sum(sizes) + 1, (), generator=g))
        expected = reference([s.masked_fill(~m, float("-inf")) for s, m in zip(scores, kept)], k)
        sources = [lambda s=s, m=m: (s.clone(), m) for s, m in zip(scores, kept)]
        out = kept if trial % 2 else None  # the masks the sources read, written in place
        keeps = threshold.lowest_keep_nonnegative(sources, k, sizes, torch.device("cpu"), out=out)
        assert torch.equal(torch.cat(keeps), expected), f"trial {trial}"
        if out is not None:
            assert all(a is b for a, b in zip(keeps, out))


def test_lowest_keep_nonnegative_rejects_nan_through_the_kernels(monkeypatch):
    monkeypatch.setattr(threshold, "SMALL_CPU", 0)
    scores = torch.tensor([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="NaN"):
        threshold.lowest_keep_nonnegative([lambda: (scores, torch.ones(3, dtype=torch.bool))], 1, [3], torch.device("cpu"))


def test_nonnegative_keys_reject_nan_and_negative_scores():
    keep = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match="NaN"):
        threshold.nonnegative_keys(torch.tensor([1.0, float("nan"), 0.0]), keep)
    with pytest.raises(ValueError, match="negative"):
        threshold.nonnegative_keys(torch.tensor([1.0, -2.0, 0.0]), keep)
    keys = threshold.nonnegative_keys(torch.tensor([0.0, 2.0, float("inf")]), torch.tensor([True, False, True]))
    assert keys.dtype == torch.int32 and keys.tolist() == [1, 0, threshold.INF_KEY + 1]


@pytest.mark.parametrize("shift,width", [(0, 16), (10, 11), (0, 10)])
def test_bin_histogram_equals_selecting_the_bin_even_at_the_int32_ends(shift, width):
    lo, hi = threshold.INT32_MIN, threshold.INT32_MAX
    g = torch.Generator().manual_seed(2)
    edges = torch.tensor([lo, lo + 1, lo + 5000, -1, 0, 1, 70000, hi - 5000, hi - 1, hi], dtype=torch.int32)
    key = torch.cat([edges, torch.randint(lo, hi, (5000,), generator=g, dtype=torch.int64).to(torch.int32)])
    for k in edges.tolist():
        prefix = k >> (shift + width)
        expected = torch.bincount((key[(key >> (shift + width)) == prefix] >> shift) & ((1 << width) - 1), minlength=1 << width)
        assert torch.equal(threshold._bin_histogram(key, prefix, shift, width), expected), (k, shift, width)


@pytest.mark.parametrize("path", ["c-kernels", "torch", "above-small"])
def test_lowest_keep_held_writes_what_masked_scores_prune_into_the_masks(path, monkeypatch):
    """One flat score tensor over several masks: one kernel call, or (no kernels, or from PARALLEL_FROM entries) the
    concatenated masks through lowest_keep_nonnegative, copied back; a channels_last mask takes the second way too."""
    if path == "torch":
        monkeypatch.setattr(native, "kernels", lambda: None)
    elif path == "above-small":
        monkeypatch.setattr(native, "PARALLEL_FROM", 0)
        monkeypatch.setattr(threshold, "SMALL_CPU", 0)
    g = torch.Generator().manual_seed(4)
    for trial in range(60):
        sizes = [int(torch.randint(1, 40, (), generator=g)) for _ in range(int(torch.randint(1, 5, (), generator=g)))]
        scores = [torch.randint(0, 6, (n,), generator=g).float() / 4 for n in sizes]
        kept = [torch.rand(n, generator=g) > 0.3 for n in sizes]
        if trial % 4 == 0:  # a conv weight's mask in channels_last: not contiguous
            sizes[0], scores[0] = 24, torch.randint(0, 6, (24,), generator=g).float() / 4
            kept[0] = (torch.rand(2, 3, 2, 2, generator=g) > 0.3).contiguous(memory_format=torch.channels_last)
        pruned = sum(int((~m).sum()) for m in kept)
        k = int(torch.randint(pruned, sum(sizes) + 1, (), generator=g))
        expected = reference([s.masked_fill(~m.reshape(-1), float("-inf")) for s, m in zip(scores, kept)], k)
        masks = [m.clone(memory_format=torch.preserve_format) for m in kept]
        got = threshold.lowest_keep_held(torch.cat(scores), masks, k)
        assert all(a is b for a, b in zip(got, masks))
        assert torch.equal(torch.cat([m.reshape(-1) for m in masks]), expected), f"trial {trial}"
