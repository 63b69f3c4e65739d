"""`attnlab compare`: train variants of one model on the same data, seed and budget; tabulate and plot.

`--vary n_heads=1,2,4,8` gives one variant per value; several `--vary` options combine as a grid,
or, with `one_at_a_time`, each varies alone around the preset (ablations). Fields can move
together: `--vary n_heads:head_dim=1:128,2:64` keeps H x D fixed. Each variant trains in its own
folder under `DIR/runs/`; a sweep that is interrupted and started again skips the variants that
finished.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from .data import check_length, prepare_data
from .errors import AttnlabError
from .generate import generate_text
from .models import ModelConfig, build_model, preset_config
from .runtime import notice, resolve_device
from .train import TrainConfig, train

Variant = dict[str, str]


def parse_vary(spec: str) -> list[Variant]:
    """`n_heads=1,2` -> [{n_heads: 1}, {n_heads: 2}]; `a:b=1:2,3:4` -> [{a: 1, b: 2}, {a: 3, b: 4}]."""
    names, sep, values = spec.partition("=")
    fields = [f.strip() for f in names.split(":")]
    if not sep or not all(fields) or not values.strip():
        raise AttnlabError(f"--vary {spec!r}: expected FIELD=v1,v2 (or FIELD1:FIELD2=a1:b1,a2:b2)")
    out = []
    for value in values.split(","):
        parts = value.strip().split(":")
        if len(parts) != len(fields):
            raise AttnlabError(f"--vary {spec!r}: {value!r} has {len(parts)} values for {len(fields)} fields")
        out.append(dict(zip(fields, parts, strict=True)))
    return out


def variants(specs: list[str], one_at_a_time: bool = False) -> list[Variant]:
    """The variants a list of `--vary` options stands for (grid product, or each option alone)."""
    axes = [parse_vary(s) for s in specs]
    if not axes:
        raise AttnlabError("give at least one --vary FIELD=v1,v2")
    if one_at_a_time:
        seen, out = set(), []
        for axis in axes:
            for v in axis:
                if (key := json.dumps(v, sort_keys=True)) not in seen:
                    seen.add(key)
                    out.append(v)
        return out
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


def slug(variant: Variant) -> str:
    return ",".join(f"{k}={v}" for k, v in variant.items()).replace("/", "_")


def _finished(run_dir: Path) -> list[dict[str, Any]] | None:
    log = run_dir / "metrics.jsonl"
    if not log.exists():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return rows if rows and rows[-1].get("final") else None


def run_compare(
    vary: list[str],
    data: str = "builtin",
    out: str | Path = "runs/compare",
    max_time: float | None = 60.0,
    steps: int | None = None,
    preset: str = "small",
    tokenizer: str = "bytes",
    seed: int = 0,
    device: str = "auto",
    one_at_a_time: bool = False,
    prompt: str = "Once upon a time",
    train_overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train every variant; write DIR/results.json and DIR/report.html; return the results."""
    out = Path(out)
    todo = variants(vary, one_at_a_time)
    base = preset_config(preset)
    configs = [base.with_overrides(v) for v in todo]  # validates every variant before any training
    TrainConfig(steps=steps, max_time=max_time, **(train_overrides or {})).validate()
    device = resolve_device(device)
    prepared = prepare_data(data, tokenizer)
    results, curves, samples = [], {}, {}
    done: dict[str, dict[str, Any]] = {}  # config -> result, so a variant equal to another trains once
    for variant, cfg in zip(todo, configs, strict=True):
        name, run_dir = slug(variant), out / "runs" / slug(variant)
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "n_vocab": prepared.tokenizer.n_vocab})
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        if key in done:
            notice(f"compare: {name} is the same model as {done[key]['name']}, not trained again")
            results.append({**done[key], "name": name, "variant": variant, "same_as": done[key]["name"]})
            continue
        check_length(prepared.train, cfg.max_len, "the training split")
        torch.manual_seed(seed)
        model = build_model(cfg).to(device)
        rows = _finished(run_dir)
        if rows is None:
            if run_dir.exists():
                shutil.rmtree(run_dir)  # an unfinished variant starts again from scratch
            tcfg = TrainConfig(steps=steps, max_time=max_time, seed=seed, device=device, **(train_overrides or {}))
            if max_time and "eval_every" not in (train_overrides or {}):
                tcfg.eval_every_s = max_time / 10
            notice(f"compare: {name} ({model.num_params():,} parameters)")
            train(
                model,
                prepared.tokenizer,
                prepared.train,
                prepared.valid,
                tcfg,
                run_dir,
                run_info={"data": prepared.info(), "variant": variant},
                desc=name,
            )
            rows = _finished(run_dir)
            assert rows is not None
        else:
            notice(f"compare: {name} already finished, skipped")
            from .checkpoint import load_checkpoint

            model = load_checkpoint(run_dir, device=device).model
        final = rows[-1]
        evals = [r for r in rows if "val_bpc" in r and not r.get("final")]
        best = min(evals, key=lambda r: r["val_bpc"]) if evals else final
        results.append(
            {
                "name": name,
                "variant": variant,
                "config": cfg.to_dict(),
                "params": model.num_params(),
                "val_bpc": final["val_bpc"],
                "val_loss": final["val_loss"],
                "tokens_per_s": final["tokens_per_s"],
                "steps": final["step"],
                "best_step": best["step"],
                "train_time_s": final["elapsed_s"],
            }
        )
        done[key] = results[-1]
        curves[name] = rows
        samples[name] = generate_text(model, prepared.tokenizer, prompt, 160, temperature=0.8, top_k=40, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_compare_report(out, results, curves, samples, prompt, prepared.info())
    return results


def plot_validation_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    fig = Figure(figsize=(10, 5), dpi=110, constrained_layout=True)
    ax = fig.subplots()
    for name, rows in curves.items():
        pts = [(r["elapsed_s"], r["val_bpc"]) for r in rows if "val_bpc" in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=name)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation bits per character")
    ax.set_title("validation curves (same data, seed and budget)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path


def write_compare_report(
    out: Path, results: list[dict], curves: dict, samples: dict, prompt: str, data: dict[str, Any]
) -> Path:
    png = plot_validation_curves(curves, out / "validation_curves.png")
    rows = "\n".join(
        f"<tr><td>{html.escape(r['name'])}</td><td class=num>{r['params']:,}</td>"
        f"<td class=num>{r['tokens_per_s']:,.0f}</td><td class=num>{r['val_bpc']:.3f}</td>"
        f"<td class=num>{r['best_step']:,}</td><td class=num>{r['steps']:,}</td></tr>"
        for r in sorted(results, key=lambda r: r["val_bpc"])
    )
    sample_html = "\n".join(
        f"<h3>{html.escape(name)}</h3><div class=sample><b>{html.escape(prompt)}</b>{html.escape(text)}</div>"
        for name, text in samples.items()
    )
    image = base64.b64encode(png.read_bytes()).decode()
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>attnlab compare</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; }}
td.num {{ text-align: right; }} img {{ max-width: 100%; }}
.sample {{ white-space: pre-wrap; font-family: monospace; background: #f8f8f8; padding: 0.5em; }}</style></head>
<body><h1>attnlab compare</h1>
<p>Data: <b>{html.escape(str(data["source"]))}</b>, {data["train_chars"]:,} training characters,
{data["val_chars"]:,} validation characters, tokenizer {html.escape(str(data["tokenizer"]))}.
Validation bits per character: final evaluation (whole validation split or its first million characters).</p>
<table><tr><th>variant</th><th>params</th><th>tokens/s</th><th>val bits/char</th><th>best step</th>
<th>steps</th></tr>
{rows}
</table>
<img src="data:image/png;base64,{image}" alt="validation curves">
<h2>Samples (temperature 0.8, top-k 40)</h2>
{sample_html}
</body></html>
"""
    (out / "report.html").write_text(page)
    return out / "report.html"
