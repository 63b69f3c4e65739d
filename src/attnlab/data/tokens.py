"""Token streams and token files: the one chunked writer behind the token cache and `attnlab prepare`.

A text file is read in byte chunks cut after a newline, encoded with the tokenizer's incremental
encoder (so the ids equal those of the whole text at once, BPE included) and appended to a token
file, so memory stays flat however large the file. Progress, including the text the encoder still
holds, is saved after every chunk: an interrupted writer continues where it stopped. Token files
are read back as memory maps.

`attnlab prepare` writes three files for `--out FILE.bin`:

- `FILE.bin`        training tokens (uint16, or uint32 for vocabularies over 65,536)
- `FILE.valid.bin`  validation tokens
- `FILE.json`       tokenizer, dtype, token and character counts, source
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import AttnlabError
from ..runtime.checks import check_object
from ..runtime.environment import cache_dir, notice
from ..runtime.files import read_json
from ..tokenizers import Tokenizer, describe_unencodable, token_dtype, tokenizer_from_dict

CHUNK_BYTES = 8 * 2**20
TOKEN_FILES_FORMAT = 1
CACHE_FORMAT = 2  # 2: chunks encoded incrementally (ids equal to one pass over the whole file)


@dataclass
class TokenStream:
    """A split as token ids (numpy array or memmap) plus the characters they stand for."""

    tokens: np.ndarray
    n_chars: int

    @property
    def chars_per_token(self) -> float:
        return self.n_chars / max(1, len(self.tokens))


MAX_UNDECODABLE = 0.01  # more undecodable bytes than this share: not UTF-8 text (Latin-1, binary)
_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def check_text(path: Path, raw: bytes | None = None) -> None:
    """Refuse a file that is not UTF-8 text, from its first chunk (or `raw`, the whole file, when read):
    UTF-16 and UTF-32 (a byte-order mark, or NUL bytes between characters), other binary data (NUL
    bytes), or other encodings (over 1% of the bytes undecodable as UTF-8, e.g. Latin-1)."""
    if raw is None:
        with open(path, "rb") as f:
            raw = f.read(CHUNK_BYTES)
        whole = len(raw) == path.stat().st_size
    else:
        whole = True
    if whole and not raw.strip():
        raise AttnlabError(f"{path}: the file is empty; give a text with at least a few stories")
    for bom, name in _BOMS.items():
        if raw.startswith(bom):
            raise AttnlabError(f"{path}: {name} text; convert it to UTF-8 (e.g. iconv -f {name} -t UTF-8)")
    if b"\x00" in raw:
        raise AttnlabError(f"{path}: holds NUL bytes, so it is binary (or UTF-16 without a mark), not UTF-8 text")
    bad = raw.decode("utf-8", errors="replace").count("\ufffd") - raw.count("\ufffd".encode())
    if bad > MAX_UNDECODABLE * max(1, len(raw)):
        raise AttnlabError(f"{path}: not UTF-8 text ({bad} undecodable bytes); convert it to UTF-8")


def read_chunks(path: Path, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int]]:
    """(text, bytes replaced by U+FFFD, end offset) for byte range [start, end), each chunk ending after a newline."""
    end = path.stat().st_size if end is None else end
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


def dropped_chars(tokenizer: Tokenizer, text: str, ids: np.ndarray) -> Counter[str]:
    """Characters of `text` that the tokenizer left out of `ids`.

    Byte-level tokenizers never drop any, and one id per character means none was dropped: the
    (slow, per-character) count runs only when something is missing.
    """
    if tokenizer.byte_level or len(ids) == len(text):
        return Counter()
    return tokenizer.unencodable(text)


def _check_progress(progress_path: Path, fresh: dict[str, Any], tokens_on_disk: int) -> dict[str, Any]:
    """The progress of an interrupted `write_token_file`, if it is this job's and consistent."""
    types = {"job": dict, "pos": int, "tokens": int, "chars": int, "replaced": int, "dropped": dict, "pending": str}
    state = check_object(read_json(progress_path), str(progress_path), types, required=tuple(types))
    if state["job"] != fresh["job"]:
        raise AttnlabError(f"{progress_path} belongs to another file, range or tokenizer")
    start, end = fresh["job"]["range"]
    if not start <= state["pos"] <= end or not 0 <= state["tokens"] <= tokens_on_disk:
        raise AttnlabError(f"{progress_path}: position or token count out of range")
    if min(state["chars"], state["replaced"]) < 0 or not all(type(n) is int for n in state["dropped"].values()):
        raise AttnlabError(f"{progress_path}: a count is not a count")
    return state


