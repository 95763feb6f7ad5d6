"""Granularity selection (lib/pruning/granularity.py): N:M patterns and whole units, through the pruner."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib import pruning
from lib.pruning.base import Pruner
from lib.pruning.granularity import (ChannelSelection, Granularity, UnitPlan, nm_candidates, nm_eligible, nm_keep,
                                     unit_order_ranks)
from lib.pruning.magnitude import MagnitudePruner
from lib.pruning.schedule import SparsitySchedule
from lib.pruning.threshold import lowest_keep
from lenet5.model import LeNet5
from pruning_loop import MAGNITUDE, parse, refusal, state, train_steps

class Net(nn.Module):
    """Linear layers whose inputs groups of 4 and 8 tile, a convolution (groups along in-channels) and one that stays dense."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 12, 3)
        self.fc1 = nn.Linear(16, 24)
        self.fc2 = nn.Linear(24, 8)
        self.odd = nn.Linear(6, 5)


class RandomScores(Pruner):
    """Fresh random scores at every call: the selection must hold its invariants whatever the scores."""

    name = "random"

    def __init__(self, *args, seed=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.gen = torch.Generator().manual_seed(seed)

    def score(self, index):
        return torch.randn(self.params[index][1].shape, generator=self.gen)


def groups_of(mask: torch.Tensor, m: int) -> torch.Tensor:
    """Pruned entries per group of m along dim 1, at every (out, kernel position)."""
    return (~mask).movedim(1, -1).reshape(-1, mask.shape[1] // m, m).sum(-1)


# Parsing --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind, n, m, top", [
    ("element", "element", 0, 0, 1.0), ("channel", "channel", 0, 0, 1.0), ("2:4", "nm", 2, 4, 0.5),
    ("1:4", "nm", 1, 4, 0.75), (" 4:8 ", "nm", 4, 8, 0.5),
])
def test_granularity_forms(text, kind, n, m, top):
    g = Granularity.parse(text)
    assert (g.kind, g.n, g.m, g.max_sparsity) == (kind, n, m, top)
    assert Granularity.parse(str(g)) == g


@pytest.mark.parametrize("text, message", [
    ("block", "unknown pruning granularity 'block'; valid: element, channel, or N:M such as 2:4"),
    ("4:2", "N:M needs 0 < N < M"), ("0:4", "N:M needs 0 < N < M"), ("2:2", "N:M needs 0 < N < M"),
    ("2/4", "valid: element, channel, or N:M such as 2:4"),
])
def test_bad_granularity_is_a_value_error_listing_the_forms(text, message):
    with pytest.raises(ValueError, match=message):
        Granularity.parse(text)


# N:M ------------------------------------------------------------------------------------------------------------


def test_nm_candidates_are_the_lowest_of_each_group_pruned_first_ties_by_position():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, -0.0, 0.0, 0.0]])
    kept = torch.tensor([[True, True, False, True, True, True, True, True]])
    cand = nm_candidates(score, kept, 2, 4)
    # first group: pruned entry 2 first, then the lowest (1.0); second: all equal (-0.0 == 0.0), the first two
    assert cand.tolist() == [[False, True, True, False, True, True, False, False]]


