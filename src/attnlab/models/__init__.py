"""Models: the one-token MLP baseline and the Transformer, built from one config."""

from .base import LanguageModel
from .config import PRESETS, ModelConfig, preset_config
from .layers import CausalSelfAttention, causal_mask_LK
from .mlp_lm import FeedForwardLM
from .transformer import TransformerLM


def build_model(cfg: ModelConfig) -> LanguageModel:
    return (FeedForwardLM if cfg.model == "mlp" else TransformerLM).from_config(cfg)


__all__ = [
    "PRESETS",
    "CausalSelfAttention",
    "FeedForwardLM",
    "LanguageModel",
    "ModelConfig",
    "TransformerLM",
    "build_model",
    "causal_mask_LK",
    "preset_config",
]
