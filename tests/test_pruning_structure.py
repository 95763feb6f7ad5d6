"""lib.pruning.structure: attention | mlp | coupling | other, by module type and by name."""

from __future__ import annotations

import pytest
from torch import nn

from lib.pruning.structure import StructureWeights, classify_model, classify_parameter, name_tokens


@pytest.mark.parametrize("name, role", [
    ("transformer.h.0.attn.c_attn.weight", "attention"),
    ("transformer.h.0.attn.c_proj.weight", "attention"),
    ("transformer.h.0.mlp.c_fc.weight", "mlp"),
    ("transformer.h.0.mlp.c_proj.weight", "mlp"),
    ("layers.3.self_attn.q_proj.weight", "attention"),
    ("layers.3.feed_forward.fc1.weight", "mlp"),
    ("blocks.1.mlp_cross.weight", "coupling"),
    ("blocks.1.coupler.weight", "coupling"),
    ("blocks.1.attn.gate_to_heads.weight", "coupling"),
    ("features.0.weight", "other"),
    ("classifier.5.weight", "other"),
    ("lm_head.weight", "other"),
])
def test_by_name(name, role):
    assert classify_parameter(name, nn.Linear(2, 2)) == role


@pytest.mark.parametrize("name, role", [
    ("attn.c_attn.weight", "attention"),
    ("layers.0.self_attn.k_proj.weight", "attention"),
    ("key.weight", "attention"),
    ("query.weight", "attention"),
    ("value.weight", "attention"),
    ("h.0.self_attention.query_key_value.weight", "attention"),
    ("blocks.0.attn.Wqkv.weight", "attention"),
    ("blocks.0.selfAttn.weight", "attention"),
    ("down.attentions.0.proj_in.weight", "attention"),
    ("down.attn1.to_q.weight", "attention"),
    ("layers.0.mlp.gate_up_proj.weight", "mlp"),
    ("encoder.layers.0.fc1.weight", "mlp"),
    ("blocks.0.mlp_cross.weight", "coupling"),
    ("decoder.layers.0.cross_attn.k_proj.weight", "coupling"),
])
def test_whole_tokens_keep_the_names_that_were_right(name, role):
    assert classify_parameter(name, nn.Linear(2, 2)) == role


@pytest.mark.parametrize("name", [
    "monkey.weight",  # contains "key"
    "keyboard.weight",
    "donkey_proj.weight",
    "blocks.0.monkey_fc.weight",
    "valuehead.weight",  # contains "value"
    "recipe.weight",  # contains "recip" (coupling)
    "across.weight",  # contains "cross" (coupling)
    "fc.1.weight",  # "fc" and "1" are two components, not "fc1"
])
def test_a_key_inside_a_longer_word_is_not_a_match(name):
    assert classify_parameter(name, nn.Linear(2, 2)) == "other"


def test_name_tokens_split_at_underscores_digits_and_humps():
    assert name_tokens("self_attn") == ("self", "attn")
    assert name_tokens("fc1") == ("fc", "1")
    assert name_tokens("selfAttn") == ("self", "attn")
    assert name_tokens("monkey") == ("monkey",)


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = nn.MultiheadAttention(8, 2)
        self.custom = SelfAttention()
        self.ff = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 8))


def test_by_module_type_where_the_name_says_nothing():
    assert classify_parameter("x.in_proj_weight", nn.MultiheadAttention(8, 2)) == "attention"
    model = Block()
    roles = classify_model(model, ["mix.out_proj.weight", "custom.proj.weight", "ff.0.weight"])
    assert roles == {"mix.out_proj.weight": "attention", "custom.proj.weight": "attention", "ff.0.weight": "other"}


def test_weights_are_settings_with_the_documented_defaults():
    w = StructureWeights()
    assert (w["attention"], w["mlp"], w["coupling"], w["other"]) == (2.5, 1.0, 3.0, 1.0)
    assert StructureWeights(attention=4.0)["attention"] == 4.0
    with pytest.raises(ValueError, match="positive"):
        StructureWeights(mlp=0.0)
    with pytest.raises(KeyError, match="valid: attention, mlp, coupling, other"):
        w["embedding"]


def test_gpt2_variant_modules_by_type_whatever_their_names():
    from gpt2.model import MLP, LatentAttention, ReciprocalCoupler, config_for

    cfg = config_for("tiny", attention="mla", latent_dim=8, ra_heads=1)
    model = nn.ModuleDict({"a": LatentAttention(cfg), "b": ReciprocalCoupler(cfg, 64), "c": MLP(cfg)})
    names = [n for n, _ in model.named_parameters()]
    roles = classify_model(model, names)
    assert {n: r for n, r in roles.items() if n.startswith("a.")} == dict.fromkeys(
        ["a.ra_weight"] + [f"a.{m}.{p}" for m in ("q_proj", "kv_down", "k_up", "v_up", "c_proj") for p in ("weight", "bias")],
        "attention")
    assert {n: r for n, r in roles.items() if not n.startswith("a.")} == {
        "b.gate": "coupling", "b.down.weight": "coupling", "b.up.weight": "coupling",
        "c.c_fc.weight": "mlp", "c.c_fc.bias": "mlp", "c.c_proj.weight": "mlp", "c.c_proj.bias": "mlp"}