def oracle_nm(scores, kept, n_prune, n, m):
    """Candidates by a stable sort per group of m; then a stable sort of all candidates, pruned first."""
    flat_rank = []
    for t, (s, k) in enumerate(zip(scores, kept)):
        sg = s.movedim(1, -1).reshape(-1, m)
        kg = k.movedim(1, -1).reshape(-1, m)
        index = torch.arange(s.numel()).view(s.shape).movedim(1, -1).reshape(-1, m)
        for row in range(sg.shape[0]):
            order = sorted(range(m), key=lambda j: (bool(kg[row, j]), float(sg[row, j])))[: m - n]
            for j in order:
                flat_rank.append((bool(kg[row, j]), float(sg[row, j]), t, int(index[row, j])))
    flat_rank.sort(key=lambda r: (r[0], r[1], r[2], r[3]))
    keep = [torch.ones(s.numel(), dtype=torch.bool) for s in scores]
    for _, _, t, i in flat_rank[:n_prune]:
        keep[t][i] = False
    return keep


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8)])
def test_nm_keep_equals_the_sort_oracle(n, m):
    gen = torch.Generator().manual_seed(n * 10 + m)
    scores = [torch.randn(6, 16, generator=gen), torch.randn(4, 8, 3, 3, generator=gen).round()]  # ties in the conv
    kept = [torch.rand(s.shape, generator=gen) > 0.1 for s in scores]
    for k in kept:  # a valid state: at most m - n pruned per group
        g = k.movedim(1, -1).reshape(-1, m)
        g[(~g).sum(-1) > m - n] = True
    total = sum(s.numel() for s in scores)
    pruned = sum(int((~k).sum()) for k in kept)
    for n_prune in (pruned, pruned + 7, total * (m - n) // m):
        got = nm_keep(scores, kept, n_prune, n, m)
        want = oracle_nm(scores, kept, n_prune, n, m)
        assert [g.tolist() for g in got] == [w.tolist() for w in want]
        assert sum(int((~g).sum()) for g in got) == n_prune


def test_nm_keep_never_takes_a_non_candidate_even_at_infinite_scores_and_refuses_nan():
    scores = [torch.tensor([[float("inf"), float("inf"), 1.0, 2.0]])]
    kept = [torch.ones(1, 4, dtype=torch.bool)]
    keep = nm_keep(scores, kept, 2, 2, 4)[0]
    assert keep.view(-1).tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="NaN"):
        nm_keep([torch.tensor([[float("nan"), 1.0, 2.0, 3.0]])], kept, 1, 2, 4)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_two_of_four_every_group_after_the_ramp_exact_count_masks_only_grow(scope):
    torch.manual_seed(0)
    model = Net()
    schedule = SparsitySchedule(0.5, warmup=3, ramp_end=20, kind="cubic")
    pruner = RandomScores(model, schedule, 2, granularity="2:4", scope=scope)
    assert pruner.dense_tensors == ["odd.weight"]
    assert [n for n, _ in pruner.params] == ["conv.weight", "fc1.weight", "fc2.weight"]
    before = [m.clone() for m in pruner.mask_list()]
    for step in range(1, 31):
        pruner.step()
        masks = pruner.mask_list()
        for mask, old in zip(masks, before):
            assert (mask <= old).all(), "a pruned entry came back"
            assert groups_of(mask, 4).max() <= 2
        level = pruner.sparsity
        groups = pruner.allocation(level)
        for idx, count in groups:
            assert sum(int((~masks[i]).sum()) for i in idx) == count
        if step >= schedule.ramp_end:
            for mask in masks:
                assert (groups_of(mask, 4) == 2).all()
        before = [m.clone() for m in masks]
    assert not hasattr(model.odd, "pruning_mask_weight")  # left dense: no mask at all


def test_nm_conv_groups_run_along_input_channels_at_each_output_and_kernel_position():
    model = nn.Sequential(nn.Conv2d(8, 3, 2))
    pruner = MagnitudePruner(model, SparsitySchedule(0.5, 0, 1), granularity="2:4")
    pruner.step()
    mask = model[0].pruning_mask_weight
    assert mask.shape == (3, 8, 2, 2)
    per_group = (~mask).view(3, 2, 4, 2, 2).sum(2)  # in-channels 0-3 and 4-7 at each (out, kh, kw)
    assert (per_group == 2).all()
    w = model[0].weight.detach().abs().view(3, 2, 4, 2, 2)
    kept_low = torch.where(mask.view(3, 2, 4, 2, 2), w, torch.inf).amin(2)
    pruned_high = torch.where(mask.view(3, 2, 4, 2, 2), -torch.inf, w).amax(2)
    assert (pruned_high <= kept_low).all()  # the two lowest of each group went


