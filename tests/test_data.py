from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.data.corpus import (
    HUB_TRAIN,
    HUB_VALID,
    Batches,
    TextSplit,
    encode_split,
    join_stories,
    load_corpus,
    prepare_data,
    split_stories,
)
from attnlab.errors import AttnlabError
from attnlab.tokenizers import ENDOFTEXT, ByteTokenizer, CodepointTokenizer

from .conftest import tinystories_dir


def test_split_is_by_whole_stories_and_never_overlaps(corpus_file: Path, stories: list[str]) -> None:
    corpus = load_corpus(str(corpus_file))
    train, valid = split_stories(corpus.train.text), split_stories(corpus.valid.text)
    assert train + valid == stories  # every story once, none cut, order kept
    assert not set(train) & set(valid)
    assert len(valid) == round(0.1 * len(stories))


def test_builtin_corpus_is_deterministic_and_large_with_a_validation_split() -> None:
    a, b = load_corpus("builtin"), load_corpus("builtin")
    assert a.train.text == b.train.text and a.valid.text == b.valid.text
    assert len(a.train.text) + len(a.valid.text) >= 1_000_000
    assert len(a.valid.text) > 100_000
    assert a.train.text.endswith(f"\n{ENDOFTEXT}\n")


def test_folder_with_train_and_valid_uses_them_as_the_splits(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text(join_stories(["a story", "another story"]))
    (tmp_path / "valid.txt").write_text(join_stories(["held out"]))
    corpus = load_corpus(str(tmp_path))
    assert split_stories(corpus.train.text) == ["a story", "another story"]
    assert split_stories(corpus.valid.text) == ["held out"]


def test_folder_of_txt_files_is_concatenated_then_split(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"{i:02d}.txt").write_text(f"story number {i}")
    corpus = load_corpus(str(tmp_path))
    assert split_stories(corpus.valid.text) == ["story number 9"]
    assert len(split_stories(corpus.train.text)) == 9


def test_plain_text_without_separators_splits_by_lines(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("\n".join(f"line {i}" for i in range(20)))
    corpus = load_corpus(str(path))
    assert corpus.valid.text == "line 18\nline 19"


@pytest.mark.parametrize(
    "content, message",
    [("", "empty"), ("   \n\n", "empty"), ("just one story", "cannot split one story")],
)
def test_bad_corpus_files_give_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(AttnlabError, match=message):
        load_corpus(str(path))


def test_missing_path_names_the_path_and_the_choices() -> None:
    with pytest.raises(AttnlabError, match="no such file or folder: 'nope.txt'.*builtin"):
        load_corpus("nope.txt")


def test_undecodable_bytes_are_replaced_and_counted(tmp_path: Path, capsys) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(join_stories(["caf\xe9 story " * 50, "second story " * 500]).encode("latin-1"))
    corpus = load_corpus(str(path))
    assert "\ufffd" in corpus.train.text
    assert "replaced 50 undecodable bytes" in capsys.readouterr().err


def test_binary_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(bytes(range(128, 256)) * 10)
    with pytest.raises(AttnlabError, match="not UTF-8 text"):
        load_corpus(str(path))


def test_codepoint_tokenizer_reports_dropped_characters_with_counts(tmp_path: Path, capsys) -> None:
    path = tmp_path / "quotes.txt"
    path.write_text(join_stories(["“Hi,” said Ben. " * 20, "“Bye,” said Sue. " * 20]))
    prepared = prepare_data(str(path), "codepoint")
    err = capsys.readouterr().err
    assert "dropped 40 characters" in err and "'“'x20" in err
    assert prepared.train.n_chars == len(prepared.train.tokens)


def test_large_files_are_tokenized_to_a_cached_memmap(tmp_path: Path, corpus_file: Path) -> None:
    direct = encode_split(TextSplit(text=corpus_file.read_text()), ByteTokenizer(), "direct")
    streamed = encode_split(TextSplit(path=corpus_file), ByteTokenizer(), "streamed")
    assert isinstance(streamed.tokens, np.memmap)
    assert np.array_equal(np.asarray(streamed.tokens), direct.tokens)
    assert streamed.n_chars == direct.n_chars
    again = encode_split(TextSplit(path=corpus_file), ByteTokenizer(), "cached")
    assert again.tokens.filename == streamed.tokens.filename  # read from the cache, not re-tokenized


def test_chunked_tokenization_counts_dropped_characters(tmp_path: Path, monkeypatch) -> None:
    import attnlab.data.tokens as tokens

    monkeypatch.setattr(tokens, "CHUNK_BYTES", 7)
    path = tmp_path / "wide.txt"
    path.write_text("ab“cd”ef" * 10)
    stream = encode_split(TextSplit(path=path), CodepointTokenizer(), "wide")
    assert len(stream.tokens) == 60 and stream.n_chars == 60


def test_batches_are_shifted_windows_and_reproducible() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    a = Batches(tokens, max_len=16, batch_size=4, seed=3)
    x_BL, y_BL = a.next()
    assert x_BL.shape == (4, 16) and x_BL.dtype == torch.int64
    assert torch.equal(y_BL, x_BL + 1)  # targets are the next tokens
    b = Batches(tokens, max_len=16, batch_size=4, seed=3)
    assert torch.equal(b.next()[0], x_BL)
    state = a.state_dict()
    expected = a.next()[0]
    b.load_state_dict(state)
    assert torch.equal(b.next()[0], expected)


def _seed_hub_cache(root: Path, files: dict[str, str]) -> None:
    """The layout hf_hub_download reads offline: refs/main (no newline) -> snapshots/<rev>/<file>."""
    repo = root / "hub" / "datasets--roneneldan--TinyStories"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "snapshots" / rev).mkdir(parents=True)
    for name, text in files.items():
        (repo / "snapshots" / rev / name).write_text(text)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face cache under tmp_path (no network is ever used)."""
    import huggingface_hub.constants as hc

    monkeypatch.delenv("ATTNLAB_TINYSTORIES", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    return tmp_path


def test_tinystories_comes_from_the_hub_cache(offline_hub: Path, stories: list[str]) -> None:
    _seed_hub_cache(offline_hub, {HUB_VALID: join_stories(stories[:50])})
    corpus = load_corpus("tinystories")
    assert split_stories(corpus.train.text) + split_stories(corpus.valid.text) == stories[:50]
    assert len(split_stories(corpus.valid.text)) == 5


def test_tinystories_full_memory_maps_the_big_train_file(offline_hub: Path, stories: list[str]) -> None:
    _seed_hub_cache(offline_hub, {HUB_VALID: join_stories(stories[:5]), HUB_TRAIN: join_stories(stories[5:])})
    corpus = load_corpus("tinystories-full", in_memory_limit=1000)
    assert corpus.train.path is not None and corpus.train.path.name == HUB_TRAIN
    assert split_stories(corpus.valid.text) == stories[:5]
    stream = encode_split(corpus.train, ByteTokenizer(), "train")
    assert isinstance(stream.tokens, np.memmap)
    assert bytes(np.asarray(stream.tokens).astype(np.uint8)) == join_stories(stories[5:]).encode()


def test_tinystories_offline_without_cache_says_how_to_pass_a_local_path(offline_hub: Path) -> None:
    with pytest.raises(AttnlabError, match="--data PATH"):
        load_corpus("tinystories")


def test_real_tinystories_folder_loads_by_story() -> None:
    folder = tinystories_dir()
    corpus = load_corpus(str(folder))
    assert len(split_stories(corpus.valid.text)) == 3116
    assert len(split_stories(corpus.train.text)) == 3738
    prepared = prepare_data(str(folder), "bytes")
    assert prepared.valid.n_chars == 2559970


# --- stories told twice (the circuits notebook's data) ---------------------------------------------


def test_told_twice_follows_every_piece_with_itself_and_keeps_the_stories_apart():
    from attnlab.data.corpus import split_stories
    from attnlab.data.repeats import told_twice

    first = "Lily had a red ball. She liked to play with it in the park every day, and Tom came too."
    second = "Ben saw a big dog. The dog was happy."
    text = f"{first}\n{ENDOFTEXT}\n{second}\n{ENDOFTEXT}\n"
    twice = told_twice(text, seed=3, words=(2, 5))
    stories = split_stories(twice)
    assert len(stories) == 2
    for original, story in zip((first, second), stories, strict=True):
        words, rebuilt = story.split(" "), []
        while words:  # each piece of n words is followed by the same n words
            n = next(n for n in range(1, 6) if words[:n] == words[n : 2 * n])  # the last piece may be shorter
            rebuilt += words[:n]
            words = words[2 * n :]
        assert " ".join(rebuilt) == original
    assert told_twice(text, seed=3, words=(2, 5)) == twice != told_twice(text, seed=4, words=(2, 5))
    with pytest.raises(AttnlabError, match="words="):
        told_twice(text, words=(5, 2))


def test_write_told_twice_writes_both_splits_for_prepare_data(tmp_path):
    from attnlab.data.corpus import load_corpus, prepare_data
    from attnlab.data.repeats import told_twice, write_told_twice

    folder = write_told_twice("builtin", tmp_path / "twice")
    corpus = load_corpus("builtin")
    assert (folder / "train.txt").read_text(encoding="utf-8") == told_twice(corpus.train.text, 0)
    assert (folder / "valid.txt").read_text(encoding="utf-8") == told_twice(corpus.valid.text, 1)
    data = prepare_data(str(folder), tokenizer="codepoint")
    assert len(data.train.tokens) > 1.9 * len(prepare_data("builtin", tokenizer="codepoint").train.tokens)
    assert sorted(p.name for p in folder.iterdir()) == ["train.txt", "valid.txt"]  # no temporary file left
