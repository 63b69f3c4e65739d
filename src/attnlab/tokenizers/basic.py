"""The character-level tokenizers: UTF-8 bytes, code points (the lab's), and a corpus's own characters.

- `bytes`: UTF-8 bytes, 256 ids, lossless for any text (the default).
- `codepoint`: the lab's tokenizer, `ord(ch)` per character; characters with `ord >= n_vocab` are
  dropped, and `unencodable` counts them so nothing disappears silently.
- `char`: a vocabulary of the characters seen in a corpus, saved with the model.

Each encodes straight to a numpy array (`encode_array`), which is how corpora of many megabytes are
tokenized in a fraction of a second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import AttnlabError
from .base import Tokenizer, token_dtype


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


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
        return cp[cp < self.n_vocab].astype(token_dtype(self.n_vocab))

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
    def from_text(cls, text: str | Iterable[str]) -> CharTokenizer:
        """The vocabulary of a text, or of a text given as pieces (a large file read in chunks)."""
        chars: set[str] = set()
        for chunk in [text] if isinstance(text, str) else text:
            chars.update(chr(c) for c in np.unique(_codepoints(chunk)).tolist())
        return cls("".join(chars))

    def _ids(self, text: str) -> np.ndarray:
        cp = _codepoints(text)
        ids = np.full(cp.shape, -1, dtype=np.int64)
        inside = cp < len(self._table)
        ids[inside] = self._table[cp[inside]]
        return ids

    def encode_array(self, text: str) -> np.ndarray:
        ids = self._ids(text)
        return ids[ids >= 0].astype(token_dtype(self.n_vocab))

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def unencodable(self, text: str) -> Counter[str]:
        ids = self._ids(text)
        return Counter(text[i] for i in np.flatnonzero(ids < 0).tolist())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "chars": self.chars}
