"""The key/value cache: generation computes q, k, v for the new token only.

Without a cache, every generated token runs the whole context through the model again. With one,
the prompt is run once (prefill) and its keys and values kept per layer; each new token then adds
its own k, v and attends over the cache, so its cost does not grow with the prompt length (up to
max_len).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of the positions seen so far, one pair of tensors per layer."""

    def __init__(self, n_layers: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0  # positions cached (the next token's position)

    def append(self, layer: int, k_BGLD: torch.Tensor, v_BGLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys and values for `layer`; return all of them (B, G, K, D)."""
        if self.k[layer] is not None:
            k_BGLD = torch.cat([self.k[layer], k_BGLD], dim=2)
            v_BGLD = torch.cat([self.v[layer], v_BGLD], dim=2)
        self.k[layer], self.v[layer] = k_BGLD, v_BGLD
        return k_BGLD, v_BGLD


class LayerCache:
    """One layer's view of a KVCache: what the attention module is handed."""

    def __init__(self, cache: KVCache, layer: int) -> None:
        self.cache, self.layer = cache, layer

    @property
    def offset(self) -> int:
        return self.cache.length

    def append(self, k_BGLD: torch.Tensor, v_BGLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.append(self.layer, k_BGLD, v_BGLD)
