"""`attnlab bench`: training and generation speed, and how close training gets to the machine's peak.

Training: tokens/s and ms/step for eager vs `torch.compile` and fp32 vs bf16 (autocast) on each
device; MFU = achieved FLOP/s (tokens/s x training FLOPs per token, from `attnlab params`) divided
by the device's peak, its best rate measured here with one large matmul per dtype. Generation:
tokens/s with and without the KV cache. All rows of one run are measured on the same machine state,
so their ratios are what to compare (this CPU's speed changes by up to 2x from one minute to the next).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import AttnlabError
from ..inspect.params import flops_per_token
from ..models import build_model, preset_config
from ..models.sampling import default_slide
from ..runtime.devices import DTYPES, autocast_context, available_devices, check_dtype, resolve_device, synchronize
from ..runtime.files import write_text_atomically
from ..training.run import check_fits
from ..training.train import TrainConfig, make_optimizer

COMPILE_MODES = {"both": (False, True), "off": (False,), "on": (True,)}  # `--compile`: eager and/or compiled


def _timed(fn: Callable[[], Any], device: str, min_repeats: int, budget_s: float) -> list[float]:
    """Seconds per call: at least `min_repeats` calls, more while under `budget_s`."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return times


def peak_matmul_flops(device: str, dtype: str = "fp32", n: int | None = None, budget_s: float = 2.0) -> float:
    """FLOP/s of an n x n matmul in `dtype` (best of several).

    n is 2048, or 512 for bf16/fp16 on CPU, where those matmuls usually run ~100x slower than fp32
    and 2048 would take seconds each.
    """
    if n is None:
        n = 512 if dtype != "fp32" and device == "cpu" else 2048
    a = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    (a @ b).sum().item()
    times = _timed(lambda: a @ b, device, 3, budget_s)
    return 2 * n**3 / min(times)


