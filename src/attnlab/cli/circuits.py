"""`attnlab patch`, `attribute`, `heads`: which parts of a trained model make a prediction
(`attnlab.inspect.circuit_views`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..runtime.environment import notice
from .options import Verbs, add_subject, command, positive, subject


def _out(args: argparse.Namespace) -> Path | None:
    return Path(args.out) if args.out else None


def _wrote(args: argparse.Namespace) -> None:
    if args.out:
        notice(f"wrote {args.out}")


def cmd_patch(args: argparse.Namespace) -> int:
    from ..inspect.circuit_views import format_patch, patch_view

    view = patch_view(
        subject(args),
        args.clean,
        args.corrupt,
        args.answer,
        args.wrong,
        args.over,
        _out(args),
        args.attribution,
        args.batch,
    )
    print(json.dumps(view) if args.format == "json" else format_patch(view))
    _wrote(args)
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    from ..inspect.circuit_views import attribution_view, format_attribution

    view = attribution_view(subject(args), args.prompt, args.answer, args.wrong, _out(args))
    print(json.dumps(view) if args.format == "json" else format_attribution(view))
    _wrote(args)
    return 0


def cmd_heads(args: argparse.Namespace) -> int:
    from ..inspect.circuit_views import format_heads, heads_view

    view = heads_view(subject(args), args.data, _out(args), args.half, args.batch)
    print(json.dumps(view) if args.format == "json" else format_heads(view))
    _wrote(args)
    return 0


def _answer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answer", required=True, metavar="TOK", help="the right next token (one token)")
    p.add_argument(
        "--wrong", default=None, metavar="TOK", help="a wrong next token: measure logit(answer) - logit(wrong)"
    )
    p.add_argument("--out", default=None, metavar="PIC.png", help="the picture to write")
    p.add_argument("--format", choices=("text", "json"), default="text")


def add_patch(verbs: Verbs) -> None:
    p = verbs.add_parser("patch", help="activation patching: copy parts of a clean run into a corrupted one")
    add_subject(p, prompt=False)
    p.add_argument("--clean", required=True, metavar="TEXT", help="the prompt the model gets right")
    p.add_argument("--corrupt", required=True, metavar="TEXT", help="the same number of tokens, changed")
    _answer(p)
    p.add_argument(
        "--over",
        choices=("resid", "heads", "head-positions"),
        default="resid",
        help="resid: layer x position (default); heads: layer x head; head-positions: layer x head x position",
    )
    p.add_argument(
        "--attribution", action="store_true", help="also attribution patching's estimate and how well it agrees"
    )
    p.add_argument("--batch", type=positive, default=32, help="patched runs per forward (default 32)")
    command(p, cmd_patch)


def add_attribute(verbs: Verbs) -> None:
    p = verbs.add_parser("attribute", help="direct logit attribution: what each head and MLP writes into a prediction")
    add_subject(p)
    _answer(p)
    command(p, cmd_attribute)


def add_heads(verbs: Verbs) -> None:
    p = verbs.add_parser("heads", help="previous-token, duplicate-token and induction scores of every head")
    add_subject(p, prompt=False)
    p.add_argument("--data", default=None, help="the text to score on (default: the run's own; its validation split)")
    p.add_argument("--half", type=positive, default=None, help="repeated random tokens: the length of each half")
    p.add_argument("--batch", type=positive, default=8, help="sequences of each kind (default 8)")
    p.add_argument("--out", default=None, metavar="PIC.png", help="the picture to write")
    p.add_argument("--format", choices=("text", "json"), default="text")
    command(p, cmd_heads)
