"""attnlab: build, train, trace and see inside small transformer language models."""

import sys
from pathlib import Path

from .threads import configure as _configure_threads

_configure_threads()  # before anything loads torch: OpenMP reads its thread settings once, at start

try:
    from . import run
    from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from .data import prepare_data
    from .errors import AttnlabError
    from .generate import generate_text, next_token_table
    from .interop import from_hf, to_hf  # transformers itself is imported only when they are called
    from .models import FeedForwardLM, ModelConfig, Sampling, TransformerLM, build_model, preset_config
    from .tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, CodepointTokenizer, make_tokenizer
    from .train import TrainConfig, evaluate, train
except KeyboardInterrupt:
    if Path(sys.argv[0]).name == "attnlab":  # the command, still loading torch: Ctrl-C is a clean exit
        sys.stderr.write("attnlab: interrupted\n")
        raise SystemExit(130) from None
    raise

__version__ = "0.1.0"

__all__ = [
    "AttnlabError",
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "Checkpoint",
    "CodepointTokenizer",
    "FeedForwardLM",
    "ModelConfig",
    "Sampling",
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
    "run",
    "save_checkpoint",
    "to_hf",
    "train",
]
