"""lib.pruning.threshold: the selection equals a stable-sort oracle, exactly, on every size and thread count."""

from __future__ import annotations

import pytest
import torch

from lib.pruning.threshold import INF_KEY, keep_top, lowest_keep, order_keys


def oracle(scores, n_prune, kept=None):
    """Stable sort of the float32 scores, already-pruned entries first; the first n_prune are pruned.

    Independent of the keys: the pruned entries (all equal among themselves:
    flat order) go first by a second stable sort on the kept flag, and -0.0
    becomes +0.0 by adding 0.0.
    """
    values = torch.cat([s.detach().reshape(-1).float() for s in scores]) + 0.0
    if kept is not None:
        flag = torch.cat([m.reshape(-1) for m in kept])
        values[~flag] = 0.0
    order = torch.sort(values, stable=True).indices
    if kept is not None:
        order = order[torch.sort(flag.to(torch.uint8)[order], stable=True).indices]
    keep = torch.ones(values.numel(), dtype=torch.bool)
    keep[order[:n_prune]] = False
    return keep


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def group(n: int, kind: str, seed: int):
    """Three tensors of about n entries together (one 2-D, one channels_last 4-D), their kept masks and a count to prune."""
    g = torch.Generator().manual_seed(seed)
    a, b = n // 5, n // 3
    shapes = [(a,), (b // 8, 8) if b >= 8 else (b,), (n - a - b,)]
    if kind == "all-equal":
        scores = [torch.full(s, 0.25) for s in shapes]
    else:  # few distinct values: many ties at any threshold; signed, with zeros of both signs
        scores = [torch.randint(-50, 51, s, generator=g).float() / 7 for s in shapes]
        scores[0][: a // 2] *= -0.0
    if n - a - b >= 48:  # the last tensor as a conv weight in channels_last: flat order is still row-major
        c = (n - a - b) // 48 * 48
        last = scores[2][:c].reshape(-1, 3, 4, 4).contiguous(memory_format=torch.channels_last)
        scores[2] = last
    kept = [torch.rand(s.shape, generator=g) > 0.3 for s in scores]
    if scores[2].dim() == 4:
        kept[2] = kept[2].contiguous(memory_format=torch.channels_last)
    total = sum(s.numel() for s in scores)
    pruned = sum(int((~m).sum()) for m in kept)
    n_prune = int(torch.randint(pruned, total + 1, (), generator=g))
    return scores, kept, n_prune


@pytest.mark.parametrize("kind", ["ties", "all-equal"])
@pytest.mark.parametrize("n", [1_000, 10_000, 100_000, 1_000_000])
def test_equals_the_stable_sort_oracle(n, kind, threads):
    scores, kept, n_prune = group(n, kind, seed=n + threads)
    got = torch.cat(lowest_keep(scores, n_prune, kept))
    assert torch.equal(got, oracle(scores, n_prune, kept))
    assert int((~got).sum()) == n_prune
    assert not (got & ~torch.cat([m.reshape(-1) for m in kept])).any()  # masks only grow
    fresh = torch.cat(lowest_keep(scores, n_prune // 2))  # nothing pruned before
    assert torch.equal(fresh, oracle(scores, n_prune // 2))


def test_equals_the_oracle_at_twenty_million_entries():
    """The largest size once (a few seconds): ties, pre-pruned entries, three tensors."""
    scores, kept, n_prune = group(20_000_000, "ties", seed=7)
    assert torch.equal(torch.cat(lowest_keep(scores, n_prune, kept)), oracle(scores, n_prune, kept))


def test_small_groups_with_infinities_signed_zeros_and_huge_values():
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        tensors = [torch.randint(-4, 5, (int(torch.randint(1, 40, (), generator=g)),), generator=g).float() / 3
                   for _ in range(int(torch.randint(1, 5, (), generator=g)))]
        tensors[0][0] = float("-inf") if trial % 3 == 0 else tensors[0][0]
        tensors[-1][-1] = float("inf") if trial % 5 == 0 else -0.0
        tensors[0] = tensors[0] * (1e30 if trial % 7 == 0 else 1.0)
        kept = [torch.rand(t.shape, generator=g) > 0.3 for t in tensors] if trial % 2 else None
        n = sum(t.numel() for t in tensors)
        k = int(torch.randint(0, n + 1, (), generator=g))
        assert torch.equal(torch.cat(lowest_keep(tensors, k, kept)), oracle(tensors, k, kept)), f"trial {trial}"


def test_already_pruned_entries_go_first_whatever_their_scores():
    scores = [torch.tensor([5.0, -float("inf"), 1.0]), torch.tensor([9.0, 0.0])]
    kept = [torch.tensor([False, True, True]), torch.tensor([False, True])]
    keep = lowest_keep(scores, 3, kept)
    assert [k.tolist() for k in keep] == [[False, False, True], [False, True]]


def test_all_ties_are_broken_in_index_order_tensor_by_tensor():
    keep = lowest_keep([torch.zeros(5), torch.zeros(2, 3)], 7)
    assert torch.cat(keep).tolist() == [False] * 7 + [True] * 4


def test_other_float_dtypes_are_compared_as_float32():
    x = torch.tensor([3.0, 1.0, 2.0, 1.0])
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        assert lowest_keep([x.to(dtype)], 2)[0].tolist() == [True, False, True, False]
    close = torch.tensor([1.0 + 1e-12, 1.0], dtype=torch.float64)  # equal as float32: a tie, pruned in index order
    assert lowest_keep([close], 1)[0].tolist() == [False, True]


def test_nan_is_an_error_that_names_it():
    for nan in (float("nan"), -float("nan")):
        with pytest.raises(ValueError, match="pruning scores contain NaN"):
            lowest_keep([torch.tensor([1.0, 2.0]), torch.tensor([0.5, nan])], 1)
    with pytest.raises(ValueError, match="NaN"):  # also where the entry is already pruned, and with nothing to prune
        lowest_keep([torch.tensor([nan, 1.0])], 0, [torch.tensor([False, True])])


def test_edges_and_errors():
    x = torch.tensor([3.0, 1.0, 2.0])
    assert lowest_keep([x], 0)[0].all() and not lowest_keep([x], 3)[0].any()
    assert keep_top([x], 1 / 3)[0].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="cannot prune 4 of 3"):
        lowest_keep([x], 4)


def test_keys_keep_the_float_order():
    x = torch.tensor([-float("inf"), -2.5, -1e-30, -0.0, 0.0, 1e-30, 2.5, float("inf")])
    keys = order_keys(x)
    assert keys.dtype == torch.int32
    assert torch.equal(torch.sort(keys, stable=True).indices, torch.arange(8))
    assert keys[3] == keys[4] == 0  # -0.0 ties with +0.0
    assert keys[0] == -INF_KEY and keys[-1] == INF_KEY
    assert abs(int(order_keys(torch.tensor([float("nan")]))[0])) > INF_KEY
    assert torch.equal(order_keys(x.to(torch.bfloat16)), order_keys(x.to(torch.bfloat16).float()))
