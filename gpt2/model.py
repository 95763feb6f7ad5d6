"""GPT-2: a decoder-only transformer with the published sizes and a tiny one, and its architecture variants.

Pre-LayerNorm blocks of causal self-attention and a GELU MLP, learned
position embeddings, a final LayerNorm, and an output head whose weight is the
token embedding (weight tying, as in GPT-2). The vocabulary is padded from
50257 to 50304 (a multiple of 64) for faster matrix multiplies; the padded
logits are never a target and learn to stay low.

The variants (GPTConfig fields; their defaults are GPT-2 exactly, with the
same parameter names and initialisation; docs/gpt2.md, "Architecture
variants"):
- `mlp_ratio`: the MLP:attention parameter ratio that sizes the MLP's hidden
  layer ("gpt2": 4 x width, "golden": 2.5, or a number), rounded to a
  multiple of 64 (`mlp_hidden`);
- `attention="mla"`: keys and values from a shared latent of `latent_dim`
  (`LatentAttention`); the inference cache holds the latent only;
- `ra_heads`: reciprocal attention on the first `ra_heads` heads,
  score(i, j) = (q_i . k_j + w_h k_i . q_j) / sqrt(head_dim), w_h learned
  from 0, folded into one scaled_dot_product_attention call (`attend`);
- `rmlp`: a low-rank coupling from the attention output into the MLP's
  hidden pre-activation behind a learned gate from 0 (`ReciprocalCoupler`).

`GPT.forward_cached` decodes incrementally with a cache (one dict of tensors
per layer, time on dim -2 of every tensor); `generate` uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

PADDED_VOCAB = 50304
ATTENTIONS = ("standard", "mla")
MLP_RATIOS = {"golden": 2.5}  # named ratios; "gpt2" is the 4 x width MLP itself
MLP_MULTIPLE = 64  # every MLP hidden size is a multiple of this


def parse_mlp_ratio(text: str) -> float | None:
    """None for "gpt2" (the 4 x width MLP), 2.5 for "golden", else the positive number `text` spells."""
    if text == "gpt2":
        return None
    if text in MLP_RATIOS:
        return MLP_RATIOS[text]
    try:
        ratio = float(text)
    except (TypeError, ValueError):
        ratio = math.nan
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"MLP ratio {text!r}: write gpt2, {', '.join(MLP_RATIOS)} or a positive number")
    return ratio


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int = 1024
    vocab_size: int = PADDED_VOCAB
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in its linear layers and LayerNorms
    mlp_ratio: str = "gpt2"  # "gpt2" (4 x n_embd hidden), "golden" (MLP = 2.5 x attention parameters) or a number
    attention: str = "standard"  # standard | mla
    latent_dim: int = 128  # MLA's shared key/value latent (the reference's size); unused by standard attention
    ra_heads: int = 0  # reciprocal attention on this many heads (the first ones); 0: off
    rmlp: bool = False  # attention -> MLP coupling (ReciprocalCoupler)

    def __post_init__(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; valid: {', '.join(ATTENTIONS)}")
        if not 0 <= self.ra_heads <= self.n_head:
            raise ValueError(f"ra_heads must be in 0..{self.n_head} (the heads), got {self.ra_heads}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {self.latent_dim}")
        parse_mlp_ratio(self.mlp_ratio)


# name -> shape; "gpt2" is the 124M model, the others are its published siblings.
SIZES = {
    "tiny": GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64),
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}
MAX_POSITIONS = 1024  # the published models' context; the tiny one may use up to this too


def config_for(size: str, **overrides) -> GPTConfig:
    """The shape of a named size, with `overrides` (block_size, dropout, attention, ...) applied."""
    if size not in SIZES:
        raise ValueError(f"unknown GPT-2 model size {size!r}; valid: {', '.join(SIZES)}")
    return replace(SIZES[size], **{k: v for k, v in overrides.items() if v is not None})


def attention_weights(cfg: GPTConfig) -> int:
    """Weight-matrix parameters of one block's attention (what the pruners count; no biases, ra_weight is 1-D)."""
    d = cfg.n_embd
    if cfg.attention == "mla":
        return 2 * d * d + 3 * d * cfg.latent_dim  # q_proj, c_proj; kv_down, k_up, v_up
    return 4 * d * d  # c_attn (q, k, v), c_proj


def mlp_hidden(cfg: GPTConfig) -> int:
    """The MLP's hidden size: 4 x width for "gpt2", else the multiple of 64 nearest to ratio x attention / (2 x width).

    The MLP's weights are 2 x width x hidden, so this is the hidden size whose
    MLP:attention weight ratio is nearest the asked one (at least 64).
    """
    ratio = parse_mlp_ratio(cfg.mlp_ratio)
    if ratio is None:
        return 4 * cfg.n_embd
    exact = ratio * attention_weights(cfg) / (2 * cfg.n_embd)
    return max(MLP_MULTIPLE, MLP_MULTIPLE * round(exact / MLP_MULTIPLE))


