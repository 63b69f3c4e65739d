"""Activation patching sweeps: batched (many patched runs per forward) against one forward per cell.

`small` (random weights: the speed of a sweep does not depend on them), a clean prompt of random tokens
and a corrupted one differing in one token; the layer x position residual sweep and the layer x head
sweep (`attnlab patch --over resid / heads`), at the issue's 128 tokens and at 16. Each round runs
every job batched (`--batch`) and one cell per forward, alternately (the order flips each round);
the figures are medians over `--rounds`. Both ways must give the same values (checked, in the JSON).

    python benchmarks/patching.py --rounds 5 --out benchmarks/results/patching.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from machine import machine_state

from attnlab.inspect.circuits import logit_diff
from attnlab.inspect.patching import patch_cells, sweep_cells
from attnlab.models import build_model, preset_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lengths", default="128,16")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()
    torch.manual_seed(0)
    model = build_model(preset_config("small")).eval()
    metric = logit_diff(1, 2)
    jobs: dict[str, tuple[Any, ...]] = {}
    for L in (int(x) for x in args.lengths.split(",")):
        clean_1L = torch.randint(0, 256, (1, L))
        corrupt_1L = clean_1L.clone()
        corrupt_1L[0, L // 2] = (clean_1L[0, L // 2] + 1) % 256
        for over in ("resid", "heads"):
            jobs[f"{over}_{L}"] = (over, L, clean_1L, corrupt_1L, sweep_cells(model, over, L))
    times: dict[str, dict[str, list[float]]] = {job: {"batched": [], "one_per_cell": []} for job in jobs}
    same: dict[str, float] = {}
    for r in range(args.rounds):
        for job, (_, _, clean_1L, corrupt_1L, cells) in jobs.items():
            values = {}
            for way in ("batched", "one_per_cell") if r % 2 == 0 else ("one_per_cell", "batched"):
                batch = args.batch if way == "batched" else 1
                t0 = time.perf_counter()
                values[way] = patch_cells(model, clean_1L, corrupt_1L, cells, metric, batch)
                times[job][way].append(time.perf_counter() - t0)
                print(f"round {r} {job} {way}: {times[job][way][-1]:.2f} s", flush=True)
            same[job] = float((values["batched"] - values["one_per_cell"]).abs().max())
    results = {
        "machine": machine_state(load),
        "preset": "small",
        "batch": args.batch,
        "rounds": args.rounds,
        "jobs": {
            job: {
                "over": over,
                "tokens": L,
                "cells": len(cells),
                "batched_s": round(statistics.median(times[job]["batched"]), 3),
                "one_per_cell_s": round(statistics.median(times[job]["one_per_cell"]), 3),
                "speedup": round(
                    statistics.median(times[job]["one_per_cell"]) / statistics.median(times[job]["batched"]), 2
                ),
                "largest_difference": same[job],
                "all": {k: [round(x, 3) for x in v] for k, v in times[job].items()},
            }
            for job, (over, L, _, _, cells) in jobs.items()
        },
    }
    lines = ["| sweep | tokens | cells | one forward per cell | batched | speed-up |", "|---|---:|---:|---:|---:|---:|"]
    for j in results["jobs"].values():
        lines.append(
            f"| {j['over']} | {j['tokens']} | {j['cells']} | {j['one_per_cell_s']:.2f} s | {j['batched_s']:.2f} s "
            f"| {j['speedup']:.2f} |"
        )
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
