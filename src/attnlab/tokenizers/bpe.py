"""Byte-level BPE (byte-pair encoding), the tokenizer of GPT-2, written out from scratch.

The idea in four steps:

1. Text is UTF-8 bytes, so the first 256 tokens are the 256 byte values: any text can be encoded.
2. Pre-tokenisation: GPT-2's regex cuts text into words (` cat`, `'s`, ` 42`, `!!`, runs of spaces).
   Merges never cross a word boundary, so a token never glues the end of one word to the next.
3. Training: count every adjacent pair of tokens inside the words, merge the most frequent pair into
   a new token, repeat until the vocabulary has the size asked for. The ordered list of merges is
   the tokenizer.
4. Encoding replays the merges on each word, lowest rank (earliest learned) first; decoding joins
   the tokens' bytes and decodes them as UTF-8.

Special tokens such as `<|endoftext|>` are cut out of the text before all this: they are never
split, never take part in a merge, and encode to one id each.

Ids: a trained tokenizer has ids 0-255 for the bytes (id = byte value), then one id per merge in
the order learned, then the special tokens. A tokenizer loaded from GPT-2's `vocab.json` and
`merges.txt` keeps GPT-2's ids (there `!` is 0 and `<|endoftext|>` is 50256).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import regex

from ..errors import AttnlabError
from ..runtime.checks import check_object
from ..runtime.environment import notice
from ..runtime.files import read_json
from .base import ENDOFTEXT, IncrementalEncoder, Tokenizer, token_dtype

# GPT-2's pre-tokeniser: contractions, words, numbers, punctuation runs, and whitespace. A space is
# kept in front of the word after it (` cat`); `\s+(?!\S)` leaves the last space of a run of spaces
# to the next word, so "a   b" is "a", "  ", " b".
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKENIZE = regex.compile(GPT2_SPLIT_PATTERN)
FORMAT_VERSION = 1
# Distinct words whose encodings are remembered (a plain dict, emptied when it reaches this size).
ENCODE_CACHE_SIZE = 1 << 18
# `train_cached` learns from at most this many characters of a (possibly huge) training split.
MAX_TRAIN_CHARS = 32 * 2**20


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 byte values to 256 printable characters.

    `vocab.json` and `merges.txt` store tokens as text, and a token may be any byte string (half of
    a UTF-8 character, a newline, a space). So each byte is shown as a printable character: the
    printable Latin-1 bytes stand for themselves and the other 68 (controls, space, ...) move to
    U+0100 and up, in order: space (32) becomes `Ġ` (U+0120), newline (10) becomes `Ċ` (U+010A).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


@lru_cache
def unicode_to_bytes() -> dict[str, int]:
    return {ch: b for b, ch in bytes_to_unicode().items()}


def token_to_gpt2_str(token: bytes) -> str:
    """A token's bytes as GPT-2 writes them in vocab.json / merges.txt (b' the' -> 'Ġthe')."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def gpt2_str_to_token(s: str) -> bytes:
    """The inverse of `token_to_gpt2_str`."""
    table = unicode_to_bytes()
    try:
        return bytes(table[ch] for ch in s)
    except KeyError as e:
        raise AttnlabError(f"{s!r} is not a GPT-2 byte-level token ({e.args[0]!r} stands for no byte)") from None


def merge_pair(tokens: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `tokens`, left to right, by `new_id` ("aaa" -> "aa", "a")."""
    a, b = pair
    out: list[int] = []
    i = 0
    while i < len(tokens):
        if i + 1 < len(tokens) and tokens[i] == a and tokens[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return out


def _pairs(tokens: list[int]) -> list[tuple[int, int]]:
    return list(zip(tokens, tokens[1:], strict=False))


class _Greatest:
    """Wraps a value so that Python's min-heap pops the greatest value first (for the tie-break)."""

    __slots__ = ("value",)

    def __init__(self, value: tuple[bytes, bytes]) -> None:
        self.value = value

    def __lt__(self, other: _Greatest) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Greatest) and self.value == other.value