def attend(q, k, v, *, ra_weight=None, q_past=None, dropout_p: float = 0.0):
    """Causal multi-head attention of the newest queries over all keys, optionally reciprocal; (B, H, Tq, head_dim).

    q (B, H, Tq, hd) are the queries of the last Tq of the Tk positions that
    k and v (B, H, Tk, hd) hold. With `ra_weight` w (H,) and `q_past`
    (B, H, Tk, hd), the queries of all Tk positions, the score of query i and
    key j <= i is (q_i . k_j + w_h k_i . q_j) / sqrt(hd): one
    scaled_dot_product_attention over q~ = [q, w k] and k~ = [k, q_past]
    along the head dimension. Both terms only read positions <= i, so the
    causal mask still holds; w_h = 0 is standard attention.
    """
    Tq, Tk, hd = q.size(-2), k.size(-2), q.size(-1)
    if ra_weight is not None:
        q = torch.cat((q, ra_weight.to(k.dtype).view(1, -1, 1, 1) * k[:, :, Tk - Tq :]), dim=-1)
        k = torch.cat((k, q_past), dim=-1)
    if Tq == Tk:
        mask, causal = None, True
    else:  # queries at positions Tk - Tq .. Tk - 1 (decoding with a cache): the mask aligned bottom-right
        mask, causal = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal,
                                          scale=1.0 / math.sqrt(hd))


class _Heads(nn.Module):
    """What both attention modules share: heads, reciprocal weights, the cache of reciprocal queries, the output."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"embedding width {cfg.n_embd} is not divisible by {cfg.n_head} heads")
        self.n_head = cfg.n_head
        self.ra_heads = cfg.ra_heads
        if cfg.ra_heads:  # w_h of the reciprocal heads, from 0 (standard attention)
            self.ra_weight = nn.Parameter(torch.zeros(cfg.ra_heads))
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def split(self, t, B, T):
        """(B, T, D) -> (B, heads, T, D / heads)."""
        return t.view(B, T, self.n_head, t.size(-1) // self.n_head).transpose(1, 2)

    def heads(self, q, k, v, past: dict, present: dict):
        """Attention of (B, H, T, hd) q over k, v; with RA, the RA heads' queries go into `present` (after `past`'s)."""
        ra = {}
        if self.ra_heads:
            q_ra = q[:, : self.ra_heads]
            if "q" in past:
                q_ra = torch.cat((past["q"], q_ra), dim=2)
            present["q"] = q_ra
            zeros = q_ra.new_zeros(q.size(0), self.n_head - self.ra_heads, q_ra.size(2), q.size(3))
            w = torch.cat((self.ra_weight, self.ra_weight.new_zeros(self.n_head - self.ra_heads)))
            ra = {"ra_weight": w, "q_past": torch.cat((q_ra, zeros), dim=1)}
        return attend(q, k, v, dropout_p=self.dropout if self.training else 0.0, **ra)

    def out(self, y):
        B, H, T, hd = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, H * hd)))


class CausalSelfAttention(_Heads):
    """GPT-2's attention: q, k, v from one projection; the cache holds k and v (and the RA heads' queries)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__(cfg)
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x, past: dict | None = None):
        """(output, present): `present` is `past` extended by this call's positions."""
        B, T, _ = x.shape
        past, present = past or {}, {}
        D = self.c_attn.out_features // 3  # the heads' width: n_embd, or less once heads are pruned (lib/pruning/channels.py)
        q, k, v = (self.split(t, B, T) for t in self.c_attn(x).split(D, dim=2))
        if "k" in past:
            k, v = torch.cat((past["k"], k), dim=2), torch.cat((past["v"], v), dim=2)
        present["k"], present["v"] = k, v
        return self.out(self.heads(q, k, v, past, present)), present


class LatentAttention(_Heads):
    """Multi-head latent attention: keys and values from a shared latent of `latent_dim`; the cache holds the latent.

    q = q_proj(x); c = kv_down(x) (B, T, latent_dim); k = k_up(c), v = v_up(c).
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__(cfg)
        d, r = cfg.n_embd, cfg.latent_dim
        self.q_proj = nn.Linear(d, d, bias=cfg.bias)
        self.kv_down = nn.Linear(d, r, bias=cfg.bias)
        self.k_up = nn.Linear(r, d, bias=cfg.bias)
        self.v_up = nn.Linear(r, d, bias=cfg.bias)
        self.c_proj = nn.Linear(d, d, bias=cfg.bias)

    def forward(self, x, past: dict | None = None):
        """(output, present): `present` is `past` extended by this call's positions."""
        B, T, _ = x.shape
        past, present = past or {}, {}
        latent = self.kv_down(x)
        if "latent" in past:
            latent = torch.cat((past["latent"], latent), dim=1)
        present["latent"] = latent
        Tk = latent.size(1)
        q = self.split(self.q_proj(x), B, T)
        k, v = self.split(self.k_up(latent), B, Tk), self.split(self.v_up(latent), B, Tk)
        return self.out(self.heads(q, k, v, past, present)), present