@pytest.mark.parametrize("method", ["magnitude", "movement", "state"])
def test_every_method_trains_at_n_m(method):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    options = {"variant": "bitter7"} if method == "state" else {}
    pruner = pruning.build(method, model, SparsitySchedule(0.75, 2, 8, "linear"), 2, opt, granularity="1:4", **options)
    x, y = torch.randn(32, 8), torch.randn(32, 4)
    train_steps(pruner, opt, lambda: nn.functional.mse_loss(model(x), y), 10)
    for mask, (_, p) in zip(pruner.mask_list(), pruner.params):
        assert (groups_of(mask, 4) == 3).all()
        assert (p[~mask] == 0).all()
    assert pruner.summary()["achieved_sparsity"] == 0.75


def test_nm_refuses_a_target_above_the_pattern_and_layer_adaptive_levels():
    with pytest.raises(ValueError, match=r"target sparsity 0.6 is above what 2:4 allows: at most \(M-N\)/M = 0.5"):
        MagnitudePruner(Net(), SparsitySchedule(0.6, 0, 1), granularity="2:4")
    with pytest.raises(ValueError, match="granularity 2:4 is not supported; use element"):
        MagnitudePruner(Net(), SparsitySchedule(0.5, 0, 1), granularity="2:4", scope="adaptive")
    with pytest.raises(ValueError, match="input dimension 2:4 cannot group"):
        MagnitudePruner(nn.Linear(6, 3), SparsitySchedule(0.5, 0, 1), granularity="2:4")


def test_nm_summary_names_the_pattern_and_the_dense_tensors():
    pruner = MagnitudePruner(LeNet5(), SparsitySchedule(0.5, 0, 1), granularity="2:4")
    pruner.step()
    s = pruner.summary()
    assert s["granularity"] == "2:4" == s["pattern"]
    assert s["dense_tensors"] == ["features.0.weight", "features.3.weight"]  # 1 and 6 input channels
    assert s["achieved_sparsity"] == 0.5
    assert nm_eligible((84, 120), 4) and not nm_eligible((120,), 4) and not nm_eligible((16, 6, 5, 5), 4)


# Channel selection (hand-built units: two hidden layers of a small MLP) ------------------------------------------


class TwoHidden:
    """fc1 [a, i], fc2 [b, a], fc3 [o, b]: units are fc1's and fc2's output neurons (rows, and the next layer's columns)."""

    def __init__(self, a=6, b=10, i=5, o=3):
        from lib.pruning.channels import ChannelGroup, Slice

        self.shapes = [(a, i), (b, a), (o, b)]
        self.params = [(f"fc{k + 1}.weight", torch.zeros(shape)) for k, shape in enumerate(self.shapes)]
        self.groups = [ChannelGroup("fc1", a, [Slice(0, 0, torch.arange(a)), Slice(1, 1, torch.arange(a))], "neuron"),
                       ChannelGroup("fc2", b, [Slice(1, 0, torch.arange(b)), Slice(2, 1, torch.arange(b))], "neuron")]
        self.units = [a, b]

    def masks_of(self, keeps):
        from lib.pruning import channels

        return channels.unit_masks(self.groups, keeps, self.params)

    def unit_scores(self, scores):
        from lib.pruning import channels

        return channels.unit_scores(self.groups, scores)

    def unit_kept(self, masks):
        return [u > 0 for u in self.unit_scores([m.float() for m in masks])]


def test_unit_ranks_are_lowest_keeps_order():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(40, generator=gen).round()  # ties
    kept = torch.rand(40, generator=gen) > 0.2
    ranks = unit_order_ranks(scores, kept)
    for k in (0, int((~kept).sum()), 25, 39):
        if k >= int((~kept).sum()):
            assert torch.equal(ranks >= k, lowest_keep([scores], k, [kept])[0])