def split_special(text: str, special_tokens: Iterable[str]) -> list[tuple[str, bool]]:
    """`text` cut into (piece, is_special) around the special tokens (the longest one wins a tie)."""
    specials = sorted(set(special_tokens), key=len, reverse=True)
    if not specials:
        return [(text, False)] if text else []
    parts = regex.split("(" + "|".join(regex.escape(s) for s in specials) + ")", text)
    # regex.split with one group alternates: text, special, text, special, ..., text
    return [(p, i % 2 == 1) for i, p in enumerate(parts) if p]


def count_words(text: str, special_tokens: Iterable[str] = (ENDOFTEXT,)) -> Counter[str]:
    """How often each pre-token (word) occurs, with special tokens cut out first."""
    counts: Counter[str] = Counter()
    for piece, is_special in split_special(text, special_tokens):
        if not is_special:
            counts.update(PRETOKENIZE.findall(piece))
    return counts


def learn_merges(word_counts: dict[str, int], n_merges: int) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """The BPE training loop: (vocabulary of byte strings, merges in the order learned).

    Tie-break: the pair with the highest count; among equal counts the lexicographically greatest
    pair of byte strings, comparing the left token's bytes first, then the right's (GPT-2's and
    Stanford CS336's rule), so training is deterministic.

    Pair counts are updated incrementally: `where[pair]` lists the words containing `pair`, and a
    merge recounts only those words. A heap of (count, pair) finds the best pair; entries whose
    count went stale are skipped when popped.
    """
    vocab = [bytes([b]) for b in range(256)]
    words = [list(w.encode("utf-8")) for w in word_counts]  # each distinct word as token ids
    counts = list(word_counts.values())

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, tokens in enumerate(words):
        for pair in _pairs(tokens):
            pair_counts[pair] += counts[w]
            where[pair].add(w)

    def heap_entry(pair: tuple[int, int]) -> tuple[int, _Greatest, tuple[int, int]]:
        return (-pair_counts[pair], _Greatest((vocab[pair[0]], vocab[pair[1]])), pair)

    heap = [heap_entry(pair) for pair in pair_counts]
    heapq.heapify(heap)

    merges: list[tuple[bytes, bytes]] = []
    while len(merges) < n_merges:
        best = None
        while heap:
            neg_count, _, pair = heapq.heappop(heap)
            if pair_counts.get(pair) == -neg_count:  # else the count changed since the entry was pushed
                best = pair
                break
        if best is None:
            break  # every word is a single token: nothing is left to merge
        left, right = vocab[best[0]], vocab[best[1]]
        merges.append((left, right))
        # Each merge makes a new token: a token's bytes are always built by the same merges (merges
        # inside a token never touch the bytes around it), so no two merges give the same bytes.
        new_id = len(vocab)
        vocab.append(left + right)

        changed: set[tuple[int, int]] = set()
        for w in where.pop(best):
            old, n = words[w], counts[w]
            new = merge_pair(old, best, new_id)
            old_pairs, new_pairs = _pairs(old), _pairs(new)
            for pair in old_pairs:
                pair_counts[pair] -= n
            for pair in new_pairs:
                pair_counts[pair] += n
                where[pair].add(w)
            for pair in set(old_pairs) - set(new_pairs):
                if pair in where:
                    where[pair].discard(w)
            changed.update(old_pairs, new_pairs)
            words[w] = new
        for pair in changed:
            if pair_counts[pair] > 0:
                heapq.heappush(heap, heap_entry(pair))
            else:
                del pair_counts[pair]
                where.pop(pair, None)
    return vocab, merges


