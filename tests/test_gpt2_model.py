"""gpt2.model: published shapes, weight tying, causality, what pruning may touch."""

import math

import pytest
import torch

from gpt2.model import GPT, PADDED_VOCAB, SIZES, config_for
from lib.pruning import prunable_parameters

# Parameter counts of the published checkpoints (vocabulary 50257, context 1024).
PUBLISHED = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}


@pytest.mark.parametrize("size", sorted(PUBLISHED))
def test_standard_sizes_have_the_published_parameter_counts(size):
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(config_for(size, vocab_size=50257))
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[size]


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown GPT-2 model size 'gpt5'; valid: tiny, gpt2, gpt2-medium"):
        config_for("gpt5")


def test_overrides_and_limits():
    cfg = config_for("tiny", block_size=32, dropout=None)
    assert cfg.block_size == 32 and cfg.dropout == SIZES["tiny"].dropout and cfg.vocab_size == PADDED_VOCAB
    with pytest.raises(ValueError, match="block size 2048"):
        GPT(config_for("tiny", block_size=2048))


def _tiny(block=16):
    torch.manual_seed(0)
    return GPT(config_for("tiny", block_size=block)).eval()


def test_output_head_is_tied_to_the_token_embedding():
    model = _tiny()
    assert model.lm_head.weight is model.transformer.wte.weight


def test_tied_head_is_not_prunable_unless_asked():
    model = _tiny()
    default = dict(prunable_parameters(model))
    assert "lm_head.weight" not in default and all(p is not model.lm_head.weight for p in default.values())
    assert len(default) == 4 * model.config.n_layer  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block
    with_head = dict(prunable_parameters(model, include_tied_head=True))
    assert with_head["lm_head.weight"] is model.transformer.wte.weight


