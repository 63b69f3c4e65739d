"""The bad-input sweep, part two: every verb's flags, data files, checkpoints and resume conflicts.

Each row is one bad input; each must give exit status 2, one line on stderr, no traceback, and change
no file that existed before (tests/test_bad_inputs.py holds part one; together they pass 400 rows).
Rows are built from classes: a class of mistake is tried on every verb it applies to.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from attnlab.data.builtin_corpus import builtin_stories
from attnlab.data.corpus import join_stories
from attnlab.data.token_files import prepare_token_files
from attnlab.training import run
from attnlab.training.seq2seq_run import train_seq2seq

from . import test_bad_inputs
from .conftest import run_cli

# A command per verb that is valid and cheap except for the one bad value a row adds to it.
BASE = {
    "train": ["train", "--steps", "1", "--out", "{tmp}/r"],
    "lab": ["lab", "--steps", "1", "--out", "{tmp}/lab"],
    "compare": ["compare", "--vary", "n_heads=2,4", "--steps", "1", "--out", "{tmp}/c"],
    "generate": ["generate", "{ckpt}", "--prompt", "Once", "--max-new-tokens", "2"],
    "eval": ["eval", "{ckpt}", "--data", "builtin"],
    "trace": ["trace", "{ckpt}", "--prompt", "hi"],
    "attention": ["attention", "{ckpt}", "--prompt", "hi", "--out", "{tmp}/a.png"],
    "embeddings": ["embeddings", "{ckpt}", "--out", "{tmp}/e.png"],
    "next": ["next", "{ckpt}", "--prompt", "hi"],
    "lens": ["lens", "{ckpt}", "--prompt", "hi"],
    "patch": ["patch", "{ckpt}", "--clean", "Lily", "--corrupt", "Anna", "--answer", "a"],
    "attribute": ["attribute", "{ckpt}", "--prompt", "hi", "--answer", "a"],
    "heads": ["heads", "{ckpt}", "--batch", "2", "--half", "4"],
    "params": ["params", "small"],
    "bench": ["bench", "--budget", "0.1", "--dtypes", "fp32", "--compile", "off"],
    "prepare": ["prepare", "{files}/stories.txt", "--out", "{tmp}/d.bin"],
    "info": ["info"],
    "serve": ["serve", "{ckpt}"],
    "notebook": ["notebook", "--out", "{tmp}/nb"],
    "check": ["check", "{files}/empty.ipynb", "--no-sandbox"],
    "export": ["export", "{ckpt}", "--hf", "{tmp}/hf"],
    "seq2seq show": ["seq2seq", "show", "abc", "cba"],
    "seq2seq train": ["seq2seq", "train", "--task", "copy", "--steps", "1", "--out", "{tmp}/s"],
    "seq2seq eval": ["seq2seq", "eval", "{run}"],
    "seq2seq translate": ["seq2seq", "translate", "{run}", "--text", "abc"],
}


def _seq2seq_train(*options: str, out: str = "{tmp}/s") -> list[str]:
    return ["seq2seq", "train", *options, "--out", out]


# Flags by kind, and the verbs that have them (read from the parser in test_the_tables_cover_every_flag).
INT_FLAGS = {
    "--steps": ["lab", "train", "compare", "seq2seq train"],
    "--batch-size": ["lab", "train", "compare", "bench", "generate", "seq2seq train"],
    "--warmup-steps": ["seq2seq train"],
    "--beam": ["seq2seq eval", "seq2seq translate"],
    "--grad-accum": ["lab", "train", "compare", "seq2seq train"],
    "--eval-every": ["lab", "train", "compare", "seq2seq train"],
    "--seed": [
        "lab",
        "train",
        "compare",
        "generate",
        "trace",
        "attention",
        "embeddings",
        "next",
        "lens",
        "patch",
        "attribute",
        "heads",
        "seq2seq train",
    ],
    "--max-new-tokens": ["generate"],
    "--top-k": ["generate"],
    "--slide": ["generate"],
    "--top": ["embeddings", "next", "lens"],
    "--batch": ["patch", "heads"],
    "--half": ["heads"],
    "--context": ["params"],
    "--port": ["serve"],
    "--prompt-len": ["bench"],
    "--new-tokens": ["bench"],
    "--gen-max-len": ["bench"],
    "--jobs": ["check"],
    "--threads": list(BASE),
}
FLOAT_FLAGS = {
    "--max-time": ["lab", "train", "compare", "seq2seq train"],
    "--lr": ["lab", "train", "compare", "seq2seq train"],
    "--min-lr-ratio": ["lab", "train", "compare", "seq2seq train"],
    "--embed-lr-ratio": ["lab", "train", "compare", "seq2seq train"],
    "--label-smoothing": ["seq2seq train"],
    "--temperature": ["generate"],
    "--top-p": ["generate"],
    "--budget": ["bench"],
    "--timeout": ["check"],
}
CHOICE_FLAGS = {
    "--dtype": ["lab", "train", "compare", "seq2seq train"],
    "--optimizer": ["lab", "train", "compare", "seq2seq train"],
    "--recipe": ["lab"],
    "--model": ["train", "trace", "attention", "embeddings", "next", "lens", "patch", "attribute", "heads", "params"],
    "--format": [
        "eval",
        "trace",
        "embeddings",
        "next",
        "lens",
        "patch",
        "attribute",
        "heads",
        "params",
        "bench",
        "info",
        "check",
        "seq2seq eval",
    ],
    "--over": ["patch"],
    "--notebook": ["check"],
    "--schedule": ["lab", "train", "compare", "seq2seq train"],
    "--split": ["eval"],
    "--compile": ["bench"],
}

# Values that are not of the flag's kind: refused by the parser, for every flag of that kind.
ROWS: list[tuple[str, list[str], str]] = []
for flag, verbs in INT_FLAGS.items():
    for verb in verbs:
        for value in ("abc", "1.5", ""):
            ROWS.append((f"{verb} {flag} {value!r}", [*BASE[verb], flag, value], "invalid int value"))
for flag, verbs in FLOAT_FLAGS.items():
    for verb in verbs:
        for value in ("nan", "inf", "-inf", "1e999", "abc"):
            words = "is not a number" if value == "abc" else "not a finite number"
            ROWS.append((f"{verb} {flag} {value}", [*BASE[verb], f"{flag}={value}"], words))
for flag, verbs in CHOICE_FLAGS.items():
    for verb in verbs:
        ROWS.append((f"{verb} {flag} nope", [*BASE[verb], flag, "nope"], "invalid choice"))

# Integers out of range: negative or zero where that means nothing, or too large to fit or to be true.
RANGES = {
    "--steps": (["-1", "0"], ">= 1"),
    "--batch-size": (["-1", "0"], ">= 1"),
    "--warmup-steps": (["-1", "0"], ">= 1"),
    "--beam": (["-1", "0"], ">= 1"),
    "--grad-accum": (["-1", "0"], "must be >= 1"),
    "--eval-every": (["-1", "0"], "must be >= 1"),
    "--seed": (["-1", str(2**64)], "--seed"),
    "--max-new-tokens": (["-1"], "must be >= 0"),
    "--top-k": (["-1", "0"], "--top-k"),
    "--slide": (["-1", "0", "100000"], "--slide"),
    "--top": (["-1", "0"], "--top"),
    "--batch": (["-1", "0"], ">= 1"),
    "--half": (["-1", "0"], ">= 1"),
    "--context": (["-1", "0"], "--context"),
    "--port": (["-1", "0", "70000"], "--port"),
    "--prompt-len": (["-1", "0"], "--prompt-len"),
    "--new-tokens": (["-1", "0"], "--new-tokens"),
    "--gen-max-len": (["-1", "0"], "--gen-max-len"),
    "--jobs": (["-1", "0"], ">= 1"),
    "--threads": (["-1", "0", "100000"], "--threads"),
}
for flag, (values, words) in RANGES.items():
    for verb in INT_FLAGS[flag]:
        for value in values:
            ROWS.append((f"{verb} {flag}={value}", [*BASE[verb], f"{flag}={value}"], words))
ROWS += [
    ("generate --max-new-tokens 10**12", [*BASE["generate"], "--max-new-tokens", str(10**12)], "GiB"),
    ("bench --new-tokens 10**12", [*BASE["bench"], "--new-tokens", str(10**12)], "GiB"),
    ("bench --gen-max-len 10**9", [*BASE["bench"], "--gen-max-len", str(10**9)], "GiB"),
    ("train --batch-size 10**9", [*BASE["train"], "--batch-size", str(10**9)], "GiB"),
    ("lab --batch-size 10**9", [*BASE["lab"], "--batch-size", str(10**9)], "GiB"),
    ("compare --batch-size 10**9", [*BASE["compare"], "--batch-size", str(10**9)], "GiB"),
    ("bench --batch-size 10**9", [*BASE["bench"], "--batch-size", str(10**9)], "GiB"),
    ("train --set max_len=10**8", [*BASE["train"], "--set", f"max_len={10**8}"], "GiB"),
    # --grad-accum: a step draws all its micro-batches at once (refused with the model, or at any length).
    ("train --grad-accum 10**8", [*BASE["train"], "--grad-accum", str(10**8)], "use a smaller --grad-accum"),
    ("lab --grad-accum 10**8", [*BASE["lab"], "--grad-accum", str(10**8)], "use a smaller --grad-accum"),
    ("train --grad-accum 10**30", [*BASE["train"], "--grad-accum", str(10**30)], "at any length"),
    ("lab --grad-accum 10**30", [*BASE["lab"], "--grad-accum", str(10**30)], "at any length"),
    ("compare --grad-accum 10**30", [*BASE["compare"], "--grad-accum", str(10**30)], "at any length"),
    ("compare --grad-accum 10**8", [*BASE["compare"], "--grad-accum", str(10**8)], "use a smaller --grad-accum"),
    (
        "resume --grad-accum 10**8",
        ["train", "--resume", "--steps", "9", "--grad-accum", str(10**8), "--out", "{run}"],
        "use a smaller --grad-accum",
    ),
    # n_vocab follows the tokenizer: fewer ids would index past the embedding, more make an unloadable run.
    ("train --set n_vocab=100", [*BASE["train"], "--set", "n_vocab=100"], "has 256 ids and n_vocab must be 256"),
    ("train --set n_vocab=300", [*BASE["train"], "--set", "n_vocab=300"], "has 256 ids and n_vocab must be 256"),
    (
        "train char --set n_vocab=2",
        [*BASE["train"], "--tokenizer", "char", "--set", "n_vocab=2"],
        "the char tokenizer has",
    ),
    # compare --vary naming one field twice would train one of its values only.
    ("compare --vary n_vocab", ["compare", "--vary", "n_vocab=300,400", "--out", "{tmp}/c"], "follows the tokenizer"),
    ("compare --vary twice", [*BASE["compare"], "--vary", "n_heads=8"], "n_heads is varied by --vary 'n_heads=2,4'"),
    (
        "compare --vary a:a",
        ["compare", "--vary", "n_heads:n_heads=1:2", "--steps", "1", "--out", "{tmp}/c"],
        "names n_heads twice",
    ),
    ("bench gpt3-175b", ["bench", "--preset", "gpt3-175b", "--budget", "0.1"], "GiB"),
    (
        "embeddings --random gpt3-175b",
        ["embeddings", "--random", "--preset", "gpt3-175b", "--out", "{tmp}/e.png"],
        "GiB",
    ),
    ("lens --random gpt3-175b", ["lens", "--random", "--preset", "gpt3-175b", "--prompt", "hi"], "GiB"),
    # The encoder-decoder is not a language model: the LM verbs say so.
    ("train --set model=seq2seq", [*BASE["train"], "--set", "model=seq2seq"], "encoder-decoder"),
    (
        "trace --random vaswani-base",
        ["trace", "--random", "--preset", "vaswani-base", "--prompt", "hi"],
        "encoder-decoder",
    ),
    (
        "next --random vaswani-base",
        ["next", "--random", "--preset", "vaswani-base", "--prompt", "hi"],
        "encoder-decoder",
    ),
    # Circuits: prompts patching cannot pair, answers that are not one token, models without heads.
    ("patch lengths", ["patch", "{ckpt}", "--clean", "Lily", "--corrupt", "Tom", "--answer", "a"], "same number"),
    ("patch --answer two", [*BASE["patch"], "--answer", "ab"], "is 2 tokens"),
    ("patch --wrong the answer", [*BASE["patch"], "--wrong", "a"], "the answer itself"),
    ("patch --answer lone surrogate", [*BASE["patch"], "--answer", "\udc80"], "not valid UTF-8"),
    ("attribute --wrong lone surrogate", [*BASE["attribute"], "--wrong", "\udc80"], "not valid UTF-8"),
    ("patch --wrong none", [*BASE["patch"], "--wrong", ""], "is 0 tokens"),
    ("attribute --answer two", [*BASE["attribute"], "--answer", "ab"], "is 2 tokens"),
    ("attribute --wrong two", [*BASE["attribute"], "--wrong", "xy"], "is 2 tokens"),
    ("patch mlp", ["patch", "--random", "--model", "mlp", "--clean", "a", "--corrupt", "b", "--answer", "a"], "MLP"),
    ("attribute mlp", ["attribute", "--random", "--model", "mlp", "--prompt", "a", "--answer", "a"], "MLP model"),
    ("heads mlp", ["heads", "--random", "--model", "mlp"], "MLP model"),
    ("patch seq2seq", ["patch", "{s2s}", "--clean", "a", "--corrupt", "b", "--answer", "a"], "encoder-decoder"),
    ("attribute seq2seq", ["attribute", "{s2s}", "--prompt", "a", "--answer", "a"], "encoder-decoder"),
    ("heads seq2seq", ["heads", "{s2s}"], "encoder-decoder"),
    ("heads --half too long", [*BASE["heads"], "--half", "10000"], "must fit the context"),
    ("heads --batch 10**9", [*BASE["heads"], "--batch", str(10**9)], "GiB"),
    (
        "patch --random gpt3-175b",
        ["patch", "--random", "--preset", "gpt3-175b", "--clean", "a", "--corrupt", "b", "--answer", "a"],
        "GiB",
    ),
    ("heads --data missing", [*BASE["heads"], "--data", "{tmp}/none.txt"], "no such file"),
    ("patch --out a folder", [*BASE["patch"], "--out", "{tmp}"], "is a folder"),
    ("seq2seq show nothing", ["seq2seq", "show"], "give a non-empty SOURCE and TARGET"),
    ("seq2seq show blank", ["seq2seq", "show", " ", "x"], "give a non-empty SOURCE and TARGET"),
    ("seq2seq show both", ["seq2seq", "show", "a", "b", "--task", "copy"], "not both"),
    ("seq2seq show --task", ["seq2seq", "show", "--task", "chess"], "choose one of copy"),
    ("seq2seq no verb", ["seq2seq"], "required"),
    ("seq2seq train nothing", _seq2seq_train("--steps", "1"), "give one of --task NAME or --data"),
    (
        "seq2seq train both",
        _seq2seq_train("--task", "copy", "--data", "{files}/one.txt", "--steps", "1"),
        "give one of",
    ),
    ("seq2seq train --task", _seq2seq_train("--task", "chess", "--steps", "1"), "choose one of copy"),
    ("seq2seq train no budget", _seq2seq_train("--task", "copy"), "give a training budget"),
    (
        "seq2seq train not pairs",
        _seq2seq_train("--data", "{files}/stories.txt", "--steps", "1"),
        "expected source<TAB>target",
    ),
    ("seq2seq train missing", _seq2seq_train("--data", "{tmp}/none.tsv", "--steps", "1"), "no such file"),
    (
        "seq2seq train smoothing",
        _seq2seq_train("--task", "copy", "--steps", "1", "--label-smoothing", "1"),
        "out of range",
    ),
    ("seq2seq train --set", _seq2seq_train("--task", "copy", "--steps", "1", "--set", "n_kv_heads=2"), "n_kv_heads"),
    (
        "seq2seq train short max_len",
        _seq2seq_train("--task", "numbers", "--steps", "1", "--set", "max_len=8"),
        "longer than max_len=8",
    ),
    ("seq2seq train into a file", _seq2seq_train("--task", "copy", "--steps", "1", out="{files}/one.txt"), "is a file"),
    ("seq2seq eval an LM run", ["seq2seq", "eval", "{run}"], "not an encoder-decoder run"),
    ("seq2seq eval nothing", ["seq2seq", "eval", "{tmp}/none"], "no such checkpoint"),
    # attnlab check: its sizes, shares and times, and paths that hold no notebook.
    *[(f"check --memory {v!r}", [*BASE["check"], f"--memory={v}"], "give") for v in ("abc", "", "-1G", "1K", "4X")],
    *[(f"check --shard {v!r}", [*BASE["check"], f"--shard={v}"], "give I/N") for v in ("0/2", "3/2", "a/b", "1/0", "")],
    *[(f"check --timeout {v}", [*BASE["check"], f"--timeout={v}"], "--timeout") for v in ("0", "-5", "1e9")],
    ("check missing", ["check", "{tmp}/missing.ipynb"], "no such file or folder"),
    ("check no notebooks", ["check", "{tmp}"], "no notebooks"),
    ("check not a notebook", ["check", "{files}/stories.txt"], "is not a Jupyter notebook"),
    ("check --notebook unknown", [*BASE["check"], "--notebook", "circuitz"], "invalid choice"),
    ("check a notebook naming another", ["check", "{files}/other.ipynb"], "its metadata names the notebook 'quiz'"),
    ("notebook unknown", ["notebook", "quiz", "--out", "{tmp}/nb"], "invalid choice"),
    ("seq2seq translate an LM run", ["seq2seq", "translate", "{run}", "--text", "abc"], "not an encoder-decoder run"),
    # seq2seq train --resume: a run continues only as what it was, from a checkpoint that is there.
    *[
        (f"seq2seq resume {name}", _seq2seq_train("--resume", "--steps", "9", *options, out=out), words)
        for name, options, out, words in [
            ("nothing", [], "{tmp}/none", "no such checkpoint"),
            ("an LM run", [], "{run}", "not an encoder-decoder run"),
            ("its checkpoint folder", [], "{s2s}/checkpoint", "is a checkpoint folder"),
            ("--task", ["--task", "reverse"], "{s2s}", "--task reverse: the run in"),
            ("--data", ["--data", "{files}/one.txt"], "{s2s}", "was trained on task copy"),
            ("--set", ["--set", "n_heads=2"], "{s2s}", "--set n_heads=2: the run in"),
            ("--preset", ["--preset", "vaswani-base"], "{s2s}", "was trained with preset seq2seq-small"),
            ("--optimizer", ["--optimizer", "muon"], "{s2s}", "was trained with optimizer adamw"),
            ("--label-smoothing", ["--label-smoothing", "0.1"], "{s2s}", "label_smoothing 0.0"),
            ("--grad-accum 10**8", ["--grad-accum", str(10**8)], "{s2s}", "use a smaller --grad-accum"),
        ]
    ],
    ("train --resume an encoder-decoder run", ["train", "--resume", "--steps", "9", "--out", "{s2s}"], "seq2seq"),
]

# --set: fields that do not exist, values of the wrong type or range, and the form itself.
SETS = [
    ("nope=1", "no such config field"),
    ("n_heads", "expected key=value"),
    ("=3", "expected key=value"),
    ("n_heads=two", "expected a int"),
    ("n_heads=0", "n_heads=0"),
    ("n_heads=-4", "n_heads=-4"),
    ("head_dim=0", "head_dim=0"),
    ("emb_dim=1.5", "expected a int"),
    ("bias=maybe", "expected a bool"),
    ("positions=alibi", "choose one of"),
    ("mlp=tanh", "choose one of"),
    ("norm=batch", "choose one of"),
    ("n_kv_heads=3", "must divide"),
    ("dropout=-0.1", "dropout=-0.1"),
    ("norm_eps=-inf", "norm_eps=-inf"),
    ("rope_theta=nan", "rope_theta=nan"),
    ("max_len=0", "max_len=0"),
    ("model=rnn", "choose one of"),
]
for value, words in SETS:
    ROWS.append((f"train --set {value}", [*BASE["train"], "--set", value], words))
    if not value.startswith("=") and "=" in value:  # the same value as a compare variant (--vary has its own form)
        ROWS.append(
            (f"compare --vary {value}", ["compare", "--vary", value, "--steps", "1", "--out", "{tmp}/c"], words)
        )

# On or off.
ROWS += [(f"{verb} --tf32 maybe", [*BASE[verb], "--tf32", "maybe"], "give on or off") for verb in ("train", "lab")]

# A file of prompts: missing, not text, empty; and what cannot go with it.
GENERATE = ["generate", "{ckpt}", "--max-new-tokens", "2"]
ROWS += [
    ("generate prompts missing", [*GENERATE, "--prompts-file", "{tmp}/none.txt"], "no such file"),
    ("generate prompts binary", [*GENERATE, "--prompts-file", "{files}/latin1.txt"], "not UTF-8 text"),
    ("generate prompts blank", [*GENERATE, "--prompts-file", "{files}/blank.txt"], "holds no prompt"),
    ("generate prompts folder", [*GENERATE, "--prompts-file", "{files}"], "no such file"),
    ("generate prompt and file", [*BASE["generate"], "--prompts-file", "{files}/stories.txt"], "not allowed with"),
    ("generate no prompt", GENERATE, "one of the arguments --prompt --prompts-file is required"),
    (
        "generate prompts --compile",
        [*GENERATE, "--prompts-file", "{files}/stories.txt", "--compile"],
        "--compile decodes one prompt",
    ),
]

# Prompts: empty, and not UTF-8, for every verb that reads one.
for verb in ("generate", "trace", "attention", "next", "lens", "attribute"):
    args = [a for a in BASE[verb] if a not in ("--prompt", "Once", "hi")]
    ROWS.append((f"{verb} empty prompt", [*args, "--prompt", ""], "empty prompt"))
    ROWS.append((f"{verb} lone surrogate", [*args, "--prompt", "ok\udc80"], "not valid UTF-8"))

# Data files: each kind of file that is not a corpus, for every verb that reads --data (and prepare).
DATA = {
    "missing": ("{tmp}/no_such.txt", "no such file or folder"),
    "empty": ("{files}/empty.txt", "empty"),
    "blank": ("{files}/blank.txt", "empty"),
    "binary": ("{files}/binary.txt", "NUL bytes"),
    "utf16": ("{files}/utf16.txt", "UTF-16 text"),
    "utf16 without mark": ("{files}/utf16le.txt", "NUL bytes"),
    "latin-1": ("{files}/latin1.txt", "not UTF-8 text"),
    "one story": ("{files}/one.txt", "cannot split"),
    "no txt files": ("{files}/no_text", "no .txt files"),
    "bin without json": ("{files}/lonely.bin", "no lonely.json beside it"),
    "bin with broken json": ("{files}/broken.bin", "not valid JSON"),
}
DATA_VERBS = {
    "train": lambda d: [*BASE["train"], "--data", d],
    "lab": lambda d: [*BASE["lab"], "--data", d],
    "compare": lambda d: [*BASE["compare"], "--data", d],
    "eval": lambda d: ["eval", "{ckpt}", "--data", d],
    "prepare": lambda d: ["prepare", d, "--out", "{tmp}/d.bin"],
}
for kind, (path, words) in DATA.items():
    for verb, make in DATA_VERBS.items():
        # prepare reads a .bin as the text it is asked to tokenize: binary, so refused as such
        ROWS.append(
            (f"{verb} --data {kind}", make(path), "NUL bytes" if verb == "prepare" and ".bin" in path else words)
        )
ROWS.append(("prepare too short to split", ["prepare", "{files}/two_lines.txt", "--out", "{tmp}/d.bin"], "too short"))
# --tokenizer with token files, which carry their own: another one is refused, not dropped.
for verb in ("train", "lab", "compare"):
    for file, other in (("char", "bytes"), ("bytes", "char"), ("bytes", "bpe:300"), ("bytes", "codepoint")):
        ROWS.append(
            (
                f"{verb} --data {file}.bin --tokenizer {other}",
                [*BASE[verb], "--data", "{files}/" + file + ".bin", "--tokenizer", other],
                f"made by the {file} tokenizer",
            )
        )
ROWS += [
    ("eval --data bin of another tokenizer", [*BASE["eval"], "--data", "{files}/char.bin"], "not the model's"),
    (
        "eval --data bin --split all",
        [*BASE["eval"], "--data", "{files}/bytes.bin", "--split", "all"],
        "drop --split all",
    ),
]

# Checkpoints that do not hang together, for every verb that loads one.
CRAFTED = {
    "missing": "no such checkpoint",
    "a file": "not a checkpoint",
    "empty folder": "not a checkpoint",
    "config not json": "not valid JSON",
    "config a list": "not an object",
    "unknown model key": "unknown key(s) n_experts",
    "model field of another type": '"n_layers" is a string',
    "n_layers beyond the weights": "holds 1 blocks, but the config says n_layers=100000000",
    "tokenizer larger than the model": "the tokenizer has 300 ids but the model 256",
    "char table too short": "the tokenizer has 3 ids but the model 256",
    "special token id a string": "not an integer",
    "unknown tokenizer kind": "unknown tokenizer kind 'pickle'",
    "weights cut short": "corrupt or incomplete",
    "weights of another shape": "embed.tok.weight has shape [256, 32], but the config makes it [256, 48]",
    "weights missing a tensor": "no tensor 'final_ln.bias'",
    "state not json": "not valid JSON",
    "state a list": "not an object",
    "format from the future": "from a newer attnlab",
    "weights hold nan": "blocks.0.attn.w_q.weight holds 1 NaN of its 640 values",
    "weights hold infinity": "final_ln.weight holds 2 infinities of its 32 values",
}
LOADERS = {
    "generate": lambda c: ["generate", c, "--prompt", "Once", "--max-new-tokens", "2"],
    "eval": lambda c: ["eval", c, "--data", "builtin"],
    "trace": lambda c: ["trace", c, "--prompt", "hi"],
    "attention": lambda c: ["attention", c, "--prompt", "hi", "--out", "{tmp}/a.png"],
    "embeddings": lambda c: ["embeddings", c, "--out", "{tmp}/e.png"],
    "next": lambda c: ["next", c, "--prompt", "hi"],
    "lens": lambda c: ["lens", c, "--prompt", "hi"],
    "export": lambda c: ["export", c, "--hf", "{tmp}/hf"],
    "params": lambda c: ["params", c],
    "train --resume": lambda c: ["train", "--resume", "--steps", "9", "--out", c],
}
for kind, words in CRAFTED.items():
    for verb, make in LOADERS.items():
        if verb == "train --resume" and kind == "a file":
            words = "is a file; give a folder"  # refused as an output folder before it is read
        if verb == "params" and kind.startswith("weights hold"):
            continue  # params reads the config and the weights' header only: their values do not matter to it
        ROWS.append((f"{verb} {kind}", make("{crafted}/" + kind.replace(" ", "_")), words))

# Resuming a run as something it is not, or from state that is not a run's.
ROWS += [
    ("resume --model mlp", ["train", "--resume", "--model", "mlp", "--steps", "9", "--out", "{run}"], "--model mlp"),
    (
        "resume --optimizer muon",
        ["train", "--resume", "--optimizer", "muon", "--steps", "9", "--out", "{run}"],
        "adamw",
    ),
    ("resume --set", ["train", "--resume", "--set", "n_layers=2", "--steps", "9", "--out", "{run}"], "n_layers=1"),
    ("resume --set unknown", ["train", "--resume", "--set", "nope=2", "--steps", "9", "--out", "{run}"], "no such"),
    ("resume --preset", ["train", "--resume", "--preset", "small", "--steps", "9", "--out", "{run}"], "preset lab"),
    ("resume --tokenizer", ["train", "--resume", "--tokenizer", "char", "--steps", "9", "--out", "{run}"], "bytes"),
    ("resume into the checkpoint", ["train", "--resume", "--steps", "9", "--out", "{run}/checkpoint"], "run folder"),
    ("resume nothing", ["train", "--resume", "--steps", "9", "--out", "{tmp}/none"], "no such checkpoint"),
    (
        "resume other tokens",
        ["train", "--resume", "--steps", "9", "--data", "{files}/char.bin", "--out", "{run}"],
        "another tokenizer",
    ),
    ("resume --steps 0", ["train", "--resume", "--steps", "0", "--out", "{run}"], "must be >= 1"),
    ("resume --lr nan", ["train", "--resume", "--lr", "nan", "--out", "{run}"], "not a finite number"),
    ("resume a saved model", ["train", "--resume", "--steps", "9", "--out", "{crafted}/no_state"], "no training state"),
]
for kind, words in {
    "state missing train": "no training state",
    "state step negative": '"step" is -1',
    "state step a string": '"step" is a string',
    "state train unknown key": "unknown key(s) warp",
    "state train lr a string": '"lr" is a string',
    "state loss_acc short": '"loss_acc"',
    "optimizer of another model": "another model's optimizer",
    "optimizer state missing": "optimizer.safetensors is missing",
}.items():
    ROWS.append(
        (f"resume {kind}", ["train", "--resume", "--steps", "9", "--out", "{crafted}/" + kind.replace(" ", "_")], words)
    )


def _write_data_files(files: Path) -> None:
    files.mkdir()
    (files / "empty.txt").write_bytes(b"")
    (files / "blank.txt").write_text("\n\n   \n")
    (files / "binary.txt").write_bytes(bytes(range(256)) * 64)
    story = "Once upon a time there was a cat. " * 30 + "\n<|endoftext|>\n"
    (files / "utf16.txt").write_bytes(story.encode("utf-16") * 3)
    (files / "utf16le.txt").write_bytes(story.encode("utf-16-le") * 3)
    (files / "latin1.txt").write_bytes(
        ("Café, crème brûlée, déjà vu. " * 40 + "\n<|endoftext|>\n").encode("latin-1") * 3
    )
    (files / "one.txt").write_text("Only one story, on one line.")
    (files / "two_lines.txt").write_text("Hello there.\nA second line.\n")  # a boundary, but none in the last 10%
    (files / "no_text").mkdir()
    (files / "no_text" / "notes.md").write_text("# not a .txt")
    (files / "lonely.bin").write_bytes(b"\x00\x01" * 10)
    (files / "broken.bin").write_bytes(b"\x00\x01" * 10)
    (files / "broken.json").write_text('{"format": 1, "dtype": "uin')
    (files / "stories.txt").write_text(join_stories(builtin_stories(n_chars=50_000)))
    (files / "empty.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    other = {"cells": [], "metadata": {"attnlab": {"notebook": "quiz"}}, "nbformat": 4, "nbformat_minor": 5}
    (files / "other.ipynb").write_text(json.dumps(other))
    for tok in ("bytes", "char"):
        prepare_token_files(str(files / "stories.txt"), files / f"{tok}.bin", tok)


def _craft(crafted: Path, good: Path, other: Path) -> None:
    """One folder per kind of damage, each a copy of a good checkpoint changed in one way."""
    crafted.mkdir()
    (crafted / "a_file").write_text("not a checkpoint")
    (crafted / "empty_folder").mkdir()

    def copy(name: str) -> Path:  # a run folder, as the verbs are given
        shutil.copytree(good, crafted / name / "checkpoint")
        return crafted / name / "checkpoint"

    def change_json(name: str, file: str, change) -> None:  # noqa: ANN001
        path = copy(name) / file
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    copy("config_not_json").joinpath("config.json").write_text('{"model": {"n_lay')
    change_json("config_a_list", "config.json", lambda m: [m])
    change_json("unknown_model_key", "config.json", lambda m: m | {"model": m["model"] | {"n_experts": 8}})
    change_json("model_field_of_another_type", "config.json", lambda m: m | {"model": m["model"] | {"n_layers": "1"}})
    change_json("n_layers_beyond_the_weights", "config.json", lambda m: m | {"model": m["model"] | {"n_layers": 10**8}})
    change_json(
        "tokenizer_larger_than_the_model",
        "config.json",
        lambda m: m | {"tokenizer": {"kind": "codepoint", "n_vocab": 300}},
    )
    change_json("char_table_too_short", "config.json", lambda m: m | {"tokenizer": {"kind": "char", "chars": "abc"}})
    bpe = {"kind": "bpe", "format": 1, "vocab": [], "merges": [], "special_tokens": {"<|endoftext|>": "256"}}
    change_json("special_token_id_a_string", "config.json", lambda m: m | {"tokenizer": bpe})
    change_json("unknown_tokenizer_kind", "config.json", lambda m: m | {"tokenizer": {"kind": "pickle"}})
    change_json("format_from_the_future", "config.json", lambda m: m | {"format": 99})
    weights = copy("weights_cut_short") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    change_json("weights_of_another_shape", "config.json", lambda m: m | {"model": m["model"] | {"emb_dim": 48}})
    path = copy("weights_missing_a_tensor") / "model.safetensors"
    save_file({k: v for k, v in load_file(path).items() if k != "final_ln.bias"}, path)
    for name, tensor, values in (
        ("weights_hold_nan", "blocks.0.attn.w_q.weight", [float("nan")]),
        ("weights_hold_infinity", "final_ln.weight", [float("inf"), -float("inf")]),
    ):
        path = copy(name) / "model.safetensors"
        weights = load_file(path)
        weights[tensor].view(-1)[: len(values)] = torch.tensor(values)
        save_file(weights, path)
    copy("state_not_json").joinpath("state.json").write_text("{")
    change_json("state_a_list", "state.json", lambda s: [s])
    change_json("state_missing_train", "state.json", lambda s: {k: v for k, v in s.items() if k != "train"})
    change_json("state_step_negative", "state.json", lambda s: s | {"step": -1})
    change_json("state_step_a_string", "state.json", lambda s: s | {"step": "2"})
    change_json("state_train_unknown_key", "state.json", lambda s: s | {"train": s["train"] | {"warp": 9}})
    change_json("state_train_lr_a_string", "state.json", lambda s: s | {"train": s["train"] | {"lr": "0.1"}})
    change_json("state_loss_acc_short", "state.json", lambda s: s | {"loss_acc": [1.0]})
    folder = copy("optimizer_of_another_model")
    shutil.copy(other / "optimizer.safetensors", folder / "optimizer.safetensors")
    state = json.loads((folder / "state.json").read_text())
    state["optimizer"] = json.loads((other / "state.json").read_text())["optimizer"]
    (folder / "state.json").write_text(json.dumps(state))
    (copy("optimizer_state_missing") / "optimizer.safetensors").unlink()
    no_state = copy("no_state")
    (no_state / "state.json").write_text("{}")


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sweep")
    fields = dict(data="builtin", preset="lab", steps=2, eval_every=10**6, final_eval_chars=1000)
    run.start(root / "run", **fields)
    run.start(root / "other", config={"emb_dim": 48}, **fields)
    _craft(root / "crafted", root / "run" / "checkpoint", root / "other" / "checkpoint")
    _write_data_files(root / "files")
    small = {"n_layers": 1, "n_enc_layers": 1}
    train_seq2seq(root / "s2s", task="copy", config=small, steps=2, eval_every=10**6)
    return {
        "s2s": str(root / "s2s"),
        "root": str(root),
        "run": str(root / "run"),
        "ckpt": str(root / "run"),
        "crafted": str(root / "crafted"),
        "files": str(root / "files"),
    }


def _snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("name", "args", "words"), ROWS, ids=[r[0].encode("ascii", "backslashreplace").decode() for r in ROWS]
)
def test_each_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, places, capsys, name, args, words):
    before, mine = _snapshot(Path(places["root"])), _snapshot(tmp_path)
    argv = [a.format(tmp=tmp_path, **places) for a in args]
    code, _, err = run_cli(argv, capsys)
    assert code == 2, (name, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert words in err, err
    assert _snapshot(Path(places["root"])) == before and _snapshot(tmp_path) == mine


def test_the_sweep_holds_at_least_400_rows():
    part_one = sum(
        len(t)
        for t in (test_bad_inputs.NUMBERS, test_bad_inputs.OUTPUT_CASES, test_bad_inputs.MEMORY, test_bad_inputs.TEXT)
    )
    assert part_one + len(ROWS) >= 400, part_one + len(ROWS)


def test_the_tables_cover_every_flag():
    """Every int, float and choice flag of every verb is in the tables above (a new flag must join them)."""
    import argparse

    from attnlab.cli import build_parser
    from attnlab.cli.options import finite, positive, seed

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})

    parsers = []
    for verb, parser in subparsers(build_parser()).items():  # `seq2seq show` counts as seq2seq
        parsers += [(f"{verb} {name}", nested) for name, nested in subparsers(parser).items()] or [(verb, parser)]
    for verb, parser in parsers:
        for action in parser._actions:
            flag = action.option_strings[-1] if action.option_strings else None
            if flag is None or flag == "--help":
                continue
            ints = (int, seed, positive)
            table = INT_FLAGS if action.type in ints else FLOAT_FLAGS if action.type is finite else None
            if action.choices and action.nargs != 0:
                table = CHOICE_FLAGS
            if table is not None:
                assert verb in table.get(flag, []), f"{verb} {flag} is not in the sweep"


def test_a_saved_model_without_state_still_loads(places):
    """The crafted checkpoints are damaged one way each: the undamaged parts still load."""
    from attnlab import load_checkpoint

    ckpt = load_checkpoint(Path(places["crafted"]) / "no_state")
    assert ckpt.state == {} and torch.isfinite(next(ckpt.model.parameters())).all()


def test_an_encoder_decoder_with_a_nan_weight_is_one_line_in_every_verb_that_loads_it(tmp_path, capsys):
    """Encoder-decoder runs load through the same `read_weights` as language models."""
    train = ["seq2seq", "train", "--task", "copy", "--steps", "1", "--set", "n_layers=1", "--set", "n_enc_layers=1"]
    assert run_cli([*train, "--out", str(tmp_path / "s")], capsys)[0] == 0
    path = tmp_path / "s" / "checkpoint" / "model.safetensors"
    weights = load_file(path)
    weights["decoder.0.cross.w_k.weight"].view(-1)[5] = float("nan")
    save_file(weights, path)
    before = _snapshot(tmp_path)
    run_dir = str(tmp_path / "s")
    for argv in (
        ["seq2seq", "eval", run_dir],
        ["seq2seq", "translate", run_dir, "--text", "abc"],
        ["trace", run_dir, "--prompt", "ab"],
        ["attention", run_dir, "--prompt", "ab", "--out", str(tmp_path / "a.png")],
    ):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and "decoder.0.cross.w_k.weight holds 1 NaN" in err, (argv, err)
    assert _snapshot(tmp_path) == before


def test_finite_weights_whose_sum_overflows_still_load(places, tmp_path):
    """NaN and infinity are found by a sum first (fast); finite values that overflow it are checked exactly."""
    from attnlab import load_checkpoint

    shutil.copytree(Path(places["run"]) / "checkpoint", tmp_path / "checkpoint")
    path = tmp_path / "checkpoint" / "model.safetensors"
    weights = load_file(path)
    weights["final_ln.weight"].fill_(3e38)  # 32 x 3e38 is inf in float32; each value is finite
    save_file(weights, path)
    assert torch.equal(load_checkpoint(tmp_path).model.final_ln.weight, torch.full((32,), 3e38))
