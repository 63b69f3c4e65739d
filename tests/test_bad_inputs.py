"""The bad-input sweep: each input is one line on stderr, exit status 2, no traceback, nothing written.

Each row is a class of mistake (issue: "fix the class, not the example"); the table grows with every
class made safe.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from attnlab import ModelConfig, TrainConfig
from attnlab.errors import AttnlabError

from .conftest import run_cli

TRAIN = ["train", "--steps", "1", "--out", "{tmp}/run"]
NUMBERS = [
    # Not-a-number and infinity, for every float flag of every verb that has one.
    (TRAIN + ["--max-time", "nan"], "not a finite number"),
    (TRAIN + ["--max-time", "inf"], "not a finite number"),
    (TRAIN + ["--max-time", "-5"], "must be a finite number of seconds > 0"),
    (TRAIN + ["--lr", "inf"], "not a finite number"),
    (TRAIN + ["--lr", "nan"], "not a finite number"),
    (TRAIN + ["--lr", "0"], "--lr 0.0: must be a finite number > 0"),
    (TRAIN + ["--lr=-1e-3"], "must be a finite number > 0"),
    (TRAIN + ["--lr", "fast"], "'fast' is not a number"),
    (TRAIN + ["--seed", "-1"], "--seed: -1 is not between 0 and 2**63 - 1"),
    (TRAIN + ["--seed", str(2**64)], "--seed"),
    (TRAIN + ["--set", "norm_eps=nan"], "norm_eps=nan: must be a finite number > 0"),
    (TRAIN + ["--set", "norm_eps=0"], "norm_eps=0.0: must be a finite number > 0"),
    (TRAIN + ["--set", "rope_theta=inf"], "rope_theta=inf: must be a finite number > 0"),
    (TRAIN + ["--set", "dropout=nan"], "dropout=nan"),
    (TRAIN + ["--set", "dropout=1"], "dropout=1.0"),
    (["lab", "--max-time", "nan", "--out", "{tmp}/lab"], "not a finite number"),
    (["lab", "--max-time=-inf", "--out", "{tmp}/lab"], "not a finite number"),
    (["compare", "--vary", "n_heads=2,4", "--max-time", "nan", "--out", "{tmp}/cmp"], "not a finite number"),
    (["generate", "{ckpt}", "--prompt", "Once", "--temperature", "nan"], "not a finite number"),
    (["generate", "{ckpt}", "--prompt", "Once", "--temperature", "inf"], "not a finite number"),
    (["generate", "{ckpt}", "--prompt", "Once", "--temperature", "0"], "must be > 0"),
    (["generate", "{ckpt}", "--prompt", "Once", "--top-p", "nan"], "not a finite number"),
    (["generate", "{ckpt}", "--prompt", "Once", "--top-p", "1.5"], "must be in (0, 1]"),
    (["generate", "{ckpt}", "--prompt", "Once", "--top-k", "0"], "--top-k 0"),
    (["generate", "{ckpt}", "--prompt", "Once", "--max-new-tokens", "-1"], "--max-new-tokens -1"),
    (["bench", "--budget", "nan"], "not a finite number"),
    (["bench", "--budget", "inf"], "not a finite number"),
    (["check", "{tmp}/x.ipynb", "--timeout", "nan"], "not a finite number"),
    (["check", "{tmp}/x.ipynb", "--timeout", "inf"], "not a finite number"),
    (["serve", "{ckpt}", "--port", "0"], "--port 0"),
    (["serve", "{ckpt}", "--port", "70000"], "--port 70000"),
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("bad") / "run"
    from attnlab.training import run

    run.start(out, data="builtin", preset="lab", steps=2, eval_every=10**6, final_eval_chars=1000)
    return str(out)


@pytest.mark.parametrize(("args", "words"), NUMBERS, ids=[" ".join(a[0:1] + a[-2:]) for a, _ in NUMBERS])
def test_a_bad_number_is_one_line_and_exit_2(tmp_path, ckpt, capsys, args, words):
    before = sorted(p for p in tmp_path.rglob("*"))
    code, out, err = run_cli([a.format(tmp=tmp_path, ckpt=ckpt) for a in args], capsys)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err and words in err, err
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"max_time": math.nan},
        {"max_time": math.inf},
        {"steps": 10, "lr": math.inf},
        {"steps": 10, "lr": math.nan},
        {"steps": 10, "weight_decay": math.nan},
        {"steps": 10, "grad_clip": -1.0},
        {"steps": 10, "min_lr_ratio": 2.0},
        {"steps": 10, "beta2": 1.0},
        {"steps": 10, "eval_every_s": math.nan},
        {"steps": 10, "seed": -3},
        {"steps": 10, "grad_accum": 10**30},  # a step's micro-batches are drawn at once: no memory holds them
    ],
)
def test_the_library_refuses_the_same_numbers(fields):
    with pytest.raises(AttnlabError):
        TrainConfig(**fields).validate()


@pytest.mark.parametrize("field", ["norm_eps", "rope_theta"])
@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0, -1.0])
def test_a_config_refuses_a_float_that_is_not_a_positive_number(field, value):
    with pytest.raises(AttnlabError, match=field):
        ModelConfig(**{field: value})


# Output paths: for every verb that writes, a path that is a file (or a folder), lies under a file, or is empty.
WRITERS = {
    "train": (["train", "--steps", "1"], "--out", "dir"),
    "lab": (["lab", "--max-time", "1"], "--out", "dir"),
    "compare": (["compare", "--vary", "n_heads=2,4", "--steps", "1"], "--out", "dir"),
    "attention png": (["attention", "--random", "--prompt", "hi"], "--out", "file"),
    "attention html": (["attention", "--random", "--prompt", "hi"], "--html", "file"),
    "embeddings": (["embeddings", "--random"], "--out", "file"),
    "patch": (["patch", "--random", "--clean", "ab", "--corrupt", "cd", "--answer", "a"], "--out", "file"),
    "attribute": (["attribute", "--random", "--prompt", "ab", "--answer", "a"], "--out", "file"),
    "heads": (["heads", "--random", "--batch", "2", "--half", "4"], "--out", "file"),
    "bench": (["bench", "--budget", "0.1"], "--out", "file"),
    "prepare": (["prepare", "builtin"], "--out", "file"),
    "export": (["export", "{ckpt}"], "--hf", "dir"),
    "notebook": (["notebook"], "--out", "dir"),
    "seq2seq train": (["seq2seq", "train", "--task", "copy", "--steps", "1"], "--out", "dir"),
    "check": (["check", "{tmp}/lab.ipynb"], "--report", "file"),
}
OUTPUT_CASES = [
    (name, [*args, flag, target], words)
    for name, (args, flag, kind) in WRITERS.items()
    for target, words in [
        ("{tmp}/a_file" if kind == "dir" else "{tmp}/a_folder", "is a file" if kind == "dir" else "is a folder"),
        ("{tmp}/a_file/inside", "lies under"),
        ("", "is empty"),
    ]
] + [
    ("picture suffix", ["attention", "--random", "--prompt", "hi", "--out", "{tmp}/p.bmp"], "pictures are written as"),
    ("embeddings suffix", ["embeddings", "--random", "--out", "{tmp}/p.gif"], "pictures are written as"),
    ("heads suffix", ["heads", "--random", "--out", "{tmp}/p.gif"], "pictures are written as"),
    ("name too long", ["train", "--steps", "1", "--out", "{tmp}/" + "a" * 300], "longer than file systems take"),
    ("picture name too long", ["embeddings", "--random", "--out", "{tmp}/" + "é" * 200], "name of 400"),
]


@pytest.mark.parametrize(
    ("name", "args", "words"), OUTPUT_CASES, ids=[f"{n}:{a[-1] or 'empty'}" for n, a, _ in OUTPUT_CASES]
)
def test_a_bad_output_path_is_refused_before_any_work(tmp_path, ckpt, capsys, name, args, words):
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "a_folder").mkdir()
    before = {p: (p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")}
    code, out, err = run_cli([a.format(tmp=tmp_path, ckpt=ckpt) for a in args], capsys)
    assert code == 2 and err.count("\n") == 1 and words in err and "Traceback" not in err, err
    assert {p: (p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")} == before


# A place where nothing can be created though the permission bits say yes (to root, /proc is "writable"):
# found by creating a file there before any work, for every verb that writes.
SUFFIXES = {
    "attention png": ".png",
    "attention html": ".html",
    "embeddings": ".png",
    "bench": ".json",
    **dict.fromkeys(("patch", "attribute", "heads"), ".png"),
}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("name", list(WRITERS))
def test_an_output_that_cannot_be_created_is_refused_before_any_work(tmp_path, ckpt, capsys, name):
    args, flag, kind = WRITERS[name]
    target = "/proc/attnlab-test" + SUFFIXES.get(name, ".bin" if name == "prepare" else "")
    code, out, err = run_cli([a.format(tmp=tmp_path, ckpt=ckpt) for a in [*args, flag, target]], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    said = "nothing can be created in /proc (" in err or "/proc is not writable" in err  # root, or not
    assert f"{flag} {target}: " in err and said, err
    assert out == "" and list(tmp_path.iterdir()) == [] and not Path(target).exists()


def test_every_flag_that_writes_is_checked_and_in_the_output_tables():
    """A verb's output flags (--out, --html, --hf, or a help that says it writes or names a folder) are
    each checked by cli.OUTPUTS before any work and have rows above: a new one must join both."""
    import argparse

    from attnlab.cli import OUTPUTS, build_parser

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})

    rows = {(" ".join(args[:2]) if args[0] == "seq2seq" else args[0], flag) for args, flag, _ in WRITERS.values()}
    found = set()
    for verb, parser in subparsers(build_parser()).items():
        for name, nested in subparsers(parser).items() or [(None, parser)]:
            for action in nested._actions:
                words = (action.help or "").lower()
                writes = action.dest in ("out", "html", "hf") or any(w in words for w in ("write", "folder", "go here"))
                if not action.option_strings or not writes or action.dest == "data":
                    continue
                flag, where = action.option_strings[-1], f"{verb} {name}" if name else verb
                found.add((where, flag))
                assert action.dest in [attr for attr, _ in OUTPUTS.get(verb, [])], f"{where} {flag}: not in cli.OUTPUTS"
                assert (where, flag) in rows, f"{where} {flag} is not in WRITERS"
    assert rows <= found and len(found) >= 11, (rows - found, found)


def test_checking_an_output_folder_leaves_no_trace(tmp_path):
    from attnlab.runtime.files import check_output

    (tmp_path / "run").mkdir()
    before = [(p, p.stat().st_mtime_ns) for p in (tmp_path, tmp_path / "run")]
    assert check_output(str(tmp_path / "run"), "--out", "dir") == tmp_path / "run"
    assert check_output(str(tmp_path / "new" / "x.png"), "--out", "picture") == tmp_path / "new" / "x.png"
    assert [(p, p.stat().st_mtime_ns) for p in (tmp_path, tmp_path / "run")] == before
    assert sorted(tmp_path.rglob("*")) == [tmp_path / "run"]


def test_a_picture_without_a_suffix_is_written_as_png_and_that_path_printed(tmp_path, capsys):
    code, out, _ = run_cli(["attention", "--random", "--prompt", "hi", "--out", str(tmp_path / "pic")], capsys)
    assert code == 0 and out.strip() == str(tmp_path / "pic.png") and (tmp_path / "pic.png").is_file()


# Sizes that cannot fit: refused from the parameter formula before anything is allocated (no hang).
MEMORY = [
    (["train", "--steps", "1", "--set", "n_layers=100000000", "--out", "{tmp}/r"], "needs"),
    (["train", "--steps", "1", "--set", "emb_dim=2000000", "--out", "{tmp}/r"], "needs"),
    (["train", "--steps", "1", "--preset", "gpt3-175b", "--out", "{tmp}/r"], "needs"),
    (["trace", "--random", "--preset", "gpt3-175b", "--prompt", "hi"], "needs"),
    (["attention", "--random", "--preset", "gpt3-175b", "--prompt", "hi", "--out", "{tmp}/a.png"], "needs"),
    (["next", "--random", "--preset", "gpt3-175b", "--prompt", "hi"], "needs"),
]


@pytest.mark.parametrize(("args", "words"), MEMORY, ids=[" ".join(a[:1] + a[-3:-1]) for a, _ in MEMORY])
def test_a_model_too_large_for_this_machine_is_refused_at_once(tmp_path, capsys, args, words):
    code, _, err = run_cli([a.format(tmp=tmp_path) for a in args], capsys)
    assert code == 2 and words in err and "GiB" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


# Text and names: prompts that are not UTF-8 (the shell hands Python undecodable bytes as surrogates),
# an empty data source, tokenizer names with a size that is not one.
TEXT = [
    (["generate", "{ckpt}", "--prompt", "Once \udcff"], "not valid UTF-8"),
    (["next", "{ckpt}", "--prompt", "\udcff\udcfe"], "not valid UTF-8"),
    (["lens", "{ckpt}", "--prompt", "a\ud800b"], "not valid UTF-8"),
    (["trace", "{ckpt}", "--prompt", "\udcc3"], "not valid UTF-8"),
    (["attention", "{ckpt}", "--prompt", "x\udcff", "--out", "{tmp}/a.png"], "not valid UTF-8"),
    (["train", "--steps", "1", "--data", "", "--out", "{tmp}/r"], "--data is empty"),
    (["train", "--steps", "1", "--data", "   ", "--out", "{tmp}/r"], "--data is empty"),
    (["eval", "{ckpt}", "--data", ""], "--data is empty"),
    (["lab", "--data", "", "--out", "{tmp}/lab"], "--data is empty"),
    (["train", "--steps", "1", "--tokenizer", "codepoint:abc", "--out", "{tmp}/r"], "codepoint:N takes"),
    (["train", "--steps", "1", "--tokenizer", "codepoint:0", "--out", "{tmp}/r"], "codepoint:N takes"),
    (["train", "--steps", "1", "--tokenizer", "codepoint:-5", "--out", "{tmp}/r"], "codepoint:N takes"),
    (["train", "--steps", "1", "--tokenizer", "codepoint:99999999", "--out", "{tmp}/r"], "codepoint:N takes"),
]


@pytest.mark.parametrize(
    ("args", "words"),
    TEXT,
    ids=[" ".join(a[:1] + a[-2:]).encode("ascii", "backslashreplace").decode() for a, _ in TEXT],
)
def test_bad_text_is_one_line_and_exit_2(tmp_path, ckpt, capsys, args, words):
    code, _, err = run_cli([a.format(tmp=tmp_path, ckpt=ckpt) for a in args], capsys)
    assert code == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