def test_initial_loss_is_that_of_a_uniform_guess():
    model = _tiny()
    idx, targets = torch.randint(0, 50257, (2, 4, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (4, 16, PADDED_VOCAB)
    assert abs(loss.item() - math.log(50257)) < 0.3


def test_attention_is_causal():
    model = _tiny()
    a = torch.randint(0, 50257, (1, 16))
    b = a.clone()
    b[0, 10] = (a[0, 10] + 1) % 50257
    la, _ = model(a)
    lb, _ = model(b)
    assert torch.equal(la[0, :10], lb[0, :10])
    assert not torch.allclose(la[0, 10:], lb[0, 10:])


def test_longer_than_the_block_is_refused_and_generate_crops():
    model = _tiny(block=8)
    with pytest.raises(ValueError, match="longer than the block size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    out = model.generate(torch.zeros(2, 6, dtype=torch.long), max_new_tokens=5, top_k=10)
    assert out.shape == (2, 11) and int(out.max()) < PADDED_VOCAB


# Architecture variants ----------------------------------------------------------------------------------------------

from gpt2.model import (ATTENTIONS, LatentAttention, ReciprocalCoupler, attention_weights, cache_bytes_per_token,  # noqa: E402
                        cache_length, mlp_hidden)
from lib.pruning.structure import classify_model  # noqa: E402

VARIANTS = {
    "standard": {},
    "golden": {"mlp_ratio": "golden"},
    "mla": {"attention": "mla", "latent_dim": 32},
    "ra": {"ra_heads": 2},
    "mla+ra": {"attention": "mla", "latent_dim": 32, "ra_heads": 4},
    "rmlp": {"rmlp": True},
    "all": {"mlp_ratio": "golden", "attention": "mla", "latent_dim": 32, "ra_heads": 2, "rmlp": True},
}


def _variant(name, block=16, trained=True):
    """A tiny model of `variant`; `trained`: the RA weights and the coupler gate away from their zero start."""
    torch.manual_seed(0)
    model = GPT(config_for("tiny", block_size=block, **VARIANTS[name])).eval()
    if trained:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith(("ra_weight", "coupler.gate")):
                    p.copy_(torch.linspace(0.5, 1.5, p.numel()).view(p.shape))
    return model


@pytest.mark.parametrize("size", ["tiny", "gpt2", "gpt2-medium", "gpt2-xl"])
@pytest.mark.parametrize("arch", [{}, {"attention": "mla", "latent_dim": 32}, {"attention": "mla", "latent_dim": 128},
                                  {"ra_heads": 1, "rmlp": True}])
def test_golden_mlp_is_2_5_times_attention_within_one_rounding_step(size, arch):
    cfg = config_for(size, mlp_ratio="golden", **arch)
    with torch.device("meta"):
        model = GPT(cfg)
    hidden = {m.c_fc.out_features for m in model.modules() if type(m).__name__ == "MLP"}
    assert hidden == {mlp_hidden(cfg)} and mlp_hidden(cfg) % 64 == 0
    counts = model.param_classes()
    assert counts["attention"] == cfg.n_layer * attention_weights(cfg)  # what the pruners count: weights, no ra_weight
    assert counts["mlp"] == cfg.n_layer * 2 * cfg.n_embd * mlp_hidden(cfg)
    step = cfg.n_layer * 2 * cfg.n_embd * 64 / counts["attention"]  # what one multiple of 64 changes the ratio by
    assert abs(model.mlp_attention_ratio() - 2.5) <= step / 2


def test_mlp_hidden_sizes():
    assert mlp_hidden(config_for("tiny", mlp_ratio="golden")) == 320
    assert mlp_hidden(config_for("gpt2", mlp_ratio="golden")) == 3840
    assert mlp_hidden(config_for("gpt2")) == 3072 and mlp_hidden(config_for("tiny")) == 256  # "gpt2": 4 x width
    assert mlp_hidden(config_for("gpt2", mlp_ratio="2")) == 3072  # the same MLP by ratio
    assert mlp_hidden(config_for("tiny", mlp_ratio="0.01")) == 64  # never below one multiple
    # MLA at width 64, latent 32: attention 2*64*64 + 3*64*32 = 14336, 2.5 x that / 128 = 280 -> 256
    assert mlp_hidden(config_for("tiny", mlp_ratio="golden", attention="mla", latent_dim=32)) == 256
    with torch.device("meta"):
        assert GPT(config_for("gpt2")).mlp_attention_ratio() == 2.0
        assert GPT(config_for("tiny", mlp_ratio="golden")).mlp_attention_ratio() == 2.5


@pytest.mark.parametrize("overrides, message", [
    ({"mlp_ratio": "silver"}, "MLP ratio 'silver': write gpt2, golden or a positive number"),
    ({"mlp_ratio": "-1"}, "MLP ratio '-1'"),
    ({"attention": "linear"}, "unknown attention 'linear'; valid: standard, mla"),
    ({"ra_heads": 5}, r"ra_heads must be in 0..4 \(the heads\), got 5"),
    ({"latent_dim": 0}, "latent_dim must be at least 1"),
])
def test_bad_variant_settings_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_for("tiny", **overrides)
    assert ATTENTIONS == ("standard", "mla")


def test_reciprocal_attention_at_zero_weight_is_standard_attention():
    standard, ra = _variant("standard", trained=False), _variant("ra", trained=False)
    missing = ra.load_state_dict(standard.state_dict(), strict=False)
    assert sorted(missing.missing_keys) == ["transformer.h.0.attn.ra_weight", "transformer.h.1.attn.ra_weight"]
    idx = torch.randint(0, 50257, (2, 16))
    assert (ra(idx)[0] - standard(idx)[0]).abs().max().item() < 1e-6
    with torch.no_grad():
        ra.transformer.h[0].attn.ra_weight.fill_(1.0)
    assert (ra(idx)[0] - standard(idx)[0]).abs().max().item() > 1e-4  # the reciprocal path does act


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_reciprocal_scores_follow_the_documented_formula(attention):
    torch.manual_seed(1)
    cfg = config_for("tiny", block_size=8, attention=attention, latent_dim=16, ra_heads=3)
    attn = GPT(cfg).transformer.h[0].attn.eval()
    with torch.no_grad():
        attn.ra_weight.copy_(torch.tensor([0.7, -1.3, 2.0]))
    x = torch.randn(2, 8, 64)
    B, T, H, hd = 2, 8, 4, 16
    if attention == "mla":
        q, c = attn.q_proj(x), attn.kv_down(x)
        k, v = attn.k_up(c), attn.v_up(c)
    else:
        q, k, v = attn.c_attn(x).split(64, dim=2)
    q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))
    w = torch.cat((attn.ra_weight, torch.zeros(1))).view(1, H, 1, 1)
    scores = (q @ k.transpose(-1, -2) + w * (k @ q.transpose(-1, -2))) / math.sqrt(hd)  # (i, j): q_i.k_j + w k_i.q_j
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, 64)
    assert torch.allclose(attn(x)[0], attn.c_proj(y), atol=1e-6)


def test_rmlp_at_init_is_the_model_without_it():
    standard, rmlp = _variant("standard", trained=False), _variant("rmlp", trained=False)
    missing = rmlp.load_state_dict(standard.state_dict(), strict=False).missing_keys
    assert all(".coupler." in n for n in missing) and len(missing) == 2 * 3
    idx = torch.randint(0, 50257, (2, 16))
    assert torch.equal(rmlp(idx)[0], standard(idx)[0])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_is_causal(variant):
    model = _variant(variant)
    a = torch.randint(0, 50257, (1, 16))
    b = a.clone()
    b[0, 10] = (a[0, 10] + 1) % 50257
    la, lb = model(a)[0], model(b)[0]
    assert torch.equal(la[0, :10], lb[0, :10])
    assert not torch.allclose(la[0, 10:], lb[0, 10:])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_decoding_with_the_cache_gives_the_full_forward_logits(variant):
    model = _variant(variant)
    idx = torch.randint(0, 50257, (2, 12))
    full = model(idx)[0]
    logits, cache = model.forward_cached(idx[:, :5])  # a prompt, then one token at a time
    steps = [logits]
    for t in range(5, 12):
        logits, cache = model.forward_cached(idx[:, t : t + 1], cache)
        steps.append(logits)
    assert cache_length(cache) == 12
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sequence of 17 tokens is longer than the block size 16"):
        model.forward_cached(idx[:, :5], cache)


