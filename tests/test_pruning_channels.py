"""lib.pruning.channels: coupling groups from Torch-Pruning's graph, unit scores and masks, compaction, export.

The acceptance of issue 18 for LeNet-5, ResNet-18 (32x32) and GPT-2-tiny:
the lowest-L1 units at one common fraction zero 40 % of the prunable
parameters; the compact model has at least 35 % fewer of them and computes
the masked model's outputs (max abs difference below 1e-5).
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import REPO
from gpt2.model import GPT, config_for
from lenet5.model import LeNet5
from lib.pruning import channels as ch
from lib.pruning.base import prunable_parameters
from resnet18.model import resnet18


def lenet():
    torch.manual_seed(0)
    return LeNet5().eval(), torch.randn(3, 1, 32, 32)


def resnet():
    torch.manual_seed(0)
    return resnet18(num_classes=10).eval(), torch.randn(2, 3, 32, 32)


def gpt():
    torch.manual_seed(0)
    return GPT(config_for("tiny")).eval(), torch.randint(0, 1000, (2, 16))


MODELS = {"lenet5": lenet, "resnet18": resnet, "gpt2-tiny": gpt}


def traced(model, x):
    params = ch.channel_params(model, prunable_parameters(model), x)
    return params, ch.channel_groups(model, params, x)


def by_name(groups):
    return {g.name: g for g in groups}


def slices_of(group, params):
    """{(parameter name, dim): owner} of a group."""
    return {(params[s.param][0], s.dim): s.owner for s in group.slices}


@torch.no_grad()
def output(model, x):
    return ch._first_tensor(ch._call(model, x))


@torch.no_grad()
def mask_(params, masks):
    for (_, p), m in zip(params, masks):
        p.mul_(m)


# Groups ----------------------------------------------------------------------------------------------------------


def test_lenet5_flatten_gives_each_conv_channel_its_block_of_linear_inputs():
    model, x = lenet()
    params, groups = traced(model, x)
    assert [(g.name, g.units, g.kind) for g in groups] == [
        ("features.0", 6, "channel"), ("features.3", 16, "channel"), ("classifier.1", 120, "neuron"), ("classifier.3", 84, "neuron")]
    conv2 = slices_of(by_name(groups)["features.3"], params)
    assert set(conv2) == {("features.3.weight", 0), ("features.3.bias", 0), ("classifier.1.weight", 1)}
    assert torch.equal(conv2[("features.3.weight", 0)], torch.arange(16))
    assert torch.equal(conv2[("classifier.1.weight", 1)], torch.arange(16).repeat_interleave(25))
    # the classes are never units: classifier.5's outputs are in no group, its inputs are classifier.3's neurons
    assert not any(params[s.param][0].startswith("classifier.5") and s.dim == 0 for g in groups for s in g.slices)
    assert set(slices_of(by_name(groups)["classifier.3"], params)) == {
        ("classifier.3.weight", 0), ("classifier.3.bias", 0), ("classifier.5.weight", 1)}
    assert [n for n, _ in params[len(prunable_parameters(model)):]] == [
        "features.0.bias", "features.3.bias", "classifier.1.bias", "classifier.3.bias"]


def test_resnet18_couples_residual_additions_and_batch_norms():
    model, x = resnet()
    params, groups = traced(model, x)
    groups = by_name(groups)
    # the stem's channels are layer1's residual stream: both blocks' outputs, their BNs, layer2's inputs
    stem = {key for key in slices_of(groups["conv1"], params)}
    assert {("conv1.weight", 0), ("bn1.weight", 0), ("bn1.bias", 0),
            ("layer1.0.conv2.weight", 0), ("layer1.0.bn2.weight", 0), ("layer1.0.bn2.bias", 0),
            ("layer1.1.conv2.weight", 0), ("layer1.1.bn2.weight", 0), ("layer1.1.bn2.bias", 0),
            ("layer1.0.conv1.weight", 1), ("layer1.1.conv1.weight", 1),
            ("layer2.0.conv1.weight", 1), ("layer2.0.downsample.0.weight", 1)} == stem
    inner = slices_of(groups["layer2.0.conv1"], params)
    assert set(inner) == {("layer2.0.conv1.weight", 0), ("layer2.0.bn1.weight", 0), ("layer2.0.bn1.bias", 0), ("layer2.0.conv2.weight", 1)}
    last = slices_of(groups["layer4.0.downsample.0"], params)
    assert torch.equal(last[("fc.weight", 1)], torch.arange(512)) and ("fc.weight", 0) not in last
    assert all(g.kind == "channel" for g in groups.values()) and "fc" not in groups


def test_gpt2_units_are_attention_heads_and_mlp_neurons_not_the_residual_stream():
    model, x = gpt()
    params, groups = traced(model, x)
    assert [(g.name, g.units, g.kind) for g in groups] == [
        ("transformer.h.0.attn", 4, "head"), ("transformer.h.0.mlp.c_fc", 256, "neuron"),
        ("transformer.h.1.attn", 4, "head"), ("transformer.h.1.mlp.c_fc", 256, "neuron")]
    names = {params[s.param][0] for g in groups for s in g.slices}
    assert not any(k in n for n in names for k in ("wte", "wpe", "lm_head", "ln_"))
    head = slices_of(groups[0], params)  # head h owns rows 16h..16h+15 of each of q, k and v, and those columns of c_proj
    assert torch.equal(head[("transformer.h.0.attn.c_attn.weight", 0)], (torch.arange(192) % 64) // 16)
    assert torch.equal(head[("transformer.h.0.attn.c_proj.weight", 1)], torch.arange(64) // 16)
    assert [n for n, _ in params[len(prunable_parameters(model)):]] == [
        "transformer.h.0.attn.c_attn.bias", "transformer.h.0.mlp.c_fc.bias", "transformer.h.1.attn.c_attn.bias", "transformer.h.1.mlp.c_fc.bias"]


def test_a_group_through_a_layer_norm_is_left_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    params, groups = traced(model, torch.randn(3, 4))
    assert [g.name for g in groups] == ["2"]  # "0" feeds the LayerNorm; "4" is the output
    assert [n for n, _ in params] == ["0.weight", "2.weight", "4.weight", "2.bias"]


def test_tracing_leaves_the_mode_and_the_running_statistics_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).train()
    stats = model[1].running_mean.clone()
    params, groups = traced(model, torch.randn(2, 3, 8, 8))
    assert model.training and torch.equal(model[1].running_mean, stats) and int(model[1].num_batches_tracked) == 0
    assert set(slices_of(groups[0], params)) == {("0.weight", 0), ("0.bias", 0), ("1.weight", 0), ("1.bias", 0), ("4.weight", 1)}


# Scores, masks, selection ----------------------------------------------------------------------------------------


def test_unit_scores_sum_every_entry_a_unit_covers_and_masks_are_products():
    model, x = lenet()
    params, groups = traced(model, x)
    scores = ch.unit_scores(groups, [torch.ones_like(p) for _, p in params])
    # a conv1 channel: its 1x5x5 kernel, its bias and 16x5x5 inputs of conv2
    assert torch.equal(scores[0], torch.full((6,), 25.0 + 1 + 16 * 25))
    assert torch.equal(scores[1], torch.full((16,), 6 * 25.0 + 1 + 120 * 25))  # conv2 channel: kernel, bias, 25 inputs of 120 neurons
    keeps = [torch.rand(g.units) > 0.5 for g in groups]
    masks = dict(zip([n for n, _ in params], ch.unit_masks(groups, keeps, params)))
    assert torch.equal(masks["classifier.1.weight"], keeps[2][:, None] & keeps[1].repeat_interleave(25)[None, :])
    assert torch.equal(masks["features.3.bias"], keeps[1])
    assert masks["classifier.5.weight"].shape == (10, 84) and torch.equal(masks["classifier.5.weight"], keeps[3][None, :].expand(10, 84))
    from lib.pruning.granularity import ChannelSelection, UnitPlan  # the pruner's count, without building masks

    counted = ChannelSelection(groups, [p.shape for _, p in params], [UnitPlan([], [])]).zeros(keeps, list(range(len(params))))
    assert counted == sum(int((~m).sum()) for m in masks.values())


def zeros(groups, keeps, params) -> int:
    return sum(int((~m).sum()) for m in ch.unit_masks(groups, keeps, params))


def largest_unit(groups, params) -> int:
    """Entries the largest single unit zeroes on its own: how far one unit more or less moves the count."""
    return max(zeros([g], [torch.arange(g.units) != 0], params) for g in groups)


def test_select_units_prunes_one_fraction_of_every_group_reaches_the_level_and_never_unprunes():
    model, x = lenet()
    params, groups = traced(model, x)
    scores = ch.unit_scores(groups, [p.abs() for _, p in params])
    total = sum(p.numel() for _, p in params)
    assert all(bool(k.all()) for k in ch.select_units(groups, scores, params, 0.0))
    assert [int(k.sum()) for k in ch.select_units(groups, scores, params, 1.0)] == [1, 1, 1, 1]
    keeps = ch.select_units(groups, scores, params, 0.4)
    assert abs(zeros(groups, keeps, params) - round(0.4 * total)) <= largest_unit(groups, params)
    pruned = [g.units - int(k.sum()) for g, k in zip(groups, keeps)]
    fraction = [p / g.units for p, g in zip(pruned, groups)]
    assert max(fraction) - min(fraction) <= max(1 / g.units for g in groups)  # one fraction, up to a unit's rounding
    for g, s, k in zip(groups, scores, keeps):  # the lowest scores go
        assert s[~k].max() <= s[k].min()
    # masks only grow: units pruned before stay pruned even when their scores are now the highest
    before = [torch.zeros(g.units, dtype=torch.bool) | (torch.arange(g.units) != g.units - 1) for g in groups]
    high = [s.clone().index_fill_(0, torch.tensor([g.units - 1]), 1e9) for g, s in zip(groups, scores)]
    again = ch.select_units(groups, high, params, 0.4, kept=before)
    assert not any(bool(k[-1]) for k in again)
    assert abs(zeros(groups, again, params) - round(0.4 * total)) <= largest_unit(groups, params)


# The acceptance: masked == compact, at least 35 % fewer prunable parameters -----------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_channel_pruning_to_40_percent_compacts_by_35_percent_with_the_same_outputs(name):
    model, x = MODELS[name]()
    params, groups = traced(model, x)
    scores = ch.unit_scores(groups, [p.abs() for _, p in params])
    keeps = ch.select_units(groups, scores, params, 0.4)
    masks = ch.unit_masks(groups, keeps, params)
    mask_(params, masks)
    total = sum(p.numel() for _, p in params)
    assert abs(sum(int((~m).sum()) for m in masks) - round(0.4 * total)) <= largest_unit(groups, params)
    masked = output(model, x)
    report = ch.compact(model, x)
    compact = output(model, x)
    assert report["prunable_before"] == total
    assert report["prunable_after"] <= 0.65 * total
    assert report["params_before"] - report["params_after"] == report["prunable_before"] - report["prunable_after"]
    assert report["params_after"] == sum(p.numel() for p in model.parameters())
    for g, k in zip(groups, keeps):
        assert report["groups"][g.name] == {"kind": g.kind, "units_before": g.units, "units_after": int(k.sum())}
    assert (masked - compact).abs().max() < 1e-5
    assert report["max_abs_diff"] < 1e-5


def test_zeroing_one_head_equals_removing_it():
    model, x = gpt()
    params, groups = traced(model, x)
    head = by_name(groups)["transformer.h.0.attn"]
    keeps = [torch.ones(g.units, dtype=torch.bool) for g in groups]
    keeps[groups.index(head)][1] = False
    by_hand = copy.deepcopy(model)  # head 1 cut out of layer 0 by hand: rows 16..31 of q, k, v and columns 16..31
    attn = by_hand.transformer.h[0].attn
    rows = torch.tensor([r for r in range(192) if (r % 64) // 16 != 1])
    cols = torch.tensor([c for c in range(64) if c // 16 != 1])
    qkv, proj = nn.Linear(64, 144), nn.Linear(48, 64)
    with torch.no_grad():
        qkv.weight.copy_(attn.c_attn.weight[rows]), qkv.bias.copy_(attn.c_attn.bias[rows])
        proj.weight.copy_(attn.c_proj.weight[:, cols]), proj.bias.copy_(attn.c_proj.bias)
    attn.c_attn, attn.c_proj, attn.n_head = qkv, proj, 3
    mask_(params, ch.unit_masks(groups, keeps, params))
    masked = output(model, x)
    report = ch.compact(model, x)
    attn = model.transformer.h[0].attn
    assert (attn.n_head, attn.c_attn.out_features, attn.c_proj.in_features) == (3, 144, 48)
    assert report["groups"]["transformer.h.0.attn"]["units_after"] == 3
    assert (masked - output(by_hand, x)).abs().max() < 1e-5
    assert (output(model, x) - output(by_hand, x)).abs().max() < 1e-5


def test_compact_keeps_one_unit_of_an_all_zero_group_and_drops_stale_mask_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    x = torch.randn(3, 4)
    with torch.no_grad():  # every unit of "0" all zero (its rows, bias and the inputs of "2"); units 0 and 1 of "2" too
        model[0].weight.zero_(), model[0].bias.zero_(), model[2].weight.zero_()
        model[2].bias[:2].zero_(), model[4].weight[:, :2].zero_()
    model[0].register_buffer("pruning_mask_weight", torch.ones(6, 4, dtype=torch.bool), persistent=False)
    before = output(model, x)
    report = ch.compact(model, x)
    assert {n: g["units_after"] for n, g in report["groups"].items()} == {"0": 1, "2": 3}
    assert (model[0].out_features, model[2].in_features, model[2].out_features, model[4].in_features) == (1, 1, 3, 3)
    assert not hasattr(model[0], "pruning_mask_weight")
    assert (output(model, x) - before).abs().max() < 1e-6


# Export and errors -----------------------------------------------------------------------------------------------


LOAD = """
import sys, torch
for path, x in [({lenet!r}, torch.load({lenet_x!r})), ({gpt!r}, torch.load({gpt_x!r}))]:
    model = torch.load(path, weights_only=False)
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    torch.save(out, path + ".out")
print(sorted(m for m in ("lib.pruning", "torch_pruning") if m in sys.modules))
"""


def test_export_compact_loads_into_the_model_class_without_the_pruning_code(tmp_path):
    files = {}
    for name in ("lenet", "gpt"):
        model, x = MODELS["lenet5" if name == "lenet" else "gpt2-tiny"]()
        params, groups = traced(model, x)
        keeps = ch.select_units(groups, ch.unit_scores(groups, [p.abs() for _, p in params]), params, 0.4)
        mask_(params, ch.unit_masks(groups, keeps, params))
        ch.compact(model, x)
        path = tmp_path / f"{name}.pt"
        ch.export_compact(model, path)
        torch.save(x, tmp_path / f"{name}_x.pt")
        files[name], files[name + "_x"] = str(path), str(tmp_path / f"{name}_x.pt")
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}.pt")] == []  # no temporary left
        loaded = ch.load_compact(path)
        assert type(loaded) is type(model) and (output(loaded, x) - output(model, x)).abs().max() == 0
        files[name + "_expected"] = output(model, x)
    out = subprocess.run([sys.executable, "-c", LOAD.format(**{k: v for k, v in files.items() if isinstance(v, str)})],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    for name in ("lenet", "gpt"):
        assert torch.equal(torch.load(files[name] + ".out"), files[name + "_expected"])


@pytest.mark.parametrize("include", [{"include_tied_head": True}, {"include_embeddings": True}])
def test_channel_units_of_a_tied_head_or_an_embedding_are_refused_in_one_line(include):
    model, _ = gpt()
    with pytest.raises(ValueError, match="cannot prune .*(lm_head|wte).*embeddings and output heads tied to them") as e:
        ch.channel_params(model, prunable_parameters(model, **include))
    assert "\n" not in str(e.value)


def test_a_model_without_a_prunable_group_is_refused_in_one_line():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    params = ch.channel_params(model, prunable_parameters(model))
    with pytest.raises(ValueError, match="Sequential has no prunable channel group") as e:
        ch.channel_groups(model, params, torch.randn(2, 4))
    assert "\n" not in str(e.value)
