"""What the lab's Transformer reaches in its time budget on TinyStories, recipe by recipe.

Each recipe trains the `small` preset (changed as the recipe says) with `attnlab.training.run.start` for
`--max-time` seconds of training on TinyStories (bytes tokenizer, seed 0), exactly as `attnlab lab`
does, then reports the lab's figures: the final validation bits per character (the first 1,000,000
characters of the validation split), the samples for the lab's three prompts (temperature 0.8,
top-k 40) and the share of their words that are words of the training text. Recipes run one after
another, in `--rounds` rounds (reversed order every other round, so a change of the machine's speed
hits all alike); medians over the rounds.

    ATTNLAB_TINYSTORIES=../shared/data/tinystories python benchmarks/lab_recipe.py \\
        --recipes "adamw=optimizer=adamw" "muon-rope=optimizer=muon,positions=rope"

A recipe is NAME=FIELD=VALUE[,FIELD=VALUE...]: model config fields (`--set`), TrainConfig fields
(`optimizer`, `lr`, `batch_size`, `warmup_steps`, `min_lr_ratio`, ...) and `tokenizer` (`--tokenizer`:
bytes by default; bits per character compare across tokenizers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from attnlab.apps.lab import DEFAULT_PROMPTS, known_word_fraction, word_set
from attnlab.data.corpus import prepare_data
from attnlab.generate import generate_text
from attnlab.models import Sampling
from attnlab.training import run
from attnlab.training.train import TrainConfig

TRAIN_FIELDS = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def _parse(recipe: str) -> tuple[str, dict[str, str], dict[str, object]]:
    name, _, spec = recipe.partition("=")
    model, train = {}, {}
    for pair in filter(None, spec.split(",")):
        key, value = pair.split("=", 1)
        if key == "tokenizer":
            train[key] = value
        elif key in TRAIN_FIELDS:
            kind = str(TRAIN_FIELDS[key])
            train[key] = value if "str" in kind else float(value) if "float" in kind else int(value)
        else:
            model[key] = value
    return name, model, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", required=True)
    parser.add_argument("--max-time", type=float, default=150.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "lab_recipe.json"))
    args = parser.parse_args()
    source = os.environ.get("ATTNLAB_TINYSTORIES")
    if not source:
        raise SystemExit("set ATTNLAB_TINYSTORIES to the TinyStories folder (../shared/data/tinystories)")
    tokenized = {"bytes": prepare_data(source, "bytes")}  # one tokenization per tokenizer, shared by its recipes
    vocabulary = word_set(tokenized["bytes"].corpus.train.chunks())
    recipes = [_parse(r) for r in args.recipes]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in recipes}
    for r in range(args.rounds):
        for name, model, train in recipes if r % 2 == 0 else recipes[::-1]:
            train = dict(train)
            tokenizer = train.pop("tokenizer", "bytes")
            if tokenizer not in tokenized:
                tokenized[tokenizer] = prepare_data(source, tokenizer)
            prepared = tokenized[tokenizer]
            with tempfile.TemporaryDirectory() as out:
                result = run.start(
                    out, data=prepared, preset="small", config=model, max_time=args.max_time, desc=name, **train
                )
            sampling = Sampling(temperature=0.8, top_k=40, seed=0)
            samples = [generate_text(result.model, prepared.tokenizer, p, 200, sampling) for p in DEFAULT_PROMPTS]
            row = {
                "val_bpc": result.final.bpc,
                "steps": result.steps,
                "tokens_per_s": result.tokens_per_s,
                "known_words": known_word_fraction(samples, vocabulary),
                "samples": samples,
            }
            runs[name].append(row)
            print(
                f"{name}: {row['val_bpc']:.3f} bits/char, {row['steps']} steps, {row['tokens_per_s']:,.0f} tokens/s, "
                f"{row['known_words']:.0%} known words",
                file=sys.stderr,
                flush=True,
            )
    rows = []
    for name, model, train in recipes:
        rs = runs[name]
        rows.append(
            {
                "recipe": name,
                "model": model,
                "train": train,
                "val_bpc": statistics.median(x["val_bpc"] for x in rs),
                "steps": statistics.median(x["steps"] for x in rs),
                "tokens_per_s": statistics.median(x["tokens_per_s"] for x in rs),
                "known_words": statistics.median(x["known_words"] for x in rs),
                "runs": rs,
            }
        )
    result = {
        "command": " ".join(["python", "benchmarks/lab_recipe.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}",
        "max_time_s": args.max_time,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| recipe | val bits/char | steps | tokens/s | known words |\n|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['recipe']} | {row['val_bpc']:.3f} | {row['steps']:,.0f} | {row['tokens_per_s']:,.0f} | "
            f"{row['known_words']:.0%} |"
        )


if __name__ == "__main__":
    main()