def write_token_file(
    path: Path, byte_range: tuple[int, int], tokenizer: Tokenizer, out: Path, what: str
) -> dict[str, Any]:
    """Tokenize bytes [start, end) of the text file `path` into the token file `out`; resumable.

    Returns `{"file", "tokens", "chars", "replaced", "dropped"}`: the characters are those the
    tokens stand for (undecodable bytes count as U+FFFD; characters the tokenizer drops do not count).
    """
    dtype = token_dtype(tokenizer.n_vocab)
    progress_path = out.with_name(out.name + ".progress.json")
    tmp = out.with_name(out.name + ".partial")
    # The job the progress belongs to: another file, range or tokenizer starts afresh.
    job = {"source": str(path.resolve()), "range": list(byte_range), "tokenizer": tokenizer.to_dict()}
    fresh = {"job": job, "pos": byte_range[0], "tokens": 0, "chars": 0, "replaced": 0, "dropped": {}, "pending": ""}
    state: dict[str, Any] = fresh
    if progress_path.exists() and tmp.exists():
        try:
            state = _check_progress(progress_path, fresh, tmp.stat().st_size // dtype.itemsize)
            notice(f"prepare: continuing {what} at byte {state['pos']:,} ({state['tokens']:,} tokens written)")
        except AttnlabError as e:
            notice(f"prepare: {e}; tokenizing {what} from the start")
            tmp.unlink()
    with open(tmp, "ab") as f:
        f.truncate(state["tokens"] * dtype.itemsize)  # drop a chunk written after the last save
    encoder = tokenizer.incremental_encoder(state["pending"])
    dropped = Counter(state["dropped"])
    with (
        open(tmp, "ab") as f,
        tqdm(
            total=byte_range[1] - byte_range[0],
            initial=state["pos"] - byte_range[0],
            unit="B",
            unit_scale=True,
            desc=f"tokenize {what}",
            disable=None,
        ) as bar,
    ):
        for text, replaced, pos in read_chunks(path, state["pos"], byte_range[1]):
            ids = encoder.feed(text).astype(dtype)
            if pos >= byte_range[1]:
                ids = np.concatenate([ids, encoder.flush().astype(dtype)])
            f.write(ids.tobytes())
            f.flush()
            miss = dropped_chars(tokenizer, text, ids)  # exact: only BPE, which drops nothing, holds text back
            dropped += miss
            state.update(
                pos=pos,
                tokens=state["tokens"] + len(ids),
                chars=state["chars"] + len(text) - sum(miss.values()),
                replaced=state["replaced"] + replaced,
                dropped=dict(dropped),
                pending=encoder.pending,
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
    return {
        "file": out.name,
        "tokens": state["tokens"],
        "chars": state["chars"],
        "replaced": state["replaced"],
        "dropped": dict(dropped),
    }


def memmap_tokens(path: Path, dtype: str | np.dtype, n_tokens: int) -> np.ndarray:
    """The tokens of a token file, memory-mapped (nothing is read until used)."""
    return np.memmap(path, dtype=dtype, mode="r") if n_tokens else np.zeros(0, dtype)


def cached_tokens(path: Path, tokenizer: Tokenizer, what: str) -> TokenStream:
    """A large text file's tokens from the cache (`$ATTNLAB_CACHE/tokens`), tokenizing it there the first time."""
    st = path.stat()
    key = [str(path.resolve()), st.st_size, st.st_mtime_ns, tokenizer.to_dict(), CACHE_FORMAT]
    stem = cache_dir() / "tokens" / hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    meta_path = stem.with_suffix(".json")
    meta = _cached_meta(meta_path, stem.with_suffix(".bin"))
    if meta is None:
        # Written under this process's own names, then renamed: several processes (torchrun's ranks)
        # may tokenize the same file at once, and each swaps in a complete file.
        stem.parent.mkdir(parents=True, exist_ok=True)
        my_bin, my_meta = (stem.with_name(f"{stem.name}.tmp{os.getpid()}{ext}") for ext in (".bin", ".json"))
        part = write_token_file(path, (0, st.st_size), tokenizer, my_bin, what)
        os.replace(my_bin, stem.with_suffix(".bin"))
        my_meta.write_text(json.dumps({**part, "dtype": token_dtype(tokenizer.n_vocab).name}))
        os.replace(my_meta, meta_path)
        meta = _cached_meta(meta_path, stem.with_suffix(".bin"))
        assert meta is not None, "the token cache entry just written does not read back"
    elif meta["dropped"]:
        notice(describe_unencodable(Counter(meta["dropped"]), what))
    return TokenStream(memmap_tokens(stem.with_suffix(".bin"), meta["dtype"], meta["tokens"]), meta["chars"])


def _cached_meta(meta_path: Path, bin_path: Path) -> dict[str, Any] | None:
    """A token cache entry's description, if the entry is whole and consistent (else it is remade)."""
    if not meta_path.exists():
        return None
    types = {"file": str, "tokens": int, "chars": int, "replaced": int, "dropped": dict, "dtype": str}
    try:
        meta = check_object(read_json(meta_path), str(meta_path), types, required=tuple(types))
        if meta["dtype"] not in TOKEN_DTYPES:
            raise AttnlabError(f"{meta_path}: dtype {meta['dtype']!r}")
        if not bin_path.is_file() or bin_path.stat().st_size != meta["tokens"] * np.dtype(meta["dtype"]).itemsize:
            raise AttnlabError(f"{bin_path} does not hold the {meta['tokens']:,} tokens its description counts")
    except AttnlabError as e:
        notice(f"notice: the token cache entry is damaged ({e}); tokenizing again")
        return None
    return meta


def write_token_files_meta(out: Path, source: str, tokenizer: Tokenizer, train: dict, valid: dict) -> dict[str, Any]:
    """Write `FILE.json` beside `FILE.bin` and `FILE.valid.bin`; returns what it wrote."""
    meta = {
        "format": TOKEN_FILES_FORMAT,
        "source": source,
        "tokenizer": tokenizer.to_dict(),
        "dtype": token_dtype(tokenizer.n_vocab).name,
        "train": train,
        "valid": valid,
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return meta


TOKEN_DTYPES = ("uint16", "uint32")  # the only dtypes a token file may name (never "O": object pointers)
_META_TYPES = {"format": int, "source": str, "tokenizer": dict, "dtype": str, "train": dict, "valid": dict}
_META_REQUIRED = ("tokenizer", "dtype", "train", "valid")
_REMAKE = "remake the token files with `attnlab prepare SRC --out FILE.bin`"
_PART_KEYS = {"file", "tokens", "chars", "replaced", "dropped"}


def _bad(meta_path: Path, what: str) -> AttnlabError:
    return AttnlabError(f"{meta_path}: {what}; {_REMAKE}")


def _count(meta_path: Path, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**48:
        raise _bad(meta_path, f"{where} is {value!r}, not a count of tokens or characters")
    return value


def _token_part(meta_path: Path, name: str, part: dict[str, Any], dtype: np.dtype, n_vocab: int) -> TokenStream:
    """One split of a token file, checked: a sibling file of exactly `tokens` ids, all below n_vocab."""
    if unknown := set(part) - _PART_KEYS:
        raise _bad(meta_path, f'"{name}" has unknown key(s) {", ".join(sorted(unknown))}')
    file = part.get("file")
    # Only a file beside the JSON: a name such as "../secret.txt" or "/etc/passwd" is not read.
    if not isinstance(file, str) or not file or Path(file).name != file or file in (".", ".."):
        raise _bad(meta_path, f'"{name}.file" is {file!r}; it must be the name of a file beside {meta_path.name}')
    tokens, chars = (_count(meta_path, f'"{name}.{k}"', part.get(k)) for k in ("tokens", "chars"))
    path = meta_path.parent / file
    if not path.is_file():
        raise _bad(meta_path, f"{file} is missing")
    if path.stat().st_size != tokens * dtype.itemsize:
        raise _bad(meta_path, f"{file} holds {path.stat().st_size:,} bytes, not {tokens:,} tokens of {dtype.name}")
    ids = memmap_tokens(path, dtype, tokens)
    if tokens and int(ids.max()) >= n_vocab:  # one pass over the file, before any id reaches an embedding
        raise _bad(meta_path, f"{file} holds id {int(ids.max())}, outside the tokenizer's {n_vocab} ids")
    return TokenStream(ids, chars)


def read_token_files(path: str | Path) -> tuple[Tokenizer, TokenStream, TokenStream]:
    """The tokenizer and the memory-mapped train and validation tokens written by `attnlab prepare`.

    The JSON beside the token files is checked before anything is read through it: its keys and their
    types, a token dtype, file names beside it only, file sizes that match the counts, ids that fit.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise AttnlabError(f"{path}: no {meta_path.name} beside it; make it with `attnlab prepare SRC --out {path}`")
    meta = check_object(read_json(meta_path, _REMAKE), str(meta_path), _META_TYPES, _META_REQUIRED, _REMAKE)
    if meta.get("format", TOKEN_FILES_FORMAT) != TOKEN_FILES_FORMAT:
        raise _bad(meta_path, f"format {meta['format']!r}; this attnlab reads format {TOKEN_FILES_FORMAT}")
    if meta["dtype"] not in TOKEN_DTYPES:
        raise _bad(meta_path, f"dtype {meta['dtype']!r}; token files are {' or '.join(TOKEN_DTYPES)}")
    try:
        tokenizer = tokenizer_from_dict(meta["tokenizer"])  # checks its own keys and values
    except AttnlabError as e:
        raise _bad(meta_path, str(e)) from None
    dtype = np.dtype(meta["dtype"])
    if dtype.itemsize < token_dtype(tokenizer.n_vocab).itemsize:
        raise _bad(meta_path, f"dtype {dtype.name} cannot hold the {tokenizer.n_vocab:,} ids of its tokenizer")
    train, valid = (_token_part(meta_path, k, meta[k], dtype, tokenizer.n_vocab) for k in ("train", "valid"))
    return tokenizer, train, valid
