"""The IC-Former: a few cross-attention blocks that read a context's word embeddings into k digests.

Queries are the digest states, updated block to block. Keys and values are the context's word
embeddings (taken from the frozen LLM's own input-embedding table: the LLM is never run) followed by
the *initial* digest embeddings, the same for every block. Positions (RoPE) put context token i at i and,
by default, digest j at the centre of the `ratio` tokens it replaces (`ICFormerConfig.digest_positions`).
Every digest sees every real context token and the digests up to itself, so the first m digests of a window
never depend on later ones: a short window just keeps its first ceil(t / ratio) digests. Cost is O(n * k),
linear in context length.

Shapes: B windows, N context tokens, M digests, C width, H heads, D head width.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import prompt
from .config import ICFormerConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32: bf16 squares lose too much precision over wide vectors.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.type_as(x) * self.weight


CosSin = tuple[torch.Tensor, torch.Tensor]  # rope_cos_sin's tables


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> CosSin:
    """cos and sin tables for integer positions (B, T) -> two (B, 1, T, D) tensors."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[..., None] * inv_freq  # (B, T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (B, T, D)
    return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class CrossAttention(nn.Module):
    def __init__(self, config: ICFormerConfig) -> None:
        super().__init__()
        c = config.hidden_size
        self.n_head = config.num_heads
        self.head_dim = config.head_dim
        self.rope_theta = config.rope_theta
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c, bias=False)
        self.o_proj = nn.Linear(c, c, bias=False)

    def forward(
        self, q_in: torch.Tensor, kv_in: torch.Tensor, q_cos_sin: CosSin, kv_cos_sin: CosSin, mask: torch.Tensor | None
    ) -> torch.Tensor:
        B, M, C = q_in.shape
        L = kv_in.shape[1]
        q = self.q_proj(q_in).view(B, M, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, M, D)
        k = self.k_proj(kv_in).view(B, L, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, L, D)
        v = self.v_proj(kv_in).view(B, L, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, L, D)
        q = apply_rope(q, *q_cos_sin)
        k = apply_rope(k, *kv_cos_sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, M, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, M, C))


class MLP(nn.Module):
    """SwiGLU, as in Llama."""

    def __init__(self, config: ICFormerConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ICFormerConfig) -> None:
        super().__init__()
        self.q_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.kv_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = CrossAttention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(
        self, h: torch.Tensor, kv: torch.Tensor, q_cos_sin: CosSin, kv_cos_sin: CosSin, mask: torch.Tensor | None
    ) -> torch.Tensor:
        h = h + self.attn(self.q_norm(h), self.kv_norm(kv), q_cos_sin, kv_cos_sin, mask)
        return h + self.mlp(self.mlp_norm(h))


class SelfAttention(nn.Module):
    """Bidirectional self-attention over a window's tokens (padding masked out), with RoPE."""

    def __init__(self, config: ICFormerConfig) -> None:
        super().__init__()
        c = config.hidden_size
        self.n_head = config.num_heads
        self.head_dim = config.head_dim
        self.qkv_proj = nn.Linear(c, 3 * c, bias=False)
        self.o_proj = nn.Linear(c, c, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: CosSin, mask: torch.Tensor | None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv_proj(x).view(B, N, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, N, D)
        y = F.scaled_dot_product_attention(apply_rope(q, *cos_sin), apply_rope(k, *cos_sin), v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, N, C))


class ContextLayer(nn.Module):
    """One pre-norm transformer layer over the context tokens: gives each key and value its neighbours' view."""

    def __init__(self, config: ICFormerConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = SelfAttention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos_sin: CosSin, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos_sin, mask)
        return x + self.mlp(self.mlp_norm(x))


