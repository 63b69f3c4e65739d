"""Peak memory of `attnlab prepare` as the corpus grows: it should stay flat.

Writes synthetic story files of each size (the built-in grammar with different seeds), runs
`python -m attnlab prepare FILE --out FILE.bin` in a fresh process for each, and reads that process's
peak resident set size. Writes benchmarks/results/prepare_memory.json and prints a Markdown table.

    python benchmarks/prepare_memory.py [--sizes-mb 10 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEAK_RSS = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if proc.returncode:
    sys.exit(proc.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux
"""


def write_corpus(path: Path, mb: int) -> None:
    from attnlab.data.builtin_corpus import builtin_stories
    from attnlab.data.corpus import join_stories

    with open(path, "w") as f:
        written, seed = 0, 0
        while written < mb * 2**20:
            text = join_stories(builtin_stories(seed=seed, n_chars=2**20))
            f.write(text)
            written += len(text)
            seed += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "prepare_memory.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mb in args.sizes_mb:
            corpus = Path(tmp) / f"corpus{mb}.txt"
            write_corpus(corpus, mb)
            t0 = time.perf_counter()
            cmd = [
                sys.executable,
                "-c",
                PEAK_RSS,
                sys.executable,
                "-m",
                "attnlab",
                "prepare",
                str(corpus),
                "--out",
                str(Path(tmp) / f"corpus{mb}.bin"),
            ]
            peak_kib = int(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip())
            rows.append(
                {
                    "corpus_mb": round(corpus.stat().st_size / 2**20, 1),
                    "peak_rss_mb": round(peak_kib / 1024, 1),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"tokenizer": "bytes", "rows": rows}, indent=2))
    print("| corpus (MB) | peak RSS of `attnlab prepare` (MB) | seconds |\n|---:|---:|---:|")
    for r in rows:
        print(f"| {r['corpus_mb']} | {r['peak_rss_mb']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
