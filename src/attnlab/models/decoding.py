"""Fast generation: the key/value cache, and attention over it for one new token at a time.

Without a cache, every generated token runs the whole context through the model again. With one,
the prompt is run once (prefill) and its keys and values kept per layer; each new token then adds
its own k, v and attends over the cache, so its cost does not grow with the prompt length (up to
max_len). The buffers are allocated once at max_len, so a step writes one slot instead of copying
the whole cache.

`cached_attention` is `CausalSelfAttention` (attention.py) for positions that follow cached ones:
the same projections and the same result (the tests compare generation with and without the cache
token for token). `compiled_decoder` runs the one-token steps through `torch.compile`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from .attention import CausalSelfAttention, causal_mask_LK, merge_heads, share_kv_heads, split_heads
from .positions import Rotation

T = TypeVar("T")


class KVCache:
    """Keys and values of the positions seen so far, one pair of (B, G, max_len, D) buffers per layer."""

    def __init__(self, n_layers: int, max_len: int) -> None:
        self.max_len = max_len
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0  # positions cached (the next token's position)
        self.layers = [LayerCache(self, i) for i in range(n_layers)]

    def append(self, layer: int, k_BGLD: torch.Tensor, v_BGLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys and values for `layer`; return all of them so far (B, G, K, D)."""
        end = self.length + k_BGLD.shape[2]  # <= max_len: TransformerLM.forward refuses longer sequences
        if self.k[layer] is None:
            B, G, _, D = k_BGLD.shape
            self.k[layer] = k_BGLD.new_empty(B, G, self.max_len, D)
            self.v[layer] = v_BGLD.new_empty(B, G, self.max_len, D)
        k_BGTD, v_BGTD = self.k[layer], self.v[layer]
        k_BGTD[:, :, self.length : end] = k_BGLD
        v_BGTD[:, :, self.length : end] = v_BGLD
        return k_BGTD[:, :, :end], v_BGTD[:, :, :end]


class LayerCache:
    """One layer's view of a KVCache: what the attention of that layer is handed."""

    def __init__(self, cache: KVCache, layer: int) -> None:
        self.cache, self.layer = cache, layer
        self.derived: dict[str, Any] = {}

    def append(self, k_BGLD: torch.Tensor, v_BGLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.append(self.layer, k_BGLD, v_BGLD)

    def cached(self, name: str, make: Callable[[], T]) -> T:
        """`make()` computed once per cache: weights derived for decoding (e.g. the stacked q/k/v matrix).

        A cache lives for one generation, which runs without gradients, so the weights cannot change
        under it; a decoding step then skips rebuilding them.
        """
        if name not in self.derived:
            self.derived[name] = make()
        return self.derived[name]


def attend_one_query(q_BH1D: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor) -> torch.Tensor:
    """Attention of one new query over all keys (no mask needed), as multiply-and-sum reductions.

    This is what a compiled decoding step runs instead of SDPA: inductor fuses these reductions into
    its own kernels, where SDPA stays an external call whose fixed cost outweighs its arithmetic at
    one query (measured: the compiled step is ~1.2x faster).
    """
    scores_BHK = (q_BH1D * k_BHKD).sum(-1) / math.sqrt(q_BH1D.shape[-1])
    return (scores_BHK.softmax(dim=-1)[..., None] * v_BHKD).sum(-2, keepdim=True)


def cached_attention(
    attn: CausalSelfAttention, x_BLC: torch.Tensor, kv: LayerCache, rotate: Rotation | None = None
) -> torch.Tensor:
    """`attn` for L new positions after the cached ones: their queries attend to every key so far."""
    H, G, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    qkv_BLZ = F.linear(x_BLC, *kv.cached("qkv", attn.qkv_weights))  # the stacked weights, made once per cache
    # Queries and keys side by side as H + G heads, so rotary positions turn them in one pass (a
    # decoding step is a chain of tiny ops, each costing its dispatch: fewer is faster).
    qk_BNLD = split_heads(qkv_BLZ[..., : (H + G) * D], H + G, D)
    if attn.q_norm is not None:
        q_BHLD, k_BGLD = qk_BNLD.split([H, G], dim=1)
        qk_BNLD = torch.cat([attn.q_norm(q_BHLD), attn.k_norm(k_BGLD)], dim=1)
    if rotate is not None:
        qk_BNLD = rotate(qk_BNLD)
    q_BHLD, k_BGLD = qk_BNLD.split([H, G], dim=1)
    v_BGLD = split_heads(qkv_BLZ[..., (H + G) * D :], G, D)
    k_BGKD, v_BGKD = kv.append(k_BGLD, v_BGLD)
    k_BHKD, v_BHKD = share_kv_heads(k_BGKD, H), share_kv_heads(v_BGKD, H)
    L, K = q_BHLD.shape[2], k_BHKD.shape[2]
    if L == 1 and torch.compiler.is_compiling():  # a compiled decoding step: see `attend_one_query`
        z_BHLD = attend_one_query(q_BHLD, k_BHKD, v_BHKD)
    elif L == 1 or L == K:  # one new query may see every key; a first fill is plain causal attention
        z_BHLD = F.scaled_dot_product_attention(q_BHLD, k_BHKD, v_BHKD, is_causal=L > 1)
    else:  # new queries after cached keys: the mask's diagonal moves right by K - L
        z_BHLD = F.scaled_dot_product_attention(q_BHLD, k_BHKD, v_BHKD, attn_mask=causal_mask_LK(L, K, x_BLC.device))
    return attn.w_o(merge_heads(z_BHLD))


@functools.cache
def _compiled_forward(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    # The class's forward, not each model's: one compiled function for every model of that class
    # (torch.compile's guards tell their shapes apart), and nothing stored on the model, which
    # therefore still pickles and deep-copies as before.
    return torch.compile(forward, dynamic=True, options={"post_grad_fusion_options": {"decompose_mm_pass": {}}})


def compiled_decoder(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """`model`'s forward through `torch.compile`, for one-token steps over a KV cache.

    A decoding step is ~100 tiny ops whose cost is their dispatch, not their arithmetic: compiled
    (dynamic shapes, so the growing cache does not recompile), they run as a few fused kernels.
    On CPU, inductor's `decompose_mm_pass` turns each one-row matmul into a fused multiply-and-sum
    (a BLAS call costs ~10 us however small), and attention runs as `attend_one_query` instead of
    SDPA for the same reason: measured together, the step takes ~0.7x the time it took without both.
    Compiling `forward` rather than the module skips nn.Module's call machinery (~5% of a step).
    """
    return functools.partial(_compiled_forward(type(model).forward), model)
