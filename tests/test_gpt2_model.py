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
