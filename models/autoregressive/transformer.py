"""Dynamics transformer: causal across steps, bidirectional within the frame being generated.

The sequence is made of two kinds of blocks (one per step t):

- a *clean* block C_t = [the N tokens of frame t, one action token (action t + event vector t)];
- a *generated* block G_{t+1} = the N tokens of frame t+1, some replaced by a MASK token, each
  slot also told the token that stood there in frame t (a copy prior, in the spirit of
  Delta-IRIS conditioning on the previous frame: most of an Atari screen does not change, and
  "keep the token under me" is then learned in a few hundred steps instead of thousands).

G_{t+1} attends to itself (all of it) and to the clean blocks of the last `window` steps, and is
trained to recover its masked tokens (MaskGIT, Chang et al. 2022; Genie's dynamics model). Clean
blocks attend to the clean blocks of the last `window` steps (their own included) and never to a
generated block, so in play their keys and values are computed once and kept in a KV cache: a
ring of `window` block slots of fixed size (static shapes for CUDA graphs / torch.compile) that
slides forever. Because the attention band is the same in training and in play, a cached rollout
equals recomputing the whole history with the banded mask (tests/test_ar_transformer.py).

Time enters only through rotary embeddings on the step index (RoPE, Su et al. 2021), so attention
depends on step differences alone and the ring needs no re-encoding when it slides. The slot of
a token inside its block (grid position or the action slot) is a learned additive embedding.
Reward and episode end of step t are read from the action token of C_t (as in IRIS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TransformerConfig:
    width: int = 256
    """Model width d."""
    layers: int = 4
    heads: int = 4
    window: int = 8
    """Steps of clean blocks each block attends to (the KV cache holds this many)."""
    mlp_ratio: float = 4.0
    rope_base: float = 10000.0


class KVCache:
    """Keys and values of the last `window` clean blocks, per layer, in a ring of fixed size.

    Shapes: k, v (B, heads, window * (N + 1), head_dim); filled (window * (N + 1),) bool.
    """

    def __init__(self, layers: int, batch: int, heads: int, slots: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.k = [torch.zeros(batch, heads, slots, head_dim, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(batch, heads, slots, head_dim, device=device, dtype=dtype) for _ in range(layers)]
        self.filled = torch.zeros(slots, dtype=torch.bool, device=device)

    @classmethod
    def wrap(cls, k: list[torch.Tensor], v: list[torch.Tensor], filled: torch.Tensor) -> KVCache:
        """A ring over existing tensors (no copy)."""
        new = cls.__new__(cls)
        new.k, new.v, new.filled = k, v, filled
        return new

    def clone(self) -> KVCache:
        new = KVCache.__new__(KVCache)
        new.k = [t.clone() for t in self.k]
        new.v = [t.clone() for t in self.v]
        new.filled = self.filled.clone()
        return new


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, L, hd); cos, sin: (L, hd). Rotate pairs (i, i + hd/2) by the step's angle.
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
    return x * cos + rotated * sin


class Block(nn.Module):
    """Pre-norm transformer block whose attention can read and extend a KV cache."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                write: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: (B, L, d) tokens; cos, sin: (L, head_dim) rotary tables of their steps.
            mask: (B or 1, 1, L, keys) bool, True where attention is allowed. Keys are x's own
                tokens, or with a cache: the cache slots followed by x's tokens not written.
            cache: this layer's (k, v) ring, or None.
            write: (n,) slot indices; x's first n tokens are stored there before attending.
        """
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)  # (B, H, L, hd)
        if cache is not None:
            ck, cv = cache
            n_write = 0 if write is None else write.shape[0]
            if write is not None and n_write:
                ck.index_copy_(2, write, k[:, :, :n_write].to(ck.dtype))
                cv.index_copy_(2, write, v[:, :, :n_write].to(cv.dtype))
            k = torch.cat((ck.to(q.dtype), k[:, :, n_write:]), 2)
            v = torch.cat((cv.to(q.dtype), v[:, :, n_write:]), 2)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(h.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class DynamicsTransformer(nn.Module):
    """Predicts frame t+1's tokens, reward t and end t from the clean blocks up to step t."""

    inv_freq: torch.Tensor

    def __init__(self, config: TransformerConfig, tokens_per_frame: int, codebook_size: int,
                 num_actions: int, event_dim: int) -> None:
        super().__init__()
        if config.width % config.heads or (config.width // config.heads) % 2:
            from engine.errors import UserError
            raise UserError(f"transformer: width {config.width} must split into {config.heads} heads "
                            "of even size")
        self.config = config
        self.n = tokens_per_frame
        self.codebook_size = codebook_size
        self.mask_id = codebook_size
        d = config.width
        self.tok_emb = nn.Embedding(codebook_size + 1, d)  # last row: MASK
        self.prev_emb = nn.Embedding(codebook_size, d)  # generated blocks: the previous frame's token
        self.slot_emb = nn.Parameter(torch.randn(tokens_per_frame + 1, d) * 0.02)  # grid slots + action
        self.kind_emb = nn.Parameter(torch.randn(2, d) * 0.02)  # 0: clean block, 1: generated block
        self.act_emb = nn.Embedding(num_actions, d)
        self.event_proj = nn.Linear(event_dim, d, bias=False)
        self.blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(d)
        self.token_head = nn.Linear(d, codebook_size)
        self.reward_head = nn.Linear(d, 4)  # 3 sign logits (-, 0, +) and log1p |reward|
        self.end_head = nn.Linear(d, 1)
        hd = d // config.heads
        inv = 1.0 / config.rope_base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        self.register_buffer("inv_freq", inv, persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ---- embeddings -------------------------------------------------------------------------
    def _rope_tables(self, steps: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # steps: (L,) absolute step index of each token. float64 keeps angles exact at any step.
        ang = steps.to(torch.float64)[:, None] * self.inv_freq[None, :]
        ang = torch.cat((ang, ang), -1)
        return ang.cos().to(dtype), ang.sin().to(dtype)

    def embed_clean(self, tokens: torch.Tensor, actions: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """(B, T, N) tokens, (B, T) actions, (B, T, E) events -> (B, T, N + 1, d)."""
        frame = self.tok_emb(tokens)
        act = (self.act_emb(actions) + self.event_proj(events.to(frame.dtype))).unsqueeze(2)
        return torch.cat((frame, act), 2) + self.slot_emb + self.kind_emb[0]

    def embed_generated(self, tokens: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """(B, T, N) tokens, MASK where unknown, and (B, T, N) previous-frame tokens -> (B, T, N, d)."""
        return self.tok_emb(tokens) + self.prev_emb(prev) + self.slot_emb[: self.n] + self.kind_emb[1]

    def _heads(self, h: torch.Tensor) -> torch.Tensor:
        return self.token_head(self.norm_out(h))

    def outcome(self, action_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., d) action-token outputs -> reward head (..., 4), end logit (...)."""
        h = self.norm_out(action_hidden)
        return self.reward_head(h), self.end_head(h).squeeze(-1)

    # ---- full sequence (training, and the uncached reference) -------------------------------
    def forward(self, clean_tokens: torch.Tensor, actions: torch.Tensor, events: torch.Tensor,
                clean_valid: torch.Tensor, gen_tokens: torch.Tensor, gen_prev: torch.Tensor,
                gen_steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run clean blocks 0..Tc-1 and generated blocks together under the banded mask.

        Args:
            clean_tokens: (B, Tc, N); actions: (B, Tc); events: (B, Tc, E).
            clean_valid: (B, Tc) bool; invalid clean blocks (padding) are hidden from others.
            gen_tokens: (B, Tg, N) with MASK where unknown; generated block j is frame gen_steps[j].
            gen_prev: (B, Tg, N) tokens of the frame before each generated one.
            gen_steps: (Tg,) long, each >= 1.
        Returns: token logits (B, Tg, N, V) and action-token outputs (B, Tc, d).
        """
        b, tc, n = clean_tokens.shape
        tg = gen_tokens.shape[1]
        w = self.config.window
        dev = clean_tokens.device
        x = torch.cat((self.embed_clean(clean_tokens, actions, events).flatten(1, 2),
                       self.embed_generated(gen_tokens, gen_prev).flatten(1, 2)), 1)
        # Per token: step, kind (0 clean / 1 generated), block id (distinct over both kinds).
        c_step = torch.arange(tc, device=dev).repeat_interleave(n + 1)
        g_step = gen_steps.to(dev).repeat_interleave(n)
        step = torch.cat((c_step, g_step))
        kind = torch.cat((torch.zeros_like(c_step), torch.ones_like(g_step)))
        block = torch.cat((c_step, tc + torch.arange(tg, device=dev).repeat_interleave(n)))
        qs, ks = step[:, None], step[None, :]
        q_clean, k_clean = (kind == 0)[:, None], (kind == 0)[None, :]
        # Clean query at step s sees clean keys in (s - w, s]; generated query for frame s sees
        # clean keys in (s - 1 - w, s - 1] and its own block.
        anchor = torch.where(q_clean, qs, qs - 1)
        band = k_clean & (ks <= anchor) & (ks > anchor - w)
        same = block[:, None] == block[None, :]
        allowed = band | (same & ~q_clean)
        key_valid = torch.cat((clean_valid.repeat_interleave(n + 1, 1),
                               torch.ones(b, tg * n, dtype=torch.bool, device=dev)), 1)
        mask = (allowed[None] & (key_valid[:, None, :] | same[None])).unsqueeze(1)  # (B, 1, L, L)
        cos, sin = self._rope_tables(step, x.dtype)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask)
        clean_out = x[:, : tc * (n + 1)].view(b, tc, n + 1, -1)
        gen_out = x[:, tc * (n + 1):].view(b, tg, n, -1)
        return self._heads(gen_out), clean_out[:, :, n]

    # ---- cached play ------------------------------------------------------------------------
    def new_cache(self, batch: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        c = self.config
        return KVCache(c.layers, batch, c.heads, c.window * (self.n + 1), c.width // c.heads, device, dtype)

    def step_cached(self, cache: KVCache, step: torch.Tensor, clean: tuple[torch.Tensor, torch.Tensor,
                    torch.Tensor] | None, gen_tokens: torch.Tensor | None,
                    gen_prev: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One cached forward: optionally append clean block C_step, optionally predict frame step+1.

        Args:
            cache: the ring, updated in place when `clean` is given.
            step: () long tensor, the step index t of the clean block (a tensor keeps shapes static).
            clean: (tokens (B, N), action (B,), event (B, E)) of C_t, or None.
            gen_tokens: (B, N) tokens of frame t+1 with MASK where unknown, or None.
            gen_prev: (B, N) tokens of frame t (needed with gen_tokens).
        Returns: token logits (B, N, V) or None, action-token output (B, d) or None.
        """
        n = self.n
        slots = cache.filled.shape[0]
        parts, steps = [], []
        write = None
        if clean is not None:
            tokens, action, event = clean
            parts.append(self.embed_clean(tokens[:, None], action[:, None], event[:, None])[:, 0])
            steps.append(step.expand(n + 1))
            start = (step % self.config.window) * (n + 1)
            write = start + torch.arange(n + 1, device=step.device)
            cache.filled.index_fill_(0, write, True)  # no host scalar copy: capturable
        if gen_tokens is not None:
            assert gen_prev is not None, "a generated block needs the previous frame's tokens"
            parts.append(self.embed_generated(gen_tokens[:, None], gen_prev[:, None])[:, 0])
            steps.append((step + 1).expand(n))
        x = torch.cat(parts, 1)
        cos, sin = self._rope_tables(torch.cat(steps), x.dtype)
        n_clean = n + 1 if clean is not None else 0
        n_gen = n if gen_tokens is not None else 0
        # Keys: the ring (its filled slots), then the generated block for generated queries only.
        rows_clean = torch.cat((cache.filled[None].expand(n_clean, slots),
                                torch.zeros(n_clean, n_gen, dtype=torch.bool, device=x.device)), 1)
        rows_gen = torch.cat((cache.filled[None].expand(n_gen, slots),
                              torch.ones(n_gen, n_gen, dtype=torch.bool, device=x.device)), 1)
        mask = torch.cat((rows_clean, rows_gen), 0)[None, None]
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, mask, (cache.k[i], cache.v[i]), write)
        action_out = x[:, n] if clean is not None else None
        logits = self._heads(x[:, n_clean:]) if gen_tokens is not None else None
        return logits, action_out
