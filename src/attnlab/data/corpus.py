"""Corpora, train/validation splits, token streams and batches.

A data source is one string: `builtin`, `tinystories`, `tinystories-full`, a `.txt` file, a folder
of `.txt` files, a folder holding `train.txt` (+ `valid.txt`), or token files written by `attnlab
prepare`. Stories are separated by lines holding only `<|endoftext|>` (the TinyStories convention);
splits are made by whole stories.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import AttnlabError
from ..runtime.environment import cache_dir, notice
from ..tokenizers import ENDOFTEXT, Tokenizer, describe_unencodable, make_tokenizer
from ..tokenizers.bpe import parse_bpe_spec
from .builtin_corpus import builtin_stories
from .tokens import TokenStream, cached_tokens, check_text, dropped_chars, read_chunks, read_token_files

HUB_REPO = "roneneldan/TinyStories"
HUB_VALID = "TinyStoriesV2-GPT4-valid.txt"
HUB_TRAIN = "TinyStoriesV2-GPT4-train.txt"
TINYSTORIES_ENV = "ATTNLAB_TINYSTORIES"
VALID_FRACTION = 0.1
# Files above this size are not read into memory: they are tokenized in chunks to a cached memmap.
IN_MEMORY_LIMIT = 256 * 2**20
SOURCES_HELP = "builtin, tinystories, tinystories-full, a .txt file, or a folder (train.txt/valid.txt or *.txt)"


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
        for text, _, _ in read_chunks(self.path):
            yield text


@dataclass
class Corpus:
    source: str
    train: TextSplit
    valid: TextSplit


def split_stories(text: str) -> list[str]:
    """Stories of a text whose stories end with a `<|endoftext|>` line; empty ones are skipped."""
    parts = text.split(ENDOFTEXT) if ENDOFTEXT in text else [text]
    return [p.strip() for p in parts if p.strip()]


def join_stories(stories: list[str]) -> str:
    return "".join(f"{s}\n{ENDOFTEXT}\n" for s in stories)


def split_train_valid(text: str, what: str, valid_fraction: float = VALID_FRACTION) -> tuple[str, str]:
    """Last `valid_fraction` of the stories (or of the lines, for text without separators) is validation."""
    join: Callable[[list[str]], str]
    if ENDOFTEXT in text:
        units, join = split_stories(text), join_stories
    else:
        units = [line for line in text.splitlines() if line.strip()]
        join = "\n".join
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
    check_text(path, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        notice(f"warning: {path}: replaced {text.count(chr(0xFFFD))} undecodable bytes with U+FFFD")
    if not text.strip():
        raise AttnlabError(f"{path}: the file is empty; give a text with at least a few stories")
    return text


def _file_split(path: Path, in_memory_limit: int) -> TextSplit:
    if path.stat().st_size > in_memory_limit:
        check_text(path)  # streamed later: its first MiB says what it is
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


def encode_split(split: TextSplit, tokenizer: Tokenizer, what: str) -> TokenStream:
    """Token ids of a split, reporting (never silently dropping) characters the tokenizer cannot encode."""
    if split.path is not None:
        return cached_tokens(split.path, tokenizer, what)
    assert split.text is not None
    tokens = tokenizer.encode_array(split.text)
    dropped = dropped_chars(tokenizer, split.text, tokens)
    if dropped:
        notice(describe_unencodable(dropped, what))
    return TokenStream(tokens, len(split.text) - sum(dropped.values()))


def build_tokenizer(name: str, corpus: Corpus) -> Tokenizer:
    """A tokenizer by name; `char` and `bpe:N` learn their vocabulary from the training split.

    A trained BPE is cached (`$ATTNLAB_CACHE/bpe`), keyed by a hash of the training text and the
    vocabulary size, so the next run on the same data loads it instead.
    """
    return make_tokenizer(name, corpus.train.chunks(), cache_dir=cache_dir() / "bpe")


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


def batch_bytes(sequences: int, max_len: int) -> int:
    """About the memory `Batches.next` takes to draw `sequences` windows at once (a step's, all its
    micro-batches): int64 offsets into the tokens, then each window of max_len + 1 ids and its int64 copy."""
    return sequences * (max_len + 1) * 8 * 3


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


def prepare_data(source: str, tokenizer: str | Tokenizer | None = None) -> Prepared:
    """Load a `--data` source and tokenize both splits (a checkpoint's tokenizer can be passed in).

    `tokenizer` None: bytes for text, and token files' own. Token files (FILE.bin) carry the tokenizer that
    made them, so a name of another is refused rather than dropped; a Tokenizer passed in is left to the
    caller to compare (resuming and `eval` say which run it belongs to)."""
    if source.endswith(".bin"):  # token files written by `attnlab prepare`: nothing to tokenize
        tok, train, valid = read_token_files(source)
        if isinstance(tokenizer, str):
            _check_same_tokenizer(tokenizer, tok, source)
        return Prepared(Corpus(source, TextSplit(path=Path(source)), TextSplit(path=Path(source))), tok, train, valid)
    corpus = load_corpus(source)
    tokenizer = "bytes" if tokenizer is None else tokenizer
    tok = build_tokenizer(tokenizer, corpus) if isinstance(tokenizer, str) else tokenizer
    train = encode_split(corpus.train, tok, f"{source} train")
    valid = encode_split(corpus.valid, tok, f"{source} valid")
    if len(valid.tokens) < 2:
        raise AttnlabError(f"{source}: the validation split is empty; give more text")
    return Prepared(corpus, tok, train, valid)


def evaluation_split(source: str, split: str, tokenizer: Tokenizer) -> TokenStream:
    """The tokens a model with `tokenizer` is evaluated on: `split` "valid" is the validation split of
    `source`, "all" its whole text. Token files (FILE.bin) give their validation split, and must have been
    made by this tokenizer."""
    if split not in ("valid", "all"):
        raise AttnlabError(f"split {split!r}: evaluate on valid (the validation split) or all (the whole text)")
    if source.endswith(".bin"):
        if split == "all":
            raise AttnlabError(
                f"--data {source}: token files are evaluated on their validation split; drop --split all"
            )
        prepared = prepare_data(source)
        if prepared.tokenizer.to_dict() != tokenizer.to_dict():
            raise AttnlabError(
                f"--data {source}: made by the {prepared.tokenizer.name} tokenizer, not the model's "
                f"({tokenizer.name}); prepare the text with --tokenizer {tokenizer.name}"
            )
        return prepared.valid
    if split == "all":
        return encode_split(load_whole_text(source), tokenizer, source)
    return encode_split(load_corpus(source).valid, tokenizer, f"{source} valid")


def _check_same_tokenizer(name: str, tok: Tokenizer, source: str) -> None:
    """`--tokenizer NAME` with token files made by `tok`: the same one (any `char` table counts, as it is
    learned from the text; `bpe:N` must be the file's N), or one line saying the tokens were made by another."""
    if name.startswith("bpe"):
        same = tok.name == f"bpe:{parse_bpe_spec(name)}"  # a badly written size is refused as always
    elif name == "char":
        same = tok.name == "char"
    else:
        same = make_tokenizer(name).to_dict() == tok.to_dict()  # bytes, codepoint[:N]; an unknown name is refused
    if not same:
        raise AttnlabError(
            f"--tokenizer {name}: {source} holds tokens made by the {tok.name} tokenizer (attnlab prepare); "
            f"drop --tokenizer to train on them, or prepare the text again with --tokenizer {name}"
        )
