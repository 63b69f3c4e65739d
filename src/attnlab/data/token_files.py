"""`attnlab prepare`: tokenize a corpus once into token files that training memory-maps.

The text never has to fit in memory: each split is tokenized by the chunked, resumable writer of
`attnlab.data.tokens` (the full TinyStories train split is about 2 GB). A single file is split at the
first story boundary after 90% of it, found without reading the file. `--data FILE.bin` then trains
on the token files with no tokenization at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import AttnlabError
from ..tokenizers import ENDOFTEXT, token_dtype
from .corpus import VALID_FRACTION, Corpus, TextSplit, build_tokenizer, encode_split, load_corpus
from .tokens import check_text, read_chunks, write_token_file, write_token_files_meta


def _byte_ranges(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(train, valid) byte ranges of one file: validation starts at the first story (or line) boundary
    after 90% of the file, found without reading the file into memory."""
    size = path.stat().st_size
    if size == 0:
        raise AttnlabError(f"{path}: the file is empty; give a text with at least a few stories")
    start = int(size * (1 - VALID_FRACTION))
    with open(path, "rb") as f:
        f.seek(start)
        window = f.read(1 << 20)
    sep = (ENDOFTEXT + "\n").encode()
    at = window.find(sep)
    cut = at + len(sep) if at >= 0 else window.find(b"\n") + 1
    if cut <= 0 or (start + len(window) == size and not window[cut:].strip()):  # no validation text
        raise AttnlabError(
            f"{path}: too short, cannot split its {size:,} bytes into train and validation: validation is the "
            "stories (or lines) that start in the last 10%, and none does; give a text at least 10 times as long "
            "as its last story or line (a dozen stories or more)"
        )
    return (0, start + cut), (start + cut, size)


class _ByteRange(TextSplit):
    """A split given as a byte range of a file: what tokenizers that learn (char, bpe:N) read."""

    def __init__(self, path: Path, byte_range: tuple[int, int]) -> None:
        super().__init__(path=path)
        self.byte_range = byte_range

    def chunks(self) -> Iterator[str]:
        assert self.path is not None  # __init__ takes one
        for text, _, _ in read_chunks(self.path, *self.byte_range):
            yield text


def prepare_token_files(source: str, out: str | Path, tokenizer: str = "bytes") -> dict[str, Any]:
    """Tokenize `source` into OUT.bin (train), OUT.valid.bin and OUT.json; returns the metadata."""
    out = Path(out)
    if out.suffix != ".bin":
        raise AttnlabError(f"--out {out}: give a file name ending in .bin")
    valid_out = out.with_suffix(".valid.bin")
    path = Path(source).expanduser()
    if path.is_file():
        check_text(path)  # what `train --data FILE` refuses, prepare refuses too
        train_range, valid_range = _byte_ranges(path)
        tok = build_tokenizer(tokenizer, Corpus(source, _ByteRange(path, train_range), TextSplit(text="")))
        out.parent.mkdir(parents=True, exist_ok=True)  # once the input is known to be good: nothing left behind
        train = write_token_file(path, train_range, tok, out, "train")
        valid = write_token_file(path, valid_range, tok, valid_out, "valid")
    else:
        corpus = load_corpus(source, in_memory_limit=0)  # every file split stays on disk
        if corpus.train.path is None or corpus.valid.text is None:
            raise AttnlabError(
                f"{source}: prepare takes a .txt file, a folder with train.txt (+ valid.txt), or "
                "tinystories / tinystories-full"
            )
        tok = build_tokenizer(tokenizer, corpus)
        out.parent.mkdir(parents=True, exist_ok=True)
        train = write_token_file(corpus.train.path, (0, corpus.train.path.stat().st_size), tok, out, "train")
        # The validation split is a separate, small file, already in memory.
        stream = encode_split(corpus.valid, tok, f"{source} valid")
        valid_out.write_bytes(stream.tokens.astype(token_dtype(tok.n_vocab)).tobytes())
        valid = {"file": valid_out.name, "tokens": len(stream.tokens), "chars": stream.n_chars}
    return write_token_files_meta(out, source, tok, train, valid)
