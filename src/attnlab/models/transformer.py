"""The Transformer LM: token + position embeddings, blocks, final norm, LM head (tied by default)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import AttnlabError
from .base import LanguageModel
from .config import ModelConfig
from .hooks import NO_HOOK, Hook
from .kv_cache import KVCache
from .layers import Block, make_norm, sinusoidal_positions_LC


class TransformerLM(LanguageModel):
    def __init__(
        self,
        n_vocab: int = 256,
        max_len: int = 64,
        emb_dim: int = 32,
        n_hidden: int = 128,
        head_dim: int = 5,
        n_heads: int = 4,
        n_layers: int = 1,
        **config: object,
    ) -> None:
        cfg = ModelConfig(
            model="transformer",
            n_vocab=n_vocab,
            max_len=max_len,
            emb_dim=emb_dim,
            n_hidden=n_hidden,
            head_dim=head_dim,
            n_heads=n_heads,
            n_layers=n_layers,
            **config,
        )
        super().__init__(cfg)
        self._make_embeddings()
        if cfg.positions == "learned":
            self.embed.pos = nn.Embedding(cfg.max_len, cfg.emb_dim)
        elif cfg.positions == "sinusoidal":
            self.embed.register_buffer("pos_LC", sinusoidal_positions_LC(cfg.max_len, cfg.emb_dim), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        # Post-norm blocks end in a norm already (the 2017 model has no final one).
        self.final_ln = make_norm(cfg) if cfg.norm_placement == "pre" else None
        self.init_weights()

    def _positions_LC(self, start: int, L: int) -> torch.Tensor | None:
        if self.config.positions == "learned":  # rows start..start+L of the table (a slice: no lookup needed)
            return self.embed.pos.weight[start : start + L]
        if self.config.positions == "sinusoidal":
            return self.embed.pos_LC[start : start + L]
        return None  # rope acts inside attention; none has no positions at all

    def forward(self, ids_BL: torch.Tensor, hook: Hook = NO_HOOK, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Logits for ids_BL; with `kv_cache`, ids_BL continues the cached positions (see generate)."""
        start = kv_cache.length if kv_cache is not None else 0
        L = ids_BL.shape[1]
        if start + L > self.config.max_len:
            raise AttnlabError(f"sequence of {start + L} tokens is longer than max_len={self.config.max_len}")
        tok_BLC = self.embed.tok(ids_BL)
        if self.config.positions == "sinusoidal":
            # As in Vaswani et al. 2017: token embeddings scaled by sqrt(C), so the fixed sin/cos table
            # (entries up to 1) does not drown them (they start at std 0.02).
            tok_BLC = tok_BLC * self.config.emb_dim**0.5
        tok_BLC = hook("embed.tok_BLC", tok_BLC)
        pos_LC = self._positions_LC(start, L)
        if pos_LC is not None:
            tok_BLC = tok_BLC + hook("embed.pos_LC", pos_LC)
        x_BLC = hook("embed.sum_BLC", self.drop(tok_BLC))
        for i, block in enumerate(self.blocks):
            kv = kv_cache.layers[i] if kv_cache is not None else None
            x_BLC = block(x_BLC, hook.scope(f"blocks.{i}."), kv)
        if kv_cache is not None:
            kv_cache.length += L
        if self.final_ln is not None:
            x_BLC = hook("final_ln_BLC", self.final_ln(x_BLC))
        return hook("logits_BLV", self.unembed(x_BLC))

    def forward_with_weights(self, ids_BL: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and each layer's attention weights_BHLK."""
        names = [f"blocks.{i}.attn.weights_BHLK" for i in range(self.config.n_layers)]
        logits_BLV, cache = self.run_with_cache(ids_BL, names=names)
        return logits_BLV, [cache[n] for n in names]
