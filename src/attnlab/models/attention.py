"""Attention, step by step as the lab draws it.

1. project each position to a query, a key and a value;
2. split the channels into heads;
3. scores: each query against every key, q . k / sqrt(D);
4. mask: the keys a query may not see (the future; padding);
5. softmax over the keys: the attention weights;
6. weighted sum of the values;
7. merge the heads and project back to C channels.

`Attention.forward` is that walk, for every attention in attnlab: the language models' causal
self-attention (`CausalSelfAttention`) and the encoder-decoder's three (the encoder's self-attention,
the decoder's, and cross-attention, whose keys and values come from the encoder's output). The mask
is the only difference: causal, padding, or both. Steps 3 to 6 are written out in `attention` and
also exist as one fused kernel in `fused_attention` (`F.scaled_dot_product_attention`): the same
numbers without materialising the L x K weights, taken when nothing needs to see them (tested equal).
While generating, a KV cache (`decoding.py`) hands the forward the keys and values of the earlier
positions, so each new token runs only its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import decoding
from .config import ModelConfig
from .hooks import NO_HOOK, Hook
from .norms import RMSNorm
from .positions import Rotation


def causal_mask_LK(L: int, K: int, device: torch.device | str | None = None) -> torch.Tensor:
    """True where query i may attend to key j: j <= i (the queries are the last L of the K positions)."""
    return torch.ones(L, K, dtype=torch.bool, device=device).tril(diagonal=K - L)


def left_padding(slots: slice, pad_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and mask of the query slots `slots` of a left-padded batch, row b starting with pad_B[b]
    pad tokens (prompts of different lengths generated together): each row's positions count from its
    first real token, and a query sees the real keys up to itself, never a pad. A pad query sees only
    itself, so that no row of its scores is all -inf (NaN); nothing reads its output."""
    q_L = torch.arange(slots.start, slots.stop, device=pad_B.device)
    k_K = torch.arange(slots.stop, device=pad_B.device)
    positions_BL = (q_L[None] - pad_B[:, None]).clamp(min=0)
    sees_BLK = (k_K[None, None] <= q_L[None, :, None]) & (k_K[None, None] >= pad_B[:, None, None])
    sees_BLK |= k_K[None, None] == q_L[None, :, None]
    return positions_BL, sees_BLK[:, None]


