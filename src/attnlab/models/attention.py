"""Causal self-attention, step by step as the lab draws it.

1. project each position to a query, a key and a value;
2. split the channels into heads;
3. scores: each query against every key, q . k / sqrt(D);
4. causal mask: a position may not look at later ones;
5. softmax over the keys: the attention weights;
6. weighted sum of the values;
7. merge the heads and project back to C channels.

`CausalSelfAttention.forward` is that walk. Steps 3 to 6 also exist as one fused kernel,
`F.scaled_dot_product_attention`: the same numbers without materialising the L x L weights, taken
when nothing needs to see them (tested equal). Generation with a KV cache runs the same projections
over cached keys and values in `decoding.py`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .hooks import NO_HOOK, Hook
from .norms import RMSNorm
from .positions import Rotation


def causal_mask_LK(L: int, K: int, device: torch.device | str | None = None) -> torch.Tensor:
    """True where query i may attend to key j: j <= i (the queries are the last L of the K positions)."""
    return torch.ones(L, K, dtype=torch.bool, device=device).tril(diagonal=K - L)


def split_heads(x_BLX: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """(B, L, heads x D) -> (B, heads, L, D): each head's D channels, as a sequence of its own."""
    # D is given, not inferred (-1): under torch.compile's dynamic shapes an inferred D is symbolic,
    # and the compiled decoding step then keeps its matmuls as slow external calls.
    B, L, _ = x_BLX.shape
    return x_BLX.view(B, L, n_heads, head_dim).transpose(1, 2)


def merge_heads(z_BHLD: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D) -> (B, L, H x D): the heads' outputs side by side again."""
    B, H, L, D = z_BHLD.shape
    return z_BHLD.transpose(1, 2).reshape(B, L, H * D)


