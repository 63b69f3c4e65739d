"""The Transformer LM: token + position embeddings, pre-LN blocks, final LayerNorm, tied LM head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttnlabError
from .base import LanguageModel
from .config import ModelConfig
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

    def forward(self, ids_BL: torch.Tensor, need_weights: bool = False) -> torch.Tensor:
        return self.forward_with_weights(ids_BL, need_weights)[0]

    def forward_with_weights(
        self, ids_BL: torch.Tensor, need_weights: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Logits and, per layer, the attention weights_BHLL (None unless `need_weights`)."""
        L = ids_BL.shape[1]
        if L > self.config.max_len:
            raise AttnlabError(f"sequence of {L} tokens is longer than max_len={self.config.max_len}")
        tok_BLC = self.embed.tok(ids_BL)
        pos_LC = self.embed.pos(torch.arange(L, device=ids_BL.device))
        x_BLC = self.drop(tok_BLC + pos_LC)
        weights = []
        for block in self.blocks:
            x_BLC, weights_BHLL = block(x_BLC, need_weights)
            weights.append(weights_BHLL)
        final_BLC = self.final_ln(x_BLC)
        logits_BLV = F.linear(final_BLC, self.embed.tok.weight)  # tied LM head
        return logits_BLV, weights