def check_windows(
    config: ICFormerConfig, context_embeds: torch.Tensor, attention_mask: torch.Tensor | None, num_digests: int | None
) -> tuple[torch.Tensor, int]:
    """Validate a compressor's inputs (shared by ICFormer and LLMEncoder); returns the real-token mask (B, N) and
    the number of digests to produce."""
    if context_embeds.dim() != 3 or context_embeds.shape[-1] != config.hidden_size:
        raise ValueError(f"context_embeds must be (B, N, {config.hidden_size}), got {tuple(context_embeds.shape)}")
    B, N, _ = context_embeds.shape
    if attention_mask is not None and tuple(attention_mask.shape) != (B, N):
        raise ValueError(f"attention_mask must be (B, N) = {(B, N)}, got {tuple(attention_mask.shape)}")
    M = config.num_digest_tokens if num_digests is None else num_digests
    if not 1 <= M <= config.num_digest_tokens:
        raise ValueError(f"num_digests must be in [1, {config.num_digest_tokens}], got {M}")
    if attention_mask is None:
        return torch.ones(B, N, dtype=torch.bool, device=context_embeds.device), M
    return attention_mask.bool(), M


class ICFormer(nn.Module):
    """IC-Former compressor: context word embeddings (B, N, C) -> digest embeddings (B, M, C).

    Besides the digest queries it holds a few learned *special* embeddings that the LLM reads around
    digests (:data:`SPECIAL_BEGIN`, :data:`SPECIAL_END`) and before an auto-encoding target
    (:data:`SPECIAL_AE`); they train with the compressor because the LLM stays frozen.
    """

    SPECIAL_BEGIN = prompt.SPECIAL_BEGIN
    SPECIAL_END = prompt.SPECIAL_END
    SPECIAL_AE = prompt.SPECIAL_AE

    def __init__(self, config: ICFormerConfig) -> None:
        super().__init__()
        self.config = config
        self.digest_embeddings = nn.Parameter(torch.empty(config.num_digest_tokens, config.hidden_size))
        self.special_embeddings = nn.Parameter(torch.empty(config.num_special_tokens, config.hidden_size))
        if config.local_heads:
            # log of each local head's slope (nats of attention logit lost per token of distance), per block.
            self.log_slopes = nn.Parameter(torch.empty(config.num_blocks, config.local_heads))
        self.context_layers = nn.ModuleList(ContextLayer(config) for _ in range(config.context_layers))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_blocks))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.reset_parameters()

    def reset_parameters(self, embedding_rms: float = 0.02) -> None:
        """Fresh weights. `embedding_rms` is the LLM's typical embedding size: what the LLM reads
        (the digests after the final norm, the special tokens) starts at the scale it is used to."""
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.startswith("context_layers.") and name.endswith(("o_proj.weight", "down_proj.weight")):
                # Zero: a new context layer starts as the identity, so it can extend a trained checkpoint.
                nn.init.zeros_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                # GPT-2 style: keep the residual stream's variance steady across blocks.
                nn.init.normal_(p, std=std / math.sqrt(2 * self.config.num_blocks))
            elif p.dim() == 2:
                nn.init.normal_(p, std=std)
        if self.config.local_heads:
            # Slopes from 1 (a head that sees about its own `ratio` tokens) down to 1/64, as ALiBi's geometric set.
            slopes = torch.logspace(0, -6, self.config.local_heads, base=2.0)
            with torch.no_grad():
                self.log_slopes.copy_(slopes.log().expand_as(self.log_slopes))
        nn.init.normal_(self.digest_embeddings, std=embedding_rms)
        nn.init.normal_(self.special_embeddings, std=embedding_rms)
        with torch.no_grad():
            self.norm.weight.fill_(embedding_rms)

    def forward(
        self,
        context_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_digests: int | None = None,
    ) -> torch.Tensor:
        """Compress a batch of windows.

        Args:
            context_embeds: (B, N, C) word embeddings of the context windows.
            attention_mask: (B, N), true/1 for real tokens; padding may sit on either side.
            num_digests: digests to produce per window (default: k). Causality among digests makes the
                first m of them identical whatever m is, so callers ask for the most any window needs.
        Returns:
            (B, M, C) digest embeddings.
        """
        real, M = check_windows(self.config, context_embeds, attention_mask, num_digests)  # (B, N)
        B, N, C = context_embeds.shape
        device = context_embeds.device
        dtype = self.digest_embeddings.dtype

        # Context token i sits at position i (counting real tokens only).
        ctx_pos = (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, N)
        j = torch.arange(M, device=device, dtype=torch.float32)
        if self.config.digest_positions == "spread":
            # Digest j at the centre of the `ratio` tokens it stands for: the relative offset from a digest
            # to "its" tokens is then the same for every window length, so RoPE alone can point it there.
            r = self.config.ratio
            dig_pos = (r * j + (r - 1) / 2).expand(B, M)  # (B, M)
        else:
            # The paper's layout, digest j at n + j: the offset to its tokens depends on the window length n.
            dig_pos = real.sum(-1, keepdim=True) + j  # (B, M)
        q_cos_sin = rope_cos_sin(dig_pos, self.config.head_dim, self.config.rope_theta, dtype)
        kv_cos_sin = rope_cos_sin(torch.cat((ctx_pos, dig_pos), 1), self.config.head_dim, self.config.rope_theta, dtype)

        # Digest j sees every real context token and digests 0..j.
        causal = torch.ones(M, M, dtype=torch.bool, device=device).tril()
        mask = torch.cat((real[:, None, :].expand(B, M, N), causal.expand(B, M, M)), dim=-1)  # (B, M, N+M)
        mask = mask[:, None]  # (B, 1, M, N+M)

        masks = [mask] * len(self.blocks)
        if self.config.local_heads:
            masks = self._local_masks(mask, ctx_pos, dig_pos)
        digests = self.digest_embeddings[:M].expand(B, M, C)
        context = context_embeds.to(dtype)
        if self.config.context_layers:
            context = self._contextualize(context, real, ctx_pos)
        kv = torch.cat((context, digests), dim=1)  # (B, N+M, C)
        h = digests
        for block, block_mask in zip(self.blocks, masks, strict=True):
            h = block(h, kv, q_cos_sin, kv_cos_sin, block_mask)
        return self.norm(h)

    def _contextualize(self, x: torch.Tensor, real: torch.Tensor, ctx_pos: torch.Tensor) -> torch.Tensor:
        """(B, N, C): the context layers over real tokens; padding neither attends nor is attended to (its own row
        sees itself only, so no row is all -inf)."""
        N = x.shape[1]
        eye = torch.eye(N, dtype=torch.bool, device=x.device)
        mask = ((real[:, :, None] & real[:, None, :]) | eye)[:, None]  # (B, 1, N, N)
        cos_sin = rope_cos_sin(ctx_pos, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer in self.context_layers:
            x = layer(x, cos_sin, mask)
        return x

    def _local_masks(self, mask: torch.Tensor, ctx_pos: torch.Tensor, dig_pos: torch.Tensor) -> list[torch.Tensor]:
        """Float masks (B, H, M, N+M) per block: -slope * distance on the local heads' context logits."""
        B, _, M, _ = mask.shape
        H, Hl = self.config.num_heads, self.config.local_heads
        dist = (dig_pos[:, :, None] - ctx_pos[:, None, :].float()).abs()  # (B, M, N)
        dist = torch.cat((dist, dist.new_zeros(B, M, M)), -1)[:, None]  # (B, 1, M, N+M): none on digest keys
        blocked = torch.zeros_like(dist).masked_fill(~mask, float("-inf"))  # (B, 1, M, N+M)
        out = []
        for log_slopes in self.log_slopes:
            slopes = torch.cat((log_slopes.exp(), log_slopes.new_zeros(H - Hl)))  # (H,)
            out.append((blocked - slopes[None, :, None, None] * dist).to(self.digest_embeddings.dtype))
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
