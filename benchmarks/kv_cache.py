"""Inference cache per token of GPT-2's attention variants, measured from the caches themselves.

    python -m benchmarks.kv_cache                              # tiny and gpt2 widths, float32, a 32-token prompt
    python -m benchmarks.kv_cache --sizes gpt2 --dtype bfloat16 --mla-latent-dim 128

For each size (gpt2/model.py's SIZES: layers, heads and width as published)
and each attention variant (standard, MLA, RA on --ra-heads heads, MLA + RA),
builds the model (seed 0, in --dtype), runs `GPT.forward_cached` on one
--prompt-tokens prompt and one more token, and sums numel x element size
over every tensor of the returned cache (`cache_bytes_per_token`), per
position and sequence. Prints a table with the ratio to standard attention
of the same width, what each layer caches, and the largest difference
between the cached logits of the extra token and a full forward's (a check
that the cache is the one the model decodes with). Sizes only: no timing.
"""

from __future__ import annotations

import argparse
import sys

import torch

from gpt2.model import GPT, SIZES, cache_bytes_per_token, config_for

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def variants(n_head: int, latent_dim: int, ra_heads: int) -> dict[str, dict]:
    """name -> GPTConfig overrides of the variants measured."""
    ra = min(ra_heads, n_head) if ra_heads else n_head
    return {
        "standard": {},
        "mla": {"attention": "mla", "latent_dim": latent_dim},
        f"ra ({ra} heads)": {"ra_heads": ra},
        f"mla + ra ({ra} heads)": {"attention": "mla", "latent_dim": latent_dim, "ra_heads": ra},
    }


@torch.no_grad()
def measure(size: str, overrides: dict, prompt: int, dtype: torch.dtype) -> dict:
    """Cache bytes per token after a `prompt`-token prompt plus one token, and the cached-vs-full logit difference."""
    torch.manual_seed(0)
    model = GPT(config_for(size, block_size=prompt + 1, **overrides)).to(dtype).eval()
    idx = torch.randint(0, 50257, (1, prompt + 1))
    _, cache = model.forward_cached(idx[:, :prompt])
    logits, cache = model.forward_cached(idx[:, prompt:], cache)
    full, _ = model(idx)
    held = ", ".join(f"{k} {tuple(t.shape[1:])}" for k, t in cache[0].items())
    return {"bytes": cache_bytes_per_token(cache), "held": held,
            "diff": (logits[0, -1].float() - full[0, -1].float()).abs().max().item()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="tiny,gpt2", help=f"comma-separated, of: {', '.join(SIZES)}")
    p.add_argument("--mla-latent-dim", type=int, default=0,
                   help="MLA's latent (default: 32 for tiny, else 128, as gpt2/Kconfig)")
    p.add_argument("--ra-heads", type=int, default=0, help="reciprocal heads (default 0: all of them)")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    a = p.parse_args(argv)
    sizes = [s for s in a.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown size(s) {', '.join(unknown)}; valid: {', '.join(SIZES)}")
    print(f"torch {torch.__version__}, {a.dtype}, prompt {a.prompt_tokens} tokens + 1, batch 1")
    print("| size (layers / heads / width) | attention | cached per layer (after batch) | bytes per token | vs standard "
          "| max abs diff, cached vs full |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        cfg = SIZES[size]
        latent = a.mla_latent_dim or (32 if size == "tiny" else 128)
        base = None
        for name, overrides in variants(cfg.n_head, latent, a.ra_heads).items():
            m = measure(size, overrides, a.prompt_tokens, DTYPES[a.dtype])
            base = base or m["bytes"]
            label = f"{name}, latent {latent}" if "mla" in name else name
            print(f"| {size} ({cfg.n_layer} / {cfg.n_head} / {cfg.n_embd}) | {label} | {m['held']} | {m['bytes']:,.0f} "
                  f"| {m['bytes'] / base:.3f}x | {m['diff']:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
