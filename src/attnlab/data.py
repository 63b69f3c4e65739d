"""Corpora, train/validation splits, token streams and batches.

A data source is one string: `builtin`, `tinystories`, `tinystories-full`, a `.txt` file, a folder
of `.txt` files, or a folder holding `train.txt` (+ `valid.txt`). Stories are separated by lines
holding only `<|endoftext|>` (the TinyStories convention); splits are made by whole stories.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .errors import AttnlabError
from .tokenizers import CharTokenizer, Tokenizer, describe_unencodable, make_tokenizer

SEPARATOR = "<|endoftext|>"
HUB_REPO = "roneneldan/TinyStories"
HUB_VALID = "TinyStoriesV2-GPT4-valid.txt"
HUB_TRAIN = "TinyStoriesV2-GPT4-train.txt"
TINYSTORIES_ENV = "ATTNLAB_TINYSTORIES"
VALID_FRACTION = 0.1
# Files above this size are not read into memory: they are tokenized in chunks to a cached memmap.
IN_MEMORY_LIMIT = 256 * 2**20
CHUNK_CHARS = 8 * 2**20
SOURCES_HELP = "builtin, tinystories, tinystories-full, a .txt file, or a folder (train.txt/valid.txt or *.txt)"


def notice(msg: str) -> None:
    """A message for the user on stderr that does not break a progress bar."""
    tqdm.write(msg, file=sys.stderr)


@dataclass
class TextSplit:
    """One split of a corpus: text in memory, or a path to a file too big to hold."""

    text: str | None = None
    path: Path | None = None

    def chunks(self) -> Iterator[str]:
        if self.text is not None:
            yield self.text
            return
        assert self.path is not None
        with open(self.path, encoding="utf-8", errors="replace") as f:
            while chunk := f.read(CHUNK_CHARS):
                yield chunk


@dataclass
class Corpus:
    source: str
    train: TextSplit
    valid: TextSplit


def split_stories(text: str) -> list[str]:
    """Stories of a text whose stories end with a `<|endoftext|>` line; empty ones are skipped."""
    parts = text.split(SEPARATOR) if SEPARATOR in text else [text]
    return [p.strip() for p in parts if p.strip()]


def join_stories(stories: list[str]) -> str:
    return "".join(f"{s}\n{SEPARATOR}\n" for s in stories)


def split_train_valid(text: str, what: str, valid_fraction: float = VALID_FRACTION) -> tuple[str, str]:
    """Last `valid_fraction` of the stories (or of the lines, for text without separators) is validation."""
    if SEPARATOR in text:
        units, join = split_stories(text), join_stories
    else:
        units = [line for line in text.splitlines() if line.strip()]
        join = "\n".join  # type: ignore[assignment]
    if len(units) < 2:
        raise AttnlabError(
            f"{what}: cannot split one story into train and validation; "
            "give more text, or a folder with train.txt and valid.txt"
        )
    n_valid = max(1, round(len(units) * valid_fraction))
    return join(units[:-n_valid]), join(units[-n_valid:])


def read_text(path: Path) -> str:
    """Read a UTF-8 file; undecodable bytes become U+FFFD with a counted warning."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        if bad > 0.01 * max(1, len(raw)):
            raise AttnlabError(f"{path}: not UTF-8 text ({bad} undecodable bytes); convert it to UTF-8") from None
        notice(f"warning: {path}: replaced {bad} undecodable bytes with U+FFFD")
    if not text.strip():
        raise AttnlabError(f"{path}: the file is empty; give a text with at least a few stories")
    return text


def _file_split(path: Path, in_memory_limit: int) -> TextSplit:
    if path.stat().st_size > in_memory_limit:
        return TextSplit(path=path)
    return TextSplit(text=read_text(path))


