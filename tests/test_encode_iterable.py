"""Encoding a text given in pieces (a file read lazily) gives exactly the ids of the whole text,
for every tokenizer, BPE included, wherever the pieces are cut; and token files written chunk by
chunk equal one pass over the whole file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attnlab.data.tokens as tokens
from attnlab.tokenizers import ENDOFTEXT, BPETokenizer, ByteTokenizer, CharTokenizer, CodepointTokenizer, Tokenizer

# Pieces chosen to hit every rule of GPT-2's pre-tokeniser at a cut: contractions, runs of spaces and
# newlines before words, digits, punctuation runs, multi-byte characters, and special-token fragments.
ATOMS = [
    "a", "b", "cat", "Tom", "l", "ll", "ve", " ", "  ", "   ", "\n", "\n\n", "\t", "'s", "'ll", "'", "42", "7",
    ".", "!?", ",",
    "é", "日本", "🙂", "“", "<", "<|", "|>", "endof", "text", ENDOFTEXT, "<|endoftext",
]  # fmt: skip
texts = st.lists(st.sampled_from(ATOMS), max_size=40).map("".join)


def _tokenizers() -> dict[str, Tokenizer]:
    corpus = ("Tom's cat sat.  It's 42!\n\n" + f"{ENDOFTEXT}\n") * 30 + "日本 🙂 “é”\t\t" * 10
    return {
        "bytes": ByteTokenizer(),
        "codepoint": CodepointTokenizer(),
        "char": CharTokenizer.from_text(corpus),
        "bpe": BPETokenizer.train(corpus, 280),
    }


TOKENIZERS = _tokenizers()


def _cut(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


@pytest.mark.parametrize("name", TOKENIZERS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_encode_iterable_equals_encode_of_the_whole_text(name: str, text: str, cuts: list[int]) -> None:
    tok = TOKENIZERS[name]
    assert list(tok.encode_iterable(_cut(text, cuts))) == tok.encode(text)


def test_bpe_never_splits_a_word_or_a_special_token_across_pieces() -> None:
    tok = TOKENIZERS["bpe"]
    text = f"Tom's cat{ENDOFTEXT}  sat"
    for cut in range(1, len(text)):
        assert list(tok.encode_iterable([text[:cut], text[cut:]])) == tok.encode(text), cut


def test_bpe_holds_back_at_most_the_last_word() -> None:
    encoder = TOKENIZERS["bpe"].incremental_encoder()
    for _ in range(1000):
        encoder.feed("Tom's cat sat on the mat. ")
        assert len(encoder.pending) <= len(" mat. ")  # memory does not grow with the text


@pytest.mark.parametrize("name", TOKENIZERS)
def test_token_file_written_in_small_chunks_equals_one_pass(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tokens, "CHUNK_BYTES", 37)  # chunks end after a newline, or anywhere in a long line
    tok = TOKENIZERS[name]
    text = ("Tom's cat sat.  It's 42!\n\n日本 🙂 “é”" + f"\n{ENDOFTEXT}\n") * 20 + "the end"
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    part = tokens.write_token_file(path, (0, path.stat().st_size), tok, tmp_path / "t.bin", "test")
    ids = np.fromfile(tmp_path / "t.bin", dtype=np.uint16)
    assert ids.tolist() == tok.encode(text) and part["tokens"] == len(ids)
    assert part["chars"] == len(text) - sum(tok.unencodable(text).values())


def test_processes_filling_the_token_cache_at_once_each_swap_in_a_whole_file(tmp_path: Path) -> None:
    """torchrun's ranks all tokenize a large file on first use: the cache must come out whole."""
    import os
    import subprocess
    import sys

    text = ("Tom's cat sat on the mat.\n" + f"{ENDOFTEXT}\n") * 4000
    path = tmp_path / "big.txt"
    path.write_text(text)
    script = (
        "import sys, attnlab.data.tokens as t; from attnlab.tokenizers import ByteTokenizer; from pathlib import Path\n"
        "t.CHUNK_BYTES = 997\n"
        "s = t.cached_tokens(Path(sys.argv[1]), ByteTokenizer(), 'test')\n"
        "print(len(s.tokens), s.n_chars)\n"
    )
    env = {**os.environ, "ATTNLAB_CACHE": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs == [[str(len(text)), str(len(text))]] * 3
    (meta,) = (tmp_path / "cache" / "tokens").glob("*.json")
    assert np.fromfile(meta.with_suffix(".bin"), dtype=np.uint16).tolist() == list(text.encode())
    assert sorted(p.suffix for p in (tmp_path / "cache" / "tokens").iterdir()) == [".bin", ".json"]