def test_channel_selection_reaches_each_level_within_one_unit_same_fraction_masks_grow():
    net = TwoHidden()
    sizes = [a * b for a, b in net.shapes]
    total = sum(sizes)
    sel = ChannelSelection(net.groups, net.shapes, [UnitPlan([0, 1], [0, 1, 2])])
    gen = torch.Generator().manual_seed(0)
    masks = [torch.ones(s, dtype=torch.bool) for s in net.shapes]
    unit_size = max(net.shapes[0][1] + net.shapes[1][0], net.shapes[1][1] + net.shapes[2][0])  # entries of the biggest unit
    for level in (0.1, 0.2, 0.35, 0.5, 0.7, 0.8):
        scores = net.unit_scores([torch.rand(s, generator=gen) for s in net.shapes])
        keeps, counts = sel.select(scores, net.unit_kept(masks), [round(level * total)])
        new = net.masks_of(keeps)
        for old, m in zip(masks, new):
            assert (m <= old).all()
        zeros = sum(int((~m).sum()) for m in new)
        assert zeros == sel.zeros(keeps, [0, 1, 2])  # counted from the keep vectors' sums
        assert abs(zeros - level * total) <= unit_size
        fractions = [int(c) / u for c, u in zip(counts, net.units)]
        assert abs(fractions[0] - fractions[1]) <= max(1 / u for u in net.units) + 1e-9
        assert all(int(k.sum()) >= 1 for k in keeps)
        masks = new
    assert sel.capacity(0) == sum(int((~m).sum()) for m in net.masks_of([torch.arange(u) == 0 for u in net.units]))


def test_channel_selection_plans_count_their_own_tensors():
    net = TwoHidden(a=8, b=8)
    sel = ChannelSelection(net.groups, net.shapes, [UnitPlan([0], [0]), UnitPlan([1], [1, 2])])
    scores = net.unit_scores([torch.rand(s) for s in net.shapes])
    kept = [torch.ones(u, dtype=torch.bool) for u in net.units]
    keeps, counts = sel.select(scores, kept, [20, 0])
    assert counts.tolist() == [4, 0] and (~net.masks_of(keeps)[0]).sum() == 20
    with pytest.raises(ValueError, match="NaN"):
        sel.select([torch.full((8,), float("nan")), scores[1]], kept, [20, 0])


# Flags ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (MAGNITUDE + ["--pruning-granularity", "block"],
     "--pruning-granularity 'block' is unknown; valid: element, channel, or N:M such as 2:4"),
    (MAGNITUDE + ["--pruning-granularity", "4:2"], "--pruning-granularity 4:2: N:M needs whole numbers 0 < N < M, e.g. 2:4"),
    (["--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "0.7", "--pruning-granularity", "2:4"],
     "--target-sparsity 0.7 is above what --pruning-granularity 2:4 allows: at most (M-N)/M = 0.5"),
    (MAGNITUDE + ["--pruning-granularity", "2:4", "--pruning-layer-targets", "conv=0.6"],
     "--pruning-layer-targets conv 0.6 is above what --pruning-granularity 2:4 allows"),
    (MAGNITUDE + ["--pruning-granularity", "channel", "--prune-embeddings"],
     "--pruning-granularity channel cannot take --prune-embeddings"),
    (MAGNITUDE + ["--pruning-granularity", "channel", "--pruning-scope", "layer"],
     "--pruning-scope layer does not apply to --pruning-granularity channel"),
    (["--optimizer", "adamw", "--pruning-granularity", "channel"],
     "--pruning-granularity channel needs a --pruning-method other than 'none'"),
    (state("bitter4") + ["--pruning-granularity", "2:4"], "--pruning-variant bitter4 (layer-adaptive) selects single weights"),
    (state("bitter7") + ["--pruning-granularity", "channel", "--ratio-preserve"], "--ratio-preserve selects single weights"),
])
def test_bad_granularity_flags_are_one_clear_line(argv, message, capsys):
    assert message in refusal(argv, capsys)


