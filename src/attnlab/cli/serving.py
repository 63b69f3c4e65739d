"""`attnlab serve`: the explorer of a run in a browser (`attnlab.explorer`)."""

from __future__ import annotations

import argparse

from .options import Verbs, command


def cmd_serve(args: argparse.Namespace) -> int:
    from ..explorer import serve

    serve(args.checkpoint, args.host, args.port, args.device, ready=lambda line: print(line, flush=True))
    return 0


def add_serve(verbs: Verbs) -> None:
    p = verbs.add_parser("serve", help="the explorer in a browser: attention, next tokens, lens, trace, generation")
    p.add_argument("checkpoint", help="a run folder or a checkpoint folder")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    command(p, cmd_serve)
