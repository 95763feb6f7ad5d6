"""lib.pruning.masking: in-place boolean-mask multiplies, staged or batched, equal a plain multiply."""

from __future__ import annotations

import torch

from lib.pruning import masking, native


def test_matches_a_plain_multiply_small_staged_and_strided(monkeypatch):
    monkeypatch.setattr(masking, "CPU_CHUNK", 7)  # the 5x9 tensor goes through several chunks and a ragged last one
    gen = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(5, 9, generator=gen),  # staged
        torch.randn(2, 3, generator=gen).double(),  # small: one multi-tensor call
        torch.randn(6, 4, generator=gen).t(),  # not contiguous: plain multiply
        torch.randint(0, 100, (3, 5), generator=gen, dtype=torch.int32),  # int keys, staged in their own dtype
    ]
    masks = [torch.rand(t.shape, generator=gen) > 0.4 for t in tensors]
    expected = [t * m for t, m in zip(tensors, masks)]
    masking.mask_multiply_(tensors, masks)
    for t, e in zip(tensors, expected):
        assert t.dtype == e.dtype and torch.equal(t, e)


def test_empty_list_is_a_no_op():
    masking.mask_multiply_([], [])


def test_small_tensors_take_one_multi_tensor_call_with_the_same_result():
    """Below CPU_CHUNK everything goes to one _foreach_mul_ with the uint8 factors, as gradient masking does."""
    gen = torch.Generator().manual_seed(1)
    tensors = [torch.randn(4, 6, generator=gen), torch.randn(3, generator=gen).double(), torch.randn(5, 2, generator=gen).t()]
    masks = [torch.rand(t.shape, generator=gen) > 0.5 for t in tensors]
    expected = [t * m for t, m in zip(tensors, masks)]
    factors = masking.multiplier_factors(masks)
    assert all(f.dtype == torch.uint8 and f.data_ptr() == m.data_ptr() for f, m in zip(factors, masks))
    masking.multiply_by_factors_(tensors, factors)
    for t, e in zip(tensors, expected):
        assert torch.equal(t, e)


def test_the_c_kernels_and_torch_multiplies_zero_the_same_entries(monkeypatch):
    """On the CPU the kernels clear the pruned entries; without them (no compiler) torch multiplies: the same values."""
    gen = torch.Generator().manual_seed(2)
    shapes = [(50, 4), (3,), (7, 2, 3)]
    originals = [torch.randn(s, generator=gen) for s in shapes]
    masks = [torch.rand(s, generator=gen) > 0.3 for s in shapes]
    results = []
    for off in (False, True):
        tensors = [t.clone() for t in originals]
        if off:
            with native.disabled():
                masking.mask_multiply_(tensors, masks)
        else:
            kernels, taken = native.kernels(), []
            assert kernels is not None, "the C kernels did not build"
            zero = kernels.zero
            monkeypatch.setattr(kernels, "zero", lambda *a: taken.append(zero(*a)) or taken[-1])
            masking.mask_multiply_(tensors, masks)
            assert taken == [True]
        results.append(tensors)
    for a, b, m in zip(*results, masks):
        assert torch.equal(a, b) and not a[~m].any()


def test_standing_masks_zero_fresh_tensors_and_skip_missing_ones_with_and_without_kernels():
    """Masks read once (gradient masking after every backward): the kernels' result equals torch's, None is skipped."""
    gen = torch.Generator().manual_seed(3)
    masks = [torch.rand(s, generator=gen) > 0.4 for s in [(30, 2), (7,), (3, 4, 5)]]
    standing = masking.StandingMasks(masks)
    assert standing.prepared is not None
    for off in (False, True):
        for missing in (None, 1):
            tensors = [torch.randn(m.shape, generator=gen) for m in masks]
            expected = [t * m for t, m in zip(tensors, masks)]
            if missing is not None:
                tensors[missing] = None
            if off:
                with native.disabled():
                    standing.zero_(tensors)
            else:
                standing.zero_(tensors)
            for t, e in zip(tensors, expected):
                assert t is None or torch.equal(t, e)
