"""Does the hook plumbing cost anything when no hook is used?

Times, interleaved in one run, the forward pass of the `small` preset three ways:
- `plain`: the same computation written without any hook calls (the baseline),
- `model(ids)`: the model's forward with the default no-op hook,
- `run_with_cache`: the forward recording every activation (explicit attention, for information).
Writes benchmarks/results/hooks_overhead.json and prints a Markdown table.

    python benchmarks/hooks_overhead.py [--repeats 30] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attnlab.models import TransformerLM, build_model, preset_config


@torch.no_grad()
def plain_forward(model: TransformerLM, ids_BL: torch.Tensor) -> torch.Tensor:
    """The Transformer's forward with no hook calls at all."""
    B, L = ids_BL.shape
    x_BLC = model.embed.tok(ids_BL) + model.embed.pos.weight[:L]
    for block in model.blocks:
        a = block.attn
        h_BLC = block.ln1(x_BLC)
        qkv_BLX = F.linear(h_BLC, *a.qkv_weights())
        q, k, v = (t.view(B, L, a.n_heads, a.head_dim).transpose(1, 2) for t in qkv_BLX.chunk(3, dim=-1))
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x_BLC = x_BLC + a.w_o(z.transpose(1, 2).reshape(B, L, -1))
        x_BLC = x_BLC + block.mlp.fc_out(F.relu(block.mlp.fc_in(block.ln2(x_BLC))))
    return F.linear(model.final_ln(x_BLC), model.embed.tok.weight)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hooks_overhead.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(preset_config("small")).eval()
    ids_BL = torch.randint(0, 256, (args.batch, model.config.max_len))
    assert (plain_forward(model, ids_BL) - model(ids_BL)).abs().max() < 1e-5
    ways = {
        "plain (no hook calls)": lambda: plain_forward(model, ids_BL),
        "model(ids), hooks unused": lambda: model(ids_BL),
        "run_with_cache (all activations)": lambda: model.run_with_cache(ids_BL),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    with torch.no_grad():
        for fn in ways.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, fn in ways.items():  # interleaved, so machine speed changes hit all alike
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain (no hook calls)"])
    rows = [
        {"way": k, "median_ms": 1000 * statistics.median(v), "ratio_to_plain": statistics.median(v) / base}
        for k, v in times.items()
    ]
    result = {
        "preset": "small",
        "batch": args.batch,
        "context": model.config.max_len,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        f"forward of the small preset, batch {args.batch} x {model.config.max_len} tokens, "
        f"median of {args.repeats} interleaved runs\n"
    )
    print("| way | median ms | ratio to plain |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['way']} | {r['median_ms']:.2f} | {r['ratio_to_plain']:.3f} |")


if __name__ == "__main__":
    main()
