"""`attnlab prepare`: token files equal to tokenizing the whole text, split at a story boundary,
resumable after an interruption, and trainable with --data FILE.bin."""

import json
from pathlib import Path

import numpy as np
import pytest

import attnlab.data.token_files as prep
import attnlab.data.tokens as tokens
from attnlab.data.corpus import prepare_data
from attnlab.errors import AttnlabError
from attnlab.tokenizers import ENDOFTEXT

from .conftest import TINY, run_cli


def _all_tokens(prepared) -> np.ndarray:
    return np.concatenate([np.asarray(prepared.train.tokens), np.asarray(prepared.valid.tokens)])


def test_prepared_tokens_are_the_whole_text_split_at_a_story_boundary(corpus_file: Path, tmp_path: Path) -> None:
    meta = prep.prepare_token_files(str(corpus_file), tmp_path / "c.bin")
    prepared = prepare_data(str(tmp_path / "c.bin"))
    text = corpus_file.read_text()
    assert bytes(_all_tokens(prepared).astype(np.uint8)) == text.encode()
    train_text = bytes(np.asarray(prepared.train.tokens).astype(np.uint8)).decode()
    assert train_text.endswith(f"\n{ENDOFTEXT}\n") and 0.89 < len(train_text) / len(text) < 0.93
    assert isinstance(prepared.train.tokens, np.memmap) and meta["train"]["chars"] == len(train_text)
    assert json.loads((tmp_path / "c.json").read_text())["tokenizer"] == {"kind": "bytes"}


def test_an_interrupted_prepare_continues_where_it_stopped(
    corpus_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(tokens, "CHUNK_BYTES", 20_000)
    real_chunks = tokens.read_chunks

    def dying(*args):
        for n, chunk in enumerate(real_chunks(*args)):
            if n == 3:
                raise KeyboardInterrupt  # Ctrl-C after three chunks were written
            yield chunk

    monkeypatch.setattr(tokens, "read_chunks", dying)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare_token_files(str(corpus_file), tmp_path / "c.bin")
    assert (tmp_path / "c.bin.progress.json").exists() and not (tmp_path / "c.bin").exists()
    monkeypatch.setattr(tokens, "read_chunks", real_chunks)
    prep.prepare_token_files(str(corpus_file), tmp_path / "c.bin")
    import re

    at = re.search(r"continuing train at byte ([\d,]+) \(([\d,]+) tokens", capsys.readouterr().err)
    assert at and 55_000 < int(at[1].replace(",", "")) <= 60_000  # three chunks of <= 20,000 bytes, cut at newlines
    assert at[1] == at[2]  # bytes tokenizer: one token per byte
    assert bytes(_all_tokens(prepare_data(str(tmp_path / "c.bin"))).astype(np.uint8)) == corpus_file.read_bytes()


def test_prepare_with_a_learned_tokenizer_round_trips(corpus_file: Path, tmp_path: Path) -> None:
    prep.prepare_token_files(str(corpus_file), tmp_path / "c.bin", "bpe:400")
    prepared = prepare_data(str(tmp_path / "c.bin"))
    assert prepared.tokenizer.n_vocab == 400 and prepared.train.tokens.dtype == np.uint16
    assert prepared.tokenizer.decode(_all_tokens(prepared)) == corpus_file.read_text()


def test_prepare_a_folder_with_train_and_valid(tmp_path: Path, stories: list[str]) -> None:
    from attnlab.data.corpus import join_stories

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.txt").write_text(join_stories(stories[:40]))
    (tmp_path / "d" / "valid.txt").write_text(join_stories(stories[40:45]))
    prep.prepare_token_files(str(tmp_path / "d"), tmp_path / "t.bin", "char")
    prepared = prepare_data(str(tmp_path / "t.bin"))
    assert prepared.tokenizer.decode(np.asarray(prepared.valid.tokens)) == join_stories(stories[40:45])


def test_train_on_prepared_token_files(corpus_file: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["prepare", str(corpus_file), "--out", str(tmp_path / "c.bin")], capsys)
    assert code == 0, err
    code, _, err = run_cli(
        ["train", *TINY, "--data", str(tmp_path / "c.bin"), "--steps", "20", "--out", str(tmp_path / "run")], capsys
    )
    assert code == 0, err
    final = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["final"] and final["val_bpc"] < 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["{corpus}", "--out", "{tmp}/x.txt"], "ending in .bin"),
        (["{tmp}/missing.txt", "--out", "{tmp}/x.bin"], "no such file"),
        (["{tmp}/empty.txt", "--out", "{tmp}/x.bin"], "the file is empty"),
    ],
)
def test_prepare_bad_input(args, message, corpus_file: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.txt").write_text("")
    args = [a.replace("{corpus}", str(corpus_file)).replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run_cli(["prepare", *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bin_without_metadata_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(AttnlabError, match="attnlab prepare"):
        prepare_data(str(tmp_path / "x.bin"))


@pytest.mark.parametrize("lines", [1, 2, 10])
def test_a_text_too_short_to_split_says_how_long_it_must_be_and_leaves_nothing(tmp_path: Path, capsys, lines) -> None:
    """Validation is what starts in the last 10%: 10 equal lines leave none there (the 10th ends the file)."""
    (tmp_path / "t.txt").write_text("".join(f"line number {i:03d} here.\n" for i in range(lines)))
    code, out, err = run_cli(["prepare", str(tmp_path / "t.txt"), "--out", str(tmp_path / "out" / "t.bin")], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "too short" in err and "at least 10 times as long as its last story or line" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]  # not even the --out folder


def test_eleven_equal_lines_are_long_enough_to_split(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("".join(f"line number {i:03d} here.\n" for i in range(11)))
    meta = prep.prepare_token_files(str(tmp_path / "t.txt"), tmp_path / "t.bin")
    assert (meta["train"]["tokens"], meta["valid"]["tokens"]) == (220, 22)


@pytest.mark.parametrize("name", ["bytes", "char", "bpe:300"])
def test_a_tokenizer_named_as_the_token_files_own_is_accepted(corpus_file: Path, tmp_path: Path, name) -> None:
    prep.prepare_token_files(str(corpus_file), tmp_path / "c.bin", name)
    named, own = prepare_data(str(tmp_path / "c.bin"), name), prepare_data(str(tmp_path / "c.bin"))
    assert named.tokenizer.to_dict() == own.tokenizer.to_dict() and own.tokenizer.name == name


@pytest.mark.parametrize("other", ["bytes", "codepoint", "codepoint:300", "bpe:4096"])
def test_another_tokenizer_than_the_token_files_own_is_refused(corpus_file: Path, tmp_path: Path, other) -> None:
    prep.prepare_token_files(str(corpus_file), tmp_path / "c.bin", "bpe:300")
    words = f"--tokenizer {other}: .* made by the bpe:300 tokenizer \\(attnlab prepare\\); drop --tokenizer"
    with pytest.raises(AttnlabError, match=words):
        prepare_data(str(tmp_path / "c.bin"), other)