def test_the_cache_holds_what_each_attention_needs():
    idx = torch.randint(0, 50257, (3, 6))
    # tiny: width 64, 4 heads of 16, 2 layers, float32
    _, cache = _variant("standard").forward_cached(idx)
    assert [sorted(layer) for layer in cache] == [["k", "v"]] * 2 and cache[0]["k"].shape == (3, 4, 6, 16)
    assert cache_bytes_per_token(cache) == 2 * 2 * 64 * 4  # layers x (k, v) x width x bytes
    _, cache = _variant("mla").forward_cached(idx)
    assert [sorted(layer) for layer in cache] == [["latent"]] * 2 and cache[0]["latent"].shape == (3, 6, 32)
    assert cache_bytes_per_token(cache) == 2 * 32 * 4
    _, cache = _variant("mla+ra").forward_cached(idx)  # and the 4 reciprocal heads' queries
    assert cache[1]["q"].shape == (3, 4, 6, 16) and cache_bytes_per_token(cache) == 2 * (32 + 64) * 4
    _, cache = _variant("ra").forward_cached(idx)
    assert cache[0]["q"].shape == (3, 2, 6, 16) and cache_bytes_per_token(cache) == 2 * (2 * 64 + 32) * 4


@pytest.mark.parametrize("variant", ["standard", "all"])
def test_generate_with_the_cache_is_greedy_decoding_by_full_forwards(variant):
    model = _variant(variant, block=8)
    idx = torch.randint(0, 50257, (2, 3))
    expected = idx
    for _ in range(9):  # past the block: the window slides
        logits = model(expected[:, -8:])[0][:, -1]
        expected = torch.cat((expected, logits.argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(model.generate(idx, 9, top_k=1), expected)


def test_every_parameter_of_the_variants_has_its_structural_role():
    model = _variant("all", trained=False)
    roles = classify_model(model, [n for n, _ in model.named_parameters()])
    block = {n.removeprefix("transformer.h.0."): r for n, r in roles.items() if n.startswith("transformer.h.0.")}
    assert block == {
        "ln_1.weight": "other", "ln_1.bias": "other", "ln_2.weight": "other", "ln_2.bias": "other",
        "attn.ra_weight": "attention",
        "attn.q_proj.weight": "attention", "attn.q_proj.bias": "attention",
        "attn.kv_down.weight": "attention", "attn.kv_down.bias": "attention",
        "attn.k_up.weight": "attention", "attn.k_up.bias": "attention",
        "attn.v_up.weight": "attention", "attn.v_up.bias": "attention",
        "attn.c_proj.weight": "attention", "attn.c_proj.bias": "attention",
        "mlp.c_fc.weight": "mlp", "mlp.c_fc.bias": "mlp", "mlp.c_proj.weight": "mlp", "mlp.c_proj.bias": "mlp",
        "coupler.gate": "coupling", "coupler.down.weight": "coupling", "coupler.up.weight": "coupling",
    }
    assert {n: r for n, r in roles.items() if not n.startswith("transformer.h.")} == {
        "transformer.wte.weight": "other", "transformer.wpe.weight": "other", "transformer.ln_f.weight": "other",
        "transformer.ln_f.bias": "other"}
    standard = _variant("ra", trained=False)  # GPT-2's own attention, with RA
    names = [n for n, _ in standard.named_parameters() if ".attn." in n]
    assert set(classify_model(standard, names).values()) == {"attention"} and "transformer.h.1.attn.c_attn.weight" in names
    assert isinstance(model.transformer.h[0].attn, LatentAttention) and isinstance(model.transformer.h[0].coupler, ReciprocalCoupler)


def test_prunable_tensors_of_the_variants_by_role():
    model = _variant("all", trained=False)
    counts = model.param_classes()
    # per block: attention 2*64*64 + 3*64*32, MLP 2*64*256 (golden at MLA), coupler 64*16 + 16*256; 1-D tensors are not pruned
    assert counts == {"attention": 2 * 14336, "mlp": 2 * 32768, "coupling": 2 * (64 * 16 + 16 * 256), "other": 0}
    assert "transformer.h.0.attn.ra_weight" not in dict(prunable_parameters(model))