def test_granularity_reaches_the_pruner():
    args = parse(MAGNITUDE + ["--pruning-granularity", "2:4"])
    model = LeNet5()
    pruner = pruning.from_args(args, model, torch.optim.AdamW(model.parameters()), total_steps=10)
    assert pruner.granularity == Granularity("nm", 2, 4)
    assert pruning.from_args(parse(MAGNITUDE), model, None, 10).granularity == Granularity("element")


def test_build_refuses_ratio_budgets_away_from_element():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="ratio-preserving budgets select single weights: granularity 2:4"):
        pruning.build("state", model, SparsitySchedule(0.5, 0, 1), 1, torch.optim.AdamW(model.parameters()),
                      variant="bitter7", ratio=pruning.RatioSettings(), granularity="2:4")


# Channel granularity through the pruner (units from lib.pruning.channels) -----------------------------------------


def unit_sizes(pruner) -> int:
    """Entries the biggest unit covers."""
    from lib.pruning import channels

    ones = [torch.ones(p.shape) for _, p in pruner.params]
    return int(max(u.max() for u in channels.unit_scores(pruner.channel_groups, ones)))


def whole_units(pruner) -> list[torch.Tensor]:
    """The masks the pruned units alone give (a unit is pruned when all its entries are masked)."""
    from lib.pruning import channels

    return channels.unit_masks(pruner.channel_groups, pruner._unit_kept(pruner.mask_list()), pruner.params)


def test_channel_selection_on_lenet5_reaches_each_level_within_one_unit_and_masks_whole_units():
    torch.manual_seed(0)
    model = LeNet5()
    schedule = SparsitySchedule(0.4, 2, 14, "linear")
    pruner = RandomScores(model, schedule, 1, granularity="channel", example_inputs=torch.randn(1, 1, 32, 32))
    assert [g.name for g in pruner.channel_groups] == ["features.0", "features.3", "classifier.1", "classifier.3"]
    assert "features.3.bias" in dict(pruner.params) and "classifier.5.bias" not in dict(pruner.params)
    biggest, total = unit_sizes(pruner), sum(pruner.sizes)
    before = [m.clone() for m in pruner.mask_list()]
    for _ in range(16):
        pruner.step()
        masks = pruner.mask_list()
        zeros = sum(int((~m).sum()) for m in masks)
        assert abs(zeros - pruner.sparsity * total) <= biggest
        assert all(torch.equal(m, w) for m, w in zip(masks, whole_units(pruner)))
        assert all((m <= old).all() for m, old in zip(masks, before))
        units = pruner.summary()["units"]
        assert all(u["pruned"] < u["units"] for u in units.values())
        before = [m.clone() for m in masks]
    fractions = [u["pruned"] / u["units"] for u in units.values()]
    assert max(fractions) - min(fractions) <= 1 / 6 + 1e-9  # the same fraction, up to one unit of the smallest group
    assert pruner.summary()["granularity"] == "channel"


@pytest.mark.parametrize("method", ["magnitude", "movement", "state"])
def test_every_method_trains_at_channel_granularity(method):
    torch.manual_seed(2)
    model = LeNet5()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    options = {"variant": "bitter3"} if method == "state" else {}
    pruner = pruning.build(method, model, SparsitySchedule(0.5, 1, 6, "cubic"), 1, opt, granularity="channel",
                           example_inputs=torch.randn(1, 1, 32, 32), **options)
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 10, (16,))
    train_steps(pruner, opt, lambda: nn.functional.cross_entropy(model(x), y), 8)
    assert all(torch.equal(m, w) for m, w in zip(pruner.mask_list(), whole_units(pruner)))
    for mask, (_, p) in zip(pruner.mask_list(), pruner.params):
        assert (p[~mask] == 0).all()
    assert abs(pruner.summary()["achieved_sparsity"] - 0.5) * sum(pruner.sizes) <= unit_sizes(pruner)


