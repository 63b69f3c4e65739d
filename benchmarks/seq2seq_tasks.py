"""Exact-match accuracy of the encoder-decoder on attnlab's tasks, greedy and with beam search.

Each task trains `attnlab seq2seq train --task NAME --max-time T` (the `seq2seq-small` preset with
the settings below), then `evaluate_seq2seq` decodes the task's fixed 1,000-pair test split greedily
and with a beam of 4. Tasks run one after another on a quiet machine.

    python benchmarks/seq2seq_tasks.py --tasks reverse addition numbers dates --max-time 300
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

from attnlab.training.seq2seq_run import evaluate_seq2seq, train_seq2seq

SETTINGS = dict(batch_size=64, lr=1e-3, warmup_steps=200, schedule="cosine", config={})  # the preset: post-norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["reverse", "addition", "numbers", "dates"])
    parser.add_argument("--max-time", type=float, default=300.0)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "seq2seq_tasks.json"))
    args = parser.parse_args()
    rows = []
    for task in args.tasks:
        with tempfile.TemporaryDirectory() as out:
            trained = train_seq2seq(out, task=task, max_time=args.max_time, device="cpu", **SETTINGS)
            greedy = evaluate_seq2seq(out, beam=1, device="cpu")
            beam = evaluate_seq2seq(out, beam=args.beam, device="cpu")
        row = {
            "task": task,
            "train_time_s": trained.train_time_s,
            "steps": trained.steps,
            "examples": greedy["examples"],
            "exact_match_greedy": greedy["exact_match"],
            f"exact_match_beam{args.beam}": beam["exact_match"],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "command": f"python benchmarks/seq2seq_tasks.py --tasks {' '.join(args.tasks)} --max-time {args.max_time:g}",
        "machine": f"{torch.get_num_threads()} threads, {platform.machine()}, torch {torch.__version__}",
        "settings": {**SETTINGS, "preset": "seq2seq-small"},
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
