"""Tokenizers: text <-> integer ids, one interface (`encode`, `decode`, `n_vocab`).

- `bytes`: UTF-8 bytes, 256 ids, lossless for any text (the default).
- `codepoint`: the lab's tokenizer, `ord(ch)` per character; characters with `ord >= n_vocab` are
  dropped, and `unencodable` counts them so nothing disappears silently.
- `char`: a vocabulary of the characters seen in a corpus, saved with the model.
- `bpe:N`: byte-level BPE with N tokens learned from the training text (see `bpe.py`).

Each tokenizer also encodes straight to a numpy array (`encode_array`), which is how corpora of
many megabytes are tokenized in a fraction of a second.
"""

from __future__ import annotations

import codecs
from collections import Counter
from typing import Any

import numpy as np

from .errors import AttnlabError

TOKENIZER_NAMES = ("bytes", "codepoint", "char", "bpe:N")


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class Tokenizer:
    """Base class: subclasses define `n_vocab`, `encode_array`, `decode` and `to_dict`."""

    name: str = ""
    n_vocab: int = 0
    byte_level: bool = False  # True when ids stand for byte strings (bytes, BPE): see `decode_bytes`

    def encode_array(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: list[int] | np.ndarray) -> str:
        raise NotImplementedError

    def decode_bytes(self, ids: list[int] | np.ndarray) -> bytes:
        """The raw bytes the ids stand for (byte-level tokenizers only; may end inside a character)."""
        raise NotImplementedError(f"{type(self).__name__} is not byte-level")

    def unencodable(self, text: str) -> Counter[str]:
        """Characters of `text` this tokenizer cannot represent (and so drops), with their counts."""
        return Counter()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def token_str(self, i: int) -> str:
        """A printable label for one token id (for tables and plots)."""
        s = self.decode([i])
        return s if s.isprintable() else repr(s)[1:-1]

    def stream_decoder(self) -> StreamDecoder:
        """A decoder fed ids one by one, for printing generated text as it arrives."""
        return StreamDecoder(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_vocab={self.n_vocab})"


class StreamDecoder:
    """Decodes a growing id sequence piece by piece.

    Byte-level tokenizers (bytes, BPE) go through a UTF-8 incremental decoder: a token that ends
    inside a multi-byte character is held back until the rest of the character arrives.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace") if tokenizer.byte_level else None

    def feed(self, ids: list[int]) -> str:
        if self._utf8 is not None:
            return self._utf8.decode(self.tokenizer.decode_bytes(ids))
        return self.tokenizer.decode(ids)

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True) if self._utf8 is not None else ""


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: every text round-trips exactly."""

    name = "bytes"
    n_vocab = 256
    byte_level = True

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode_bytes(self, ids: list[int] | np.ndarray) -> bytes:
        return bytes(int(i) for i in ids)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_str(self, i: int) -> str:
        return chr(i) if 32 <= i < 127 else {10: "\\n", 9: "\\t"}.get(i, f"<0x{i:02X}>")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bytes"}


class CodepointTokenizer(Tokenizer):
    """The lab's tokenizer: id = ord(character); characters with ord >= n_vocab are dropped."""

    name = "codepoint"

    def __init__(self, n_vocab: int = 256) -> None:
        self.n_vocab = n_vocab

    def encode_array(self, text: str) -> np.ndarray:
        cp = _codepoints(text)
        return cp[cp < self.n_vocab].astype(np.uint16 if self.n_vocab <= 65536 else np.uint32)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return "".join(chr(int(i)) for i in ids)

    def unencodable(self, text: str) -> Counter[str]:
        return Counter(ch for ch in text if ord(ch) >= self.n_vocab)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "codepoint", "n_vocab": self.n_vocab}


class CharTokenizer(Tokenizer):
    """A vocabulary of the distinct characters of a corpus, in code point order."""

    name = "char"

    def __init__(self, chars: str) -> None:
        if not chars:
            raise AttnlabError("char tokenizer: empty vocabulary (the corpus has no text)")
        self.chars = "".join(sorted(set(chars)))
        self.n_vocab = len(self.chars)
        cps = _codepoints(self.chars)
        # A dense lookup table from code point to id (-1 = unknown) makes encoding vectorised.
        self._table = np.full(int(cps.max()) + 1, -1, dtype=np.int64)
        self._table[cps] = np.arange(self.n_vocab)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def _ids(self, text: str) -> np.ndarray:
        cp = _codepoints(text)
        ids = np.full(cp.shape, -1, dtype=np.int64)
        inside = cp < len(self._table)
        ids[inside] = self._table[cp[inside]]
        return ids

    def encode_array(self, text: str) -> np.ndarray:
        ids = self._ids(text)
        return ids[ids >= 0].astype(np.uint16 if self.n_vocab <= 65536 else np.uint32)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def unencodable(self, text: str) -> Counter[str]:
        ids = self._ids(text)
        return Counter(text[i] for i in np.flatnonzero(ids < 0).tolist())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "chars": self.chars}


def make_tokenizer(name: str, corpus_text: str | None = None) -> Tokenizer:
    """Build a tokenizer by name; `char` and `bpe:N` need the training text to build their vocabulary."""
    if name == "bytes":
        return ByteTokenizer()
    if name == "codepoint":
        return CodepointTokenizer()
    if name.startswith("codepoint:"):
        return CodepointTokenizer(int(name.split(":", 1)[1]))
    if name == "char":
        if corpus_text is None:
            raise AttnlabError("the char tokenizer needs a corpus to build its vocabulary")
        return CharTokenizer.from_text(corpus_text)
    if name == "bpe" or name.startswith("bpe:"):
        from .bpe import BPETokenizer, parse_bpe_spec  # bpe.py imports this module

        vocab_size = parse_bpe_spec(name)
        if corpus_text is None:
            raise AttnlabError(f"the {name} tokenizer needs a corpus to learn its merges from")
        return BPETokenizer.train(corpus_text, vocab_size)
    raise AttnlabError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZER_NAMES)}")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    kind = d.get("kind")
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "codepoint":
        return CodepointTokenizer(int(d["n_vocab"]))
    if kind == "char":
        return CharTokenizer(d["chars"])
    if kind == "bpe":
        from .bpe import BPETokenizer

        return BPETokenizer.from_dict(d)
    raise AttnlabError(f"unknown tokenizer kind {kind!r} in checkpoint")


def describe_unencodable(counts: Counter[str], what: str = "text", limit: int = 5) -> str:
    """One line such as "dropped 485 characters the codepoint tokenizer cannot encode: '”'×184, ..."."""
    total = sum(counts.values())
    top = ", ".join(f"{ch!r}x{n}" for ch, n in counts.most_common(limit))
    more = f" and {len(counts) - limit} more kinds" if len(counts) > limit else ""
    return f"{what}: dropped {total} characters the tokenizer cannot encode ({top}{more})"
