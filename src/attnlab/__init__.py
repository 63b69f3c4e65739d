"""attnlab: build, train, trace and see inside small transformer language models."""

import os
import signal
import sys
from pathlib import Path

from .runtime.threads import configure as _configure_threads

_configure_threads()  # before anything loads torch: OpenMP reads its thread settings once, at start


def _interrupted_while_loading(signum: int, frame: object) -> None:
    sys.stderr.write("attnlab: interrupted\n")
    os._exit(130)  # nothing has started yet, so there is nothing to clean up


if Path(sys.argv[0]).name == "attnlab" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    # The command, still loading torch (seconds): Ctrl-C is one line and exit 130 until `cli.main` starts.
    signal.signal(signal.SIGINT, _interrupted_while_loading)

from . import _moved
from ._version import __version__ as __version__
from .data.corpus import prepare_data
from .errors import AttnlabError
from .generate import generate_text, generate_texts, next_token_table
from .interop import from_hf, to_hf  # transformers itself is imported only when they are called
from .models import FeedForwardLM, ModelConfig, Sampling, TransformerLM, build_model, preset_config
from .tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, CodepointTokenizer, make_tokenizer
from .training import run
from .training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .training.train import TrainConfig, evaluate, train

_moved.install()  # the modules' names before they were grouped by layer keep importing

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
    "generate_texts",
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
