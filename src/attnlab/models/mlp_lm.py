"""The lab's baseline: each position sees only its own token (a learned bigram model)."""

from __future__ import annotations

import torch

from .base import LanguageModel
from .config import ModelConfig
from .hooks import NO_HOOK, Hook
from .layers import MLP


class FeedForwardLM(LanguageModel):
    """Embedding -> MLP (Linear, ReLU, Linear) -> LM head tied to the embedding (the lab's baseline)."""

    def __init__(self, n_vocab: int = 256, emb_dim: int = 32, n_hidden: int = 128, **config: object) -> None:
        super().__init__(ModelConfig(model="mlp", n_vocab=n_vocab, emb_dim=emb_dim, n_hidden=n_hidden, **config))
        self._make_embeddings()
        self.mlp = MLP(self.config)
        self.init_weights()

    def forward(self, ids_BL: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        tok_BLC = hook("embed.tok_BLC", self.embed.tok(ids_BL))
        out_BLC = self.mlp(tok_BLC, hook.scope("mlp."))
        return hook("logits_BLV", self.unembed(out_BLC))
