"""Model configuration: one dataclass for both models, named presets, `key=value` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from ..errors import AttnlabError

MODEL_KINDS = ("mlp", "transformer")
ATTN_IMPLS = ("sdpa", "explicit")


@dataclass
class ModelConfig:
    model: str = "transformer"  # "mlp" (the one-token baseline) or "transformer"
    n_vocab: int = 256  # vocabulary size V (set from the tokenizer)
    max_len: int = 64  # context length: the longest sequence L the model sees
    emb_dim: int = 32  # channels C of the embeddings and the residual stream
    n_hidden: int = 128  # hidden width F of the MLP
    head_dim: int = 5  # D, per head; independent of emb_dim / n_heads
    n_heads: int = 4  # H attention heads
    n_layers: int = 1  # Transformer blocks
    dropout: float = 0.0  # on attention weights and residual branches (training only)
    attn_impl: str = "sdpa"  # "sdpa": F.scaled_dot_product_attention; "explicit": written out

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.model not in MODEL_KINDS:
            raise AttnlabError(f"model={self.model!r}: choose one of {', '.join(MODEL_KINDS)}")
        if self.attn_impl not in ATTN_IMPLS:
            raise AttnlabError(f"attn_impl={self.attn_impl!r}: choose one of {', '.join(ATTN_IMPLS)}")
        for name in ("n_vocab", "max_len", "emb_dim", "n_hidden", "head_dim", "n_heads", "n_layers"):
            if getattr(self, name) < 1:
                raise AttnlabError(f"{name}={getattr(self, name)}: must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise AttnlabError(f"dropout={self.dropout}: must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise AttnlabError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    def with_overrides(self, overrides: dict[str, str]) -> ModelConfig:
        """Apply `--set key=value` strings, converting each value to the field's type."""
        types = {f.name: type(f.default) for f in fields(self)}
        values = self.to_dict()
        for key, raw in overrides.items():
            if key not in types:
                raise AttnlabError(f"--set {key}=...: no such config field; fields: {', '.join(types)}")
            try:
                values[key] = types[key](raw)
            except ValueError:
                raise AttnlabError(f"--set {key}={raw}: expected a {types[key].__name__}") from None
        return ModelConfig(**values)


# Sizes per preset. The MLP uses the same emb_dim / n_hidden so the two models compare fairly.
PRESETS: dict[str, dict[str, Any]] = {
    # The lab's exact sizes: C=32, H=4, D=5, F=128, one block.
    "lab": dict(max_len=64, emb_dim=32, n_hidden=128, head_dim=5, n_heads=4, n_layers=1),
    # The best model for about 10 minutes on 2 CPU cores.
    "small": dict(max_len=128, emb_dim=128, n_hidden=512, head_dim=32, n_heads=4, n_layers=4),
    # GPU sizes (nanoGPT's Shakespeare-char model and a GPT-2-small shape).
    "medium": dict(max_len=256, emb_dim=384, n_hidden=1536, head_dim=64, n_heads=6, n_layers=6, dropout=0.1),
    "large": dict(max_len=512, emb_dim=768, n_hidden=3072, head_dim=64, n_heads=12, n_layers=12, dropout=0.1),
}


def preset_config(name: str, model: str = "transformer", n_vocab: int = 256, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise AttnlabError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return ModelConfig(model=model, n_vocab=n_vocab, **{**PRESETS[name], **overrides})
