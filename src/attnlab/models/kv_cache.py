"""The key/value cache: generation computes q, k, v for the new token only.

Without a cache, every generated token runs the whole context through the model again. With one,
the prompt is run once (prefill) and its keys and values kept per layer; each new token then adds
its own k, v and attends over the cache, so its cost does not grow with the prompt length (up to
max_len). The buffers are allocated once at max_len, so a step writes one slot instead of copying
the whole cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

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
    """One layer's view of a KVCache: what the attention module is handed."""

    def __init__(self, cache: KVCache, layer: int) -> None:
        self.cache, self.layer = cache, layer
        self.derived: dict[str, Any] = {}

    @property
    def offset(self) -> int:
        return self.cache.length

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
