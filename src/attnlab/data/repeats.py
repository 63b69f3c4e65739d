"""Stories told twice: each piece of every story followed at once by itself, so that copying from the
context pays. A small model trained on it for a few CPU minutes grows induction heads (attend to what
followed the last time this token appeared, and copy it); on the stories as written, where little repeats
within a context but names, it learns words first and copying only after far more text.

    write_told_twice("tinystories", Path("twice"))   # twice/train.txt and twice/valid.txt
    prepare_data("twice")
"""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import AttnlabError
from ..runtime.files import write_text_atomically
from .corpus import join_stories, load_corpus, split_stories

PIECE_WORDS = (8, 20)  # 40 to 120 characters: a 256-character context holds both tellings of most pieces


def told_twice(text: str, seed: int = 0, words: tuple[int, int] = PIECE_WORDS) -> str:
    """`text`'s stories, each cut into pieces of `words` words (drawn from `seed`), every piece followed by
    itself: "the cat sat on the mat. the cat sat on the mat. It was ...". Stories stay apart."""
    low, high = words
    if not 1 <= low <= high:
        raise AttnlabError(f"words={words}: give (fewest, most) words per piece, 1 <= fewest <= most")
    rng = random.Random(seed)
    stories = []
    for story in split_stories(text):
        tokens = story.split(" ")
        pieces = []
        while tokens:
            n = rng.randint(low, high)
            piece = " ".join(tokens[:n])
            pieces.append(f"{piece} {piece}")
            tokens = tokens[n:]
        stories.append(" ".join(pieces))
    return join_stories(stories)


def write_told_twice(source: str, out: str | Path, seed: int = 0) -> Path:
    """The folder `out` with train.txt and valid.txt: the `--data` source `source`'s two splits told twice
    (`told_twice`), ready for `prepare_data(str(out))` or `attnlab train --data OUT`."""
    corpus = load_corpus(source)
    out = Path(out)
    for name, split in (("train", corpus.train), ("valid", corpus.valid)):
        text = "".join(split.chunks())
        write_text_atomically(out / f"{name}.txt", told_twice(text, seed if name == "train" else seed + 1))
    return out
