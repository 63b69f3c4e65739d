"""The Transformer's parts: causal multi-head self-attention and the MLP."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def causal_mask_LK(L: int, K: int, device: torch.device | str | None = None) -> torch.Tensor:
    """True where query i may attend to key j: j <= i (keys aligned to the end of the queries)."""
    return torch.ones(L, K, dtype=torch.bool, device=device).tril(diagonal=K - L)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with explicit Q, K, V and output projections.

    `head_dim` (D) is independent of `emb_dim` (C): the projections map C -> H*D and back.
    Two paths give the same output: `F.scaled_dot_product_attention` (fast, the default) and the
    written-out one (scores, causal mask, softmax, weighted sum), which also returns the weights.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.impl = cfg.n_heads, cfg.head_dim, cfg.attn_impl
        inner = cfg.n_heads * cfg.head_dim
        self.w_q = nn.Linear(cfg.emb_dim, inner)
        self.w_k = nn.Linear(cfg.emb_dim, inner)
        self.w_v = nn.Linear(cfg.emb_dim, inner)
        self.w_o = nn.Linear(inner, cfg.emb_dim)
        self.dropout = cfg.dropout

    def forward(self, x_BLC: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, L, _ = x_BLC.shape
        H, D = self.n_heads, self.head_dim
        q_BHLD = self.w_q(x_BLC).view(B, L, H, D).transpose(1, 2)
        k_BHLD = self.w_k(x_BLC).view(B, L, H, D).transpose(1, 2)
        v_BHLD = self.w_v(x_BLC).view(B, L, H, D).transpose(1, 2)
        p_drop = self.dropout if self.training else 0.0
        weights_BHLL = None
        if self.impl == "sdpa" and not need_weights:
            out_BHLD = F.scaled_dot_product_attention(q_BHLD, k_BHLD, v_BHLD, dropout_p=p_drop, is_causal=True)
        else:
            scores_BHLL = q_BHLD @ k_BHLD.transpose(-2, -1) / math.sqrt(D)
            causal_LL = causal_mask_LK(L, L, x_BLC.device)
            weights_BHLL = scores_BHLL.masked_fill(~causal_LL, float("-inf")).softmax(dim=-1)
            out_BHLD = F.dropout(weights_BHLL, p_drop) @ v_BHLD
        out_BLC = self.w_o(out_BHLD.transpose(1, 2).reshape(B, L, H * D))
        return out_BLC, weights_BHLL


class MLP(nn.Module):
    """Linear C -> F, ReLU, Linear F -> C: the lab's feed-forward block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.emb_dim, cfg.n_hidden)
        self.fc_out = nn.Linear(cfg.n_hidden, cfg.emb_dim)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        hidden_BLF = F.relu(self.fc_in(x_BLC))
        return self.fc_out(hidden_BLF)


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.emb_dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.emb_dim)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x_BLC: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_BLC, weights_BHLL = self.attn(self.ln1(x_BLC), need_weights)
        resid_mid_BLC = x_BLC + self.drop(attn_BLC)
        return resid_mid_BLC + self.drop(self.mlp(self.ln2(resid_mid_BLC))), weights_BHLL
