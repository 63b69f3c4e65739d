"""Training tokens/s at nanoGPT's CPU "baby GPT" shape: attnlab against a nanoGPT-style reference.

The shape of nanoGPT's README CPU example: 4 layers, 4 heads, emb 128, MLP 512, context 64, batch 12,
fp32, dropout 0, no biases, char-level TinyStories (0.80M parameters). Both sides train the same
shape on the same text:
- `reference`: `ReferenceGPT` and `reference_steps` below follow nanoGPT's model.py and train.py
  (one c_attn matmul for q, k, v; exact GELU; bias-free LayerNorm; tied head; a np.memmap batch per
  step stacked from per-row slices; AdamW betas (0.9, 0.99), weight decay 0.1 on matrices, gradient
  clipping 1.0). Its tokens/s here is the check that it stands in for the original, whose figure on
  these 2 cores is 12,000-14,000 tokens/s.
- `attnlab`: `attnlab.training.train.train` itself (batches, AdamW, clipping, logging) on a `TransformerLM`
  of that shape, twice: with the reference's architecture (GELU MLP, no biases, learned positions),
  and with the `small` preset's blocks (ReLU MLP, biases).
Rounds alternate reference / attnlab (this CPU changes speed by up to 2x from minute to minute);
the table reports medians over rounds and the ratio of the medians.

    ATTNLAB_TINYSTORIES=../shared/data/tinystories python benchmarks/baby_gpt.py [--rounds 5] [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnlab.data.corpus import prepare_data
from attnlab.models import build_model, preset_config
from attnlab.training.train import TrainConfig, train

SHAPE = dict(n_layers=4, n_heads=4, emb_dim=128, n_hidden=512, max_len=64)
BATCH = 12


class ReferenceBlock(nn.Module):
    def __init__(self, C: int, H: int) -> None:
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C, bias=False)
        self.c_attn = nn.Linear(C, 3 * C, bias=False)
        self.c_proj = nn.Linear(C, C, bias=False)
        self.ln_2 = nn.LayerNorm(C, bias=False)
        self.c_fc = nn.Linear(C, 4 * C, bias=False)
        self.mlp_proj = nn.Linear(4 * C, C, bias=False)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        B, L, C = x_BLC.shape
        q, k, v = self.c_attn(self.ln_1(x_BLC)).split(C, dim=2)
        q_BHLD, k_BHLD, v_BHLD = (t.view(B, L, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        z_BHLD = F.scaled_dot_product_attention(q_BHLD, k_BHLD, v_BHLD, is_causal=True)
        x_BLC = x_BLC + self.c_proj(z_BHLD.transpose(1, 2).contiguous().view(B, L, C))
        return x_BLC + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x_BLC))))


class ReferenceGPT(nn.Module):
    def __init__(self, n_vocab: int, L: int, C: int, H: int, n_layers: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(n_vocab, C), nn.Embedding(L, C)
        self.h = nn.ModuleList(ReferenceBlock(C, H) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(C, bias=False)
        self.lm_head = nn.Linear(C, n_vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx_BL: torch.Tensor, targets_BL: torch.Tensor) -> torch.Tensor:
        x_BLC = self.wte(idx_BL) + self.wpe(torch.arange(idx_BL.shape[1]))
        for block in self.h:
            x_BLC = block(x_BLC)
        logits_BLV = self.lm_head(self.ln_f(x_BLC))
        return F.cross_entropy(logits_BLV.view(-1, logits_BLV.size(-1)), targets_BL.view(-1), ignore_index=-1)


def reference_steps(model: ReferenceGPT, bin_path: Path, steps: int, seed: int) -> float:
    """nanoGPT's training loop for `steps` steps; returns tokens/s."""
    torch.manual_seed(seed)
    L = model.wpe.num_embeddings
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.99),
    )

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        data = np.memmap(bin_path, dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - L, (BATCH,))
        x = torch.stack([torch.from_numpy(data[i : i + L].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + L].astype(np.int64)) for i in ix])
        return x, y

    t0 = time.perf_counter()
    x, y = get_batch()
    for _ in range(steps):
        loss = model(x, y)
        x, y = get_batch()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
    return steps * BATCH * L / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150, help="training steps per side and round")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "baby_gpt.json"))
    args = parser.parse_args()
    source = os.environ.get("ATTNLAB_TINYSTORIES")
    if not source:
        raise SystemExit("set ATTNLAB_TINYSTORIES to the TinyStories folder (../shared/data/tinystories)")
    prepared = prepare_data(source, tokenizer="char")
    n_vocab = prepared.tokenizer.n_vocab
    tmp = Path(tempfile.mkdtemp())
    bin_path = tmp / "train.bin"
    np.asarray(prepared.train.tokens, dtype=np.uint16).tofile(bin_path)

    configs = {
        # the reference's architecture: exact GELU aside (attnlab's is the tanh form), the same model
        "attnlab, reference architecture": preset_config(
            "small", n_vocab=n_vocab, **SHAPE, head_dim=32, positions="learned", mlp="gelu", bias=False, norm_bias=False
        ),
        # attnlab's own choices at that shape: the `small` preset's ReLU MLP (the lab's) and biases
        "attnlab, small preset blocks": preset_config("small", n_vocab=n_vocab, **SHAPE, head_dim=32),
    }

    def attnlab_round(name: str, r: int) -> float:
        torch.manual_seed(r)
        model = build_model(configs[name])
        tcfg = TrainConfig(steps=args.steps, batch_size=BATCH, eval_every=10**9, final_eval_chars=2_000, seed=r)
        return train(model, prepared.tokenizer, prepared.train, prepared.valid, tcfg, tmp / f"run{r}").tokens_per_s

    def reference_round(r: int) -> float:
        torch.manual_seed(r)
        model = ReferenceGPT(n_vocab, SHAPE["max_len"], SHAPE["emb_dim"], SHAPE["n_heads"], SHAPE["n_layers"])
        return reference_steps(model, bin_path, args.steps, r)

    params = {name: build_model(cfg).num_params() for name, cfg in configs.items()}
    params["reference"] = sum(p.numel() for p in ReferenceGPT(n_vocab, 64, 128, 4, 4).parameters())
    assert params["reference"] == params["attnlab, reference architecture"], params
    for name in configs:  # warm-up: first-touch allocations, thread pools
        attnlab_round(name, -1)
    reference_round(-1)
    tok_s: dict[str, list[float]] = {"reference": [], **{name: [] for name in configs}}
    for r in range(args.rounds):
        tok_s["reference"].append(reference_round(r))
        for name in configs:
            tok_s[name].append(attnlab_round(name, r))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in tok_s.items()) + " tokens/s")
    med = {k: statistics.median(v) for k, v in tok_s.items()}
    result = {
        "shape": {**SHAPE, "batch": BATCH, "n_vocab": n_vocab},
        "params": params,
        "steps_per_round": args.steps,
        "tokens_per_s": tok_s,
        "median_tokens_per_s": med,
        "ratio_to_reference": {k: med[k] / med["reference"] for k in med},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n| side | params | median tokens/s | ratio to reference |\n|---|---:|---:|---:|")
    for k in tok_s:
        print(f"| {k} | {params[k]:,} | {med[k]:,.0f} | {result['ratio_to_reference'][k]:.2f}x |")


if __name__ == "__main__":
    main()
