"""Layer classes, per-class targets and the preserve list (lib/pruning/layer_types.py) through the pruner."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib import pruning
from lib.pruning.base import prunable_entries
from lib.pruning.layer_types import CLASSES, classify, match_preserve, module_class, parse_preserve, parse_targets
from lib.pruning.magnitude import MagnitudePruner
from lib.pruning.schedule import SparsitySchedule
from gpt2.model import GPT, config_for
from lenet5.model import LeNet5
from pruning_loop import MAGNITUDE, parse, refusal, state, train_steps

class Attention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
        return self.proj(w @ v)


class Toy(nn.Module):
    """A convolution stem, one transformer block (attention, MLP, norm) and a head: every class but embedding and coupling."""

    def __init__(self, d=16):
        super().__init__()
        self.stem = nn.Conv1d(3, d, 3, padding=1)
        self.norm = nn.LayerNorm(d)
        self.attn = Attention(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.pool = nn.Linear(d, d)
        self.head = nn.Linear(d, 5)

    def forward(self, x):  # x: (B, 3, T)
        h = self.stem(x).transpose(1, 2)
        h = h + self.attn(self.norm(h))
        h = h + self.mlp(h)
        return self.head(torch.tanh(self.pool(h.mean(1))))


# Classes --------------------------------------------------------------------------------------------------------


def classes_of(model, **include):
    return classify(model, prunable_entries(model, **include))


def test_lenet5_classes():
    assert classes_of(LeNet5(), include_biases=True) == {
        "features.0.weight": "conv", "features.0.bias": "conv", "features.3.weight": "conv", "features.3.bias": "conv",
        "classifier.1.weight": "other", "classifier.1.bias": "other", "classifier.3.weight": "other",
        "classifier.3.bias": "other", "classifier.5.weight": "classifier", "classifier.5.bias": "classifier",
    }


def test_gpt2_classes_tied_head_is_the_classifier():
    model = GPT(config_for("tiny"))
    got = classes_of(model, include_tied_head=True, include_norms=True)
    assert got["lm_head.weight"] == "classifier"
    assert got["transformer.h.0.attn.c_attn.weight"] == got["transformer.h.1.attn.c_proj.weight"] == "attention"
    assert got["transformer.h.0.mlp.c_fc.weight"] == got["transformer.h.1.mlp.c_proj.weight"] == "mlp"
    assert got["transformer.h.0.ln_1.weight"] == got["transformer.ln_f.weight"] == "norm"
    emb = classes_of(model, include_embeddings=True)
    assert emb["transformer.wte.weight"] == "classifier"  # the tied table is the output layer too
    assert emb["transformer.wpe.weight"] == "embedding"
    assert module_class(model, "transformer.h.0.attn") == "attention" and module_class(model, "transformer.h.1.mlp.c_fc") == "mlp"


def test_gpt2_rmlp_coupler_weights_are_the_coupling_class_and_take_a_target():
    model = GPT(config_for("tiny", rmlp=True))
    got = classes_of(model)
    assert {n: c for n, c in got.items() if c == "coupling"} == {
        f"transformer.h.{i}.coupler.{part}.weight": "coupling" for i in range(2) for part in ("down", "up")}
    assert module_class(model, "transformer.h.0.coupler") == "coupling"
    pruner = MagnitudePruner(model, SparsitySchedule(0.5, 0, 1), layer_targets={"coupling": 0.3})
    pruner.step()
    coupling = [i for i, c in enumerate(pruner.classes) if c == "coupling"]
    total = sum(pruner.sizes[i] for i in coupling)
    assert total == 2 * (64 * 16 + 16 * 256)  # down: width -> width / 4, up: -> the MLP's hidden layer
    assert sum(int((~pruner.mask_list()[i]).sum()) for i in coupling) == round(0.3 * total)
    assert pruner.summary()["classes"]["coupling"]["achieved"] == 0.3


def test_toy_has_every_class_but_embedding_and_modules_classify_like_their_weights():
    model = Toy()
    got = classes_of(model, include_norms=True, include_biases=True)
    assert set(got.values()) == set(CLASSES) - {"embedding", "coupling"}
    assert got["stem.weight"] == "conv" and got["head.bias"] == "classifier" and got["pool.weight"] == "other"
    assert got["attn.qkv.weight"] == "attention" and got["mlp.2.weight"] == "mlp" and got["norm.bias"] == "norm"
    for name in ("stem", "head", "pool", "attn.qkv", "mlp.0", "norm"):
        assert module_class(model, name) == got[f"{name}.weight"]


# Parsing --------------------------------------------------------------------------------------------------------


def test_targets_and_patterns_parse():
    assert parse_targets("mlp=0.6 attention=0.3") == {"mlp": 0.6, "attention": 0.3}
    assert parse_targets(" conv=0,classifier=0.25 ") == {"conv": 0.0, "classifier": 0.25}
    assert parse_targets("") == {} and parse_targets(None) == {}
    assert parse_preserve("classifier.* *.lm_head.*") == ["classifier.*", "*.lm_head.*"] and parse_preserve("") == []


@pytest.mark.parametrize("text, message", [
    ("mlps=0.5", "layer target 'mlps=0.5': write CLASS=FRACTION, CLASS one of: embedding, attention, mlp, coupling, conv, classifier, norm, other"),
    ("mlp", "write CLASS=FRACTION"),
    ("mlp=1.0", "the fraction must be a number in [0, 1)"),
    ("mlp=-0.1", "the fraction must be a number in [0, 1)"),
    ("mlp=half", "the fraction must be a number in [0, 1)"),
    ("mlp=nan", "the fraction must be a number in [0, 1)"),
    ("mlp=0.2 mlp=0.3", "class mlp is given twice"),
])
def test_bad_targets_are_value_errors(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)").replace("(", r"\(")):
        parse_targets(text)


def test_a_pattern_matching_nothing_is_named():
    names = ["a.weight", "b.weight"]
    assert match_preserve(names, ["a.*"]) == {"a.weight"}
    with pytest.raises(ValueError, match=r"preserve pattern 'c\.\*' matches no prunable parameter; prunable: a.weight, b.weight"):
        match_preserve(names, ["a.*", "c.*"])
    with pytest.raises(ValueError, match="preserve pattern 'features.0.bias' matches no prunable parameter"):
        MagnitudePruner(LeNet5(), SparsitySchedule(0.5, 0, 1), preserve=["features.0.bias"])  # biases are not prunable here


# Targets and preserve through the pruner -------------------------------------------------------------------------


def train(pruner, model, opt, steps, check=None):
    gen = torch.Generator().manual_seed(0)
    train_steps(pruner, opt, lambda: model(torch.randn(8, 3, 10, generator=gen)).square().mean(), steps, check)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("method", ["magnitude", "movement", "state"])
def test_each_listed_class_reaches_its_target_exactly_and_preserved_tensors_are_untouched(method, scope):
    torch.manual_seed(0)
    model = Toy()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    targets = {"attention": 0.25, "mlp": 0.5}  # 272 of 1088 and 1064 of 2128 parameters: whole counts
    options = {"variant": "bitter7"} if method == "state" else {"scope": scope}
    schedule = SparsitySchedule(0.5, 2, 12, "linear")
    pruner = pruning.build(method, model, schedule, 3, opt, layer_targets=targets, preserve=["head.*", "attn.proj.*"],
                           include_biases=True, remask="step", **options)
    assert pruner.preserved == ["attn.proj.weight", "attn.proj.bias", "head.weight", "head.bias"]
    preserved = [model.attn.proj.weight, model.attn.proj.bias, model.head.weight, model.head.bias]
    assert not any(p is q for _, p in pruner.params for q in preserved)
    assert not hasattr(model.head, "pruning_mask_weight") and not hasattr(model.attn.proj, "pruning_mask_bias")

    def snapshot():
        state = [opt.state.get(p, {}) for p in preserved]
        return [p.detach().clone() for p in preserved] + [p.grad.clone() for p in preserved if p.grad is not None] + [
            s[k].clone() for s in state for k in ("exp_avg", "exp_avg_sq") if k in s]

    seen = {}

    def check(stage):  # the pruner's calls leave every preserved tensor, gradient and moment as they were
        if stage in ("masked", "pruner"):
            assert all(torch.equal(a, b) for a, b in zip(seen["before"], snapshot()))
        seen["before"] = snapshot()

    train(pruner, model, opt, 20, check)
    summary = pruner.summary()
    classes = summary["classes"]
    attention = 3 * 16 * 16 + 3 * 16 + 16 * 16 + 16
    assert classes["attention"]["params"] == attention and classes["attention"]["preserved"] == 16 * 16 + 16
    for c, t in targets.items():
        assert classes[c]["target"] == t == classes[c]["achieved"]
    assert classes["classifier"] == {"params": 85, "preserved": 85, "target": 0.5, "achieved": 0.0}
    share = [i for i, c in enumerate(pruner.classes) if c not in targets]
    zeros = sum(int((~pruner.mask_list()[i]).sum()) for i in share)
    sizes = [pruner.sizes[i] for i in share]
    if method == "state" or scope == "global":
        assert zeros == round(0.5 * sum(sizes))
    else:
        assert zeros == sum(round(0.5 * n) for n in sizes)
    assert summary["preserved"] == pruner.preserved


def test_a_class_level_follows_the_schedule_scaled_to_its_target():
    model = Toy()
    schedule = SparsitySchedule(0.5, 0, 10, "linear")
    pruner = MagnitudePruner(model, schedule, layer_targets={"mlp": 0.8})
    mlp = [i for i, c in enumerate(pruner.classes) if c == "mlp"]
    total = sum(pruner.sizes[i] for i in mlp)
    for _ in range(5):
        pruner.step()
    assert sum(int((~pruner.mask_list()[i]).sum()) for i in mlp) == round(0.8 * total * (schedule(5) / 0.5))


def test_a_target_the_preserve_list_puts_out_of_reach_names_both_numbers():
    model = Toy()
    mlp = 16 * 64 + 64 * 16
    with pytest.raises(ValueError, match=rf"^mlp: target 0.6 of {mlp} parameters needs {round(0.6 * mlp)} zeros, "
                                         rf"but {64 * 16} are preserved: at most 0.50 is reachable$"):
        MagnitudePruner(model, SparsitySchedule(0.5, 0, 1), layer_targets={"mlp": 0.6}, preserve=["mlp.2.*"])
    MagnitudePruner(Toy(), SparsitySchedule(0.5, 0, 1), layer_targets={"mlp": 0.5}, preserve=["mlp.2.*"])  # just reachable


def test_n_m_dense_tensors_count_against_a_class_target():
    model = nn.Sequential()
    model.add_module("mlp", nn.Sequential(nn.Linear(8, 8), nn.Linear(6, 8)))  # the second stays dense at 2:4
    model.add_module("head", nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"mlp: target 0.5 of 112 parameters needs 56 zeros, but 0 are preserved, "
                                         r"48 are in tensors 2:4 leaves dense; 2:4 prunes at most 0.5 of the rest: at most 0.29"):
        MagnitudePruner(model, SparsitySchedule(0.5, 0, 1), granularity="2:4", layer_targets={"mlp": 0.5})


def test_targets_refused_where_the_model_lacks_the_class_or_with_per_layer_levels():
    with pytest.raises(ValueError, match="layer target attention=0.3: the model has no prunable parameters of class attention; "
                                         "it has: conv, classifier, other"):
        MagnitudePruner(LeNet5(), SparsitySchedule(0.5, 0, 1), layer_targets={"attention": 0.3})
    with pytest.raises(ValueError, match="unknown layer class 'heads'; valid: embedding, attention"):
        MagnitudePruner(LeNet5(), SparsitySchedule(0.5, 0, 1), layer_targets={"heads": 0.3})
    with pytest.raises(ValueError, match="layer targets and layer-adaptive levels"):
        MagnitudePruner(LeNet5(), SparsitySchedule(0.5, 0, 1), layer_targets={"conv": 0.3}, scope="adaptive")
    model = Toy()
    with pytest.raises(ValueError, match="layer targets and ratio-preserving budgets both set per-class levels; use one"):
        pruning.build("state", model, SparsitySchedule(0.5, 0, 1), 1, torch.optim.AdamW(model.parameters()),
                      variant="bitter7", ratio=pruning.RatioSettings(), layer_targets={"mlp": 0.3})


def test_everything_preserved_is_an_error():
    with pytest.raises(ValueError, match="nothing left to prune in LeNet5: every prunable tensor is preserved"):
        MagnitudePruner(LeNet5(), SparsitySchedule(0.5, 0, 1), preserve=["*"])


# Flags ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (MAGNITUDE + ["--pruning-layer-targets", "heads=0.5"],
     "--pruning-layer-targets: layer target 'heads=0.5': write CLASS=FRACTION, CLASS one of: embedding, attention, mlp, "
     "coupling, conv, classifier, norm, other"),
    (MAGNITUDE + ["--pruning-layer-targets", "conv=2"], "--pruning-layer-targets: layer target 'conv=2': the fraction must be"),
    (state("bitter4") + ["--pruning-layer-targets", "conv=0.3"], "--pruning-layer-targets and --pruning-variant bitter4 (layer-adaptive)"),
    (state("bitter7") + ["--pruning-layer-targets", "conv=0.3", "--ratio-preserve"], "--pruning-layer-targets and --ratio-preserve"),
])
def test_bad_layer_flags_are_one_clear_line(argv, message, capsys):
    assert message in refusal(argv, capsys)


def test_layer_targets_and_preserve_reach_the_pruner():
    args = parse(MAGNITUDE + ["--pruning-layer-targets", "conv=0.2 other=0.7", "--pruning-preserve", "classifier.5.*"])
    model = LeNet5()
    pruner = pruning.from_args(args, model, None, total_steps=10)
    assert pruner.layer_targets == {"conv": 0.2, "other": 0.7}
    assert pruner.preserved == ["classifier.5.weight"]
    dense = parse(["--optimizer", "adamw", "--pruning-layer-targets", "conv=0.2", "--pruning-preserve", "x"])
    assert pruning.from_args(dense, model, None, 10) is None  # settings shared by a matrix: the dense run ignores them
