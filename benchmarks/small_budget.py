"""Bits per character the `small` preset reaches in a fixed training time, AdamW against Muon.

For each run (an optimizer, optionally with model config overrides such as rotary positions) and
each budget: one run of `attnlab.training.train.train` on TinyStories (bytes tokenizer, seed 0, the preset's
defaults otherwise) for that many seconds of training; the final evaluation covers the whole
validation file (2.56 M characters), as the reference figures do.
Reference (nanoGPT's baby GPT on these 2 cores): 1.87 bits/char after 141 s and 1.54 after 306 s;
tuned, 2.09 at 70 s and 1.51 at 300 s. Runs are sequential, one at a time (they share 2 cores).

    ATTNLAB_TINYSTORIES=../shared/data/tinystories python benchmarks/small_budget.py [--budgets 70,300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from attnlab.data.corpus import prepare_data
from attnlab.models import build_model, preset_config
from attnlab.training.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default="70,300", help="seconds of training, comma-separated")
    parser.add_argument(
        "--runs",
        default="adamw;muon;muon:positions=rope",
        help="';'-separated OPTIMIZER[:FIELD=VALUE,...]: the optimizer and model config overrides of each run",
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "small_budget.json"))
    args = parser.parse_args()
    source = os.environ.get("ATTNLAB_TINYSTORIES")
    if not source:
        raise SystemExit("set ATTNLAB_TINYSTORIES to the TinyStories folder (../shared/data/tinystories)")
    prepared = prepare_data(source)
    rows = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for run in args.runs.split(";"):
            optimizer, _, fields = run.partition(":")
            overrides = dict(f.split("=", 1) for f in fields.split(",")) if fields else {}
            torch.manual_seed(0)
            cfg = preset_config(args.preset, n_vocab=prepared.tokenizer.n_vocab).with_overrides(overrides)
            model = build_model(cfg)
            tcfg = TrainConfig(max_time=budget, optimizer=optimizer, eval_every=10**9, final_eval_chars=10**9)
            result = train(model, prepared.tokenizer, prepared.train, prepared.valid, tcfg, tempfile.mkdtemp())
            rows.append(
                {
                    "preset": args.preset,
                    "optimizer": optimizer,
                    "overrides": overrides,
                    "budget_s": budget,
                    "val_bpc": result.final.bpc,
                    "val_chars": result.final.chars,
                    "steps": result.steps,
                    "tokens_per_s": result.tokens_per_s,
                }
            )
            print(f"{run} {budget:.0f} s: {result.final.bpc:.3f} bits/char, {result.steps} steps", flush=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    out = {"rows": rows, "machine": machine}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("\n| optimizer | model | budget | val bits/char | steps | tokens/s |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        model = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or args.preset
        print(
            f"| {r['optimizer']} | {model} | {r['budget_s']:.0f} s | {r['val_bpc']:.3f} | {r['steps']:,} | "
            f"{r['tokens_per_s']:,.0f} |"
        )


if __name__ == "__main__":
    main()