def hub_file(filename: str) -> Path:
    """Download (or find in the Hugging Face cache) one file of the TinyStories dataset."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=HUB_REPO, filename=filename, repo_type="dataset"))
    except Exception as e:  # network, offline mode, missing cache entry: all mean "no file here"
        raise AttnlabError(
            f"could not get {filename} from the Hugging Face Hub ({type(e).__name__}); offline, pass a "
            f"local copy: --data PATH (a folder with train.txt and valid.txt, or a .txt file), "
            f"or set {TINYSTORIES_ENV}=FOLDER"
        ) from None


def _folder_corpus(folder: Path, source: str, in_memory_limit: int) -> Corpus:
    train, valid = folder / "train.txt", folder / "valid.txt"
    if train.is_file():
        if valid.is_file():
            return Corpus(source, _file_split(train, in_memory_limit), TextSplit(text=read_text(valid)))
        t, v = split_train_valid(read_text(train), str(train))
        return Corpus(source, TextSplit(text=t), TextSplit(text=v))
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise AttnlabError(f"{folder}: no .txt files in this folder; give a folder of UTF-8 .txt files")
    texts = [read_text(p).strip() for p in files]
    t, v = split_train_valid(join_stories([s for text in texts for s in split_stories(text)]), str(folder))
    return Corpus(source, TextSplit(text=t), TextSplit(text=v))


def load_corpus(source: str, in_memory_limit: int = IN_MEMORY_LIMIT) -> Corpus:
    """Resolve a `--data` source to train and validation text."""
    if source == "builtin":
        from .builtin_corpus import builtin_stories

        t, v = split_train_valid(join_stories(builtin_stories()), "builtin")
        return Corpus("builtin", TextSplit(text=t), TextSplit(text=v))
    if source == "tinystories":
        local = os.environ.get(TINYSTORIES_ENV)
        if local:
            notice(f"tinystories: using the local copy in {local} (${TINYSTORIES_ENV})")
            return _folder_corpus(Path(local), "tinystories", in_memory_limit)
        t, v = split_train_valid(read_text(hub_file(HUB_VALID)), HUB_VALID)
        return Corpus("tinystories", TextSplit(text=t), TextSplit(text=v))
    if source == "tinystories-full":
        train = _file_split(hub_file(HUB_TRAIN), in_memory_limit)
        return Corpus("tinystories-full", train, TextSplit(text=read_text(hub_file(HUB_VALID))))
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder_corpus(path, source, in_memory_limit)
    if path.is_file():
        t, v = split_train_valid(read_text(path), str(path))
        return Corpus(source, TextSplit(text=t), TextSplit(text=v))
    raise AttnlabError(f"no such file or folder: {source!r}; --data takes {SOURCES_HELP}")


def load_whole_text(source: str) -> TextSplit:
    """All the text of a source, unsplit: a file as it is, or a corpus's train + validation."""
    path = Path(source).expanduser()
    if path.is_file():
        return _file_split(path, IN_MEMORY_LIMIT)
    corpus = load_corpus(source)
    if corpus.train.text is None:
        raise AttnlabError(f"{source}: too large to evaluate whole; use --split valid")
    return TextSplit(text=corpus.train.text + (corpus.valid.text or ""))


@dataclass
class TokenStream:
    """A split as token ids (numpy array or memmap) plus the characters they stand for."""

    tokens: np.ndarray
    n_chars: int

    @property
    def chars_per_token(self) -> float:
        return self.n_chars / max(1, len(self.tokens))


def _cache_dir() -> Path:
    return Path(os.environ.get("ATTNLAB_CACHE", Path.home() / ".cache" / "attnlab")) / "tokens"


def _dropped(tokenizer: Tokenizer, text: str, ids: np.ndarray) -> Counter[str]:
    # One id per character means nothing was dropped (bytes never drop; the check is then free).
    return tokenizer.unencodable(text) if len(ids) != len(text) else Counter()


def _encode_file(path: Path, tokenizer: Tokenizer, what: str) -> TokenStream:
    """Tokenize a large file chunk by chunk into a cached token file, then memory-map it."""
    st = path.stat()
    key = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, tokenizer.to_dict()], sort_keys=True)
    stem = _cache_dir() / hashlib.sha1(key.encode()).hexdigest()[:20]
    dtype = np.uint16 if tokenizer.n_vocab <= 65536 else np.uint32
    meta_path, bin_path = stem.with_suffix(".json"), stem.with_suffix(".bin")
    if not meta_path.exists():
        stem.parent.mkdir(parents=True, exist_ok=True)
        tmp = bin_path.with_suffix(f".tmp{os.getpid()}")
        n_tokens = n_chars = 0
        dropped: Counter[str] = Counter()
        with (
            open(tmp, "wb") as out,
            tqdm(total=st.st_size, unit="B", unit_scale=True, desc=f"tokenize {what}") as bar,
        ):
            for chunk in TextSplit(path=path).chunks():
                ids = tokenizer.encode_array(chunk).astype(dtype)
                out.write(ids.tobytes())
                miss = _dropped(tokenizer, chunk, ids)
                dropped += miss
                n_tokens += len(ids)
                n_chars += len(chunk) - sum(miss.values())
                bar.update(len(chunk.encode("utf-8")))
        os.replace(tmp, bin_path)
        meta = {"n_tokens": n_tokens, "n_chars": n_chars, "dtype": np.dtype(dtype).name, "dropped": dropped}
        meta_path.write_text(json.dumps(meta))
    meta = json.loads(meta_path.read_text())
    if meta["dropped"]:
        notice(describe_unencodable(Counter(meta["dropped"]), what))
    tokens = np.memmap(bin_path, dtype=meta["dtype"], mode="r") if meta["n_tokens"] else np.zeros(0, dtype)
    return TokenStream(tokens, meta["n_chars"])


