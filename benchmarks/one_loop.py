"""The one training loop against the two it replaced: training steps per second, old and new, interleaved.

Before issue 24 the encoder-decoder had a loop of its own (`seq2seq_run.train_seq2seq` at commit
5e7f8f5); now it trains through `train.fit` as the language models do. This measures, in fresh
processes that alternate old and new, the training speed each code gives:

- the encoder-decoder (`seq2seq-small` on the reverse task, batch 64, no evaluation during the run);
- a language model (`small` on the built-in corpus, batch 16 x 128).

Speed is read from each run's own log (steps over its training time, evaluation excluded), medians
over `--rounds`. The old code runs from a git worktree of `--old` (made here, removed after).

    python benchmarks/one_loop.py --rounds 5 --out benchmarks/results/one_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBS = {
    "seq2seq": ["seq2seq", "train", "--task", "reverse", "--steps", "{steps}", "--batch-size", "64"],
    "lm": ["train", "--data", "builtin", "--preset", "small", "--steps", "{steps}", "--eval-every", "100000"],
}


def steps_per_s(src: Path, job: str, steps: int, out: Path) -> float:
    args = [a.format(steps=steps) for a in JOBS[job]] + ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(src), "ATTNLAB_THREADS": os.environ.get("ATTNLAB_THREADS", "2")}
    proc = subprocess.run([sys.executable, "-m", "attnlab", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    return last["step"] / last["elapsed_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default="5e7f8f5", help="the commit before the one loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.old], check=True)
        try:
            speeds: dict[str, dict[str, list[float]]] = {job: {"old": [], "new": []} for job in JOBS}
            for r in range(args.rounds):
                for job in JOBS:
                    order = ("old", "new") if r % 2 == 0 else ("new", "old")
                    for which in order:
                        src = (old if which == "old" else ROOT) / "src"
                        value = steps_per_s(src, job, args.steps, Path(tmp) / f"{job}-{which}-{r}")
                        speeds[job][which].append(value)
                        print(f"round {r} {job} {which}: {value:.1f} steps/s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    results = {
        "machine": {"cpus": os.cpu_count(), "load_at_start": round(load, 2), "platform": platform.platform()},
        "old_commit": args.old,
        "steps": args.steps,
        "rounds": args.rounds,
        "jobs": {
            job: {
                "old_steps_per_s": round(statistics.median(v["old"]), 2),
                "new_steps_per_s": round(statistics.median(v["new"]), 2),
                "new_over_old": round(statistics.median(v["new"]) / statistics.median(v["old"]), 3),
                "all": {k: [round(x, 2) for x in xs] for k, xs in v.items()},
            }
            for job, v in speeds.items()
        },
    }
    print(json.dumps({job: {k: v for k, v in d.items() if k != "all"} for job, d in results["jobs"].items()}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
