"""`attnlab lab`, `train`, `compare`, `eval`: training models and measuring them.

The three verbs that train take the same flags ("data", "model", "training": `options.GROUPS`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .options import Verbs, add_flags, command, parse_sets, training_fields


def _lab_options(args: argparse.Namespace, default_max_time: float) -> dict[str, Any]:
    """What `lab` and `compare` take from their flags; the default time budget applies without --steps."""
    fields = training_fields(args)
    for key in ("max_time", "steps", "seed", "device"):
        fields.pop(key, None)
    return {
        "data": args.data or "builtin",
        "out": args.out,
        "max_time": args.max_time if args.max_time is not None else (None if args.steps else default_max_time),
        "steps": args.steps,
        "tokenizer": args.tokenizer,  # None: bytes, or a token file's own (another is refused)
        "seed": args.seed or 0,
        "device": args.device or "auto",
        "train_overrides": fields,
        "resume": args.resume,
        "config": parse_sets(args.set),
    }


def cmd_lab(args: argparse.Namespace) -> int:
    from ..apps.lab import DEFAULT_MAX_TIME, run_lab, summary

    # --preset None: the recipe's model
    metrics = run_lab(**_lab_options(args, DEFAULT_MAX_TIME), preset=args.preset, recipe=args.recipe)
    print(summary(metrics, Path(args.out)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..runtime import distributed
    from ..training import run

    config = parse_sets(args.set)
    if args.resume:  # the run's own model and tokenizer; asking for others is refused, not ignored
        same = {"model": args.model, "preset": args.preset, "tokenizer": args.tokenizer, "config": config}
        run.resume(args.out, data=args.data, same_as=same, **training_fields(args))
    else:
        run.start(
            args.out,
            data=args.data or "builtin",
            tokenizer=args.tokenizer,
            model=args.model or "transformer",
            preset=args.preset or "small",
            config=config,
            **training_fields(args),
        )
    if distributed.is_main():
        print(f"checkpoint: {Path(args.out) / 'checkpoint'}\nmetrics: {Path(args.out) / 'metrics.jsonl'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..apps.compare import format_results, run_compare

    options = _lab_options(args, 60.0)
    results = run_compare(args.vary, one_at_a_time=args.one_at_a_time, preset=args.preset or "small", **options)
    print(format_results(results, args.out))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..inspect.views import evaluate_checkpoint, format_evaluation

    result = evaluate_checkpoint(args.checkpoint, args.data, args.split, args.device)
    print(json.dumps(result) if args.format == "json" else format_evaluation(result))
    return 0


def add_lab(verbs: Verbs) -> None:
    p = verbs.add_parser("lab", help="train the MLP and the Transformer on the same data and compare them")
    add_flags(p, "data", "model", "training", set={"help": "override a config field of the Transformer"})
    p.add_argument(
        "--recipe",
        default="fast",
        choices=("fast", "classic"),
        help="fast (default): Muon, rotary positions, 3 blocks; classic: AdamW, learned positions, 4 blocks",
    )
    p.add_argument("--out", default="runs/lab", help="run folder (default: runs/lab)")
    add_flags(p, "--resume", resume={"help": "continue the models of --out from their checkpoints"})
    command(p, cmd_lab)


def add_train(verbs: Verbs) -> None:
    p = verbs.add_parser("train", help="train one model, with checkpoints and a metrics log")
    p.add_argument("--model", choices=("mlp", "transformer"), default=None, help="transformer (default) | mlp")
    add_flags(p, "data", "model", "training")
    p.add_argument("--out", required=True, help="run folder: checkpoint/ and metrics.jsonl go here")
    add_flags(p, "--resume")
    command(p, cmd_train)


def add_compare(verbs: Verbs) -> None:
    p = verbs.add_parser("compare", help="train variants (--vary FIELD=v1,v2) with the same data, seed and budget")
    p.add_argument(
        "--vary",
        action="append",
        required=True,
        metavar="FIELD=v1,v2",
        help="a config field and its values; FIELD1:FIELD2=a1:b1,a2:b2 moves fields together",
    )
    p.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="vary each --vary alone around the preset instead of the grid of all combinations",
    )
    add_flags(p, "data", "model", "training", set={"help": "override a config field of the preset in every variant"})
    p.add_argument("--out", default="runs/compare", help="run folder (default: runs/compare)")
    resume = {"help": "continue an interrupted variant from its checkpoint (not from scratch)"}
    add_flags(p, "--resume", resume=resume)
    command(p, cmd_compare)


def add_eval(verbs: Verbs) -> None:
    p = verbs.add_parser("eval", help="bits per character of a checkpoint on any text")
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder")
    p.add_argument("--data", required=True, help="builtin | tinystories | PATH")
    p.add_argument(
        "--split",
        choices=("valid", "all"),
        default="valid",
        help="valid: the validation split; all: the whole text of --data",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--device", default="auto")
    command(p, cmd_eval)
