"""The lab's baseline: each position sees only its own token (a learned bigram model)."""

from __future__ import annotations

import torch

from .base import LanguageModel
from .config import ModelConfig
from .hooks import NO_HOOK, Hook
from .layers import MLP, Embeddings


class FeedForwardLM(LanguageModel):
    """Embedding -> MLP (Linear, ReLU, Linear) -> LM head tied to the embedding (the lab's baseline)."""

    kind = "mlp"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.embed = Embeddings(self.config, pos=None)
        self.lm_head = self._make_lm_head()
        self.mlp = MLP(self.config)
        self.init_weights()

    def hook_names(self) -> list[str]:
        return ["embed.tok_BLC", *(f"mlp.{n}" for n in self.mlp.hook_names()), "logits_BLV"]

    def forward(self, ids_BL: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        tok_BLC = self.embed(ids_BL, hook.scope("embed."))
        out_BLC = self.mlp(tok_BLC, hook.scope("mlp."))
        return hook("logits_BLV", self.unembed(out_BLC))
