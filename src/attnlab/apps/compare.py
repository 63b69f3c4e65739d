"""`attnlab compare`: train variants of one model on the same data, seed and budget; tabulate and plot.

`--vary n_heads=1,2,4,8` gives one variant per value; several `--vary` options combine as a grid,
or, with `one_at_a_time`, each varies alone around the preset (ablations). Fields can move
together: `--vary n_heads:head_dim=1:128,2:64` keeps H x D fixed. Each variant trains in its own
folder under `DIR/runs/`; a sweep that is interrupted and started again skips the variants that
finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

from ..data.corpus import prepare_data
from ..errors import AttnlabError
from ..generate import generate_text
from ..models import Sampling, preset_config
from ..report import write_compare_report
from ..runtime.devices import resolve_device
from ..runtime.environment import notice
from ..runtime.files import read_json_lines
from ..training import run
from ..training.checkpoint import load_checkpoint
from ..training.train import TrainConfig, log_kind, log_rows

Variant = dict[str, str]


def parse_vary(spec: str) -> list[Variant]:
    """`n_heads=1,2` -> [{n_heads: 1}, {n_heads: 2}]; `a:b=1:2,3:4` -> [{a: 1, b: 2}, {a: 3, b: 4}]."""
    names, sep, values = spec.partition("=")
    fields = [f.strip() for f in names.split(":")]
    if not sep or not all(fields) or not values.strip():
        raise AttnlabError(f"--vary {spec!r}: expected FIELD=v1,v2 (or FIELD1:FIELD2=a1:b1,a2:b2)")
    if twice := next((f for i, f in enumerate(fields) if f in fields[:i]), None):
        raise AttnlabError(f"--vary {spec!r}: names {twice} twice; name each field once (FIELD1:FIELD2=a1:b1,a2:b2)")
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
    if not one_at_a_time:  # a grid: a field in two options would take one option's values, silently
        named: dict[str, str] = {}
        for spec, axis in zip(specs, axes, strict=True):
            for name in axis[0]:
                if name in named:
                    raise AttnlabError(
                        f"--vary {spec!r}: {name} is varied by --vary {named[name]!r} too; give all its values in "
                        f"one --vary {name}=v1,v2,... (or add --one-at-a-time to vary each option alone)"
                    )
                named[name] = spec
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


def _saved_settings(run_dir: Path) -> Any:
    """The settings a variant was started with (kept in its checkpoint's state), or None."""
    try:
        return json.loads((run_dir / "checkpoint" / "state.json").read_text(encoding="utf-8")).get("compare")
    except (OSError, ValueError, AttributeError):
        return None


def _finished(run_dir: Path, name: str, settings: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A variant's log rows if it finished with these `settings` (model, data, budget, seed, training
    fields); None if it must train (again), saying why when it had finished with other settings."""
    rows = read_json_lines(run_dir / "metrics.jsonl")
    if not rows or log_kind(rows[-1]) != "final":
        return None
    if (saved := _saved_settings(run_dir)) != settings:
        old = saved if isinstance(saved, dict) else {}
        changed = [f"{k} {old.get(k, '?')} -> {v}" for k, v in settings.items() if old.get(k) != v]
        notice(f"compare: {name} finished before with other settings ({'; '.join(changed)[:300]}); training it again")
        return None
    return rows


def run_compare(
    vary: list[str],
    data: str = "builtin",
    out: str | Path = "runs/compare",
    max_time: float | None = 60.0,
    steps: int | None = None,
    preset: str = "small",
    tokenizer: str | None = None,
    seed: int = 0,
    device: str = "auto",
    one_at_a_time: bool = False,
    prompt: str = "Once upon a time",
    train_overrides: dict[str, Any] | None = None,
    resume: bool = False,
    config: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train every variant; write DIR/results.json and DIR/report.html; return the results.

    The variants vary the `preset`'s config with its fields in `config` (`--set`) changed. A variant that
    finished before with the same settings is kept; one that did not starts again, or with `resume`
    continues from its checkpoint when it was started with the same settings.
    """
    out = Path(out)
    todo = variants(vary, one_at_a_time)
    if any("n_vocab" in v for v in todo):
        raise AttnlabError("--vary n_vocab: n_vocab follows the tokenizer; compare tokenizers in separate runs")
    if "n_vocab" in (config or {}):
        raise AttnlabError("--set n_vocab: n_vocab follows the tokenizer; drop --set n_vocab")
    base = preset_config(preset).with_overrides(config or {})
    configs = [base.with_overrides(v) for v in todo]  # validates every variant before any training
    fields = {"steps": steps, "max_time": max_time, "seed": seed, "device": device, **(train_overrides or {})}
    if max_time and "eval_every" not in fields:
        fields["eval_every_s"] = max_time / 10
    tcfg = TrainConfig(**fields)
    tcfg.validate()
    for cfg in configs:  # every variant fits before the first trains
        run.check_fits(cfg, training=True, batch_size=tcfg.batch_size, grad_accum=tcfg.grad_accum)
    prepared = prepare_data(data, tokenizer)
    sampling = Sampling(temperature=0.8, top_k=40, seed=seed)
    results, curves, samples = [], {}, {}
    done: dict[str, dict[str, Any]] = {}  # config -> result, so a variant equal to another trains once
    for variant, cfg in zip(todo, configs, strict=True):
        name, run_dir = slug(variant), out / "runs" / slug(variant)
        cfg = dataclasses.replace(cfg, n_vocab=prepared.tokenizer.n_vocab)
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        if key in done:
            notice(f"compare: {name} is the same model as {done[key]['name']}, not trained again")
            results.append({**done[key], "name": name, "variant": variant, "same_as": done[key]["name"]})
            continue
        # What a finished variant must share with this sweep to be kept (the device aside).
        settings = json.loads(
            json.dumps(
                {"model": cfg.to_dict(), "data": prepared.info(), **{k: v for k, v in fields.items() if k != "device"}}
            )
        )
        rows = _finished(run_dir, name, settings)
        if rows is None and resume and _saved_settings(run_dir) == settings:
            notice(f"compare: {name}, continued")
            model = run.resume(run_dir, data=prepared, desc=name, **fields).model
            rows = read_json_lines(run_dir / "metrics.jsonl")
        elif rows is None:
            if run_dir.exists():
                shutil.rmtree(run_dir)  # an unfinished or outdated variant starts again from scratch
            notice(f"compare: {name}")
            info = {"variant": variant, "compare": settings}
            result = run.start(run_dir, data=prepared, preset=preset, config=cfg, run_info=info, desc=name, **fields)
            model = result.model
            rows = read_json_lines(run_dir / "metrics.jsonl")
        else:
            notice(f"compare: {name} already finished, skipped")
            model = load_checkpoint(run_dir, device=resolve_device(device)).model
        final = log_rows(rows, "final")[-1]
        evals = log_rows(rows, "eval")
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
        curves[name] = evals
        samples[name] = generate_text(model, prepared.tokenizer, prompt, 160, sampling)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_compare_report(out, results, curves, samples, prompt, prepared.info())
    return results


def format_results(results: list[dict[str, Any]], out: str | Path) -> str:
    """The variants as a table, best validation bits per character first, and where the files are."""
    width = max(len(r["name"]) for r in results)
    lines = [f"{'variant':{width}}  {'params':>10}  {'tokens/s':>9}  {'val bpc':>7}  best step"]
    for r in sorted(results, key=lambda r: r["val_bpc"]):
        lines.append(
            f"{r['name']:{width}}  {r['params']:>10,}  {r['tokens_per_s']:>9,.0f}  {r['val_bpc']:>7.3f}  "
            f"{r['best_step']:>9,}"
        )
    lines.append(f"results: {Path(out) / 'results.json'}\nreport: {Path(out) / 'report.html'}")
    return "\n".join(lines)
