"""`attnlab generate`, `trace`, `attention`, `embeddings`, `next`, `lens`, `params`: using a trained model
and looking inside it (`attnlab.inspect.views`, `attnlab.inspect`)."""

from __future__ import annotations

import argparse
import json
import sys

from .options import Verbs, add_subject, command, finite, positive, seed, subject


def cmd_generate(args: argparse.Namespace) -> int:
    from ..generate import continue_prompts, stream_continuation
    from ..models.sampling import Sampling

    sampling = Sampling(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, seed=args.seed
    )
    options = {"kv_cache": not args.no_kv_cache, "slide": args.slide, "compile": args.compile}
    if args.prompts_file is not None:
        options["batch_size"] = args.batch_size
        given = (args.checkpoint, args.prompts_file, args.max_new_tokens, sampling, args.device)
        for prompt, text in continue_prompts(*given, **options):
            print(json.dumps({"prompt": prompt, "continuation": text}, ensure_ascii=False))
        return 0
    pieces = stream_continuation(args.checkpoint, args.prompt, args.max_new_tokens, sampling, args.device, **options)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from ..inspect.trace import format_trace
    from ..inspect.views import trace_prompt

    tr = trace_prompt(subject(args), args.prompt, args.target)
    print(json.dumps(tr.to_dict()) if args.format == "json" else format_trace(tr, args.format))
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from ..explorer import attention_files

    for path in attention_files(subject(args), args.prompt, args.out, args.html, args.head, args.target):
        print(path)
    return 0


def cmd_embeddings(args: argparse.Namespace) -> int:
    from ..inspect.views import embedding_view, format_embedding_view

    view = embedding_view(subject(args), args.out, args.neighbours, args.top)
    print(json.dumps(view) if args.format == "json" else format_embedding_view(view))
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    from ..inspect.lens import format_next_tokens
    from ..inspect.views import next_token_view

    view = next_token_view(subject(args), args.prompt, args.top, args.all_positions)
    print(json.dumps(view) if args.format == "json" else format_next_tokens(view, args.prompt))
    return 0


def cmd_lens(args: argparse.Namespace) -> int:
    from ..inspect.lens import format_lens
    from ..inspect.views import lens_view

    view = lens_view(subject(args), args.prompt, args.top)
    print(json.dumps(view) if args.format == "json" else format_lens(view["layers"], args.prompt))
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from ..inspect.params import format_params_table, params_report_for

    report = params_report_for(args.target, args.model, args.context)
    print(json.dumps(report) if args.format == "json" else format_params_table(report))
    return 0


# ---- the verbs' flags ---------------------------------------------------------------------------


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default=None,
        help="an encoder-decoder run: the target its decoder reads (default: its greedy translation of --prompt)",
    )


def add_generate(verbs: Verbs) -> None:
    p = verbs.add_parser("generate", help="continue a prompt with a trained model")
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt")
    given.add_argument(
        "--prompts-file",
        default=None,
        metavar="FILE",
        help="one prompt per line, decoded together; prints a JSON line per prompt: {prompt, continuation}",
    )
    p.add_argument("--batch-size", type=positive, default=64, help="with --prompts-file: prompts per batch (64)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=finite, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=finite, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--slide",
        type=int,
        default=None,
        help="tokens the context window moves once it is full (default max_len/4; 1 = always the last max_len)",
    )
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the whole window for every token (slower)")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the decoding step (faster after a ~10-30 s compile)"
    )
    p.add_argument("--device", default="auto")
    command(p, cmd_generate)


def add_trace(verbs: Verbs) -> None:
    p = verbs.add_parser("trace", help="walk a prompt through the model step by step, with every shape")
    add_subject(p)
    _add_target(p)
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    command(p, cmd_trace)


def add_attention(verbs: Verbs) -> None:
    p = verbs.add_parser("attention", help="attention weights as heatmaps (PNG), or the explorer as one HTML file")
    add_subject(p)
    _add_target(p)
    p.add_argument("--out", default=None, help="the PNG file to write")
    p.add_argument("--html", default=None, metavar="OUT.html", help="the explorer's views as one self-contained file")
    p.add_argument("--head", default=None, help="LAYER.HEAD: one large panel for that head, e.g. 0.2")
    command(p, cmd_attention)


def add_embeddings(verbs: Verbs) -> None:
    p = verbs.add_parser("embeddings", help="2-D PCA picture of the token embeddings and nearest neighbours")
    add_subject(p, prompt=False, top=5)
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument("--neighbours", default="aeiouAT.,! ", help="characters whose nearest neighbours to list")
    command(p, cmd_embeddings)


def add_next(verbs: Verbs) -> None:
    p = verbs.add_parser("next", help="the most likely next tokens after a prompt")
    add_subject(p, top=10)
    p.add_argument("--all-positions", action="store_true", help="also after every prefix of the prompt")
    command(p, cmd_next)


def add_lens(verbs: Verbs) -> None:
    p = verbs.add_parser("lens", help="logit lens: the next-token guess after each layer")
    add_subject(p, top=5)
    command(p, cmd_lens)


def add_params(verbs: Verbs) -> None:
    p = verbs.add_parser("params", help="parameters per component and FLOPs per token of a preset or checkpoint")
    p.add_argument("target", metavar="PRESET_OR_CKPT", help="a preset name (gpt2, gpt3-175b, small...) or a checkpoint")
    p.add_argument("--model", choices=("mlp", "transformer"), default="transformer", help="with a preset")
    p.add_argument("--context", type=positive, default=None, help="context length for the FLOPs (default: max_len)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    command(p, cmd_params)