class BPETokenizer(Tokenizer):
    """Byte-level BPE: `vocab[id]` is the token's bytes, `merges` the learned pairs in rank order."""

    byte_level = True

    def __init__(self, vocab: list[bytes], merges: list[tuple[bytes, bytes]], special_tokens: dict[str, int]):
        self.vocab = list(vocab)
        self.merges = list(merges)
        self.special_tokens = dict(special_tokens)
        self.n_vocab = len(self.vocab)
        self.name = f"bpe:{self.n_vocab}"
        for s, i in self.special_tokens.items():
            if not 0 <= i < self.n_vocab or self.vocab[i] != s.encode("utf-8"):
                raise AttnlabError(f"BPE: special token {s!r} has id {i}, which does not hold its text")
        special_ids = set(self.special_tokens.values())
        self._id_of = {tok: i for i, tok in enumerate(self.vocab) if i not in special_ids}
        missing = [b for b in range(256) if bytes([b]) not in self._id_of]
        if missing:
            raise AttnlabError(f"BPE: the vocabulary lacks {len(missing)} of the 256 single bytes, e.g. {missing[0]}")
        self._byte_id = [self._id_of[bytes([b])] for b in range(256)]
        # A merge (left id, right id) -> its rank (earlier = applied first) and the id it makes.
        self._rank: dict[tuple[int, int], int] = {}
        self._merged_id: dict[tuple[int, int], int] = {}
        for rank, (left, right) in enumerate(self.merges):
            try:
                pair = (self._id_of[left], self._id_of[right])
                merged = self._id_of[left + right]
            except KeyError:
                raise AttnlabError(
                    f"BPE: merge {rank} {left!r} + {right!r} uses a token not in the vocabulary"
                ) from None
            self._rank.setdefault(pair, rank)
            self._merged_id.setdefault(pair, merged)
        self._cache: dict[str, list[int]] = {}

    # ---- training -------------------------------------------------------------------------

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: Iterable[str] = (ENDOFTEXT,)) -> BPETokenizer:
        """Learn merges from `text` until 256 bytes + merges + special tokens = `vocab_size`.

        If the text runs out of pairs first (every word is already one token), training stops
        early with a warning and `n_vocab` is smaller than asked.
        """
        specials = list(dict.fromkeys(special_tokens))
        check_vocab_size(vocab_size, len(specials))
        vocab, merges = learn_merges(count_words(text, specials), vocab_size - 256 - len(specials))
        if len(vocab) + len(specials) < vocab_size:
            warnings.warn(
                f"BPE: the training text ran out of pairs to merge after {len(merges)} merges; the vocabulary "
                f"has {len(vocab) + len(specials)} tokens instead of {vocab_size} (give more text or a smaller size)",
                stacklevel=2,
            )
        special_ids = {s: len(vocab) + k for k, s in enumerate(specials)}
        return cls(vocab + [s.encode("utf-8") for s in specials], merges, special_ids)

    # ---- encoding and decoding ------------------------------------------------------------

    def _encode_word(self, word: str) -> list[int]:
        """Token ids of one pre-token: start from its bytes, apply the lowest-ranked merge, repeat."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        tokens = [self._byte_id[b] for b in word.encode("utf-8")]
        never = len(self.merges)  # the rank of a pair that is not a merge
        while len(tokens) > 1:
            best = min(_pairs(tokens), key=lambda pair: self._rank.get(pair, never))
            if best not in self._rank:
                break  # no adjacent pair is a merge
            tokens = merge_pair(tokens, best, self._merged_id[best])
        if len(self._cache) >= ENCODE_CACHE_SIZE:
            self._cache.clear()
        self._cache[word] = tokens
        return tokens

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, is_special in split_special(text, self.special_tokens):
            if is_special:
                ids.append(self.special_tokens[piece])
            else:
                for word in PRETOKENIZE.findall(piece):
                    ids.extend(self._encode_word(word))
        return ids

    def encode_array(self, text: str) -> np.ndarray:
        return np.array(self.encode(text), dtype=token_dtype(self.n_vocab))

    def incremental_encoder(self, pending: str = "") -> IncrementalEncoder:
        return _BPEIncrementalEncoder(self, pending)

    def decode_bytes(self, ids: list[int] | np.ndarray) -> bytes:
        return b"".join(self.vocab[int(i)] for i in ids)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_str(self, i: int) -> str:
        """A printable label: the token's text, with bytes that are not whole characters as <0xNN>."""
        token = self.vocab[i]
        try:
            s = token.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(chr(b) if 32 <= b < 127 else f"<0x{b:02X}>" for b in token)
        return s if s.isprintable() else repr(s)[1:-1]

    # ---- saving and loading ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tokens and merges written as GPT-2 does (`Ġthe`), so the file reads as text."""
        return {
            "kind": "bpe",
            "format": FORMAT_VERSION,
            "vocab": [token_to_gpt2_str(t) for t in self.vocab],
            "merges": [f"{token_to_gpt2_str(a)} {token_to_gpt2_str(b)}" for a, b in self.merges],
            "special_tokens": self.special_tokens,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "BPE tokenizer") -> BPETokenizer:
        types = {"kind": str, "format": int, "vocab": list, "merges": list, "special_tokens": dict}
        check_object(d, where, types, required=tuple(types))
        if d["kind"] != "bpe" or d["format"] != FORMAT_VERSION:
            raise AttnlabError(f"{where}: not a BPE tokenizer of format {FORMAT_VERSION} (kind {d['kind']!r})")
        for key in ("vocab", "merges"):
            if bad := next((x for x in d[key] if not isinstance(x, str)), None):
                raise AttnlabError(f'{where}: "{key}" holds {bad!r}, not a token written as a string')
        if bad := next(((s, i) for s, i in d["special_tokens"].items() if type(i) is not int), None):
            raise AttnlabError(f"{where}: special token {bad[0]!r} has id {bad[1]!r}, not an integer")
        vocab = [gpt2_str_to_token(s) for s in d["vocab"]]
        merges = []
        for line in d["merges"]:
            if line.count(" ") != 1:
                raise AttnlabError(f"{where}: merge {line!r} is not two tokens separated by one space")
            a, b = line.split(" ")
            merges.append((gpt2_str_to_token(a), gpt2_str_to_token(b)))
        return cls(vocab, merges, d["special_tokens"])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=0), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        return cls.from_dict(read_json(Path(path)), str(path))

    def save_gpt2_files(self, folder: str | Path) -> tuple[Path, Path]:
        """Write GPT-2's `vocab.json` ({token: id}) and `merges.txt` (one "left right" per line)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text_of_special = {i: s for s, i in self.special_tokens.items()}  # written as their text
        vocab = {text_of_special.get(i) or token_to_gpt2_str(t): i for i, t in enumerate(self.vocab)}
        vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
        vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        lines = [f"{token_to_gpt2_str(a)} {token_to_gpt2_str(b)}" for a, b in self.merges]
        merges_path.write_text("#version: 0.2\n" + "".join(f"{line}\n" for line in lines), encoding="utf-8")
        return vocab_path, merges_path

    @classmethod
    def from_gpt2_files(
        cls, vocab_json: str | Path, merges_txt: str | Path, special_tokens: Iterable[str] = (ENDOFTEXT,)
    ) -> BPETokenizer:
        """Load GPT-2's format; each of `special_tokens` found in the vocabulary is special."""
        raw = read_json(Path(vocab_json))
        if not isinstance(raw, dict) or not all(type(i) is int for i in raw.values()):
            raise AttnlabError(f"{vocab_json}: not GPT-2's vocab.json (an object of token -> integer id)")
        specials = {s: int(raw[s]) for s in special_tokens if s in raw}
        by_id = {int(i): s for s, i in raw.items()}
        if sorted(by_id) != list(range(len(by_id))):
            raise AttnlabError(f"{vocab_json}: token ids must be 0 to {len(by_id) - 1}, each once")
        special_ids = set(specials.values())
        vocab = [by_id[i].encode() if i in special_ids else gpt2_str_to_token(by_id[i]) for i in range(len(by_id))]
        merges = []
        for line in Path(merges_txt).read_text(encoding="utf-8").splitlines():
            if line.startswith("#version") or not line.strip():
                continue
            if line.count(" ") != 1:
                raise AttnlabError(f"{merges_txt}: merge {line[:40]!r} is not two tokens separated by one space")
            a, b = line.split(" ")
            merges.append((gpt2_str_to_token(a), gpt2_str_to_token(b)))
        return cls(vocab, merges, specials)

    def __repr__(self) -> str:
        specials = list(self.special_tokens)
        return f"BPETokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)}, special_tokens={specials})"


