"""Sequence-to-sequence data: tasks made by the package's own code, parallel text files, teacher forcing.

Tasks (`TASKS`) generate (source, target) pairs of characters:

| task | source | target |
|---|---|---|
| copy | `hbdaf` | `hbdaf` |
| reverse | `hbdaf` | `fadbh` |
| sort | `hbdaf` | `abdfh` |
| addition | `367+58` | `425` |
| numbers | `three hundred and twelve` | `312` |
| dates | `2024-03-05` | `5 March 2024` |

Every pair belongs to the train or the test split by a hash of its source, so the splits never
overlap and do not depend on the seed or on how many examples are drawn; the test split is a fixed
list (`held_out_pairs`). A parallel text file (one `source<TAB>target` per line) is split the same way.

Teacher forcing (`teacher_forcing`): the gold target `<bos> t1 ... tn <eos>` becomes the decoder's
input `<bos> t1 ... tn` and the labels `t1 ... tn <eos>`: position i predicts token i + 1 from the
source and the gold tokens before it, so the first target token is predicted from `<bos>` and the
encoder's output alone.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import AttnlabError
from ..models.seq2seq import BOS, EOS, PAD
from ..runtime.checks import check_object

SPECIALS = ("<pad>", "<bos>", "<eos>")
TEST_SHARE = 10  # one source in 10 (by hash) is a test example
TEST_SIZE = 1000  # test examples of a task (fewer when its test split is smaller)

Pair = tuple[str, str]


def in_test_split(source: str) -> bool:
    """Whether `source` belongs to the test split: fixed by its hash, whatever the seed."""
    return int.from_bytes(hashlib.sha256(source.encode("utf-8")).digest()[:4], "big") % TEST_SHARE == 0


# ---- the tasks ---------------------------------------------------------------------------------

LETTERS = "abcdefghij"


def _letters(rng: random.Random) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 12)))


_ONES = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0 <= n < 1,000,000 in British English words: 312 -> "three hundred and twelve"."""
    if n < 10:
        return _ONES[n]
    if n < 20:
        return _TEENS[n - 10]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    tail = "" if rest == 0 else (" and " if rest < 100 else " ") + number_words(rest)
    return number_words(n // 1000) + " thousand" + tail


_MONTHS = "January February March April May June July August September October November December".split()


def _date(rng: random.Random) -> Pair:
    day = datetime.date(1900, 1, 1) + datetime.timedelta(days=rng.randrange(73_049))  # to 2099-12-31
    return day.isoformat(), f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def _addition(rng: random.Random) -> Pair:
    a, b = rng.randrange(10 ** rng.randint(1, 3)), rng.randrange(10 ** rng.randint(1, 3))
    return f"{a}+{b}", str(a + b)


def _numbers(rng: random.Random) -> Pair:
    n = rng.randrange(1_000_000) if rng.random() < 0.8 else rng.randrange(1000)
    return number_words(n), str(n)


TASKS: dict[str, Callable[[random.Random], Pair]] = {
    "copy": lambda rng: (s := _letters(rng), s),
    "reverse": lambda rng: (s := _letters(rng), s[::-1]),
    "sort": lambda rng: (s := _letters(rng), "".join(sorted(s))),
    "addition": _addition,
    "numbers": _numbers,
    "dates": _date,
}


def task_pairs(task: str, split: str, seed: int = 0) -> Iterator[Pair]:
    """An endless stream of `task`'s pairs of one split ("train" or "test"), drawn with `seed`."""
    if task not in TASKS:
        raise AttnlabError(f"--task {task}: choose one of {', '.join(TASKS)}")
    make, rng, want_test = TASKS[task], random.Random(seed), split == "test"
    while True:
        pair = make(rng)
        if in_test_split(pair[0]) == want_test:
            yield pair


def held_out_pairs(task: str, size: int = TEST_SIZE) -> list[Pair]:
    """The task's fixed test set: `size` distinct pairs of its test split (seed 1234)."""
    seen: dict[str, str] = {}
    stream = task_pairs(task, "test", seed=1234)
    for _ in range(200 * size):  # small tasks run out of distinct test sources: stop looking
        source, target = next(stream)
        seen.setdefault(source, target)
        if len(seen) == size:
            break
    return list(seen.items())


def read_pairs(path: str | Path) -> tuple[list[Pair], list[Pair]]:
    """(train, test) pairs of a parallel text file: one `source<TAB>target` per line, split by hash."""
    path = Path(path)
    if not path.is_file():
        raise AttnlabError(f"--data {path}: no such file; give a text file of source<TAB>target lines")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise AttnlabError(f"--data {path}: not UTF-8 text; convert it to UTF-8") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.count("\t") != 1 or not all(part.strip() for part in line.split("\t")):
            raise AttnlabError(f"{path}:{number}: expected source<TAB>target, got {line[:60]!r}")
        source, target = line.split("\t")
        pairs.append((source, target))
    train = [p for p in pairs if not in_test_split(p[0])]
    test = [p for p in pairs if in_test_split(p[0])]
    if not train or not test:
        raise AttnlabError(f"--data {path}: {len(pairs)} pairs are too few to split into train and test; give more")
    return train, test


# ---- the vocabulary and teacher forcing -------------------------------------------------------


@dataclass(frozen=True)
class PairVocab:
    """Tokens as ids after the three special ones (<pad> = 0, <bos> = 1, <eos> = 2): characters (the
    tasks), or with `words` the text's space-separated words."""

    tokens: tuple[str, ...]
    words: bool = False

    @classmethod
    def from_pairs(cls, pairs: list[Pair], words: bool = False) -> PairVocab:
        return cls(tuple(sorted({tok for pair in pairs for text in pair for tok in cls._split(text, words)})), words)

    @staticmethod
    def _split(text: str, words: bool) -> list[str]:
        return text.split() if words else list(text)

    @property
    def n_vocab(self) -> int:
        return len(SPECIALS) + len(self.tokens)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {tok: i + len(SPECIALS) for i, tok in enumerate(self.tokens)}

    def encode(self, text: str) -> list[int]:
        index = self._index
        parts = self._split(text, self.words)
        if missing := sorted({tok for tok in parts if tok not in index}):
            raise AttnlabError(f"{text[:40]!r}: {' '.join(missing)[:40]!r} not in the vocabulary")
        return [index[tok] for tok in parts]

    def token(self, i: int) -> str:
        return SPECIALS[i] if i < len(SPECIALS) else self.tokens[i - len(SPECIALS)]

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`, up to the first <eos>; <bos> and <pad> are skipped."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.tokens[i - len(SPECIALS)])
        return (" " if self.words else "").join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "pairs", "tokens": list(self.tokens), "words": self.words}

    @classmethod
    def from_dict(cls, d: Any, where: str = "vocabulary") -> PairVocab:
        check_object(d, where, {"kind": str, "tokens": list, "words": bool}, required=("kind", "tokens", "words"))
        tokens = d["tokens"]
        if d["kind"] != "pairs" or not all(isinstance(t, str) and t for t in tokens) or len(set(tokens)) != len(tokens):
            raise AttnlabError(f"{where}: not a seq2seq vocabulary of distinct, non-empty tokens")
        return cls(tuple(tokens), d["words"])


@dataclass
class TeacherForcing:
    """One batch as the model is trained on it; padded with <pad> (0) to the longest of the batch."""

    encoder_input_BS: torch.Tensor  # the source
    decoder_input_BL: torch.Tensor  # <bos> + the target: what the decoder reads
    labels_BL: torch.Tensor  # the target + <eos>: what it must predict at each position (<pad>: ignored)


def teacher_forcing(pairs: list[Pair], vocab: PairVocab) -> TeacherForcing:
    """(source, target) pairs -> encoder input, decoder input (the target shifted right behind <bos>)
    and labels (the target followed by <eos>), each padded to the batch's longest."""
    sources = [vocab.encode(s) for s, _ in pairs]
    targets = [vocab.encode(t) for _, t in pairs]
    if not all(sources):
        raise AttnlabError("an empty source: every pair needs at least one source character")
    S, L = max(map(len, sources)), max(map(len, targets)) + 1

    def pad(rows: list[list[int]], n: int) -> torch.Tensor:
        return torch.tensor([row + [PAD] * (n - len(row)) for row in rows], dtype=torch.long)

    return TeacherForcing(pad(sources, S), pad([[BOS, *t] for t in targets], L), pad([[*t, EOS] for t in targets], L))


def show_teacher_forcing(source: str, target: str, vocab: PairVocab | None = None, words: bool = False) -> str:
    """The example as teacher forcing prepares it, token by token (`attnlab seq2seq show`); characters
    are the tokens, or with `words` the space-separated words."""
    vocab = vocab or PairVocab.from_pairs([(source, target)], words)
    batch = teacher_forcing([(source, target)], vocab)

    def tokens(ids: torch.Tensor) -> list[str]:  # a space shown as ␣, so the tokens stay apart
        return [vocab.token(int(i)).replace(" ", "␣") for i in ids]

    gold = ["<bos>", *tokens(batch.labels_BL[0])]
    dec, lab = tokens(batch.decoder_input_BL[0]), tokens(batch.labels_BL[0])
    rows = [
        f"source          {source}",
        f"gold target     {' '.join(gold)}",
        "",
        f"encoder input   {' '.join(tokens(batch.encoder_input_BS[0]))}",
        f"decoder input   {' '.join(dec)}",
        f"labels          {' '.join(lab)}",
        "",
        "position  the decoder reads  ->  and is trained to predict (seeing the source and the gold tokens so far)",
    ]
    width = max(map(len, dec))
    for i, (d, y) in enumerate(zip(dec, lab, strict=True)):
        note = "    from <bos> and the encoder's output alone" if i == 0 else ""
        rows.append(f"{i:>8}  {d:>{max(width, 15)}}  ->  {y}{note}")
    return "\n".join(rows)


def show_pair(
    source: str | None = None, target: str | None = None, task: str | None = None, words: bool = False
) -> str:
    """`show_teacher_forcing` of a (source, target) pair, or of the first training pair of `task`."""
    if task is not None:
        if source is not None:
            raise AttnlabError("give a SOURCE and a TARGET, or --task NAME, not both")
        source, target = next(task_pairs(task, "train"))
    if not source or not target or not source.strip() or not target.strip():
        raise AttnlabError(
            "give a non-empty SOURCE and TARGET (or --task NAME), e.g. 'J aime les champignons' 'I like mushrooms'"
        )
    return show_teacher_forcing(source, target, words=words)
