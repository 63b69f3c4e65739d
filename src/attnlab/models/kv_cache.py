"""The key/value cache: generation computes q, k, v for the new token only.

Without a cache, every generated token runs the whole context through the model again. With one,
the prompt is run once (prefill) and its keys and values kept per layer; each new token then adds
its own k, v and attends over the cache, so its cost does not grow with the prompt length (up to
max_len). The buffers are allocated once at max_len, so a step writes one slot instead of copying
the whole cache.
"""

from __future__ import annotations

import torch
from torch import nn


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
        end = self.length + k_BGLD.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, {end} asked for")
        if self.k[layer] is None:
            B, G, _, D = k_BGLD.shape
            self.k[layer] = k_BGLD.new_empty(B, G, self.max_len, D)
            self.v[layer] = v_BGLD.new_empty(B, G, self.max_len, D)
        k_BGTD, v_BGTD = self.k[layer], self.v[layer]
        k_BGTD[:, :, self.length : end] = k_BGLD
        v_BGTD[:, :, self.length : end] = v_BGLD
        return k_BGTD[:, :, :end], v_BGTD[:, :, :end]


class LayerCache:
    """One layer's view of a KVCache: what the attention module is handed."""

    def __init__(self, cache: KVCache, layer: int) -> None:
        self.cache, self.layer = cache, layer
        self.qkv: tuple[torch.Tensor, torch.Tensor | None] | None = None

    @property
    def offset(self) -> int:
        return self.cache.length

    def append(self, k_BGLD: torch.Tensor, v_BGLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.append(self.layer, k_BGLD, v_BGLD)

    def fused_qkv(self, w_q: nn.Linear, w_k: nn.Linear, w_v: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W_q, W_k, W_v stacked into one matrix (and bias), built once per generation.

        A decoding step multiplies a single token, where the cost of a matmul is its launch rather
        than its arithmetic: one (3 H D x C) product instead of three halves the step's matmul count.
        The weights do not change while a cache lives (generation runs without gradients).
        """
        if self.qkv is None:
            weight = torch.cat([w_q.weight, w_k.weight, w_v.weight])
            bias = torch.cat([w_q.bias, w_k.bias, w_v.bias]) if w_q.bias is not None else None
            self.qkv = (weight, bias)
        return self.qkv
