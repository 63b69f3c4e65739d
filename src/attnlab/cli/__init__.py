"""`attnlab <verb>`: the command line. Each verb parses its flags, calls one library function and prints.

- `options`: the parser, value types and the flags several verbs share (`add_flags`, `command`);
- `training`: lab, train, compare, eval;  `inspecting`: generate, trace, attention, embeddings, next,
  lens, params;  `circuits`: patch, attribute, heads;  `seq2seq`: seq2seq show / train / eval /
  translate;  `serving`: serve;  `exercises`: notebook, check;  `tools`: bench, prepare, export, info;
- here: `build_parser` (the verbs, in the order --help lists them), the output paths checked before any
  work (`OUTPUTS`), and `main`, which turns every failure into one line and an exit status.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..errors import AttnlabError
from . import circuits, exercises, inspecting, seq2seq, serving, tools, training
from .options import EXIT_BAD_INPUT, Parser, one_line

DESCRIPTION = "`attnlab <verb>`: a thin command line over the library. Bad input: one line on stderr, exit 2."
EXIT_INTERRUPTED = 130
EXIT_DIVERGED = 1  # the run itself failed (a loss that is not a number), not its input

VERBS = (  # each adds its verb to the parser; --help lists them in this order
    training.add_lab,
    training.add_train,
    inspecting.add_generate,
    training.add_eval,
    inspecting.add_trace,
    inspecting.add_attention,
    inspecting.add_embeddings,
    inspecting.add_next,
    inspecting.add_lens,
    inspecting.add_params,
    circuits.add_patch,
    circuits.add_attribute,
    circuits.add_heads,
    training.add_compare,
    tools.add_bench,
    tools.add_prepare,
    tools.add_info,
    serving.add_serve,
    exercises.add_notebook,
    exercises.add_check,
    tools.add_export,
    seq2seq.add_seq2seq,
)

# Each verb's output paths and what they must be: checked before any work, so a bad path costs nothing.
OUTPUTS = {
    "train": [("out", "dir")],
    "lab": [("out", "dir")],
    "compare": [("out", "dir")],
    "attention": [("out", "picture"), ("html", "file")],
    "embeddings": [("out", "picture")],
    "patch": [("out", "picture")],
    "attribute": [("out", "picture")],
    "heads": [("out", "picture")],
    "bench": [("out", "file")],
    "prepare": [("out", "file")],
    "export": [("hf", "dir")],
    "notebook": [("out", "dir")],
    "seq2seq": [("out", "dir")],
    "check": [("report", "file")],
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="attnlab", description=DESCRIPTION)
    verbs = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in VERBS:
        add(verbs)
    return parser


def _check_outputs(args: argparse.Namespace) -> None:
    from ..data.corpus import SOURCES_HELP
    from ..runtime.files import check_output

    data = getattr(args, "data", None)
    if data is not None and not data.strip():
        raise AttnlabError(f"--data is empty; give one of: {SOURCES_HELP}")
    for attr, kind in OUTPUTS.get(args.command, []):
        value = getattr(args, attr, None)
        if value is not None:
            setattr(args, attr, str(check_output(value, f"--{attr}", kind)))


def main(argv: list[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # from here on Ctrl-C is caught below
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before a verb runs (reading the arguments, loading a module)
        print("attnlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    from ..runtime.threads import use_threads
    from ..training.train import TrainingDiverged, TrainingInterrupted

    args = build_parser().parse_args(argv)
    try:
        _check_outputs(args)
        if args.threads is not None:
            use_threads(args.threads)
        return args.func(args)
    except AttnlabError as e:
        print(one_line(f"attnlab {args.command}: error: {e}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as e:
        print(one_line(f"attnlab {args.command}: error: {e}"), file=sys.stderr)
        return EXIT_DIVERGED
    except TrainingInterrupted as e:
        print(one_line(f"attnlab {args.command}: {e}"), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"attnlab {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


__all__ = ["OUTPUTS", "build_parser", "main"]