def share_kv_heads(x_BGKD: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Grouped-query attention: each of the G key/value heads serves n_heads / G consecutive query heads."""
    G = x_BGKD.shape[1]
    return x_BGKD if G == n_heads else x_BGKD.repeat_interleave(n_heads // G, dim=1)


def attention(
    q_BHLD: torch.Tensor,
    k_BHKD: torch.Tensor,
    v_BHKD: torch.Tensor,
    mask_LK: torch.Tensor | None = None,
    hook: Hook = NO_HOOK,
    dropout_p: float = 0.0,
    keys: str = "K",
) -> torch.Tensor:
    """Steps 3-6 written out: softmax(q k^T / sqrt(D) + mask) v.

    `mask_LK` is boolean (True = may attend) or additive (0 or -inf, added to the scores); None
    means the causal mask. It may carry batch and head dimensions (B, 1, L, K: a padding mask).
    `keys` names the key positions in the hook names: K, or S for an encoder's source positions.
    """
    L, K = q_BHLD.shape[-2], k_BHKD.shape[-2]
    if mask_LK is None:
        mask_LK = causal_mask_LK(L, K, q_BHLD.device)
    scores_BHLK = hook(f"scores_BHL{keys}", q_BHLD @ k_BHKD.transpose(-2, -1) / math.sqrt(q_BHLD.shape[-1]))
    if mask_LK.dtype == torch.bool:
        masked_BHLK = scores_BHLK.masked_fill(~mask_LK, float("-inf"))
    else:
        masked_BHLK = scores_BHLK + mask_LK
    weights_BHLK = hook(f"weights_BHL{keys}", hook(f"masked_BHL{keys}", masked_BHLK).softmax(dim=-1))
    return F.dropout(weights_BHLK, dropout_p) @ v_BHKD


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with Q, K, V and output projections.

    `head_dim` (D) is independent of `emb_dim` (C): the projections map C -> H x D and back. With
    `n_kv_heads` = G < H, keys and values have G heads, each shared by H / G query heads.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg  # so the module can be rebuilt elsewhere from its config and weights (attnlab check)
        C, H, G, D = cfg.emb_dim, cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim, self.impl = H, G, D, cfg.attn_impl
        self.w_q = nn.Linear(C, H * D, bias=cfg.bias)
        self.w_k = nn.Linear(C, G * D, bias=cfg.bias)
        self.w_v = nn.Linear(C, G * D, bias=cfg.bias)
        self.w_o = nn.Linear(H * D, C, bias=cfg.bias)
        # QK-norm (Dehghani et al. 2023, the nanoGPT speedrun): each head's q and k rescaled to a learned
        # length, so no score can grow without bound and a higher learning rate stays stable.
        self.q_norm = RMSNorm(D, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(D, cfg.norm_eps) if cfg.qk_norm else None
        self.dropout = cfg.dropout
        kv = "BGKD" if cfg.grouped else "BHKD"  # the hook names say how many heads the tensors hold
        self.k_name, self.v_name = f"k_{kv}", f"v_{kv}"

    def hook_names(self) -> list[str]:
        """This module's hook points, in the order the forward passes them."""
        return ["q_BHLD", self.k_name, self.v_name, "scores_BHLK", "masked_BHLK", "weights_BHLK", "z_BHLD", "out_BLC"]

    def qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W_q, W_k and W_v stacked into one (H D + 2 G D) x C matrix (and bias)."""
        weight = torch.cat([self.w_q.weight, self.w_k.weight, self.w_v.weight])
        bias = torch.cat([self.w_q.bias, self.w_k.bias, self.w_v.bias]) if self.w_q.bias is not None else None
        return weight, bias

    def project_qkv(
        self, x_BLC: torch.Tensor, stacked: tuple[torch.Tensor, torch.Tensor | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 1: queries (B, L, H D), keys and values (B, L, G D) of every position.

        The three projections run as one matmul on the stacked weights (`stacked`, if already made):
        the same arithmetic in one larger call, which is faster forward and backward at these sizes.
        """
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv_BLZ = F.linear(x_BLC, *(stacked or self.qkv_weights()))
        q_BLX, k_BLY, v_BLY = qkv_BLZ.split([H * D, G * D, G * D], dim=-1)
        return q_BLX, k_BLY, v_BLY

    def forward(self, x_BLC: torch.Tensor, hook: Hook = NO_HOOK, rotate: Rotation | None = None) -> torch.Tensor:
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        # 1. Project every position to a query, a key and a value.
        q_BLX, k_BLY, v_BLY = self.project_qkv(x_BLC)
        # 2. Split the channels into heads (G key/value heads; G = H without grouped-query attention).
        q_BHLD = split_heads(q_BLX, H, D)
        k_BGKD, v_BGKD = split_heads(k_BLY, G, D), split_heads(v_BLY, G, D)
        if self.q_norm is not None:
            q_BHLD, k_BGKD = self.q_norm(q_BHLD), self.k_norm(k_BGKD)
        if rotate is not None:  # rotary positions turn queries and keys by their position's angle
            q_BHLD, k_BGKD = rotate(q_BHLD), rotate(k_BGKD)
        q_BHLD, k_BGKD, v_BGKD = hook("q_BHLD", q_BHLD), hook(self.k_name, k_BGKD), hook(self.v_name, v_BGKD)
        k_BHKD, v_BHKD = share_kv_heads(k_BGKD, H), share_kv_heads(v_BGKD, H)
        p_drop = self.dropout if self.training else 0.0
        if self.impl == "sdpa" and not hook.enabled:
            # 3-6 in one fused kernel: nothing asked to see the scores or the weights.
            z_BHLD = F.scaled_dot_product_attention(q_BHLD, k_BHKD, v_BHKD, dropout_p=p_drop, is_causal=True)
        else:
            # 3-6 written out: scores, causal mask, softmax, weighted sum of the values.
            L = x_BLC.shape[1]
            z_BHLD = attention(q_BHLD, k_BHKD, v_BHKD, causal_mask_LK(L, L, x_BLC.device), hook, p_drop)
        z_BHLD = hook("z_BHLD", z_BHLD)
        # 7. Merge the heads and project back to C channels.
        return hook("out_BLC", self.w_o(merge_heads(z_BHLD)))


class MaskedAttention(CausalSelfAttention):
    """The encoder-decoder's three attentions (Vaswani et al. 2017), with the same projections and steps:

    - "encoder": self-attention in which every source position sees every other one;
    - "decoder": causal self-attention over the target so far;
    - "cross": the decoder's queries against the keys and values of the encoder's output `memory_BSC`.

    `mask_B1LK` (True = may attend) hides padding, and in the decoder the future as well (see
    `seq2seq.py`). Hook names are the LM's, with S for the source positions of cross-attention
    (`k_BHSD`, `weights_BHLS`).
    """

    def __init__(self, cfg: ModelConfig, kind: str) -> None:
        super().__init__(cfg)
        self.kind, self.keys = kind, self.keys_of(kind)
        self.k_name, self.v_name = f"k_BH{self.keys}D", f"v_BH{self.keys}D"

    @staticmethod
    def keys_of(kind: str) -> str:
        """The letter of the key positions in the hook names: S (source) for cross-attention, else K."""
        return "S" if kind == "cross" else "K"

    def hook_names(self) -> list[str]:
        K = self.keys
        return [
            "q_BHLD",
            self.k_name,
            self.v_name,
            f"scores_BHL{K}",
            f"masked_BHL{K}",
            f"weights_BHL{K}",
            "z_BHLD",
            "out_BLC",
        ]

    def keys_values(self, source_BKC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `source_BKC` (for cross-attention, the encoder's output: made once per source)."""
        H, D = self.n_heads, self.head_dim
        return split_heads(self.w_k(source_BKC), H, D), split_heads(self.w_v(source_BKC), H, D)

    def forward(  # type: ignore[override]
        self,
        x_BLC: torch.Tensor,
        mask_B1LK: torch.Tensor,
        hook: Hook = NO_HOOK,
        memory_BSC: torch.Tensor | None = None,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        # 1-2. Queries from x; keys and values from x, or from the encoder's output (cross-attention),
        # or given (a decoding step's cached ones).
        q_BHLD = hook("q_BHLD", split_heads(self.w_q(x_BLC), self.n_heads, self.head_dim))
        k_BHKD, v_BHKD = keys_values or self.keys_values(x_BLC if memory_BSC is None else memory_BSC)
        k_BHKD, v_BHKD = hook(self.k_name, k_BHKD), hook(self.v_name, v_BHKD)
        p_drop = self.dropout if self.training else 0.0
        if self.impl == "sdpa" and not hook.enabled:  # 3-6 fused
            z_BHLD = F.scaled_dot_product_attention(q_BHLD, k_BHKD, v_BHKD, attn_mask=mask_B1LK, dropout_p=p_drop)
        else:  # 3-6 written out
            z_BHLD = attention(q_BHLD, k_BHKD, v_BHKD, mask_B1LK, hook, p_drop, keys=self.keys)
        # 7. Merge the heads and project back to C channels.
        return hook("out_BLC", self.w_o(merge_heads(hook("z_BHLD", z_BHLD))))
