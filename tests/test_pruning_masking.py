"""lib.pruning.masking: one multi-tensor multiply by bool masks equals a plain multiply, None tensors skipped."""

from __future__ import annotations

import pytest
import torch

from lib.pruning.masking import mask_multiply_


def test_equals_a_plain_multiply_for_every_dtype_and_layout():
    gen = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(5, 9, generator=gen),
        torch.randn(2, 3, generator=gen).double(),
        torch.randn(6, 4, generator=gen).t(),  # not contiguous
        torch.randn(2, 3, 4, 4, generator=gen).contiguous(memory_format=torch.channels_last),
        torch.randn(7, generator=gen).bfloat16(),
    ]
    masks = [torch.rand(t.shape, generator=gen) > 0.4 for t in tensors]
    masks[3] = masks[3].contiguous(memory_format=torch.channels_last)
    expected = [t * m for t, m in zip(tensors, masks)]
    mask_multiply_(tensors, masks)
    for t, e, m in zip(tensors, expected, masks):
        assert t.dtype == e.dtype and torch.equal(t, e)
        assert not t[~m].any()


def test_none_tensors_are_skipped_and_an_empty_list_is_a_no_op():
    mask_multiply_([], [])
    masks = [torch.tensor([True, False]), torch.tensor([False, True])]
    kept = torch.tensor([3.0, 4.0])
    mask_multiply_([None, kept], masks)
    assert kept.tolist() == [0.0, 4.0]


def test_parameters_are_zeroed_in_place_outside_no_grad():
    """Leaf tensors that require grad (weights) are multiplied in place: the same storage, no autograd error."""
    w = torch.nn.Parameter(torch.ones(4))
    before = w.data_ptr()
    mask_multiply_([w], [torch.tensor([True, False, True, False])])
    assert w.data_ptr() == before and w.tolist() == [1.0, 0.0, 1.0, 0.0] and w.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_with_bool_masks():
    tensors = [torch.randn(33, 17, device="cuda"), torch.randn(5, device="cuda", dtype=torch.float16)]
    masks = [torch.rand(t.shape, device="cuda") > 0.5 for t in tensors]
    expected = [t * m for t, m in zip(tensors, masks)]
    mask_multiply_(tensors, masks)
    assert all(torch.equal(t, e) for t, e in zip(tensors, expected))
