from collections import Counter

import numpy as np
import pytest

from attnlab.errors import AttnlabError
from attnlab.tokenizers import ByteTokenizer, CharTokenizer, CodepointTokenizer, make_tokenizer, tokenizer_from_dict

TEXTS = ["", "Once upon a time.", "“Curly quotes” – and an emoji 🙂\n", "naïve café ☕ 日本語 \x00\t"]


@pytest.mark.parametrize("text", TEXTS)
def test_bytes_round_trip_is_exact_for_any_text(text: str) -> None:
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.n_vocab == 256 and all(0 <= i < 256 for i in ids)


def test_codepoint_is_ord_and_drops_and_counts_wide_characters() -> None:
    tok = CodepointTokenizer()
    text = "“Hi,” she said’"
    assert tok.encode("Hi!") == [ord("H"), ord("i"), ord("!")]
    assert tok.decode(tok.encode(text)) == "Hi, she said"
    assert tok.unencodable(text) == Counter({"“": 1, "”": 1, "’": 1})


def test_codepoint_n_vocab_sets_the_cutoff() -> None:
    assert CodepointTokenizer(128).encode("aé") == [97]
    assert CodepointTokenizer(256).encode("aé") == [97, 233]


def test_char_vocabulary_is_sorted_corpus_characters_and_reports_unknowns() -> None:
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw" and tok.n_vocab == 8
    assert tok.encode("hold") == [3, 5, 4, 1]
    assert tok.decode(tok.encode("hello")) == "hello"
    assert tok.encode("hex!") == [3, 2]
    assert tok.unencodable("hex!") == Counter({"x": 1, "!": 1})


@pytest.mark.parametrize("tok", [ByteTokenizer(), CodepointTokenizer(300), CharTokenizer.from_text("abc\n")])
def test_tokenizer_survives_a_json_round_trip(tok) -> None:
    again = tokenizer_from_dict(tok.to_dict())
    assert type(again) is type(tok) and again.n_vocab == tok.n_vocab
    assert again.encode("abc\ncab") == tok.encode("abc\ncab")


def test_encode_array_matches_encode() -> None:
    for tok in (ByteTokenizer(), CodepointTokenizer(), CharTokenizer.from_text(TEXTS[2])):
        arr = tok.encode_array(TEXTS[2])
        assert isinstance(arr, np.ndarray) and arr.tolist() == tok.encode(TEXTS[2])


def test_byte_stream_decoder_joins_split_multibyte_characters() -> None:
    tok = ByteTokenizer()
    dec = tok.stream_decoder()
    pieces = [dec.feed([b]) for b in "é🙂".encode()]
    assert "".join(pieces) + dec.flush() == "é🙂"
    assert pieces[0] == ""  # half a character is held back, not printed as U+FFFD


def test_unknown_tokenizer_name_is_a_clear_error() -> None:
    with pytest.raises(AttnlabError, match="unknown tokenizer 'bpe'"):
        make_tokenizer("bpe")
