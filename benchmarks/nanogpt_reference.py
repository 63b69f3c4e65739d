"""A training step of `large` against karpathy/nanoGPT's own model and optimizer: the same architecture,
batch, dtype and compile setting, side by side in one process.

nanoGPT is not part of attnlab: `--nanogpt DIR` names a folder holding its `model.py`, at the commit
this was written against (3adf61e1, its last). `benchmarks/nanogpt/` (ignored by git) is the default;
make it from a clone or a mirror of github.com/karpathy/nanoGPT, and carry it to a GPU machine:

    mkdir -p benchmarks/nanogpt
    git --git-dir PATH/TO/nanoGPT/.git show 3adf61e1:model.py > benchmarks/nanogpt/model.py

The architecture is attnlab's `large` with nanoGPT's blocks on both sides: 12 layers of 12 heads of 64
on 768 channels, an MLP of 3,072 with GELU, learned positions, LayerNorm and linears with biases, the
head tied to the token embedding, a context of 512 and 256 token ids, dropout `--dropout` (0.1, as
`large`). A step is a forward, the cross-entropy on every position, a backward, clipping the gradients'
norm to 1 and an AdamW step (nanoGPT's `configure_optimizers`: fused on CUDA; attnlab's
`make_optimizer`). Rounds alternate the two (the order flips); tokens/s are medians; MFU counts
attnlab's `flops_per_token` for both against the best matmul rate measured here (as `attnlab bench`).

    python benchmarks/nanogpt_reference.py --device cuda --dtype bf16 --compile both \
        --out benchmarks/results/nanogpt_reference_cuda.json
    python benchmarks/nanogpt_reference.py --tiny --device cpu --dtype fp32 --compile off   # a check on CPU
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from machine import machine_state

from attnlab.apps.bench import _timed, peak_matmul_flops
from attnlab.inspect.params import flops_per_token
from attnlab.models import build_model, preset_config
from attnlab.runtime.devices import autocast_context, set_matmul_precision, synchronize
from attnlab.training.train import TrainConfig, make_optimizer

HERE = Path(__file__).parent


def _nanogpt(folder: Path) -> Any:
    """nanoGPT's model.py as a module, or one line saying how to get it."""
    path = folder / "model.py"
    if not path.is_file():
        sys.exit(f"no nanoGPT here: {path} is missing; make it as this script's docstring says")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _steps(args: argparse.Namespace, nanogpt: Any, compile_model: bool) -> dict[str, Any]:
    """The two models' step, each as a function of no arguments, on the same batch."""
    shape = dict(n_layers=2, n_heads=4, head_dim=32, emb_dim=128, n_hidden=512, max_len=64) if args.tiny else {}
    cfg = preset_config("large", mlp="gelu", positions="learned", dropout=args.dropout, **shape)
    torch.manual_seed(0)
    ours = build_model(cfg).to(args.device).train()
    theirs = nanogpt.GPT(
        nanogpt.GPTConfig(
            block_size=cfg.max_len,
            vocab_size=cfg.n_vocab,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_embd=cfg.emb_dim,
            dropout=args.dropout,
            bias=True,
        )
    ).to(args.device)
    device_type = args.device.split(":")[0]
    ours_opt = make_optimizer(ours, TrainConfig(steps=1, lr=6e-4, device=args.device), args.device)
    theirs_opt = theirs.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type)
    ours_fwd = torch.compile(ours) if compile_model else ours
    theirs_fwd = torch.compile(theirs) if compile_model else theirs
    x_BL = torch.randint(0, cfg.n_vocab, (args.batch_size, cfg.max_len), device=args.device)
    y_BL = torch.randint(0, cfg.n_vocab, (args.batch_size, cfg.max_len), device=args.device)

    def ours_step() -> None:
        with autocast_context(args.device, args.dtype):
            loss = F.cross_entropy(ours_fwd(x_BL).flatten(0, 1).float(), y_BL.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), 1.0)
        ours_opt.step()
        ours_opt.zero_grad(set_to_none=True)

    def theirs_step() -> None:
        with autocast_context(args.device, args.dtype):
            _, loss = theirs_fwd(x_BL, y_BL)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        theirs_opt.step()
        theirs_opt.zero_grad(set_to_none=True)

    params = {
        "attnlab": sum(p.numel() for p in ours.parameters()),
        "nanogpt": sum(p.numel() for p in theirs.parameters()),
    }
    return {"cfg": cfg, "steps": {"attnlab": ours_step, "nanogpt": theirs_step}, "params": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", type=Path, default=HERE / "nanogpt")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--compile", default="both", choices=("off", "on", "both"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds of timed steps per model per round")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer shape, to check the script on a CPU")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()
    nanogpt = _nanogpt(args.nanogpt)
    set_matmul_precision(args.device, True)  # as attnlab trains by default; nanoGPT's train.py turns it on too
    peak = max(peak_matmul_flops(args.device, dtype) for dtype in ("fp32", args.dtype))
    rows = []
    for compile_model in {"off": [False], "on": [True], "both": [False, True]}[args.compile]:
        built = _steps(args, nanogpt, compile_model)
        cfg, steps = built["cfg"], built["steps"]
        for name, step in steps.items():  # warm-up, and with compile the compilation itself
            t0 = time.perf_counter()
            for _ in range(2):
                step()
            synchronize(args.device)
            print(f"{name} compile={compile_model}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
        rates: dict[str, list[float]] = {name: [] for name in steps}
        for r in range(args.rounds):
            for name in list(steps) if r % 2 == 0 else list(steps)[::-1]:
                times = _timed(steps[name], args.device, 3, args.budget)
                rates[name].append(args.batch_size * cfg.max_len / statistics.median(times))
                print(f"round {r} {name} compile={compile_model}: {rates[name][-1]:,.0f} tokens/s", flush=True)
        for name, values in rates.items():
            tokens_per_s = statistics.median(values)
            rows.append(
                {
                    "model": name,
                    "compile": compile_model,
                    "dtype": args.dtype,
                    "params": built["params"][name],
                    "tokens_per_s": round(tokens_per_s, 1),
                    "mfu": round(tokens_per_s * flops_per_token(cfg)["train"] / peak, 4),
                }
            )
    result = {
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(args.device),
        "nanogpt": str(args.nanogpt),
        "batch_size": args.batch_size,
        "context": cfg.max_len,
        "tiny": args.tiny,
        "peak_matmul_flops": peak,
        "machine": machine_state(load),
        "rows": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
