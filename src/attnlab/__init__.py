"""attnlab: build, train, trace and see inside small transformer language models."""

from .checkpoint import load_checkpoint, save_checkpoint
from .data import prepare_data
from .errors import AttnlabError
from .generate import generate_text, next_token_table
from .models import FeedForwardLM, ModelConfig, TransformerLM, build_model, preset_config
from .tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, CodepointTokenizer, make_tokenizer
from .train import TrainConfig, evaluate, train

__version__ = "0.1.0"


def from_hf(path_or_model):  # noqa: ANN001, ANN201 - transformers is imported only when used
    """An attnlab model from a Hugging Face GPT-2 or Llama model (object or local folder)."""
    from .interop import from_hf as _from_hf

    return _from_hf(path_or_model)


def to_hf(model):  # noqa: ANN001, ANN201
    """The attnlab Transformer as a `transformers` GPT2LMHeadModel or LlamaForCausalLM."""
    from .interop import to_hf as _to_hf

    return _to_hf(model)


__all__ = [
    "AttnlabError",
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "CodepointTokenizer",
    "FeedForwardLM",
    "ModelConfig",
    "TrainConfig",
    "TransformerLM",
    "build_model",
    "evaluate",
    "from_hf",
    "generate_text",
    "load_checkpoint",
    "make_tokenizer",
    "next_token_table",
    "prepare_data",
    "preset_config",
    "save_checkpoint",
    "to_hf",
    "train",
]
