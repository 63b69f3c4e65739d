"""attnlab's best recipe against a well-tuned nanoGPT-style baby GPT, measured side by side in one run.

The reference is nanoGPT's model and training loop re-implemented here (as in baby_gpt.py): 4 layers,
4 heads, 128 wide, context 128, batch 16, AdamW lr 4e-3 with 100 warm-up steps and cosine decay to
lr/10 over 2,200 steps, char-level TinyStories. It trains first; its wall time T is then the budget
of each of attnlab's recipes (`attnlab.training.run.start`, time-based schedule), each also trained for T/3:
the best at character level (bytes, as the lab reads text) and the best with a BPE vocabulary (more
characters per token: more text per step at nearly the same cost). All are evaluated on the whole
validation file (2.56 M characters) as bits per character, which compare across tokenizers. The
machine's speed changes by up to 2x from hour to hour, so only the figures of one run compare.

    ATTNLAB_TINYSTORIES=../shared/data/tinystories python benchmarks/best_recipe.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attnlab.data.corpus import prepare_data
from attnlab.data.tokens import TokenStream
from attnlab.training import run

sys.path.insert(0, str(Path(__file__).parent))
from baby_gpt import ReferenceGPT  # noqa: E402 - the reference model, shared with the throughput benchmark

LN2 = math.log(2)
# The lab's fast recipe plus the changes that gained in screening runs (README; the screens' figures:
# benchmarks/results/best_recipe_screen*.json): the cosine down to 0, a context of 256 characters in
# batches of 16 (the same 4,096 tokens a step as 32 x 128), and the embeddings at 3x the learning rate.
BEST = {
    "tokenizer": "bytes",
    "train": {"optimizer": "muon", "lr": 8e-3, "min_lr_ratio": 0.0, "batch_size": 16, "embed_lr_ratio": 3.0},
    "config": {"positions": "rope", "n_layers": 3, "max_len": 256},
}
# The same with a byte-level BPE vocabulary learnt from the training split (best_recipe_screen_bpe.json).
BEST_BPE = {**BEST, "tokenizer": "bpe:1000"}
RECIPES = {"bytes": BEST, "bpe": BEST_BPE}


def reference_train(model: ReferenceGPT, stream: TokenStream, steps: int, lr: float, batch: int, L: int) -> float:
    """nanoGPT's loop (warm-up, cosine to lr/10, AdamW, clipping) for `steps`; returns the wall time."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99)
    )
    data = np.asarray(stream.tokens)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for it in range(steps):
        warm = lr * (it + 1) / 100
        p = (it - 100) / max(1, steps - 100)
        opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = (
            warm if it < 100 else lr / 10 + 0.5 * (lr - lr / 10) * (1 + math.cos(math.pi * p))
        )
        ix = torch.randint(len(data) - L - 1, (batch,), generator=gen).numpy()
        window = torch.from_numpy(np.stack([data[i : i + L + 1] for i in ix]).astype(np.int64))
        loss = model(window[:, :-1], window[:, 1:].contiguous())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


@torch.no_grad()
def reference_bpc(model: ReferenceGPT, stream: TokenStream, L: int) -> float:
    """Bits per character over consecutive windows of L + 1 tokens (each token predicted once)."""
    data = torch.from_numpy(np.asarray(stream.tokens).astype(np.int64))
    n = (len(data) - 1) // L
    windows = data[: n * L + 1].unfold(0, L + 1, L)
    total = sum(model(w[:, :-1], w[:, 1:].contiguous()).item() * w[:, 1:].numel() for w in windows.split(64))
    return total / (n * L) / LN2 / stream.chars_per_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2200, help="the reference's training steps")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "best_recipe.json"))
    args = parser.parse_args()
    source = os.environ.get("ATTNLAB_TINYSTORIES")
    if not source:
        raise SystemExit("set ATTNLAB_TINYSTORIES to the TinyStories folder (../shared/data/tinystories)")
    chars = prepare_data(source, tokenizer="char")  # nanoGPT's char-level data
    torch.manual_seed(0)
    ref = ReferenceGPT(chars.tokenizer.n_vocab, 128, 128, 4, 4)
    ref_time = reference_train(ref, chars.train, args.steps, 4e-3, 16, 128)
    ref.eval()
    ref_bpc = reference_bpc(ref, chars.valid, 128)
    print(f"reference: {args.steps} steps in {ref_time:.0f} s, {ref_bpc:.3f} bits/char", file=sys.stderr, flush=True)
    rows = [{"side": "nanoGPT-style baby GPT", "train_time_s": ref_time, "steps": args.steps, "val_bpc": ref_bpc}]
    summary = {}
    for name, recipe in RECIPES.items():
        data = prepare_data(source, recipe["tokenizer"])  # bits per character compare across tokenizers
        bpc = {}
        for share in (1.0, 1 / 3):
            with tempfile.TemporaryDirectory() as out:
                result = run.start(
                    out,
                    data=data,
                    preset="small",
                    config=recipe["config"],
                    **recipe["train"],
                    max_time=ref_time * share,
                    eval_every=10**9,
                    final_eval_chars=10**9,
                )
            bpc[share] = result.final.bpc
            rows.append(
                {
                    "side": f"attnlab best ({recipe['tokenizer']}), {share:.0%} of the reference's time",
                    "recipe": name,
                    "train_time_s": result.train_time_s,
                    "steps": result.steps,
                    "val_bpc": result.final.bpc,
                }
            )
            print(f"{rows[-1]['side']}: {result.final.bpc:.3f} bits/char", file=sys.stderr, flush=True)
        summary[name] = {
            "below_reference_at_its_time": ref_bpc - bpc[1.0],
            "reaches_reference_in_a_third": bpc[1 / 3] <= ref_bpc,
        }
    out = {
        "command": " ".join(["python", "benchmarks/best_recipe.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}",
        "recipes": RECIPES,
        "rows": rows,
        "summary": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("| side | training time (s) | steps | val bits/char |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['side']} | {r['train_time_s']:.0f} | {r['steps']:,} | {r['val_bpc']:.3f} |")


if __name__ == "__main__":
    main()
