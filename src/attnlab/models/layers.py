"""The Transformer's parts: causal multi-head self-attention, the MLP, and the block around them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .hooks import NO_HOOK, Hook


def causal_mask_LK(L: int, K: int, device: torch.device | str | None = None) -> torch.Tensor:
    """True where query i may attend to key j: j <= i (keys aligned to the end of the queries)."""
    return torch.ones(L, K, dtype=torch.bool, device=device).tril(diagonal=K - L)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with explicit Q, K, V and output projections.

    `head_dim` (D) is independent of `emb_dim` (C): the projections map C -> H*D and back.
    Two paths give the same output: `F.scaled_dot_product_attention` (fast, the default) and the
    written-out one (scores, causal mask, softmax, weighted sum), taken whenever hooks are active
    so that the scores and weights can be read or edited.
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

    def forward(self, x_BLC: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        B, L, _ = x_BLC.shape
        H, D = self.n_heads, self.head_dim
        q_BHLD = hook("q_BHLD", self.w_q(x_BLC).view(B, L, H, D).transpose(1, 2))
        k_BHKD = hook("k_BHKD", self.w_k(x_BLC).view(B, L, H, D).transpose(1, 2))
        v_BHKD = hook("v_BHKD", self.w_v(x_BLC).view(B, L, H, D).transpose(1, 2))
        p_drop = self.dropout if self.training else 0.0
        if self.impl == "sdpa" and not hook.enabled:
            z_BHLD = F.scaled_dot_product_attention(q_BHLD, k_BHKD, v_BHKD, dropout_p=p_drop, is_causal=True)
        else:
            # Written out; hooks need this path, since SDPA never materialises scores or weights.
            scores_BHLK = hook("scores_BHLK", q_BHLD @ k_BHKD.transpose(-2, -1) / math.sqrt(D))
            causal_LK = causal_mask_LK(L, k_BHKD.shape[2], x_BLC.device)
            masked_BHLK = hook("masked_BHLK", scores_BHLK.masked_fill(~causal_LK, float("-inf")))
            weights_BHLK = hook("weights_BHLK", masked_BHLK.softmax(dim=-1))
            z_BHLD = F.dropout(weights_BHLK, p_drop) @ v_BHKD
        z_BHLD = hook("z_BHLD", z_BHLD)
        return hook("out_BLC", self.w_o(z_BHLD.transpose(1, 2).reshape(B, L, H * D)))


class MLP(nn.Module):
    """Linear C -> F, ReLU, Linear F -> C: the lab's feed-forward block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.emb_dim, cfg.n_hidden)
        self.fc_out = nn.Linear(cfg.n_hidden, cfg.emb_dim)

    def forward(self, x_BLC: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        pre_BLF = hook("pre_BLF", self.fc_in(x_BLC))
        hidden_BLF = hook("hidden_BLF", F.relu(pre_BLF))
        return hook("out_BLC", self.fc_out(hidden_BLF))


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.emb_dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.emb_dim)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x_BLC: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        ln1_BLC = hook("ln1_BLC", self.ln1(x_BLC))
        resid_mid_BLC = hook("resid_mid_BLC", x_BLC + self.drop(self.attn(ln1_BLC, hook.scope("attn."))))
        ln2_BLC = hook("ln2_BLC", self.ln2(resid_mid_BLC))
        return hook("resid_post_BLC", resid_mid_BLC + self.drop(self.mlp(ln2_BLC, hook.scope("mlp."))))
