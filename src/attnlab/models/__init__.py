"""Models: the one-token MLP baseline, the Transformer LM and the encoder-decoder, built from one config.

Read in this order: config (sizes and variants), positions, attention, layers (embeddings, norms,
MLP, block), transformer and mlp_lm, then seq2seq (the 2017 encoder-decoder from the same parts);
hooks name every tensor; decoding and sampling generate text.
"""

from ..errors import AttnlabError
from .attention import CausalSelfAttention, attention, causal_mask_LK
from .base import LanguageModel
from .config import PRESETS, ModelConfig, preset_config
from .mlp_lm import FeedForwardLM
from .sampling import Sampling
from .seq2seq import Seq2SeqTransformer
from .transformer import TransformerLM

MODELS: dict[str, type[LanguageModel]] = {"mlp": FeedForwardLM, "transformer": TransformerLM}


def build_model(cfg: ModelConfig) -> LanguageModel:
    """The language model `cfg.model` names, built from `cfg` (weights initialised as GPT-2's)."""
    if cfg.model not in MODELS:  # the encoder-decoder maps a source to a target: not a next-token model
        raise AttnlabError(
            f"model={cfg.model} is the encoder-decoder, not a language model: use attnlab seq2seq eval or translate, "
            "or attnlab attention (in Python: Seq2SeqTransformer(cfg))"
        )
    return MODELS[cfg.model](cfg)


__all__ = [
    "MODELS",
    "PRESETS",
    "CausalSelfAttention",
    "FeedForwardLM",
    "LanguageModel",
    "ModelConfig",
    "Sampling",
    "Seq2SeqTransformer",
    "TransformerLM",
    "attention",
    "build_model",
    "causal_mask_LK",
    "preset_config",
]
