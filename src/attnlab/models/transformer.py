"""The Transformer LM: token + position embeddings, pre-LN blocks, final LayerNorm, tied LM head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttnlabError
from .base import LanguageModel
from .config import ModelConfig
from .hooks import NO_HOOK, Hook
from .layers import Block


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
        self.embed = nn.Module()
        self.embed.tok = nn.Embedding(cfg.n_vocab, cfg.emb_dim)
        self.embed.pos = nn.Embedding(cfg.max_len, cfg.emb_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_ln = nn.LayerNorm(cfg.emb_dim)
        self.init_weights()

    def forward(self, ids_BL: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        L = ids_BL.shape[1]
        if L > self.config.max_len:
            raise AttnlabError(f"sequence of {L} tokens is longer than max_len={self.config.max_len}")
        tok_BLC = hook("embed.tok_BLC", self.embed.tok(ids_BL))
        pos_LC = hook("embed.pos_LC", self.embed.pos(torch.arange(L, device=ids_BL.device)))
        x_BLC = hook("embed.sum_BLC", self.drop(tok_BLC + pos_LC))
        for i, block in enumerate(self.blocks):
            x_BLC = block(x_BLC, hook.scope(f"blocks.{i}."))
        final_ln_BLC = hook("final_ln_BLC", self.final_ln(x_BLC))
        return hook("logits_BLV", F.linear(final_ln_BLC, self.embed.tok.weight))  # the tied LM head

    def forward_with_weights(self, ids_BL: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and each layer's attention weights_BHLK."""
        names = [f"blocks.{i}.attn.weights_BHLK" for i in range(self.config.n_layers)]
        logits_BLV, cache = self.run_with_cache(ids_BL, names=names)
        return logits_BLV, [cache[n] for n in names]