class _BPEIncrementalEncoder(IncrementalEncoder):
    """Encodes the words that the text still to come cannot change, and holds back the rest.

    GPT-2's pre-tokeniser decides a word from at most the two characters after it (a run of spaces
    gives its last space to the next word only when a letter follows), and a contraction (`'ll`)
    needs the three characters from its start. So a word that ends at least three characters before
    the end of what has arrived is final; the last few words wait for more text. An ending that may
    grow into a special token (`... <|endof`) waits whole, since whether it becomes one decides
    where the words before it end. Words are encoded as the pre-tokeniser cut them in context:
    cutting the text and pre-tokenising the part again could join two of them.
    """

    tokenizer: BPETokenizer

    def feed(self, text: str) -> np.ndarray:
        text = self.pending + text
        tok = self.tokenizer
        # `partial`: where an unfinished special token may begin (the end of `text` if none can).
        longest = max((len(s) for s in tok.special_tokens), default=1)
        partial = next(
            (
                i
                for i in range(max(0, len(text) - longest + 1), len(text))
                if any(s != text[i:] and s.startswith(text[i:]) for s in tok.special_tokens)
            ),
            len(text),
        )
        pieces = split_special(text[:partial], tok.special_tokens)
        open_start = partial - len(pieces[-1][0]) if pieces and not pieces[-1][1] else partial
        ids = tok.encode(text[:open_start])  # ends with a special token (or is empty): final as it is
        done = open_start
        for m in PRETOKENIZE.finditer(text, open_start, partial):
            if m.end() > partial - 3:
                break
            ids.extend(tok._encode_word(m.group()))
            done = m.end()
        self.pending = text[done:]
        return np.array(ids, dtype=token_dtype(tok.n_vocab))


