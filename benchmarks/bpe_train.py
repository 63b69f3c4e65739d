"""How long does byte-level BPE training take, and how well does the result compress?

Trains a 1,000-token vocabulary on the first 2 MB of TinyStories' train.txt (`$ATTNLAB_TINYSTORIES`),
timing the two phases separately: counting the words (regex pre-tokenisation), then the merges
(incremental pair counts). Reports the median of `--repeats` runs, the characters per token on
valid.txt, writes benchmarks/results/bpe_train.json and prints a Markdown table row.

    ATTNLAB_TINYSTORIES=/path/to/tinystories python benchmarks/bpe_train.py [--vocab 1000] [--chars 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from attnlab.tokenizers.bpe import BPETokenizer, count_words, learn_merges


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--chars", type=int, default=2_000_000, help="characters of train.txt to learn from")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bpe_train.json"))
    args = parser.parse_args()
    folder = os.environ.get("ATTNLAB_TINYSTORIES")
    if not folder or not (Path(folder) / "train.txt").is_file() or not (Path(folder) / "valid.txt").is_file():
        sys.exit("set ATTNLAB_TINYSTORIES to a folder holding TinyStories' train.txt and valid.txt")
    with open(Path(folder) / "train.txt", encoding="utf-8") as f:
        text = f.read(args.chars)
    valid = (Path(folder) / "valid.txt").read_text(encoding="utf-8")

    totals, counting, merging = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        tok = BPETokenizer.train(text, args.vocab)
        totals.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        words = count_words(text)
        counting.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        learn_merges(words, args.vocab - 257)
        merging.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    n_tokens = len(tok.encode(valid))
    encode_s = time.perf_counter() - t0

    result = {
        "train_chars": len(text),
        "vocab": tok.n_vocab,
        "merges": len(tok.merges),
        "distinct_words": len(words),
        "seconds": statistics.median(totals),
        "seconds_counting_words": statistics.median(counting),
        "seconds_merging": statistics.median(merging),
        "repeats": args.repeats,
        "valid_chars": len(valid),
        "valid_tokens": n_tokens,
        "chars_per_token_valid": len(valid) / n_tokens,
        "encode_valid_seconds": encode_s,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| vocab | train chars | train s (count words + merges) | valid chars/token | encode valid s |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {result['vocab']:,} | {len(text):,} | {result['seconds']:.2f} ({result['seconds_counting_words']:.2f} + "
        f"{result['seconds_merging']:.2f}) | {result['chars_per_token_valid']:.2f} | {encode_s:.2f} |"
    )


if __name__ == "__main__":
    main()