def fixed_slot(
    slot_1: torch.Tensor, max_len: int, pad_B: torch.Tensor | None, B: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (B, 1) and mask (B, 1, 1, max_len) of one new token per row at slot `slot_1` (a
    one-element tensor) over a cache of max_len slots: it sees the slots up to its own, none after
    (not written yet) and no padding. Only tensors, so a captured CUDA graph replays it as the slot moves."""
    pad_B = pad_B if pad_B is not None else torch.zeros(B, dtype=torch.long, device=slot_1.device)
    positions_B1 = (slot_1[None, :] - pad_B[:, None]).clamp(min=0)
    k_T = torch.arange(max_len, device=slot_1.device)
    sees_BT = (k_T[None] <= slot_1) & (k_T[None] >= pad_B[:, None])
    return positions_B1, sees_BT[:, None, None, :]


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


def fused_attention(
    q_BHLD: torch.Tensor,
    k_BHKD: torch.Tensor,
    v_BHKD: torch.Tensor,
    mask_LK: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Steps 3-6 as `attention` computes them (the same masks, None the causal one), in one fused kernel
    that never materialises the weights. Without a mask, one query (a decoding step) sees every key."""
    L, K = q_BHLD.shape[-2], k_BHKD.shape[-2]
    if mask_LK is None and L == 1 and torch.compiler.is_compiling():  # a compiled decoding step: see there
        return decoding.attend_one_query(q_BHLD, k_BHKD, v_BHKD)
    if mask_LK is None and 1 < L < K:  # new queries after cached keys: the causal diagonal moves right by K - L
        mask_LK = causal_mask_LK(L, K, q_BHLD.device)
    causal = mask_LK is None and L > 1
    return F.scaled_dot_product_attention(
        q_BHLD, k_BHKD, v_BHKD, attn_mask=mask_LK, dropout_p=dropout_p, is_causal=causal
    )


class Attention(nn.Module):
    """Multi-head (or grouped-query) attention with Q, K, V and output projections.

    `head_dim` (D) is independent of `emb_dim` (C): the projections map C -> H x D and back. With
    `n_kv_heads` = G < H, keys and values have G heads, each shared by H / G query heads. `kind`
    "cross" is the encoder-decoder's cross-attention, whose keys are a source's positions: S in its
    hook names (`k_BHSD`, `weights_BHLS`) where self-attention has K.
    """

    def __init__(self, cfg: ModelConfig, kind: str = "self") -> None:
        super().__init__()
        keys = self.keys_of(kind)
        self.config = cfg  # so the module can be rebuilt elsewhere from its config and weights (attnlab check)
        C, H, G, D = cfg.emb_dim, cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim, self.impl, self.keys = H, G, D, cfg.attn_impl, keys
        self.w_q = nn.Linear(C, H * D, bias=cfg.bias)
        self.w_k = nn.Linear(C, G * D, bias=cfg.bias)
        self.w_v = nn.Linear(C, G * D, bias=cfg.bias)
        self.w_o = nn.Linear(H * D, C, bias=cfg.bias)
        # QK-norm (Dehghani et al. 2023, the nanoGPT speedrun): each head's q and k rescaled to a learned
        # length, so no score can grow without bound and a higher learning rate stays stable.
        self.q_norm = RMSNorm(D, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(D, cfg.norm_eps) if cfg.qk_norm else None
        self.dropout = cfg.dropout
        kv = f"B{'G' if cfg.grouped else 'H'}{keys}D"  # the hook names say how many heads the tensors hold
        self.k_name, self.v_name = f"k_{kv}", f"v_{kv}"

    @staticmethod
    def keys_of(kind: str) -> str:
        """The letter of the key positions in the hook names: S (source) for cross-attention, else K."""
        return "S" if kind == "cross" else "K"

    def hook_names(self) -> list[str]:
        """This module's hook points, in the order the forward passes them."""
        scores, masked, weights = (f"{step}_BHL{self.keys}" for step in ("scores", "masked", "weights"))
        return ["q_BHLD", self.k_name, self.v_name, scores, masked, weights, "z_BHLD", "out_BLC"]

    def qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W_q, W_k and W_v stacked into one (H D + 2 G D) x C matrix (and bias)."""
        weight = torch.cat([self.w_q.weight, self.w_k.weight, self.w_v.weight])
        bias = torch.cat([self.w_q.bias, self.w_k.bias, self.w_v.bias]) if self.w_q.bias is not None else None
        return weight, bias

    def project_qkv(self, x_BLC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 1 of self-attention: queries (B, L, H D), keys and values (B, L, G D) of every position.

        The three projections run as one matmul on the stacked weights: the same arithmetic in one
        larger call, which is faster forward and backward at these sizes.
        """
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv_BLZ = F.linear(x_BLC, *self.qkv_weights())
        q_BLX, k_BLY, v_BLY = qkv_BLZ.split([H * D, G * D, G * D], dim=-1)
        return q_BLX, k_BLY, v_BLY

    def cached_step(
        self,
        x_BLC: torch.Tensor,
        kv: decoding.LayerCache,
        rotate: Rotation | None = None,
        mask_B1LK: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Self-attention of L new positions after a generation's cached ones (decoding.py): `forward`'s
        numbers in fewer operations, since a decoding step is a chain of tiny ops, each costing its
        dispatch. The weights are stacked once per cache, and queries and keys go side by side as H + G
        heads, so that rotary positions turn them in one pass. `mask_B1LK`: a left-padded batch's
        (`left_padding`); None, the causal mask."""
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv_BLZ = F.linear(x_BLC, *kv.cached("qkv", self.qkv_weights))
        qk_BNLD = split_heads(qkv_BLZ[..., : (H + G) * D], H + G, D)
        if self.q_norm is not None and self.k_norm is not None:
            q_BHLD, k_BGLD = qk_BNLD.split([H, G], dim=1)
            qk_BNLD = torch.cat([self.q_norm(q_BHLD), self.k_norm(k_BGLD)], dim=1)
        if rotate is not None:
            qk_BNLD = rotate(qk_BNLD)
        q_BHLD, k_BGLD = qk_BNLD.split([H, G], dim=1)
        k_BGKD, v_BGKD = kv.append(k_BGLD, split_heads(qkv_BLZ[..., (H + G) * D :], G, D))
        z_BHLD = fused_attention(q_BHLD, share_kv_heads(k_BGKD, H), share_kv_heads(v_BGKD, H), mask_B1LK)
        return self.w_o(merge_heads(z_BHLD))

    def cross_step(
        self, x_BLC: torch.Tensor, kv: decoding.LayerCache, source_BSC: torch.Tensor, mask_B11S: torch.Tensor | None
    ) -> torch.Tensor:
        """Cross-attention of L new target positions while decoding: `forward`'s numbers without its
        hook calls, the source's keys and values made on the first step and kept (`kv.source`)."""
        H, D = self.n_heads, self.head_dim
        k_BGSD, v_BGSD = self.source_keys_values(source_BSC, kv)
        q_BHLD = split_heads(self.w_q(x_BLC), H, D)
        z_BHLD = fused_attention(q_BHLD, share_kv_heads(k_BGSD, H), share_kv_heads(v_BGSD, H), mask_B11S)
        return self.w_o(merge_heads(z_BHLD))

    def source_keys_values(
        self, source_BSC: torch.Tensor, kv: decoding.LayerCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-2 for cross-attention's keys and values, from the source (the encoder's output); while
        decoding (`kv`), made on the first step and kept for the others."""
        G, D = self.n_kv_heads, self.head_dim

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            return split_heads(self.w_k(source_BSC), G, D), split_heads(self.w_v(source_BSC), G, D)

        return kv.source(make) if kv is not None else make()

    def forward(
        self,
        x_BLC: torch.Tensor,
        hook: Hook = NO_HOOK,
        rotate: Rotation | None = None,
        *,
        mask_B1LK: torch.Tensor | None = None,
        source_BSC: torch.Tensor | None = None,
        kv: decoding.LayerCache | None = None,
    ) -> torch.Tensor:
        """x's positions attending to x's own (self-attention) or to `source_BSC`'s (cross-attention).

        `mask_B1LK`: True where a query may see a key, (L, K) or with batch and head dimensions
        ((B, 1, 1, K) hides padding); None: the causal mask. `rotate`: rotary positions. `kv`: the
        cache of a generation (decoding.py), which holds the earlier positions' keys and values.
        """
        if kv is not None and source_BSC is None:  # generating: the same numbers in fewer operations
            return self.cached_step(x_BLC, kv, rotate, mask_B1LK)
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        if source_BSC is None:
            # 1. Project every position to a query, a key and a value.
            q_BLX, k_BLY, v_BLY = self.project_qkv(x_BLC)
            # 2. Split the channels into heads (G key/value heads; G = H without grouped-query attention).
            q_BHLD = split_heads(q_BLX, H, D)
            k_BGKD, v_BGKD = split_heads(k_BLY, G, D), split_heads(v_BLY, G, D)
            if self.q_norm is not None and self.k_norm is not None:  # QK-norm: both or neither
                q_BHLD, k_BGKD = self.q_norm(q_BHLD), self.k_norm(k_BGKD)
            if rotate is not None:  # rotary positions turn queries and keys by their position's angle
                q_BHLD, k_BGKD = rotate(q_BHLD), rotate(k_BGKD)
        else:  # 1-2 of cross-attention: queries from x; keys and values from the source
            q_BHLD = split_heads(self.w_q(x_BLC), H, D)
            k_BGKD, v_BGKD = self.source_keys_values(source_BSC, kv)
        q_BHLD, k_BGKD, v_BGKD = hook("q_BHLD", q_BHLD), hook(self.k_name, k_BGKD), hook(self.v_name, v_BGKD)
        k_BHKD, v_BHKD = share_kv_heads(k_BGKD, H), share_kv_heads(v_BGKD, H)
        p_drop = self.dropout if self.training else 0.0
        if self.impl == "sdpa" and not hook.enabled:
            # 3-6 in one fused kernel: nothing asked to see the scores or the weights.
            z_BHLD = fused_attention(q_BHLD, k_BHKD, v_BHKD, mask_B1LK, p_drop)
        else:
            # 3-6 written out: scores, mask, softmax, weighted sum of the values.
            z_BHLD = attention(q_BHLD, k_BHKD, v_BHKD, mask_B1LK, hook, p_drop, self.keys)
        z_BHLD = hook("z_BHLD", z_BHLD)
        # 7. Merge the heads and project back to C channels.
        return hook("out_BLC", self.w_o(merge_heads(z_BHLD)))


class CausalSelfAttention(Attention):
    """The language models' attention: self-attention under the causal mask (`Attention` with no mask
    given), each position seeing itself and the positions before it. Named for the lab's exercises,
    which hand it to `attnlab check`; it adds nothing to `Attention`."""
