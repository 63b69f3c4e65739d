"""Batched generation: tokens per second at batch 1, 8 and 64, against the same prompts one at a time.

A model of `--preset` (random weights: the speed of decoding does not depend on them), `--batch`
sizes, prompts of random tokens of different lengths (8 to 40), `--new` tokens each (80: with the
longest prompt, `small`'s 128-token context, so no window slides), greedy. Each
round decodes each batch together (`generate_batch`) and, for the smaller batches, its prompts one
at a time (`model.generate`), alternately (the order flips each round); the figures are medians over
`--rounds`. On a CUDA device the one-token steps are replayed as CUDA graphs, and `--no-graphs`
measures without them. The tokens must be the same both ways (checked, in the JSON).

    python benchmarks/batch_generation.py --rounds 3 --out benchmarks/results/batch_generation_cpu.json
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

from attnlab.models import Sampling, build_model, preset_config
from attnlab.models.batch_generation import generate_batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", default="1,8,64")
    parser.add_argument("--new", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--alone-up-to", type=int, default=8, help="decode one at a time only for batches up to this")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-graphs", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(preset_config(args.preset)).to(device).eval()
    greedy = Sampling(greedy=True)
    graphs = device.type == "cuda" and not args.no_graphs
    gen = torch.Generator().manual_seed(1)
    sizes = [int(b) for b in args.batch.split(",")]
    prompts = {
        b: [torch.randint(256, (int(n),), generator=gen).tolist() for n in torch.randint(8, 41, (b,))] for b in sizes
    }
    times: dict[int, dict[str, list[float]]] = {b: {"batched": [], "alone": []} for b in sizes}
    same: dict[int, bool] = {}
    for r in range(args.rounds):
        for b in sizes:
            ways = ["batched", "alone"] if b <= args.alone_up_to else ["batched"]
            out: dict[str, Any] = {}
            for way in ways if r % 2 == 0 else ways[::-1]:
                _sync(device)
                t0 = time.perf_counter()
                if way == "batched":
                    out[way] = generate_batch(model, prompts[b], args.new, greedy, graphs=graphs)
                else:
                    out[way] = [
                        model.generate(torch.tensor([p], device=device), args.new, greedy, graphs=graphs)[
                            0, len(p) :
                        ].tolist()
                        for p in prompts[b]
                    ]
                _sync(device)
                times[b][way].append(time.perf_counter() - t0)
                print(f"round {r} batch {b} {way}: {b * args.new / times[b][way][-1]:,.0f} tokens/s", flush=True)
            if "alone" in out:
                same[b] = out["alone"] == out["batched"]
    results = {
        "preset": args.preset,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cuda_graphs": graphs,
        "new_tokens": args.new,
        "rounds": args.rounds,
        "machine": machine_state(load),
        "batches": {
            str(b): {
                "tokens_per_s_batched": round(b * args.new / statistics.median(times[b]["batched"]), 1),
                **(
                    {
                        "tokens_per_s_alone": round(b * args.new / statistics.median(times[b]["alone"]), 1),
                        "same_tokens": same[b],
                    }
                    if times[b]["alone"]
                    else {}
                ),
            }
            for b in sizes
        },
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
