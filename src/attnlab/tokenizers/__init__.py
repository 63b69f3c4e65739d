"""Tokenizers: text <-> integer ids, one interface (`encode`, `decode`, `n_vocab`), and the one factory.

| name | ids |
|---|---|
| `bytes` | UTF-8 bytes, 256 (the default; lossless) |
| `codepoint` | `ord(ch)`, 256 (the lab's; wider characters are dropped and counted) |
| `char` | the training text's distinct characters |
| `bpe:N` | byte-level BPE with N tokens learned from the training text |
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import AttnlabError
from ..runtime.checks import check_object
from .base import ENDOFTEXT, IncrementalEncoder, StreamDecoder, Tokenizer, describe_unencodable, token_dtype
from .basic import ByteTokenizer, CharTokenizer, CodepointTokenizer
from .bpe import BPETokenizer, parse_bpe_spec, train_cached

TOKENIZER_NAMES = ("bytes", "codepoint", "char", "bpe:N")


def make_tokenizer(
    name: str, training_text: str | Iterable[str] | None = None, cache_dir: Path | None = None
) -> Tokenizer:
    """A tokenizer by name; `char` and `bpe:N` learn their vocabulary from `training_text` (a string or its chunks).

    With `cache_dir`, a trained BPE is saved there, keyed by its training text and size, and the next
    request with the same text loads it instead of training again.
    """
    if name == "bytes":
        return ByteTokenizer()
    if name == "codepoint":
        return CodepointTokenizer()
    if name.startswith("codepoint:"):
        size = name.split(":", 1)[1]
        if not size.isdigit() or not 2 <= int(size) <= 0x110000:
            raise AttnlabError(
                f"tokenizer {name!r}: codepoint:N takes a vocabulary size from 2 to 1114112, e.g. codepoint:256"
            )
        return CodepointTokenizer(int(size))
    if name != "char" and name != "bpe" and not name.startswith("bpe:"):
        raise AttnlabError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZER_NAMES)}")
    vocab_size = parse_bpe_spec(name) if name != "char" else 0
    if training_text is None:
        raise AttnlabError(f"the {name} tokenizer needs a corpus to learn its vocabulary from")
    chunks = [training_text] if isinstance(training_text, str) else training_text
    if name == "char":
        return CharTokenizer.from_text(chunks)
    if cache_dir is None:
        return BPETokenizer.train("".join(chunks), vocab_size)
    return train_cached(chunks, vocab_size, cache_dir)


def tokenizer_from_dict(d: dict[str, Any], where: str = "tokenizer") -> Tokenizer:
    """The tokenizer a checkpoint or token file saved with `to_dict`; its keys and values are checked
    first, so a damaged file is one line naming what is wrong."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "bytes":
        check_object(d, where, {"kind": str})
        return ByteTokenizer()
    if kind == "codepoint":
        check_object(d, where, {"kind": str, "n_vocab": int}, required=("n_vocab",))
        if not 2 <= d["n_vocab"] <= 0x110000:
            raise AttnlabError(f"{where}: a codepoint tokenizer of {d['n_vocab']} ids; it takes 2 to 1114112")
        return CodepointTokenizer(d["n_vocab"])
    if kind == "char":
        check_object(d, where, {"kind": str, "chars": str}, required=("chars",))
        if len(set(d["chars"])) != len(d["chars"]):
            raise AttnlabError(f'{where}: "chars" repeats a character, so its ids would not be the saved ones')
        return CharTokenizer(d["chars"])
    if kind == "bpe":
        return BPETokenizer.from_dict(d, where)
    raise AttnlabError(f"{where}: unknown tokenizer kind {kind!r}; the kinds are bytes, codepoint, char, bpe")


__all__ = [
    "ENDOFTEXT",
    "TOKENIZER_NAMES",
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "CodepointTokenizer",
    "IncrementalEncoder",
    "StreamDecoder",
    "Tokenizer",
    "describe_unencodable",
    "make_tokenizer",
    "token_dtype",
    "tokenizer_from_dict",
]
