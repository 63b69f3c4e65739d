"""`attnlab bench`, `prepare`, `export`, `info`: speed, token files, Hugging Face models, this machine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import Verbs, command, finite


def cmd_bench(args: argparse.Namespace) -> int:
    from ..apps.bench import COMPILE_MODES, markdown_table, run_bench

    log = (lambda msg: print(msg, file=sys.stderr)) if args.format == "json" else print
    result = run_bench(
        preset=args.preset,
        devices=[args.device] if args.device else None,
        compile_modes=COMPILE_MODES[args.compile],
        dtypes=tuple(args.dtypes.split(",")),
        batch_size=args.batch_size,
        budget_s=args.budget,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        gen_max_len=args.gen_max_len,
        log=log,
        out=args.out,  # checked before the benchmark ran (`_check_outputs`)
    )
    print(json.dumps(result) if args.format == "json" else "\n" + markdown_table(result))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..data.token_files import prepare_token_files

    meta = prepare_token_files(args.source, args.out, args.tokenizer)
    for split in ("train", "valid"):
        part, where = meta[split], Path(args.out).parent / meta[split]["file"]
        print(f"{split}: {part['tokens']:,} tokens ({part['chars']:,} characters) in {where}")
    print(f"train with: attnlab train --data {args.out} ...")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..interop import export_hf

    hf = export_hf(args.checkpoint, args.hf)
    print(f"wrote {args.hf} ({type(hf).__name__}); load it with transformers' from_pretrained")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..runtime.environment import environment, format_environment

    info = environment()
    print(json.dumps(info) if args.format == "json" else format_environment(info))
    return 0


def add_bench(verbs: Verbs) -> None:
    p = verbs.add_parser("bench", help="training and generation speed: eager vs compiled, fp32 vs bf16, KV cache")
    p.add_argument("--preset", default="small")
    p.add_argument("--device", default=None, help="one device (default: every available one)")
    p.add_argument("--compile", choices=("both", "off", "on"), default="both", help="eager and/or torch.compile")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--budget", type=finite, default=5.0, help="seconds of timed steps per training row")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--gen-max-len", type=int, default=256, help="context length of the generation rows")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", default=None, help="also write JSON here (and a Markdown table beside it)")
    command(p, cmd_bench)


def add_prepare(verbs: Verbs) -> None:
    p = verbs.add_parser("prepare", help="tokenize a corpus once into memory-mapped token files (resumable)")
    p.add_argument("source", metavar="SRC", help="a .txt file, a folder with train.txt (+ valid.txt), tinystories...")
    p.add_argument("--out", required=True, metavar="FILE.bin", help="train tokens; FILE.valid.bin and FILE.json beside")
    p.add_argument("--tokenizer", default="bytes", help="bytes (default) | codepoint | char | bpe:N")
    command(p, cmd_prepare)


def add_info(verbs: Verbs) -> None:
    p = verbs.add_parser("info", help="versions, devices, threads and folders that attnlab uses here")
    p.add_argument("--format", choices=("text", "json"), default="text")
    command(p, cmd_info)


def add_export(verbs: Verbs) -> None:
    p = verbs.add_parser("export", help="write a checkpoint as a Hugging Face transformers model folder")
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder")
    p.add_argument("--hf", required=True, metavar="OUT", help="the folder to write (GPT-2 or Llama format)")
    command(p, cmd_export)
