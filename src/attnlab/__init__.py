"""attnlab: build, train, trace and see inside small transformer language models."""

from .checkpoint import load_checkpoint, save_checkpoint
from .data import prepare_data
from .errors import AttnlabError
from .generate import generate_text, next_token_table
from .models import FeedForwardLM, ModelConfig, TransformerLM, build_model, preset_config
from .tokenizers import ByteTokenizer, CharTokenizer, CodepointTokenizer, make_tokenizer
from .train import TrainConfig, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "AttnlabError",
    "ByteTokenizer",
    "CharTokenizer",
    "CodepointTokenizer",
    "FeedForwardLM",
    "ModelConfig",
    "TrainConfig",
    "TransformerLM",
    "build_model",
    "evaluate",
    "generate_text",
    "load_checkpoint",
    "make_tokenizer",
    "next_token_table",
    "prepare_data",
    "preset_config",
    "save_checkpoint",
    "train",
]
