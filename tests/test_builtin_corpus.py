"""The built-in corpus: deterministic, big enough, clean ASCII, and with names that recur."""

import random
import re

import pytest

from attnlab.data.builtin_corpus import MAX_STORY_CHARS, MIN_STORY_CHARS, NAMES, _story, builtin_stories


@pytest.fixture(scope="module")
def default_stories() -> list[str]:
    return builtin_stories()


def _count(word: str, text: str) -> int:
    return len(re.findall(rf"\b{re.escape(word)}\b", text))


def test_same_seed_same_stories_and_other_seed_differs():
    a = builtin_stories(seed=3, n_chars=20_000)
    b = builtin_stories(seed=3, n_chars=20_000)
    c = builtin_stories(seed=4, n_chars=20_000)
    assert a == b
    assert a != c
    assert a[0] != c[0]


def test_default_call_is_deterministic(default_stories):
    assert builtin_stories(seed=0) == default_stories


def test_total_size_and_story_lengths(default_stories):
    total = sum(len(s) for s in default_stories)
    assert total >= 1_300_000
    assert total < 1_300_000 + MAX_STORY_CHARS  # stops right after reaching n_chars
    assert len(default_stories) > 800
    assert (MIN_STORY_CHARS, MAX_STORY_CHARS) == (300, 1500)
    assert all(300 <= len(s) <= 1500 for s in default_stories)


def test_small_requests():
    assert builtin_stories(n_chars=0) == []
    one = builtin_stories(n_chars=1)
    assert len(one) == 1
    few = builtin_stories(n_chars=5_000)
    assert sum(len(s) for s in few) >= 5_000
    assert few[: len(one)] == one  # a longer request extends a shorter one


def test_text_is_clean(default_stories):
    text = "".join(default_stories)
    assert text.isascii()
    assert "<|endoftext|>" not in text
    assert "\u201c" not in text and "\u2019" not in text
    assert set(text) <= set("\n !\"',-.?" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert 40 <= len(set(text)) <= 70
    for s in default_stories:
        assert s == s.strip()
        assert "\n\n" not in s
        assert "  " not in s
        assert all(line and line == line.strip() for line in s.split("\n"))
        assert s.count("\n") >= 4  # several paragraphs
        assert s.count('"') % 2 == 0  # quotes are balanced


def test_vocabulary_is_rich(default_stories):
    words = {w.lower() for w in re.findall(r"[A-Za-z'-]+", "".join(default_stories))}
    assert len(words) >= 500
    starts = {s.split(".")[0] for s in default_stories}
    assert len(starts) >= 200  # many different opening sentences


def test_story_helper_reports_its_cast():
    rng = random.Random(7)
    for _ in range(300):
        text, info = _story(rng)
        name, friend = info["name"], info["friend"]
        assert name in NAMES and friend in NAMES and name != friend
        assert _count(name, text) >= 3
        assert _count(friend, text) >= 2
        assert text.count(info["obj"]) >= 2  # "a red kite" ... "her red kite"
        assert text.count(info["place"]) >= 2
        assert info["obj"].endswith(info["noun"])


def test_every_story_repeats_a_name_from_the_list(default_stories):
    for s in default_stories:
        counts = {n: _count(n, s) for n in NAMES}
        main = max(counts, key=counts.get)
        assert counts[main] >= 3
        assert sum(1 for c in counts.values() if c >= 2) >= 2  # main character and friend


def test_names_and_pronouns():
    assert len(NAMES) == len(set(NAMES)) >= 40
    rng = random.Random(11)
    for _ in range(200):
        text, info = _story(rng)
        assert info["he"] in ("he", "she")
        assert info["his"] == ("her" if info["he"] == "she" else "his")
