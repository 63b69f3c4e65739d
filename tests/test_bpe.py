"""Byte-level BPE: hand-worked merges, a naive reference trainer, round trips, and GPT-2 parity."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from attnlab.data.corpus import build_tokenizer, load_corpus, prepare_data
from attnlab.errors import AttnlabError
from attnlab.tokenizers import make_tokenizer, tokenizer_from_dict
from attnlab.tokenizers.bpe import (
    ENDOFTEXT,
    BPETokenizer,
    bytes_to_unicode,
    count_words,
    gpt2_str_to_token,
    learn_merges,
    merge_pair,
    token_to_gpt2_str,
)

from .conftest import tinystories_dir

CODE = 'def f(x):\n    return x**2  # square\n\n\tif a != b:\n        print("hi", 3.14)\n'
EMOJI = "🙂🎉 👍🏽 naïve café 日本語 \x00 “quotes” – dash…"
WHITESPACE = "   a  b   \n\n\n  c\t\t d  \n"
ROUND_TRIP_TEXTS = {
    "english": "Once upon a time, there was a little cat named Tom. It's big; they'll see!",
    "code": CODE,
    "emoji": EMOJI,
    "whitespace": WHITESPACE,
    "empty": "",
    "endoftext": f"The end.\n{ENDOFTEXT}\nOnce more{ENDOFTEXT}{ENDOFTEXT}x <|endoftext",
}


@pytest.fixture(scope="module")
def story_text(stories: list[str]) -> str:
    return "".join(f"{s}\n{ENDOFTEXT}\n" for s in stories)


@pytest.fixture(scope="module")
def bpe(story_text: str) -> BPETokenizer:
    """600 tokens learned from the built-in stories plus a little code and emoji (so such merges exist)."""
    return BPETokenizer.train(story_text + (CODE + EMOJI + WHITESPACE) * 20, 600)


def naive_train(text: str, n_merges: int) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """Reference trainer: recount every pair of every word before each merge (slow and obvious)."""
    words = count_words(text)
    vocab = [bytes([b]) for b in range(256)]
    tokens = {w: list(w.encode("utf-8")) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs: Counter[tuple[int, int]] = Counter()
        for w, n in words.items():
            for pair in zip(tokens[w], tokens[w][1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((vocab[best[0]], vocab[best[1]]))
        vocab.append(vocab[best[0]] + vocab[best[1]])
        tokens = {w: merge_pair(t, best, len(vocab) - 1) for w, t in tokens.items()}
    return vocab, merges


# ---- the byte table and the training algorithm --------------------------------------------


def test_byte_to_unicode_table_is_gpt2s() -> None:
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A" and table[0] == "Ā"
    assert token_to_gpt2_str(b" the\n") == "ĠtheĊ"
    assert gpt2_str_to_token("ĠtheĊ") == b" the\n"


def test_merge_pair_goes_left_to_right() -> None:
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]


def test_training_learns_the_merges_worked_out_by_hand() -> None:
    # Words (GPT-2 keeps the space in front): "low" x1, " low" x4, " lower" x2, " widest" x3, " newest" x6.
    # Pair counts: e-s 9, s-t 9, w-e 8, l-o 7, o-w 7, ...; ties go to the greater pair of byte strings:
    # 1. (s,t) 9 beats (e,s) 9         2. (e,st) 9                      3. (o,w) 7 beats (l,o) 7
    # 4. (l,ow) 7                      5. (w,est) 6 among six pairs at 6, "w" is the greatest first token
    # 6. (n,e) 6   7. (ne,west) 6      8. (" ",newest) 6 beats (" ",low) 6 as b"newest" > b"low"   9. (" ",low) 6
    text = "low low low low low lower lower widest widest widest newest newest newest newest newest newest"
    tok = BPETokenizer.train(text, 256 + 9 + 1)
    assert tok.merges == [
        (b"s", b"t"),
        (b"e", b"st"),
        (b"o", b"w"),
        (b"l", b"ow"),
        (b"w", b"est"),
        (b"n", b"e"),
        (b"ne", b"west"),
        (b" ", b"newest"),
        (b" ", b"low"),
    ]
    assert tok.n_vocab == 266 and tok.vocab[256:] == [a + b for a, b in tok.merges] + [ENDOFTEXT.encode()]
    assert tok.encode(" newest lowest") == [263, 264, 257]  # " newest", " low", "est"


def test_incremental_training_matches_a_full_recount_per_merge(story_text: str) -> None:
    text = story_text[:30_000] + CODE + EMOJI
    assert learn_merges(count_words(text), 150) == naive_train(text, 150)
    for seed in range(20):  # tiny alphabets: many ties, runs like "aaaa" and words that merge away entirely
        rng = random.Random(seed)
        alphabet = rng.choice(["ab", "aab ", "ab c\n"])
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        assert learn_merges(count_words(text), 40) == naive_train(text, 40), seed


def test_every_merge_adds_one_token_and_the_vocab_size_is_exact(story_text: str) -> None:
    toks = {v: BPETokenizer.train(story_text, v) for v in (257, 258, 300, 301)}
    for v, tok in toks.items():
        assert tok.n_vocab == v and len(tok.merges) == v - 257
        assert tok.special_tokens == {ENDOFTEXT: v - 1}
        assert len(set(tok.vocab)) == v  # no two ids share bytes
    assert toks[301].merges[:43] == toks[300].merges and toks[258].merges == toks[301].merges[:1]


def test_training_stops_with_a_warning_when_pairs_run_out() -> None:
    with pytest.warns(UserWarning, match="ran out of pairs to merge after 2 merges"):
        tok = BPETokenizer.train("ab ab ab", 1000)
    assert tok.merges == [(b"a", b"b"), (b" ", b"ab")] and tok.n_vocab == 259
    assert tok.encode("ab ab") == [256, 257]


def test_vocab_too_small_is_a_clear_error() -> None:
    with pytest.raises(AttnlabError, match="at least 257"):
        BPETokenizer.train("abc", 256)


# ---- encoding and decoding ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(ROUND_TRIP_TEXTS))
def test_round_trip_is_exact(bpe: BPETokenizer, name: str) -> None:
    text = ROUND_TRIP_TEXTS[name]
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.n_vocab for i in ids)
    assert bpe.unencodable(text) == Counter()


def test_special_tokens_are_one_id_each_and_never_merged(bpe: BPETokenizer) -> None:
    eot = bpe.special_tokens[ENDOFTEXT]
    ids = bpe.encode(ROUND_TRIP_TEXTS["endoftext"])
    assert ids.count(eot) == 3  # the unfinished "<|endoftext" at the end is plain text
    assert bpe.encode(ENDOFTEXT) == [eot] and bpe.encode(ENDOFTEXT * 2) == [eot, eot]
    # The training text has a separator after every story, yet no learned token holds any part of one.
    assert not [t for t in bpe.vocab[256:eot] if b"<" in t or b"|" in t]
    assert eot == bpe.n_vocab - 1 and bpe.token_str(eot) == ENDOFTEXT


def test_compresses_story_text_and_encode_array_matches_encode(bpe: BPETokenizer, story_text: str) -> None:
    arr = bpe.encode_array(story_text)
    assert arr.dtype == np.uint16 and arr.tolist() == bpe.encode(story_text)
    assert len(story_text) / len(arr) > 2.45  # measured 2.58 on the built-in stories with 600 tokens (bytes: 1.0)


def test_token_str_labels_partial_characters_as_bytes(bpe: BPETokenizer) -> None:
    assert bpe.token_str(bpe.encode(" the")[0]) == " the"
    assert bpe.token_str(ord("\n")) == "\\n"
    assert bpe.token_str(0xF0) == "<0xF0>"


def test_stream_decoder_holds_back_incomplete_characters(bpe: BPETokenizer) -> None:
    text = "Hi 🙂🎉 café"
    ids = bpe.encode(text)
    partial = [i for i in ids if bpe.token_str(i).startswith("<0x")]
    assert partial  # some tokens end inside a character, so holding back is needed
    dec = bpe.stream_decoder()
    pieces = [dec.feed([i]) for i in ids]
    assert "".join(pieces) + dec.flush() == text
    assert "\ufffd" not in "".join(pieces)


# ---- saving, loading, and the package's registration ---------------------------------------


def test_save_load_and_dict_round_trips_give_identical_encodings(bpe: BPETokenizer, tmp_path: Path) -> None:
    text = "".join(ROUND_TRIP_TEXTS.values())
    path = bpe.save(tmp_path / "bpe.json")
    assert json.loads(path.read_text())["kind"] == "bpe"
    for again in (BPETokenizer.load(path), BPETokenizer.from_dict(bpe.to_dict()), tokenizer_from_dict(bpe.to_dict())):
        assert isinstance(again, BPETokenizer)
        assert again.vocab == bpe.vocab and again.merges == bpe.merges and again.special_tokens == bpe.special_tokens
        assert again.encode(text) == bpe.encode(text)


def test_make_tokenizer_trains_bpe_on_the_corpus_text(story_text: str) -> None:
    tok = make_tokenizer("bpe:300", story_text)
    assert isinstance(tok, BPETokenizer) and tok.n_vocab == 300 and tok.name == "bpe:300"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bpe:abc", r"'bpe:abc': the vocabulary size must be a whole number, e\.g\. bpe:4096"),
        ("bpe:100", r"'bpe:100': a vocabulary of 100 is too small; .* at least 257 .* use e\.g\. bpe:4096"),
        ("bpe", r"unknown tokenizer 'bpe': BPE needs a vocabulary size, e\.g\. bpe:4096"),
        ("bpe:300", "needs a corpus"),
    ],
)
def test_bad_bpe_specs_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(AttnlabError, match=message):
        make_tokenizer(spec)


def test_build_tokenizer_trains_once_then_loads_from_the_cache(
    corpus_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = load_corpus(str(corpus_file))
    first = build_tokenizer("bpe:400", corpus)
    assert "learning a 400-token vocabulary" in capsys.readouterr().err
    second = build_tokenizer("bpe:400", corpus)
    assert "using the tokenizer trained before" in capsys.readouterr().err
    assert second.to_dict() == first.to_dict() and first.n_vocab == 400
    build_tokenizer("bpe:401", corpus)  # another size is another cache entry
    assert "learning a 401-token vocabulary" in capsys.readouterr().err
    with pytest.raises(AttnlabError, match="too small"):
        build_tokenizer("bpe:100", corpus)


def test_prepare_data_with_bpe_tokenizes_both_splits(corpus_file: Path) -> None:
    prepared = prepare_data(str(corpus_file), "bpe:500")
    assert prepared.tokenizer.n_vocab == 500 and prepared.info()["tokenizer"] == "bpe:500"
    assert prepared.train.chars_per_token > 2.2  # measured 2.29
    assert int(prepared.valid.tokens.max()) < 500
    assert prepared.tokenizer.decode(prepared.valid.tokens) == prepared.corpus.valid.text


# ---- parity with GPT-2's own format and Hugging Face's implementation ----------------------


def _hf_tokenizer(folder: Path):  # noqa: ANN202 - a GPT2TokenizerFast
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[test])")
    # A folder holding vocab.json + merges.txt works in transformers 4 and 5. (Not vocab_file=/merges_file=:
    # in transformers 5 those build an empty tokenizer without a word; the tests check len() for that.)
    return transformers.GPT2TokenizerFast.from_pretrained(str(folder))


PARITY_TEXTS = [
    "Once upon a time, there was a little cat. It's Tom's; we'll see, they've said, I'd go.",
    CODE,
    EMOJI,
    WHITESPACE,
    "    \n\n \t  x\r\n  ",
    "",
    f"Hello{ENDOFTEXT}World {ENDOFTEXT} again\n{ENDOFTEXT}",
    "numbers 12345 and 3.14159, punctuation!!! ?? ...",
]


def test_encodings_equal_huggingface_gpt2_tokenizer_on_the_same_files(bpe: BPETokenizer, tmp_path: Path) -> None:
    bpe.save_gpt2_files(tmp_path)
    hf = _hf_tokenizer(tmp_path)
    assert len(hf) == bpe.n_vocab  # guards against the silently empty tokenizer
    for text in PARITY_TEXTS:
        assert bpe.encode(text) == hf.encode(text), text
        assert hf.decode(bpe.encode(text)) == text


def test_gpt2_files_with_gpt2_style_ids_load_and_match_huggingface(bpe: BPETokenizer, tmp_path: Path) -> None:
    # GPT-2's own files number tokens differently from our training (there "!" is 0): shuffle the ids.
    bpe.save_gpt2_files(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    new_id = list(range(bpe.n_vocab))
    random.Random(0).shuffle(new_id)
    (tmp_path / "vocab.json").write_text(json.dumps({s: new_id[i] for s, i in vocab.items()}))
    loaded = BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert loaded.special_tokens == {ENDOFTEXT: new_id[bpe.special_tokens[ENDOFTEXT]]}
    hf = _hf_tokenizer(tmp_path)
    for text in PARITY_TEXTS:
        ids = loaded.encode(text)
        assert ids == [new_id[i] for i in bpe.encode(text)]
        assert ids == hf.encode(text), text
        assert loaded.decode(ids) == text


def test_gpt2_files_round_trip_to_the_same_tokenizer(bpe: BPETokenizer, tmp_path: Path) -> None:
    bpe.save_gpt2_files(tmp_path)
    again = BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert (again.vocab, again.merges, again.special_tokens) == (bpe.vocab, bpe.merges, bpe.special_tokens)
    assert (tmp_path / "merges.txt").read_text().splitlines()[1] == "Ġ t"  # the first merge, GPT-2 style


# ---- real TinyStories text ---------------------------------------------------------------


def test_tinystories_512_round_trips_and_compresses_held_out_text() -> None:
    text = (tinystories_dir() / "valid.txt").read_text(encoding="utf-8")
    tok = BPETokenizer.train(text[:200_000], 512)
    held_out = text[200_000:400_000]
    ids = tok.encode(held_out)
    assert tok.decode(ids) == held_out
    assert len(held_out) / len(ids) > 2.35  # measured 2.43 (bytes: 1.0)
