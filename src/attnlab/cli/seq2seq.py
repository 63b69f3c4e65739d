"""`attnlab seq2seq show | train | eval | translate`: the encoder-decoder Transformer (`attnlab.training.seq2seq_run`).

A flag the language model's verbs share joins a verb here with `add_flags` (`options.FLAGS`), with its
settings changed where the encoder-decoder's differ: `add_flags(p, "--eval-every", "--resume")`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .options import Parser, Verbs, add_flags, command, finite, parse_sets, positive, training_fields


def cmd_seq2seq_show(args: argparse.Namespace) -> int:
    from ..data.tasks import show_pair

    print(show_pair(args.source, args.target, args.task, words=args.words))
    return 0


def cmd_seq2seq_train(args: argparse.Namespace) -> int:
    from ..runtime import distributed
    from ..training.seq2seq_run import resume_seq2seq, train_seq2seq

    fields = {**training_fields(args), "warmup_steps": args.warmup_steps}
    asked = {"task": args.task, "data": args.data, "preset": args.preset, "config": parse_sets(args.set)}
    if args.resume:  # the run's own task, model and smoothing; asking for others is refused, not ignored
        result = resume_seq2seq(args.out, same_as={**asked, "label_smoothing": args.label_smoothing}, **fields)
    else:
        asked["preset"] = args.preset or "seq2seq-small"
        result = train_seq2seq(args.out, **asked, label_smoothing=args.label_smoothing or 0.0, **fields)
    if distributed.is_main():
        print(f"checkpoint: {result.checkpoint}\nmetrics: {Path(args.out) / 'metrics.jsonl'}")
    return 0


def cmd_seq2seq_eval(args: argparse.Namespace) -> int:
    from ..training.seq2seq_run import evaluate_seq2seq

    result = evaluate_seq2seq(args.run, beam=args.beam, device=args.device)
    match, n = result["exact_match"], result["examples"]
    text = f"{result['task']}: exact match {match:.2%} over {n:,} test pairs (beam {args.beam})"
    print(json.dumps(result) if args.format == "json" else text)
    return 0


def cmd_seq2seq_translate(args: argparse.Namespace) -> int:
    from ..training.seq2seq_run import translate

    for text in translate(args.run, args.text, beam=args.beam, device=args.device):
        print(text)
    return 0


def add_seq2seq(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "seq2seq", help="the encoder-decoder Transformer (Vaswani et al. 2017) on source -> target tasks"
    )
    seq2seq = p.add_subparsers(dest="seq2seq_command", required=True, parser_class=Parser)
    for add in (_add_show, _add_train, _add_eval, _add_translate):
        add(seq2seq)


def _add_show(verbs: Verbs) -> None:
    p = verbs.add_parser("show", help="print how teacher forcing turns a (source, target) pair into what is trained")
    p.add_argument("source", nargs="?", help="the source text (or --task for one of a task's pairs)")
    p.add_argument("target", nargs="?", help="the target text")
    p.add_argument("--task", default=None, help="show a training pair of this task instead")
    p.add_argument("--words", action="store_true", help="words as the tokens (default: characters, as the tasks)")
    command(p, cmd_seq2seq_show)


def _add_train(verbs: Verbs) -> None:
    p = verbs.add_parser("train", help="train an encoder-decoder on a task or a source<TAB>target file")
    p.add_argument("--task", default=None, help="copy | reverse | sort | addition | numbers | dates")
    p.add_argument("--data", default=None, help="a text file of source<TAB>target lines (instead of --task)")
    p.add_argument("--out", required=True, help="run folder: checkpoint/ and metrics.jsonl go here")
    settings: dict[str, dict[str, Any]] = {
        "preset": {"help": "model sizes (default seq2seq-small)"},
        "batch_size": {"help": "pairs per step and process (default 64)", "type": int},
        "lr": {"help": "peak learning rate (default 1e-3; with noam a scale, 1e-3 the paper's)", "type": finite},
    }
    add_flags(p, "model", "training", "--resume", **settings)
    p.add_argument("--warmup-steps", type=positive, default=None, help="steps of warm-up (default 200)")
    p.add_argument("--label-smoothing", type=finite, default=None, help="the paper's is 0.1 (default 0)")
    command(p, cmd_seq2seq_train)


def _add_eval(verbs: Verbs) -> None:
    p = verbs.add_parser("eval", help="exact-match accuracy on the run's test split")
    p.add_argument("run", help="a run folder written by attnlab seq2seq train")
    p.add_argument("--beam", type=positive, default=1, help="beam width (1: greedy)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--device", default="auto")
    command(p, cmd_seq2seq_eval)


def _add_translate(verbs: Verbs) -> None:
    p = verbs.add_parser("translate", help="decode a source text with a trained encoder-decoder")
    p.add_argument("run", help="a run folder written by attnlab seq2seq train")
    p.add_argument("--text", required=True, action="append", help="a source (give several --text for several)")
    p.add_argument("--beam", type=positive, default=1, help="beam width (1: greedy)")
    p.add_argument("--device", default="auto")
    command(p, cmd_seq2seq_translate)
