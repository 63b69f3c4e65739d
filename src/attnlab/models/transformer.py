"""The Transformer LM: token + position embeddings, blocks, final norm, LM head (tied by default)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import fixed_slot, left_padding
from .base import LanguageModel
from .config import ModelConfig
from .decoding import KVCache
from .hooks import NO_HOOK, Hook
from .layers import Block, Embeddings, blocks_of, make_norm
from .positions import Positions, make_positions


class TransformerLM(LanguageModel):
    """Embeddings -> n_layers blocks of causal self-attention and an MLP -> final norm -> LM head."""

    kind = "transformer"
    supports_kv_cache = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        cfg = self.config
        self.embed = Embeddings(cfg, make_positions(cfg))
        self.lm_head = self._make_lm_head()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        # Post-norm blocks end in a norm already (the 2017 model has no final one).
        self.final_ln = make_norm(cfg) if cfg.norm_placement == "pre" else None
        self.init_weights()

    def hook_names(self) -> list[str]:
        names = [f"embed.{n}" for n in self.embed.hook_names()]
        for i, block in enumerate(blocks_of(self.blocks)):
            names += [f"blocks.{i}.{n}" for n in block.hook_names()]
        return [*names, *(["final_ln_BLC"] if self.final_ln is not None else []), "logits_BLV"]

    def forward(
        self,
        ids_BL: torch.Tensor,
        hook: Hook = NO_HOOK,
        kv_cache: KVCache | None = None,
        pad_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for ids_BL; with `kv_cache`, ids_BL continues the cached positions (see decoding.py).
        `pad_B` (or the cache's): ids_BL is left-padded, row b's first pad_B[b] tokens padding, which no
        position attends to and from whose end positions count (a batch of prompts, `generate_batch`)."""
        pad_B = kv_cache.pad_B if kv_cache is not None and pad_B is None else pad_B
        positions: Positions
        mask_B1LK: torch.Tensor | None
        if kv_cache is not None and kv_cache.slot is not None:  # fixed shapes: one token at a tensor slot
            positions, mask_B1LK = fixed_slot(kv_cache.slot, kv_cache.max_len, pad_B, ids_BL.shape[0])
        else:
            slots = self._positions(ids_BL.shape[1], kv_cache, hook)
            positions, mask_B1LK = left_padding(slots, pad_B) if pad_B is not None else (slots, None)
        x_BLC = self.embed(ids_BL, hook.scope("embed."), positions)
        pos = self.embed.pos
        assert pos is not None  # a Transformer's embeddings always have a scheme (None is the MLP baseline's)
        rotate = pos.rotation(positions)  # rotary positions act inside attention; else None
        for i, block in enumerate(self.blocks):
            kv = kv_cache.layers[i] if kv_cache is not None else None
            x_BLC = block(x_BLC, hook.scope(f"blocks.{i}."), rotate, kv, mask_B1LK=mask_B1LK)
        if kv_cache is not None and kv_cache.slot is None:  # with fixed shapes, the caller moves the slot
            kv_cache.length += ids_BL.shape[1]
        if self.final_ln is not None:
            x_BLC = hook("final_ln_BLC", self.final_ln(x_BLC))
        return hook("logits_BLV", self.unembed(x_BLC))

    def forward_with_weights(self, ids_BL: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and each layer's attention weights_BHLK."""
        names = [f"blocks.{i}.attn.weights_BHLK" for i in range(self.config.n_layers)]
        logits_BLV, cache = self.run_with_cache(ids_BL, names=names)
        return logits_BLV, [cache[n] for n in names]