class ReciprocalCoupler(nn.Module):
    """R-MLP: the attention output's low-rank image in the MLP's hidden layer, g * up(down(a)), with g learned from 0."""

    def __init__(self, cfg: GPTConfig, hidden: int):
        super().__init__()
        rank = max(1, cfg.n_embd // 4)
        self.down = nn.Linear(cfg.n_embd, rank, bias=False)
        self.up = nn.Linear(rank, hidden, bias=False)
        self.gate = nn.Parameter(torch.zeros(()))  # 0: the block is the one without the coupler

    def forward(self, a):
        return self.gate * self.up(self.down(a))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        hidden = mlp_hidden(cfg)
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, coupling=None):
        """`coupling`: added to the hidden pre-activation (R-MLP)."""
        h = self.c_fc(x)
        if coupling is not None:
            h = h + coupling
        return self.dropout(self.c_proj(self.gelu(h)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = LatentAttention(cfg) if cfg.attention == "mla" else CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)
        if cfg.rmlp:
            self.coupler = ReciprocalCoupler(cfg, self.mlp.c_fc.out_features)

    def forward(self, x, past: dict | None = None):
        """(output, this layer's cache extended by x's positions)."""
        a, present = self.attn(self.ln_1(x), past)
        x = x + a
        coupling = self.coupler(a) if hasattr(self, "coupler") else None
        return x + self.mlp(self.ln_2(x), coupling), present


def cache_length(cache: list[dict] | None) -> int:
    """Positions a cache holds (0 for none); every cache tensor has time on dim -2."""
    return next(iter(cache[0].values())).size(-2) if cache else 0


def cache_bytes_per_token(cache: list[dict]) -> float:
    """Bytes the cache's tensors hold per position and sequence (numel x element size over all layers)."""
    total = sum(t.numel() * t.element_size() for layer in cache for t in layer.values())
    batch = next(iter(cache[0].values())).size(0)
    return total / (cache_length(cache) * batch)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if not 1 <= cfg.block_size <= MAX_POSITIONS:
            raise ValueError(f"block size {cfg.block_size} is outside 1..{MAX_POSITIONS}")
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the position embedding (the token one is the head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def param_classes(self) -> dict[str, int]:
        """Prunable weights (`lib.pruning.prunable_parameters`) per structural role (`structure.classify_model`)."""
        from lib.pruning import prunable_parameters
        from lib.pruning.structure import ROLES, classify_model

        params = dict(prunable_parameters(self))
        counts = dict.fromkeys(ROLES, 0)
        for name, role in classify_model(self, list(params)).items():
            counts[role] += params[name].numel()
        return counts

    def mlp_attention_ratio(self) -> float:
        """MLP weights / attention weights, as the pruners count them (`param_classes`)."""
        counts = self.param_classes()
        return counts["mlp"] / counts["attention"]

    def _embed(self, idx, start: int):
        T = idx.size(1)
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than the block size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))

    def forward(self, idx, targets=None):
        """Logits (B, T, vocab) and, given targets, the mean cross-entropy."""
        x = self._embed(idx, 0)
        for block in self.transformer.h:
            x, _ = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def forward_cached(self, idx, cache: list[dict] | None = None):
        """Logits (B, T, vocab) of the new tokens `idx` after the positions `cache` holds, and the extended cache.

        The cache is a list of one dict per layer: standard attention's "k"
        and "v" (B, heads, T, head_dim), MLA's "latent" (B, T, latent_dim),
        and with RA the reciprocal heads' queries "q" (B, ra_heads, T, head_dim).
        """
        x = self._embed(idx, cache_length(cache))
        present = []
        for i, block in enumerate(self.transformer.h):
            x, layer = block(x, cache[i] if cache else None)
            present.append(layer)
        return self.lm_head(self.transformer.ln_f(x)), present

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None):
        """Sample `max_new_tokens` continuations of `idx` (B, T), decoding with the cache.

        Once the context fills the block, each step reads the last block_size
        tokens afresh (learned positions: a sliding window cannot reuse the cache).
        """
        block = self.config.block_size
        logits, cache = self.forward_cached(idx[:, -block:])
        for step in range(max_new_tokens):
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            token = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, token), dim=1)
            if step + 1 < max_new_tokens:
                if cache_length(cache) < block:
                    logits, cache = self.forward_cached(token, cache)
                else:
                    logits, cache = self.forward_cached(idx[:, -block:])
        return idx