def test_channel_classes_and_preserve_on_gpt2_tiny():
    from gpt2.model import GPT, config_for

    torch.manual_seed(0)
    model = GPT(config_for("tiny"))
    pruner = MagnitudePruner(model, SparsitySchedule(0.4, 0, 2), granularity="channel", example_inputs=torch.zeros(1, 64, dtype=torch.long),
                             layer_targets={"attention": 0.25, "mlp": 0.4}, preserve=["transformer.h.1.mlp.c_proj.weight"])
    assert [(g.name, g.kind) for g in pruner.channel_groups] == [
        ("transformer.h.0.attn", "head"), ("transformer.h.0.mlp.c_fc", "neuron"), ("transformer.h.1.attn", "head")]
    assert "transformer.h.1.mlp.c_fc.bias" not in dict(pruner.params)  # its only group touches the preserved tensor
    for _ in range(3):
        pruner.step()
    classes = pruner.summary()["classes"]
    assert classes["attention"]["achieved"] == 0.25  # one head of four in each block, exactly
    mlp = classes["mlp"]
    assert mlp["preserved"] == 256 * 64
    assert abs(mlp["achieved"] - 0.4) * mlp["params"] <= 64 + 64 + 1  # within one neuron (c_fc row, bias, c_proj column)
    with pytest.raises(ValueError, match=r"^mlp: target 0.6 of 65792 parameters needs 39475 zeros, but 16384 are preserved; "
                                         r"channel granularity keeps a unit in every coupling group: at most 0.50 is reachable$"):
        MagnitudePruner(GPT(config_for("tiny")), SparsitySchedule(0.4, 0, 2), granularity="channel",
                        example_inputs=torch.zeros(1, 64, dtype=torch.long), layer_targets={"mlp": 0.6},
                        preserve=["transformer.h.1.mlp.c_proj.weight"])


def test_channel_bad_input_is_one_line():
    with pytest.raises(ValueError, match="channel granularity needs example_inputs"):
        MagnitudePruner(LeNet5(), SparsitySchedule(0.4, 0, 1), granularity="channel")
    from gpt2.model import GPT, config_for

    with pytest.raises(ValueError, match="channel granularity cannot prune lm_head.weight"):
        MagnitudePruner(GPT(config_for("tiny")), SparsitySchedule(0.4, 0, 1), granularity="channel",
                        example_inputs=torch.zeros(1, 8, dtype=torch.long), include_tied_head=True)


def test_channel_granularity_reaches_the_pruner_with_the_trainers_example():
    args = parse(MAGNITUDE + ["--pruning-granularity", "channel", "--pruning-preserve", "classifier.5.*"])
    model = LeNet5()
    pruner = pruning.from_args(args, model, None, total_steps=10, example_inputs=torch.randn(1, 1, 32, 32))
    assert pruner.granularity == Granularity("channel")
    assert [g.name for g in pruner.channel_groups] == ["features.0", "features.3", "classifier.1"]  # classifier.3 feeds the preserved head
    assert pruner.preserved == ["classifier.5.weight", "classifier.5.bias"]


@pytest.mark.parametrize("granularity", ["2:4", "channel"])
def test_a_resumed_pruner_continues_with_the_same_masks(granularity):
    """Masks and the step count are the whole state: units and N:M groups are read back from the masks."""
    def fresh():
        torch.manual_seed(0)
        model = LeNet5()
        return model, MagnitudePruner(model, SparsitySchedule(0.5, 1, 8, "linear"), 1, granularity=granularity,
                                      example_inputs=torch.randn(1, 1, 32, 32))

    model, straight = fresh()
    for _ in range(10):
        straight.step()
    model, first = fresh()
    for _ in range(4):
        first.step()
    state = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "pruner": first.state_dict()}
    model, resumed = fresh()
    model.load_state_dict(state["model"])
    resumed.load_state_dict(state["pruner"])
    for _ in range(6):
        resumed.step()
    assert all(torch.equal(a, b) for a, b in zip(straight.mask_list(), resumed.mask_list()))
    assert resumed.summary() == straight.summary()
