"""What every tokenizer offers: text <-> integer ids (`encode`, `decode`, `n_vocab`), in one piece or many."""

from __future__ import annotations

import codecs
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

# The line that ends each story in TinyStories, and GPT-2's one special token.
ENDOFTEXT = "<|endoftext|>"


def token_dtype(n_vocab: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id of a vocabulary (token arrays and files)."""
    return np.dtype(np.uint16 if n_vocab <= 65536 else np.uint32)


class Tokenizer:
    """Base class: subclasses define `n_vocab`, `encode_array`, `decode` and `to_dict`."""

    name: str = ""
    n_vocab: int = 0
    byte_level: bool = False  # True when ids stand for byte strings (bytes, BPE): see `decode_bytes`

    def encode_array(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_iterable(self, lines: Iterable[str]) -> Iterator[int]:
        """Ids of the concatenation of `lines` (a file, read lazily), equal to `encode` of the whole text.

        Memory stays bounded by the longest piece the tokenizer must see whole (for BPE, one word).
        """
        encoder = self.incremental_encoder()
        for text in lines:
            yield from encoder.feed(text).tolist()
        yield from encoder.flush().tolist()

    def incremental_encoder(self, pending: str = "") -> IncrementalEncoder:
        """An encoder fed the text piece by piece (see `IncrementalEncoder`)."""
        return IncrementalEncoder(self, pending)

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


class IncrementalEncoder:
    """Encodes a text that arrives in pieces; the ids are those of the whole text encoded at once.

    `feed(text)` returns the ids of everything whose tokens can no longer change, and keeps the rest
    as `pending` until more text (or `flush`) decides it. Tokenizers whose ids stand for single
    characters or bytes have nothing to keep; BPE keeps the last word, which the next piece may continue.
    `pending` is plain text, so a resumable writer can save it and start again where it stopped.
    """

    def __init__(self, tokenizer: Tokenizer, pending: str = "") -> None:
        self.tokenizer, self.pending = tokenizer, pending

    def feed(self, text: str) -> np.ndarray:
        """Ids of the text so far that no later text can change (here: all of it)."""
        text, self.pending = self.pending + text, ""
        return self.tokenizer.encode_array(text)

    def flush(self) -> np.ndarray:
        text, self.pending = self.pending, ""
        return self.tokenizer.encode_array(text)


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


def describe_unencodable(counts: Counter[str], what: str = "text", limit: int = 5) -> str:
    """One line such as "dropped 485 characters the codepoint tokenizer cannot encode: '”'×184, ..."."""
    total = sum(counts.values())
    top = ", ".join(f"{ch!r}x{n}" for ch, n in counts.most_common(limit))
    more = f" and {len(counts) - limit} more kinds" if len(counts) > limit else ""
    return f"{what}: dropped {total} characters the tokenizer cannot encode ({top}{more})"