def check_vocab_size(vocab_size: int, n_special: int = 1, spec: str | None = None) -> None:
    smallest = 256 + n_special
    if vocab_size < smallest:
        what = f"tokenizer {spec!r}: " if spec else "BPE: "
        raise AttnlabError(
            f"{what}a vocabulary of {vocab_size} is too small; byte-level BPE needs at least {smallest} "
            f"(256 bytes + {n_special} special token{'s' if n_special != 1 else ''}); use e.g. bpe:4096"
        )


def parse_bpe_spec(spec: str) -> int:
    """The vocabulary size of a tokenizer name `bpe:N`, or an AttnlabError that says how to write it."""
    if spec == "bpe":
        raise AttnlabError("unknown tokenizer 'bpe': BPE needs a vocabulary size, e.g. bpe:4096")
    size = spec.split(":", 1)[1] if spec.startswith("bpe:") else ""
    if not size.isdigit():
        raise AttnlabError(f"tokenizer {spec!r}: the vocabulary size must be a whole number, e.g. bpe:4096")
    check_vocab_size(int(size), 1, spec)
    return int(size)


def train_cached(
    chunks: Iterable[str], vocab_size: int, cache_dir: Path, log: Callable[[str], None] = notice
) -> BPETokenizer:
    """Train on (at most MAX_TRAIN_CHARS of) `chunks`, or load the tokenizer trained on the same text before.

    The cache file is named by a hash of the training text, the vocabulary size and the format.
    """
    pieces, n = [], 0
    for chunk in chunks:
        pieces.append(chunk[: MAX_TRAIN_CHARS - n])
        n += len(pieces[-1])
        if n >= MAX_TRAIN_CHARS:
            log(f"bpe: learning from the first {n:,} characters of the training text")
            break
    text = "".join(pieces)
    digest = hashlib.sha256(f"bpe-v{FORMAT_VERSION}:{vocab_size}:{ENDOFTEXT}\n".encode())
    digest.update(text.encode("utf-8"))
    path = cache_dir / f"{digest.hexdigest()[:20]}-{vocab_size}.json"
    tok = None
    if path.exists():
        try:
            tok = BPETokenizer.load(path)
            log(f"bpe: using the tokenizer trained before on this text ({path})")
        except AttnlabError as e:  # a damaged cache entry is rebuilt, not trusted
            log(f"bpe: {e}; learning it again")
    if tok is None:
        log(f"bpe: learning a {vocab_size}-token vocabulary from {len(text):,} characters ...")
        with warnings.catch_warnings():  # the shortfall is reported below, once, through `log`
            warnings.simplefilter("ignore")
            tok = BPETokenizer.train(text, vocab_size)
        tok.save(path)
    if tok.n_vocab < vocab_size:
        log(
            f"bpe: the training text ran out of pairs to merge: the vocabulary has {tok.n_vocab} tokens, "
            f"not {vocab_size} (the model's n_vocab follows the tokenizer)"
        )
    return tok
