"""Training speed of the `small` preset on a quiet machine and beside busy processes, per thread setting.

Each measurement is a fresh process (thread settings only take effect before torch is loaded) that
trains `small` (batch 16 x 128, AdamW) with `attnlab.training.train` for `--budget` seconds, while 0, 1 or 2
other processes spin in a plain busy loop. Settings and loads are interleaved round by round, so
the machine's changes of speed hit every setting alike; the table gives medians over the rounds.

    python benchmarks/threads.py --rounds 3
    python benchmarks/threads.py --settings "spin0=GOMP_SPINCOUNT=0" "passive=OMP_WAIT_POLICY=PASSIVE"

Settings: `torch` is PyTorch's own defaults (ATTNLAB_THREADS=torch), `attnlab` what `import attnlab`
sets (attnlab.runtime.threads); others are NAME=VAR=VALUE[,VAR=VALUE] on top of PyTorch's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "ATTNLAB_THREADS")
MEASURE = """
import json, sys, tempfile
import numpy as np, torch
from attnlab.models import build_model, preset_config
from attnlab.tokenizers import ByteTokenizer
from attnlab.data.tokens import TokenStream
from attnlab.training.train import TrainConfig, train
tokens = np.random.default_rng(0).integers(0, 256, 2_000_000).astype(np.uint16)
stream = TokenStream(tokens, len(tokens))
torch.manual_seed(0)
model = build_model(preset_config("small"))
cfg = TrainConfig(max_time=float(sys.argv[1]), eval_every=10**9, log_every=10**9, final_eval_chars=2000)
with tempfile.TemporaryDirectory() as out:
    result = train(model, ByteTokenizer(), stream, stream, cfg, out)
print(json.dumps({"tokens_per_s": result.tokens_per_s, "threads": torch.get_num_threads()}))
"""


def _env(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if setting == "torch":
        env["ATTNLAB_THREADS"] = "torch"
    elif setting != "attnlab":
        env["ATTNLAB_THREADS"] = "torch"
        for pair in setting.split("=", 1)[1].split(","):
            key, value = pair.split("=", 1)
            env[key] = value
    return env


def _measure(setting: str, budget: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(budget)], env=_env(setting), capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of training per measurement")
    parser.add_argument("--loads", default="0,1,2", help="numbers of competing busy processes")
    parser.add_argument("--settings", nargs="*", default=[], help="extra settings NAME=VAR=VALUE[,VAR=VALUE]")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "threads.json"))
    args = parser.parse_args()
    settings = ["torch", "attnlab", *args.settings]
    names = [s.split("=", 1)[0] for s in settings]
    loads = [int(x) for x in args.loads.split(",")]
    speeds: dict[str, dict[int, list[float]]] = {n: {load: [] for load in loads} for n in names}
    threads: dict[str, int] = {}
    for r in range(args.rounds):
        for load in loads:
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
            try:
                time.sleep(1.0)
                order = list(zip(names, settings, strict=True))
                for name, setting in order if r % 2 == 0 else order[::-1]:
                    row = _measure(setting, args.budget)
                    speeds[name][load].append(row["tokens_per_s"])
                    threads[name] = int(row["threads"])
                    print(f"round {r} load {load} {name}: {row['tokens_per_s']:,.0f} tokens/s", file=sys.stderr)
            finally:
                for p in busy:
                    p.kill()
                    p.wait()
    rows = []
    for name in names:
        quiet = statistics.median(speeds[name][0]) if 0 in loads else None
        for load in loads:
            median = statistics.median(speeds[name][load])
            rows.append(
                {
                    "setting": name,
                    "threads": threads[name],
                    "busy_processes": load,
                    "tokens_per_s": median,
                    "of_quiet": median / quiet if quiet else None,
                    "vs_torch_defaults": median / statistics.median(speeds["torch"][load]),
                    "runs": speeds[name][load],
                }
            )
    result = {
        "command": " ".join(["python", "benchmarks/threads.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "budget_s": args.budget,
        "rounds": args.rounds,
        "settings": dict(zip(names, settings, strict=True)),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| setting | threads | busy processes | tokens/s | of its quiet speed | vs torch defaults |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        of_quiet = f"{row['of_quiet']:.0%}" if row["of_quiet"] is not None else "-"
        print(
            f"| {row['setting']} | {row['threads']} | {row['busy_processes']} | {row['tokens_per_s']:,.0f} | "
            f"{of_quiet} | {row['vs_torch_defaults']:.2f}x |"
        )


if __name__ == "__main__":
    main()
