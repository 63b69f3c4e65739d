"""`attnlab prepare`: tokenize a corpus once into token files that training memory-maps.

The text is read in byte chunks cut after a newline (so no character, word or separator line is
split), tokenized chunk by chunk and appended to the token file, so memory stays flat however big
the corpus is (the full TinyStories train split is about 2 GB). Progress is saved after each chunk:
an interrupted run continues where it stopped. Outputs for `--out FILE.bin`:

- `FILE.bin`        training tokens (uint16, or uint32 for vocabularies over 65,536)
- `FILE.valid.bin`  validation tokens
- `FILE.json`       tokenizer, dtype, token and character counts, source

`--data FILE.bin` then trains on them with no tokenization at all.
"""

from __future__ import annotations

import codecs
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .data import (
    SEPARATOR,
    VALID_FRACTION,
    Corpus,
    Prepared,
    TextSplit,
    TokenStream,
    build_tokenizer,
    load_corpus,
    notice,
)
from .errors import AttnlabError
from .tokenizers import Tokenizer, describe_unencodable, tokenizer_from_dict

CHUNK_BYTES = 8 * 2**20
FORMAT = 1


def _byte_ranges(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(train, valid) byte ranges of one file: validation starts at the first story (or line) boundary
    after 90% of the file, found without reading the file into memory."""
    size = path.stat().st_size
    if size == 0:
        raise AttnlabError(f"{path}: the file is empty; give a text with at least a few stories")
    with open(path, "rb") as f:
        f.seek(int(size * (1 - VALID_FRACTION)))
        window = f.read(1 << 20)
    sep = (SEPARATOR + "\n").encode()
    at = window.find(sep)
    cut = at + len(sep) if at >= 0 else window.find(b"\n") + 1
    if cut <= 0:
        raise AttnlabError(f"{path}: no story or line boundary in the last 10%; cannot split train and validation")
    split = int(size * (1 - VALID_FRACTION)) + cut
    return (0, split), (split, size)


def _chunks(path: Path, start: int, end: int) -> Iterator[tuple[str, int, int]]:
    """(text, bytes replaced, end offset) for byte range [start, end), each chunk ending after a newline."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while pos < end:
            raw = f.read(min(CHUNK_BYTES, end - pos))
            if pos + len(raw) < end:
                cut = raw.rfind(b"\n") + 1
                raw = raw[:cut] if cut > 0 else raw  # one line longer than a chunk: cut anywhere
                f.seek(pos + len(raw))
            text = decoder.decode(raw, final=pos + len(raw) >= end)
            pos += len(raw)
            yield text, text.count("\ufffd"), pos


class _ByteRange(TextSplit):
    """A split given as a byte range of a file: what tokenizers that learn (char, bpe:N) read."""

    def __init__(self, path: Path, byte_range: tuple[int, int]) -> None:
        super().__init__(path=path)
        self.byte_range = byte_range

    def chunks(self) -> Iterator[str]:
        for text, _, _ in _chunks(self.path, *self.byte_range):
            yield text


def _tokenize_range(path: Path, byte_range: tuple[int, int], tokenizer: Tokenizer, out: Path, what: str) -> dict:
    """Append the tokens of a byte range to `out`, resumable through `out.progress.json`."""
    dtype = np.uint16 if tokenizer.n_vocab <= 65536 else np.uint32
    progress_path = out.with_name(out.name + ".progress.json")
    tmp = out.with_name(out.name + ".partial")
    state = {"pos": byte_range[0], "tokens": 0, "chars": 0, "replaced": 0, "dropped": {}}
    if progress_path.exists() and tmp.exists():
        state = json.loads(progress_path.read_text())
        notice(f"prepare: continuing {what} at byte {state['pos']:,} ({state['tokens']:,} tokens written)")
    with open(tmp, "ab") as f:
        f.truncate(state["tokens"] * np.dtype(dtype).itemsize)  # drop a chunk written after the last save
    dropped = Counter(state["dropped"])
    total = byte_range[1] - byte_range[0]
    with (
        open(tmp, "ab") as f,
        tqdm(
            total=total,
            initial=state["pos"] - byte_range[0],
            unit="B",
            unit_scale=True,
            desc=f"prepare {what}",
            file=None,
            disable=None,
        ) as bar,
    ):
        for text, replaced, pos in _chunks(path, state["pos"], byte_range[1]):
            ids = tokenizer.encode_array(text).astype(dtype)
            f.write(ids.tobytes())
            f.flush()
            miss = tokenizer.unencodable(text) if len(ids) != len(text) else Counter()
            dropped += miss
            state.update(
                pos=pos,
                tokens=state["tokens"] + len(ids),
                chars=state["chars"] + len(text) - sum(miss.values()),
                replaced=state["replaced"] + replaced,
                dropped=dict(dropped),
            )
            progress_tmp = progress_path.with_suffix(".tmp")
            progress_tmp.write_text(json.dumps(state))
            os.replace(progress_tmp, progress_path)
            bar.update(pos - bar.n - byte_range[0])
    os.replace(tmp, out)
    progress_path.unlink()
    if state["replaced"]:
        notice(f"warning: {what}: replaced {state['replaced']} undecodable bytes with U+FFFD")
    if dropped:
        notice(describe_unencodable(dropped, what))
    return {"file": out.name, "tokens": state["tokens"], "chars": state["chars"]}


def _source_ranges(source: str) -> tuple[Path, tuple[int, int], Path, tuple[int, int], Corpus | None]:
    """Where the train and validation text of a source lie, as (file, byte range) pairs."""
    path = Path(source).expanduser()
    if path.is_file():
        train, valid = _byte_ranges(path)
        return path, train, path, valid, None
    corpus = load_corpus(source, in_memory_limit=0)  # every file split stays on disk
    if corpus.train.path is None or corpus.valid.text is None:
        raise AttnlabError(
            f"{source}: prepare takes a .txt file, a folder with train.txt (+ valid.txt), or "
            "tinystories / tinystories-full"
        )
    return corpus.train.path, (0, corpus.train.path.stat().st_size), Path(), (0, 0), corpus


def prepare(source: str, out: str | Path, tokenizer: str = "bytes") -> dict[str, Any]:
    """Tokenize `source` into OUT.bin (train), OUT.valid.bin and OUT.json; returns the metadata."""
    out = Path(out)
    if out.suffix != ".bin":
        raise AttnlabError(f"--out {out}: give a file name ending in .bin")
    out.parent.mkdir(parents=True, exist_ok=True)
    train_file, train_range, valid_file, valid_range, corpus = _source_ranges(source)

    tok = build_tokenizer(tokenizer, Corpus(source, _ByteRange(train_file, train_range), TextSplit(text="")))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "tokenizer": tok.to_dict(),
        "dtype": "uint16" if tok.n_vocab <= 65536 else "uint32",
    }
    meta["train"] = _tokenize_range(train_file, train_range, tok, out, "train")
    valid_out = out.with_suffix(".valid.bin")
    if corpus is not None:  # the validation split is text already in memory (a separate, small file)
        dtype = np.dtype(meta["dtype"])
        ids = tok.encode_array(corpus.valid.text or "").astype(dtype)
        valid_out.write_bytes(ids.tobytes())
        meta["valid"] = {"file": valid_out.name, "tokens": len(ids), "chars": len(corpus.valid.text or "")}
    else:
        meta["valid"] = _tokenize_range(valid_file, valid_range, tok, valid_out, "valid")
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return meta


def load_prepared(path: str | Path) -> Prepared:
    """The token files written by `prepare`, memory-mapped (nothing is read until used)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise AttnlabError(f"{path}: no {meta_path.name} beside it; make it with `attnlab prepare SRC --out {path}`")
    meta = json.loads(meta_path.read_text())
    tok = tokenizer_from_dict(meta["tokenizer"])

    def stream(part: dict[str, Any]) -> TokenStream:
        file = path.parent / part["file"]
        tokens = np.memmap(file, dtype=meta["dtype"], mode="r") if part["tokens"] else np.zeros(0, meta["dtype"])
        return TokenStream(tokens, part["chars"])

    corpus = Corpus(str(path), TextSplit(path=path), TextSplit(path=path))
    return Prepared(corpus, tok, stream(meta["train"]), stream(meta["valid"]))