def bench_train(
    preset: str, device: str, compile_model: bool, dtype: str, batch_size: int, peak: float, budget_s: float
) -> dict[str, Any]:
    """Training tokens/s, ms/step and MFU against `peak`, the device's best matmul FLOP/s."""
    torch.manual_seed(0)
    cfg = preset_config(preset)
    model = build_model(cfg).to(device)
    tcfg = TrainConfig(steps=1, batch_size=batch_size, dtype=dtype, device=device)
    optimizer = make_optimizer(model, tcfg, device)
    forward = torch.compile(model) if compile_model else model
    x_BL = torch.randint(0, cfg.n_vocab, (batch_size, cfg.max_len), device=device)
    y_BL = torch.randint(0, cfg.n_vocab, (batch_size, cfg.max_len), device=device)

    def step() -> None:
        with autocast_context(device, dtype):
            loss = F.cross_entropy(forward(x_BL).flatten(0, 1).float(), y_BL.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    t0 = time.perf_counter()
    for _ in range(2):  # warm-up (and, with compile, the compilation itself)
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - t0
    times = _timed(step, device, 3, budget_s)
    sec = statistics.median(times)
    tokens_per_s = batch_size * cfg.max_len / sec
    achieved = tokens_per_s * flops_per_token(cfg)["train"]
    return {
        "device": device,
        "compile": compile_model,
        "dtype": dtype,
        "tokens_per_s": tokens_per_s,
        "ms_per_step": 1000 * sec,
        "mfu": achieved / peak,
        "achieved_flops": achieved,
        "steps_timed": len(times),
        "warmup_s": warmup_s,
        "batch_size": batch_size,
        "context": cfg.max_len,
    }


@torch.no_grad()
def bench_generate(
    preset: str,
    device: str,
    kv_cache: bool,
    prompt_len: int,
    new_tokens: int,
    max_len: int,
    compile_model: bool = False,
) -> dict[str, Any]:
    """Greedy generation tokens/s at batch 1, the preset's shape with context `max_len`.

    The warm-up is one whole generation of the same length, so that with `compile_model` every graph
    the run needs (prefill, decoding, a fresh cache after each window move) is compiled before timing.
    """
    torch.manual_seed(0)
    model = build_model(preset_config(preset, max_len=max_len)).to(device).eval()
    ids_BL = torch.randint(0, model.config.n_vocab, (1, prompt_len), device=device)
    t0 = time.perf_counter()
    model.generate(ids_BL, new_tokens if compile_model else 4, greedy=True, kv_cache=kv_cache, compile=compile_model)
    synchronize(device)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.generate(ids_BL, new_tokens, greedy=True, kv_cache=kv_cache, compile=compile_model)
    synchronize(device)
    sec = time.perf_counter() - t0
    return {
        "device": device,
        "kv_cache": kv_cache,
        "compile": compile_model,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "max_len": max_len,
        "slide": default_slide(max_len),
        "tokens_per_s": new_tokens / sec,
        "warmup_s": warmup_s,
    }


def run_bench(
    preset: str = "small",
    devices: list[str] | None = None,
    compile_modes: tuple[bool, ...] = (False, True),
    dtypes: tuple[str, ...] = ("fp32", "bf16"),
    batch_size: int = 16,
    budget_s: float = 5.0,
    prompt_len: int = 16,
    new_tokens: int = 500,
    gen_max_len: int = 256,
    log: Callable[[str], None] = print,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Every combination of device x compile x dtype for training, then generation with and without the cache.

    With `out`, the result is also written there as JSON, and as a Markdown table beside it (OUT.md),
    each whole or not at all."""
    devices = [resolve_device(d) for d in devices] if devices else available_devices()
    result: dict[str, Any] = {
        "preset": preset,
        "train": [],
        "generate": [],
        "peak_matmul_flops": {},
        "peak_matmul_flops_by_dtype": {},
    }
    if not 0 < prompt_len <= gen_max_len:
        raise AttnlabError(f"--prompt-len {prompt_len}: must be between 1 and --gen-max-len ({gen_max_len})")
    if new_tokens < 1:
        raise AttnlabError(f"--new-tokens {new_tokens}: must be >= 1")
    for dtype in dtypes:
        check_dtype(dtype, "--dtypes")
    TrainConfig(steps=1, batch_size=batch_size).validate()
    check_fits(preset_config(preset), training=True, batch_size=batch_size)  # before any model is built
    check_fits(preset_config(preset, max_len=gen_max_len), training=False)
    for device in devices:
        # MFU is against the device's best matmul rate in any dtype (as in the PaLM and nanoGPT papers'
        # use of a GPU's bf16 peak): an fp32 run on a GPU leaves its bf16 tensor cores idle, and its
        # MFU says so; on a CPU without bf16 units, fp32 is the best and bf16 runs read low. fp32 and
        # bf16 are always measured, so a row's MFU does not depend on which --dtypes were benched.
        peaks = {dtype: peak_matmul_flops(device, dtype) for dtype in dict.fromkeys(("fp32", "bf16", *dtypes))}
        peak = max(peaks.values())
        result["peak_matmul_flops"][device] = peak
        result["peak_matmul_flops_by_dtype"][device] = peaks
        log(f"{device}: peak matmul " + ", ".join(f"{dt} {p / 1e9:,.1f}" for dt, p in peaks.items()) + " GFLOP/s")
        for compile_model in compile_modes:
            for dtype in dtypes:
                row = bench_train(preset, device, compile_model, dtype, batch_size, peak, budget_s)
                result["train"].append(row)
                log(
                    f"  train compile={compile_model} {dtype}: {row['tokens_per_s']:,.0f} tokens/s, "
                    f"{row['ms_per_step']:.1f} ms/step, MFU {100 * row['mfu']:.1f}%"
                )
        gen_modes = [(True, c) for c in compile_modes] + [(False, False)]  # the cache's step is what compiles
        for kv, compile_model in gen_modes:
            row = bench_generate(preset, device, kv, prompt_len, new_tokens, gen_max_len, compile_model)
            result["generate"].append(row)
            log(
                f"  generate kv_cache={kv} compile={compile_model}: {row['tokens_per_s']:,.0f} tokens/s "
                f"({prompt_len}-token prompt, {new_tokens} new tokens, max_len {gen_max_len})"
            )
    # The contract's single figure: the peak of the first (main) device.
    result["peak_matmul_flops_by_device"] = result["peak_matmul_flops"]
    result["peak_matmul_flops"] = result["peak_matmul_flops"][devices[0]]
    if out is not None:
        write_text_atomically(Path(out), json.dumps(result, indent=2))
        write_text_atomically(Path(out).with_suffix(".md"), markdown_table(result) + "\n")
    return result


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| device | compile | dtype | tokens/s | ms/step | MFU |", "|---|---|---|---:|---:|---:|"]
    for r in result["train"]:
        lines.append(
            f"| {r['device']} | {r['compile']} | {r['dtype']} | {r['tokens_per_s']:,.0f} | "
            f"{r['ms_per_step']:.1f} | {100 * r['mfu']:.1f}% |"
        )
    lines += [
        "",
        "| device | KV cache | compile | max_len | prompt | new tokens | tokens/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["generate"]:
        lines.append(
            f"| {r['device']} | {r['kv_cache']} | {r['compile']} | {r['max_len']} | {r['prompt_len']} | "
            f"{r['new_tokens']} | {r['tokens_per_s']:,.0f} |"
        )
    return "\n".join(lines)