def encode_split(split: TextSplit, tokenizer: Tokenizer, what: str) -> TokenStream:
    """Token ids of a split, reporting (never silently dropping) characters the tokenizer cannot encode."""
    if split.path is not None:
        return _encode_file(split.path, tokenizer, what)
    assert split.text is not None
    tokens = tokenizer.encode_array(split.text)
    dropped = _dropped(tokenizer, split.text, tokens)
    if dropped:
        notice(describe_unencodable(dropped, what))
    return TokenStream(tokens, len(split.text) - sum(dropped.values()))


def build_tokenizer(name: str, corpus: Corpus) -> Tokenizer:
    """A tokenizer by name; `char` takes its vocabulary from the training split, `bpe:N` learns its merges there.

    A trained BPE is cached under the cache folder (`$ATTNLAB_CACHE/bpe`), keyed by a hash of the
    training text and the vocabulary size, so the next run on the same data loads it instead.
    """
    if name == "bpe" or name.startswith("bpe:"):
        from .bpe import parse_bpe_spec, train_cached

        return train_cached(corpus.train.chunks(), parse_bpe_spec(name), _cache_dir().parent / "bpe", notice)
    if name != "char":
        return make_tokenizer(name)
    chars: set[str] = set()
    for chunk in corpus.train.chunks():
        chars.update(chr(c) for c in np.unique(np.frombuffer(chunk.encode("utf-32-le"), np.uint32)).tolist())
    return CharTokenizer("".join(chars))


def check_length(stream: TokenStream, max_len: int, what: str) -> None:
    if len(stream.tokens) < max_len + 2:
        raise AttnlabError(
            f"{what} has {len(stream.tokens)} tokens, fewer than one training window of "
            f"{max_len + 1}; give more text or a shorter context (--set max_len=N)"
        )


class Batches:
    """Random windows of `max_len + 1` tokens: inputs x_BL and next-token targets y_BL.

    Offsets come from a seeded torch.Generator whose state is checkpointed, so a resumed run
    draws exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(self, tokens: np.ndarray, max_len: int, batch_size: int, seed: int, device: str = "cpu"):
        self.tokens, self.max_len, self.batch_size, self.device = tokens, max_len, batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self._arange = np.arange(max_len + 1)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts_B = torch.randint(len(self.tokens) - self.max_len, (self.batch_size,), generator=self.generator)
        window_BL = torch.from_numpy(self.tokens[starts_B.numpy()[:, None] + self._arange].astype(np.int64))
        if self.device.startswith("cuda"):
            window_BL = window_BL.pin_memory().to(self.device, non_blocking=True)
        else:
            window_BL = window_BL.to(self.device)
        return window_BL[:, :-1], window_BL[:, 1:]

    def state_dict(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


@dataclass
class Prepared:
    """A corpus tokenized for training: the tokenizer and both splits as token streams."""

    corpus: Corpus
    tokenizer: Tokenizer
    train: TokenStream
    valid: TokenStream

    def info(self) -> dict[str, object]:
        return {
            "source": self.corpus.source,
            "train_chars": self.train.n_chars,
            "val_chars": self.valid.n_chars,
            "train_tokens": len(self.train.tokens),
            "val_tokens": len(self.valid.tokens),
            "tokenizer": self.tokenizer.name,
        }


def prepare_data(source: str, tokenizer: str | Tokenizer = "bytes") -> Prepared:
    """Load a `--data` source and tokenize both splits (a checkpoint's tokenizer can be passed in)."""
    if source.endswith(".bin"):  # token files written by `attnlab prepare`: nothing to tokenize
        from .prepare import load_prepared

        return load_prepared(source)
    corpus = load_corpus(source)
    tok = build_tokenizer(tokenizer, corpus) if isinstance(tokenizer, str) else tokenizer
    train = encode_split(corpus.train, tok, f"{source} train")
    valid = encode_split(corpus.valid, tok, f"{source} valid")
    if len(valid.tokens) < 2:
        raise AttnlabError(f"{source}: the validation split is empty; give more text")
    return Prepared(corpus, tok, train, valid)
