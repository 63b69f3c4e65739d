"""Files the package reads are checked before use: a crafted token-file JSON is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_cli, run_subprocess


@pytest.fixture
def token_files(tmp_path: Path, corpus_file: Path, capsys) -> Path:
    out = tmp_path / "tok" / "data.bin"
    assert run_cli(["prepare", str(corpus_file), "--out", str(out)], capsys)[0] == 0
    return out


def _meta(out: Path) -> dict:
    return json.loads(out.with_suffix(".json").read_text())


def _refused(out: Path, capsys, words: str) -> None:
    before = {p: p.read_bytes() for p in out.parent.iterdir()}
    code, stdout, err = run_cli(["train", "--data", str(out), "--steps", "1", "--out", str(out.parent / "run")], capsys)
    assert code == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in out.parent.iterdir()} == before  # nothing written, nothing changed


CRAFTED = [
    ("object dtype", lambda m: m | {"dtype": "O"}, "dtype 'O'"),
    ("float dtype", lambda m: m | {"dtype": "float64"}, "dtype 'float64'"),
    (
        "dtype too small",
        lambda m: m | {"dtype": "uint16", "tokenizer": {"kind": "codepoint", "n_vocab": 70000}},
        "cannot hold",
    ),
    (
        "path outside",
        lambda m: m | {"train": {**m["train"], "file": "../secret.txt"}},
        "must be the name of a file beside",
    ),
    (
        "absolute path",
        lambda m: m | {"train": {**m["train"], "file": "/etc/passwd"}},
        "must be the name of a file beside",
    ),
    ("negative count", lambda m: m | {"train": {**m["train"], "tokens": -5}}, "not a count"),
    ("count too large", lambda m: m | {"valid": {**m["valid"], "tokens": m["valid"]["tokens"] + 1}}, "bytes, not"),
    ("string count", lambda m: m | {"train": {**m["train"], "chars": "many"}}, "not a count"),
    ("unknown key", lambda m: m | {"exec": "rm -rf /"}, "unknown key(s) exec"),
    ("unknown part key", lambda m: m | {"train": {**m["train"], "offset": 3}}, "unknown key(s) offset"),
    ("missing key", lambda m: {k: v for k, v in m.items() if k != "valid"}, "missing key(s) valid"),
    ("unknown tokenizer", lambda m: m | {"tokenizer": {"kind": "pickle"}}, "unknown tokenizer kind"),
    ("broken tokenizer", lambda m: m | {"tokenizer": {"kind": "char"}}, "missing key(s) chars"),
    ("other format", lambda m: m | {"format": 99}, "format 99"),
    ("a list", lambda m: [m], "not an object"),
]


@pytest.mark.parametrize(("name", "change", "words"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_token_file_json_is_refused_before_anything_is_read(token_files, capsys, name, change, words):
    token_files.with_suffix(".json").write_text(json.dumps(change(_meta(token_files))))
    _refused(token_files, capsys, words)


def test_ids_outside_the_vocabulary_are_refused(token_files, capsys):
    meta = _meta(token_files)
    meta["tokenizer"] = {"kind": "codepoint", "n_vocab": 20}  # the bytes of the text hold larger ids
    token_files.with_suffix(".json").write_text(json.dumps(meta))
    _refused(token_files, capsys, "outside the tokenizer's 20 ids")


def test_a_json_that_is_not_json_is_refused(token_files, capsys):
    token_files.with_suffix(".json").write_bytes(b"\xff\xfe{ nope")
    _refused(token_files, capsys, "not valid JSON")


def test_an_object_dtype_never_reaches_numpy(token_files):
    meta = _meta(token_files)
    token_files.with_suffix(".json").write_text(json.dumps(meta | {"dtype": "O"}))
    proc = run_subprocess(["train", "--data", str(token_files), "--steps", "1", "--out", str(token_files.parent / "r")])
    assert proc.returncode == 2 and "dtype 'O'" in proc.stderr  # not -11 (a segmentation fault)
