"""Models: the one-token MLP baseline and the Transformer, built from one config.

Read in this order: config (sizes and variants), positions, attention, layers (embeddings, norms,
MLP, block), transformer and mlp_lm; hooks name every tensor; decoding and sampling generate text.
"""

from .attention import CausalSelfAttention, attention, causal_mask_LK
from .base import LanguageModel
from .config import PRESETS, ModelConfig, preset_config
from .mlp_lm import FeedForwardLM
from .sampling import Sampling
from .transformer import TransformerLM

MODELS: dict[str, type[LanguageModel]] = {"mlp": FeedForwardLM, "transformer": TransformerLM}


def build_model(cfg: ModelConfig) -> LanguageModel:
    """The model `cfg.model` names, built from `cfg` (weights initialised as GPT-2's)."""
    return MODELS[cfg.model](cfg)


__all__ = [
    "MODELS",
    "PRESETS",
    "CausalSelfAttention",
    "FeedForwardLM",
    "LanguageModel",
    "ModelConfig",
    "Sampling",
    "TransformerLM",
    "attention",
    "build_model",
    "causal_mask_LK",
    "preset_config",
]
