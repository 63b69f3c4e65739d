"""`attnlab <verb>`: a thin command line over the library. Bad input: one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import AttnlabError
from .optim import OPTIMIZERS, SCHEDULES

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_DIVERGED = 1  # the run itself failed (a loss that is not a number), not its input


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2), like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, one_line(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


def one_line(text: str) -> str:
    """A message on one line whatever the user typed into it: line breaks in echoed values are escaped."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _finite(text: str) -> float:
    """argparse type: a float that is a number (not nan or inf), so no run starts on one."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _integer(text: str, low: int, high: int | None, allowed: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < low or (high is not None and value >= high):
        raise argparse.ArgumentTypeError(f"{text} is not {allowed}")
    return value


def _seed(text: str) -> int:
    """argparse type: a seed torch and numpy both take."""
    return _integer(text, 0, 2**63, "between 0 and 2**63 - 1")


def _positive(text: str) -> int:
    """argparse type: a count of at least one."""
    return _integer(text, 1, None, ">= 1")


def _parse_sets(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AttnlabError(f"--set {pair!r}: expected key=value, e.g. --set n_heads=8")
        out[key.strip()] = value.strip()
    return out


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", default=None, help="builtin | tinystories | tinystories-full | PATH | FILE.bin (default: builtin)"
    )
    p.add_argument(
        "--tokenizer", default=None, help="bytes (default) | codepoint | char | bpe:N (byte-level BPE with N tokens)"
    )
    p.add_argument("--preset", default=None, help="model sizes: lab | small (default) | medium | large")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps")
    p.add_argument("--max-time", type=_finite, default=None, help="training budget in seconds (per model)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step and process (default 16)")
    p.add_argument("--grad-accum", type=int, default=None, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--lr", type=_finite, default=None, help="peak learning rate")
    p.add_argument(
        "--min-lr-ratio", type=_finite, default=None, help="the schedule ends at lr x this (default 0.1; 0 to 1)"
    )
    p.add_argument(
        "--embed-lr-ratio",
        type=_finite,
        default=None,
        help="the embeddings' (and an untied head's) learning rate as a multiple of lr (default 1)",
    )
    p.add_argument("--schedule", default=None, choices=SCHEDULES, help="cosine (default) | wsd: hold, then decay")
    p.add_argument("--eval-every", type=int, default=None, help="steps between evaluations and checkpoints")
    p.add_argument("--seed", type=_seed, default=None)
    p.add_argument("--device", default=None, help="auto (cuda, mps, cpu) | cpu | cuda | cuda:1 | mps")
    p.add_argument(
        "--dtype",
        default=None,
        choices=("fp32", "bf16", "fp16"),
        help="autocast precision (default fp32; bf16 is ~100x slower on CPUs without bf16 units)",
    )
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument(
        "--optimizer",
        default=None,
        choices=OPTIMIZERS,
        help="adamw (default) | muon: Muon for the hidden weight matrices, AdamW for the rest",
    )


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "steps",
        "max_time",
        "batch_size",
        "grad_accum",
        "lr",
        "min_lr_ratio",
        "embed_lr_ratio",
        "schedule",
        "eval_every",
        "seed",
        "device",
        "dtype",
        "compile",
        "optimizer",
    )
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _run_options(args: argparse.Namespace, default_max_time: float) -> dict[str, Any]:
    """The options `lab` and `compare` share; the default time budget applies when no --steps is given."""
    overrides = _train_overrides(args)
    for key in ("max_time", "steps", "seed", "device"):
        overrides.pop(key, None)
    return {
        "data": args.data or "builtin",
        "out": args.out,
        "max_time": args.max_time if args.max_time is not None else (None if args.steps else default_max_time),
        "steps": args.steps,
        "preset": args.preset or "small",
        "tokenizer": args.tokenizer,  # None: bytes, or a token file's own (another is refused)
        "seed": args.seed or 0,
        "device": args.device or "auto",
        "train_overrides": overrides,
        "resume": args.resume,
    }


def cmd_lab(args: argparse.Namespace) -> int:
    from .lab import DEFAULT_MAX_TIME, run_lab, summary

    options = {**_run_options(args, DEFAULT_MAX_TIME), "preset": args.preset}  # None: the recipe's model
    metrics = run_lab(**options, recipe=args.recipe)
    print(summary(metrics, Path(args.out)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed, run

    if args.resume:  # the run's own model and tokenizer; asking for others is refused, not ignored
        same = {
            "model": args.model,
            "preset": args.preset,
            "tokenizer": args.tokenizer,
            "config": _parse_sets(args.set),
        }
        run.resume(args.out, data=args.data, same_as=same, **_train_overrides(args))
    else:
        run.start(
            args.out,
            data=args.data or "builtin",
            tokenizer=args.tokenizer,
            model=args.model or "transformer",
            preset=args.preset or "small",
            config=_parse_sets(args.set),
            **_train_overrides(args),
        )
    if distributed.is_main():
        print(f"checkpoint: {Path(args.out) / 'checkpoint'}\nmetrics: {Path(args.out) / 'metrics.jsonl'}")
    return 0


def _checkpoint_with_tokenizer(path: str, device: str):  # noqa: ANN202 - a Checkpoint
    """A checkpoint whose tokenizer is saved with it: text in and out needs one."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, device=device)
    if ckpt.tokenizer is None:
        raise AttnlabError(
            f"{ckpt.path}: saved without a tokenizer; save it with one (save_checkpoint(path, model, tokenizer))"
        )
    return ckpt


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import encode_prompt
    from .models.sampling import Sampling, stream_tokens
    from .runtime import resolve_device

    sampling = Sampling(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, seed=args.seed
    )
    if args.max_new_tokens < 0:
        raise AttnlabError(f"--max-new-tokens {args.max_new_tokens}: must be >= 0")
    ckpt = _checkpoint_with_tokenizer(args.checkpoint, resolve_device(args.device))
    model, tokenizer = ckpt.model, ckpt.tokenizer
    ids, notices = encode_prompt(tokenizer, args.prompt, model.config.max_len)
    for line in notices:
        print(line, file=sys.stderr)
    device = next(model.parameters()).device
    decoder = tokenizer.stream_decoder()
    options = {"kv_cache": not args.no_kv_cache, "slide": args.slide, "compile": args.compile}
    for next_B1 in stream_tokens(model, torch.tensor([ids], device=device), args.max_new_tokens, sampling, **options):
        sys.stdout.write(decoder.feed(next_B1[0].tolist()))
        sys.stdout.flush()
    sys.stdout.write(decoder.flush() + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import encode_split, load_corpus, load_whole_text, prepare_data
    from .runtime import resolve_device
    from .train import evaluate

    ckpt = _checkpoint_with_tokenizer(args.checkpoint, resolve_device(args.device))
    if args.data.endswith(".bin"):  # token files: their validation split, made by their own tokenizer
        if args.split == "all":
            raise AttnlabError(
                f"--data {args.data}: token files are evaluated on their validation split; drop --split all"
            )
        prepared = prepare_data(args.data)
        if prepared.tokenizer.to_dict() != ckpt.tokenizer.to_dict():
            raise AttnlabError(
                f"--data {args.data}: made by the {prepared.tokenizer.name} tokenizer, not the model's "
                f"({ckpt.tokenizer.name}); prepare the text with --tokenizer {ckpt.tokenizer.name}"
            )
        stream = prepared.valid
    elif args.split == "all":
        stream = encode_split(load_whole_text(args.data), ckpt.tokenizer, args.data)
    else:
        stream = encode_split(load_corpus(args.data).valid, ckpt.tokenizer, f"{args.data} valid")
    result = evaluate(ckpt.model, stream)
    out = {
        "loss_nats_per_char": result.loss / stream.chars_per_token,
        "bpc": result.bpc,
        "chars": result.chars,
        "loss_nats_per_token": result.loss,
        "tokens": result.tokens,
        "checkpoint": str(ckpt.path),
        "data": args.data,
        "split": args.split,
    }
    if args.format == "json":
        print(json.dumps(out))
    else:
        print(
            f"{args.data} ({args.split}): {result.bpc:.4f} bits/char, {out['loss_nats_per_char']:.4f} nats/char, "
            f"{result.loss:.4f} nats/token over {result.chars:,} characters"
        )
    return 0


def _inspect_model(args: argparse.Namespace):  # noqa: ANN202 - (model, tokenizer)
    """The model to look inside: a checkpoint, or with --random an untrained model of a preset."""
    from .models import build_model, preset_config
    from .run import check_fits
    from .runtime import resolve_device
    from .tokenizers import ByteTokenizer

    if args.random == bool(args.checkpoint):
        raise AttnlabError("give a checkpoint, or --random --preset NAME for an untrained model (not both)")
    device = resolve_device(args.device)
    if args.checkpoint:
        ckpt = _checkpoint_with_tokenizer(args.checkpoint, device)
        return ckpt.model.eval(), ckpt.tokenizer
    torch.manual_seed(args.seed)
    tokenizer = ByteTokenizer()
    cfg = preset_config(args.preset or "lab", model=args.model, n_vocab=tokenizer.n_vocab)
    check_fits(cfg, training=False)
    return build_model(cfg).to(device).eval(), tokenizer


def _prompt_ids(tokenizer, prompt: str, max_len: int) -> list[int]:  # noqa: ANN001
    from .generate import encode_prompt

    ids, notices = encode_prompt(tokenizer, prompt, max_len)
    for line in notices:
        print(line, file=sys.stderr)
    return ids


def _need_transformer(model, what: str) -> None:  # noqa: ANN001
    if model.config.model != "transformer":
        raise AttnlabError(f"the MLP model has no {what}: use a transformer checkpoint or --model transformer")


def cmd_trace(args: argparse.Namespace) -> int:
    from .inspect.trace import format_trace, trace

    if not args.random and _is_seq2seq(args.checkpoint):
        return _seq2seq_trace(args)
    _no_target(args)
    model, tokenizer = _inspect_model(args)
    ids = _prompt_ids(tokenizer, args.prompt, model.config.max_len)
    tr = trace(model, ids, [tokenizer.token_str(i) for i in ids])
    print(json.dumps(tr.to_dict()) if args.format == "json" else format_trace(tr, args.format))
    return 0


def _no_target(args: argparse.Namespace) -> None:
    if args.target is not None:
        raise AttnlabError("--target is for encoder-decoder runs (attnlab seq2seq train); drop it for a language model")


def _parse_head(spec: str, model) -> tuple[int, int]:  # noqa: ANN001
    layer, sep, head = spec.partition(".")
    n_layers, n_heads = model.config.n_layers, model.config.n_heads
    if not (sep and layer.isdigit() and head.isdigit()) or int(layer) >= n_layers or int(head) >= n_heads:
        raise AttnlabError(
            f"unknown head {spec!r}: give LAYER.HEAD with layer 0-{n_layers - 1} and head 0-{n_heads - 1}"
        )
    return int(layer), int(head)


def cmd_attention(args: argparse.Namespace) -> int:
    from .inspect.pictures import attention_figure

    if not args.out and not args.html:
        raise AttnlabError("say what to write: --out PICTURE.png, --html PAGE.html, or both")
    if not args.random and _is_seq2seq(args.checkpoint):
        return _seq2seq_attention(args)
    _no_target(args)
    model, tokenizer = _inspect_model(args)
    if args.html:
        from .explorer.page import standalone_html
        from .runtime import write_text_atomically

        print(write_text_atomically(Path(args.html), standalone_html(model, tokenizer, args.prompt)))
    if args.out:
        _need_transformer(model, "attention")
        head = _parse_head(args.head, model) if args.head else None
        ids = _prompt_ids(tokenizer, args.prompt, model.config.max_len)
        device = next(model.parameters()).device
        with torch.no_grad():
            _, weights = model.forward_with_weights(torch.tensor([ids], device=device))
        out = attention_figure([w[0] for w in weights], [tokenizer.token_str(i) for i in ids], Path(args.out), head)
        print(out)
    return 0


def _is_seq2seq(path: str | None) -> bool:
    """Whether a run is an encoder-decoder, from its config alone (its loader checks the rest)."""
    from .checkpoint import read_config, resolve_checkpoint

    return path is not None and read_config(resolve_checkpoint(path))[0].model == "seq2seq"


def _seq2seq_pair(args: argparse.Namespace):  # noqa: ANN202 - (model, source tokens, decoder input tokens, ids)
    """An encoder-decoder run, --prompt as its source and what its decoder reads: <bos> and --target,
    or by default the model's greedy translation."""
    from .runtime import resolve_device
    from .seq2seq_run import load_seq2seq, source_and_reading

    run = load_seq2seq(args.checkpoint, resolve_device(args.device))
    src, tgt = source_and_reading(run, args.prompt, args.target)
    device = next(run.model.parameters()).device
    tokens = [run.vocab.token(i) for i in src], [run.vocab.token(i) for i in tgt]
    return run.model, *tokens, torch.tensor([src], device=device), torch.tensor([tgt], device=device)


def _seq2seq_trace(args: argparse.Namespace) -> int:
    from .inspect.trace import format_trace, trace_seq2seq

    model, sources, reads, src_BS, tgt_BL = _seq2seq_pair(args)
    tr = trace_seq2seq(model, src_BS[0].tolist(), tgt_BL[0].tolist(), sources, reads)
    print(json.dumps(tr.to_dict()) if args.format == "json" else format_trace(tr, args.format))
    return 0


def _seq2seq_attention(args: argparse.Namespace) -> int:
    """The encoder-decoder's three attentions for --prompt as the source and its greedy translation (or
    --target) as the target: OUT-encoder, OUT-decoder and OUT-cross pictures."""
    from .inspect.pictures import attention_figure
    from .models.seq2seq import attention_names

    if args.html or args.head:
        raise AttnlabError("an encoder-decoder run draws all its heads as pictures: drop --html and --head")
    model, sources, reads, src_BS, tgt_BL = _seq2seq_pair(args)
    _, cache = model.run_with_cache(src_BS, tgt_BL)
    out = Path(args.out)
    for kind, queries, keys, causal, what in (
        ("encoder", sources, sources, False, "encoder self-attention: every source position sees every other"),
        ("decoder", reads, reads, True, "decoder self-attention (causal): the target read so far"),
        ("cross", reads, sources, False, "cross-attention: where in the source each target position looks"),
    ):
        stack = model.encoder if kind == "encoder" else model.decoder
        weights = [cache[attention_names(kind, i)[3]][0] for i in range(len(stack))]
        path = out.with_name(f"{out.stem}-{kind}{out.suffix}")
        print(attention_figure(weights, queries, path, keys=keys, causal=causal, title=f"{what} ({args.prompt!r})"))
    return 0


def _lab_samples(run_dir: Path) -> dict[str, str]:
    """The samples `attnlab lab` wrote for this model (RUN/../metrics.json), prompt -> text; else {}."""
    try:
        lab = json.loads((run_dir.parent / "metrics.json").read_text(encoding="utf-8"))
        if run_dir.name not in lab.get("models", ("mlp", "transformer")):  # files before "models": these two
            return {}
        samples = lab[run_dir.name]["samples"]
        return {str(p): str(t) for p, t in zip(lab["prompts"], samples, strict=True)}
    except (OSError, ValueError, KeyError, TypeError):  # not a lab's model, or a file of another shape
        return {}


def _run_dir(checkpoint: Path) -> Path:
    """The run folder of a checkpoint folder (RUN/checkpoint), or the folder itself."""
    return checkpoint.parent if checkpoint.name == "checkpoint" else checkpoint


def _log(checkpoint: Path) -> list[dict]:
    """The run's metrics.jsonl rows (a half-written last line is skipped); the card takes the kind it draws."""
    from .runtime import read_json_lines

    return read_json_lines(_run_dir(checkpoint) / "metrics.jsonl")


def cmd_serve(args: argparse.Namespace) -> int:
    try:  # before the explorer's app, which imports FastAPI
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise AttnlabError("attnlab serve needs FastAPI and uvicorn: pip install 'attnlab[explorer]'") from None
    from .checkpoint import resolve_checkpoint
    from .explorer.app import create_app
    from .runtime import resolve_device

    if not 0 < args.port < 65536:
        raise AttnlabError(f"--port {args.port}: must be between 1 and 65535")
    if _is_seq2seq(args.checkpoint):  # the encoder-decoder's page: source, translation, three attentions
        from .explorer.app import create_seq2seq_app
        from .seq2seq_run import load_seq2seq

        run = load_seq2seq(args.checkpoint, resolve_device(args.device))
        path = resolve_checkpoint(args.checkpoint)
        app = create_seq2seq_app(run, _log(path))
    else:
        ckpt = _checkpoint_with_tokenizer(args.checkpoint, resolve_device(args.device))
        path = ckpt.path
        info = dict(ckpt.state.get("run", {}))
        info["samples"] = _lab_samples(_run_dir(path))
        app = create_app(ckpt.model.eval(), ckpt.tokenizer, {"info": info, "metrics": _log(path)})
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: serving on {args.host}: anyone who can reach this address can use the explorer", file=sys.stderr
        )
    print(f"attnlab explorer for {path}: http://{args.host}:{args.port}/  (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_embeddings(args: argparse.Namespace) -> int:
    from .inspect.pictures import displayable_tokens, embeddings_figure, nearest_neighbours

    model, tokenizer = _inspect_model(args)
    E_VC = model.embed.tok.weight.detach()
    out = embeddings_figure(E_VC, tokenizer, Path(args.out))
    shown = displayable_tokens(tokenizer)
    queries = [i for i in tokenizer.encode(args.neighbours) if i in set(shown)]
    table = nearest_neighbours(E_VC, tokenizer, queries, k=args.top, among=shown)
    if args.format == "json":
        print(json.dumps({"picture": str(out), "neighbours": table}))
    else:
        print(f"picture: {out}\nnearest neighbours by cosine similarity of the token embeddings:")
        for token, near in table.items():
            print(f"  {token!r:>6} -> " + "  ".join(f"{t!r} {s:.2f}" for t, s in near))
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    from .inspect.lens import next_tokens

    model, tokenizer = _inspect_model(args)
    ids = _prompt_ids(tokenizer, args.prompt, model.config.max_len)
    result = next_tokens(model, tokenizer, ids, args.top, args.all_positions)
    if args.format == "json":
        print(json.dumps(result))
        return 0
    print(f"next token after {args.prompt[-40:]!r}:")
    for row in result["next"]:
        print(f"  {row['token']!r:>8}  {row['prob']:.4f}  " + "#" * round(40 * row["prob"]))
    for pos in result.get("positions", []):
        top = "  ".join(f"{r['token']!r} {r['prob']:.2f}" for r in pos["top"][:5])
        print(f"  after {pos['position']:>3} {pos['token']!r:>6} (actual next {pos['actual_next']!r}): {top}")
    return 0


def cmd_lens(args: argparse.Namespace) -> int:
    from .inspect.lens import logit_lens

    model, tokenizer = _inspect_model(args)
    _need_transformer(model, "layers to read a logit lens from")
    ids = _prompt_ids(tokenizer, args.prompt, model.config.max_len)
    rows = logit_lens(model, tokenizer, ids, args.top)
    if args.format == "json":
        print(json.dumps({"tokens": [tokenizer.token_str(i) for i in ids], "layers": rows}))
        return 0
    print(f"next token after {args.prompt[-40:]!r}, read from the residual stream after each layer:")
    for row in rows:
        print(f"  {row['layer']:>14}: " + "  ".join(f"{r['token']!r} {r['prob']:.2f}" for r in row["top"]))
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from .checkpoint import check_checkpoint
    from .inspect.params import format_params_table, params_report
    from .models import PRESETS, preset_config

    if args.target in PRESETS:
        cfg = preset_config(args.target, model=args.model)
    else:
        try:
            cfg = check_checkpoint(args.target)[1]
        except AttnlabError as e:
            raise AttnlabError(
                f"{args.target!r} is not a preset ({', '.join(PRESETS)}); as a checkpoint: {e}"
            ) from None
    report = params_report(cfg, args.context)
    print(json.dumps(report) if args.format == "json" else format_params_table(report))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import run_compare

    results = run_compare(args.vary, one_at_a_time=args.one_at_a_time, **_run_options(args, 60.0))
    width = max(len(r["name"]) for r in results)
    print(f"{'variant':{width}}  {'params':>10}  {'tokens/s':>9}  {'val bpc':>7}  best step")
    for r in sorted(results, key=lambda r: r["val_bpc"]):
        print(
            f"{r['name']:{width}}  {r['params']:>10,}  {r['tokens_per_s']:>9,.0f}  {r['val_bpc']:>7.3f}  "
            f"{r['best_step']:>9,}"
        )
    print(f"results: {Path(args.out) / 'results.json'}\nreport: {Path(args.out) / 'report.html'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import markdown_table, run_bench

    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.compile]
    log = (lambda msg: print(msg, file=sys.stderr)) if args.format == "json" else print
    result = run_bench(
        preset=args.preset,
        devices=[args.device] if args.device else None,
        compile_modes=modes,
        dtypes=tuple(args.dtypes.split(",")),
        batch_size=args.batch_size,
        budget_s=args.budget,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        gen_max_len=args.gen_max_len,
        log=log,
    )
    if args.out:  # checked before the benchmark ran (_check_outputs); written whole or not at all
        from .runtime import write_text_atomically

        write_text_atomically(Path(args.out), json.dumps(result, indent=2))
        write_text_atomically(Path(args.out).with_suffix(".md"), markdown_table(result) + "\n")
    print(json.dumps(result) if args.format == "json" else "\n" + markdown_table(result))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare

    meta = prepare(args.source, args.out, args.tokenizer)
    for split in ("train", "valid"):
        part, where = meta[split], Path(args.out).parent / meta[split]["file"]
        print(f"{split}: {part['tokens']:,} tokens ({part['chars']:,} characters) in {where}")
    print(f"train with: attnlab train --data {args.out} ...")
    return 0


def cmd_seq2seq_show(args: argparse.Namespace) -> int:
    from .tasks import show_teacher_forcing, task_pairs

    if args.task is not None:
        if args.source is not None:
            raise AttnlabError("give a SOURCE and a TARGET, or --task NAME, not both")
        args.source, args.target = next(task_pairs(args.task, "train"))
    if not args.source or not args.target or not args.source.strip() or not args.target.strip():
        raise AttnlabError(
            "give a non-empty SOURCE and TARGET (or --task NAME), e.g. 'J aime les champignons' 'I like mushrooms'"
        )
    print(show_teacher_forcing(args.source, args.target, words=args.words))
    return 0


def cmd_seq2seq_train(args: argparse.Namespace) -> int:
    from .seq2seq_run import train_seq2seq

    result = train_seq2seq(
        args.out,
        task=args.task,
        data=args.data,
        preset=args.preset,
        config=_parse_sets(args.set),
        max_time=args.max_time,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        schedule=args.schedule,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        device=args.device,
    )
    print(f"checkpoint: {result.checkpoint}\nmetrics: {Path(args.out) / 'metrics.jsonl'}")
    return 0


def cmd_seq2seq_eval(args: argparse.Namespace) -> int:
    from .seq2seq_run import evaluate_seq2seq

    result = evaluate_seq2seq(args.run, beam=args.beam, device=args.device)
    if args.format == "json":
        print(json.dumps(result))
    else:
        match, n = result["exact_match"], result["examples"]
        print(f"{result['task']}: exact match {match:.2%} over {n:,} test pairs (beam {args.beam})")
    return 0


def cmd_seq2seq_translate(args: argparse.Namespace) -> int:
    from .seq2seq_run import translate

    for text in translate(args.run, args.text, beam=args.beam, device=args.device):
        print(text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .interop import to_hf

    out = Path(args.hf)
    if out.exists() and any(out.iterdir()):
        raise AttnlabError(f"{out} already exists and is not empty; choose a new folder for --hf")
    hf = to_hf(load_checkpoint(args.checkpoint).model)
    hf.save_pretrained(out)
    print(f"wrote {out} ({type(hf).__name__}); load it with transformers' from_pretrained")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .runtime import environment

    info = environment()
    if args.format == "json":
        print(json.dumps(info))
        return 0
    t = info["threads"]
    lines = [
        f"attnlab {info['attnlab']}, torch {info['torch']}, Python {info['python']}",
        f"devices: {', '.join(info['devices'])}",
        f"threads: {t['torch']} (CPUs this process may use: {t['available_cpus']}; "
        + ("adjusted while training to the CPUs other processes leave free)" if t["adaptive"] else "fixed)"),
        *(f"  {k}={v}" for k, v in t["env"].items()),
        f"cache: {info['cache']}",
        f"TinyStories folder (ATTNLAB_TINYSTORIES): {info['tinystories'] or 'not set'}",
    ]
    print("\n".join(lines))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import secrets

    from tqdm import tqdm

    from .exercises import gradebook, sandbox
    from .exercises.grade import ClassRun, default_jobs, notebook_paths, parse_shard, read_notebook, shard

    try:  # before anything runs: the notebooks are executed by a Jupyter kernel
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
    except ImportError:
        raise AttnlabError("attnlab check needs nbclient and ipykernel: pip install 'attnlab[notebook]'") from None
    if not 0 < args.timeout <= 86_400:
        raise AttnlabError(f"--timeout {args.timeout:g}: give the seconds a cell may run, from 1 to 86400")
    share = parse_shard(args.shard) if args.shard is not None else None
    jobs = args.jobs or default_jobs()
    memory = sandbox.parse_size(args.memory) if args.memory is not None else sandbox.default_memory(jobs)
    paths = notebook_paths(args.paths)
    if len(args.paths) == 1 and len(paths) == 1 and Path(args.paths[0]).is_file():
        read_notebook(paths[0])  # one file that is not a notebook: say so, as a bad input
    if share is not None:
        paths = shard(paths, *share)
    confine = not args.no_sandbox
    if confine and (why := sandbox.problem()) is not None:
        raise AttnlabError(
            f"the notebooks cannot be confined here: {why}; grade them unconfined only if you trust their code: "
            "--no-sandbox"
        )
    limits = sandbox.Limits(memory, cell_seconds=args.timeout, notebook_seconds=3 * args.timeout + 60)
    grading = ClassRun(limits, confine, jobs, seed=secrets.randbits(48))
    with tqdm(total=len(paths), desc="check", unit="notebook", file=sys.stderr, disable=None) as bar:
        reports = grading.grade(paths, progress=lambda report: bar.update(1))
    if args.format == "json":
        print(gradebook.json_text(reports))
    elif args.format == "csv":
        print(gradebook.csv_text(reports), end="")
    else:
        print("\n\n".join(r.to_text() for r in reports))
    if args.report is not None:
        print(f"class report: {gradebook.write_class_report(reports, Path(args.report))}", file=sys.stderr)
    return 0 if reports and all(r.all_passed for r in reports) else 1


def cmd_notebook(args: argparse.Namespace) -> int:
    from .notebooks import copy_notebook

    path = copy_notebook(args.out, solutions=args.solutions)
    print(f"wrote {path}; open it with: jupyter lab {path}")
    return 0


def _add_inspect_source(p: argparse.ArgumentParser, prompt: bool = True) -> None:
    p.add_argument("checkpoint", nargs="?", help="a checkpoint folder or a run folder")
    p.add_argument("--random", action="store_true", help="an untrained model of --preset instead of a checkpoint")
    p.add_argument("--preset", default=None, help="with --random: the model sizes (default: lab)")
    p.add_argument("--model", choices=("mlp", "transformer"), default="transformer", help="with --random")
    p.add_argument("--seed", type=_seed, default=0, help="with --random: the initialisation seed")
    p.add_argument("--device", default="cpu")
    if prompt:
        p.add_argument("--prompt", required=True)


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default=None,
        help="an encoder-decoder run: the target its decoder reads (default: its greedy translation of --prompt)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("lab", help="train the MLP and the Transformer on the same data and compare them")
    _add_train_options(p)
    p.add_argument(
        "--recipe",
        default="fast",
        choices=("fast", "classic"),
        help="fast (default): Muon, rotary positions, 3 blocks; classic: AdamW, learned positions, 4 blocks",
    )
    p.add_argument("--out", default="runs/lab", help="run folder (default: runs/lab)")
    p.add_argument("--resume", action="store_true", help="continue the models of --out from their checkpoints")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("train", help="train one model, with checkpoints and a metrics log")
    p.add_argument("--model", choices=("mlp", "transformer"), default=None, help="transformer (default) | mlp")
    _add_train_options(p)
    p.add_argument("--out", required=True, help="run folder: checkpoint/ and metrics.jsonl go here")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model config field")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="continue a prompt with a trained model")
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=_finite, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=_finite, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--seed", type=_seed, default=0)
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
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="bits per character of a checkpoint on any text")
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
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("trace", help="walk a prompt through the model step by step, with every shape")
    _add_inspect_source(p)
    _add_target(p)
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("attention", help="attention weights as heatmaps (PNG), or the explorer as one HTML file")
    _add_inspect_source(p)
    _add_target(p)
    p.add_argument("--out", default=None, help="the PNG file to write")
    p.add_argument("--html", default=None, metavar="OUT.html", help="the explorer's views as one self-contained file")
    p.add_argument("--head", default=None, help="LAYER.HEAD: one large panel for that head, e.g. 0.2")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("embeddings", help="2-D PCA picture of the token embeddings and nearest neighbours")
    _add_inspect_source(p, prompt=False)
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument("--neighbours", default="aeiouAT.,! ", help="characters whose nearest neighbours to list")
    p.add_argument("--top", type=_positive, default=5)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_embeddings)

    p = sub.add_parser("next", help="the most likely next tokens after a prompt")
    _add_inspect_source(p)
    p.add_argument("--top", type=_positive, default=10)
    p.add_argument("--all-positions", action="store_true", help="also after every prefix of the prompt")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_next)

    p = sub.add_parser("lens", help="logit lens: the next-token guess after each layer")
    _add_inspect_source(p)
    p.add_argument("--top", type=_positive, default=5)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_lens)

    p = sub.add_parser("params", help="parameters per component and FLOPs per token of a preset or checkpoint")
    p.add_argument("target", metavar="PRESET_OR_CKPT", help="a preset name (gpt2, gpt3-175b, small...) or a checkpoint")
    p.add_argument("--model", choices=("mlp", "transformer"), default="transformer", help="with a preset")
    p.add_argument("--context", type=_positive, default=None, help="context length for the FLOPs (default: max_len)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("compare", help="train variants (--vary FIELD=v1,v2) with the same data, seed and budget")
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
    _add_train_options(p)
    p.add_argument("--out", default="runs/compare", help="run folder (default: runs/compare)")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted variant from its checkpoint (not from scratch)"
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="training and generation speed: eager vs compiled, fp32 vs bf16, KV cache")
    p.add_argument("--preset", default="small")
    p.add_argument("--device", default=None, help="one device (default: every available one)")
    p.add_argument("--compile", choices=("both", "off", "on"), default="both", help="eager and/or torch.compile")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--budget", type=_finite, default=5.0, help="seconds of timed steps per training row")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--gen-max-len", type=int, default=256, help="context length of the generation rows")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", default=None, help="also write JSON here (and a Markdown table beside it)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("prepare", help="tokenize a corpus once into memory-mapped token files (resumable)")
    p.add_argument("source", metavar="SRC", help="a .txt file, a folder with train.txt (+ valid.txt), tinystories...")
    p.add_argument("--out", required=True, metavar="FILE.bin", help="train tokens; FILE.valid.bin and FILE.json beside")
    p.add_argument("--tokenizer", default="bytes", help="bytes (default) | codepoint | char | bpe:N")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("info", help="versions, devices, threads and folders that attnlab uses here")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="the explorer in a browser: attention, next tokens, lens, trace, generation")
    p.add_argument("checkpoint", help="a run folder or a checkpoint folder")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("notebook", help="copy the lab notebook (exercises with checks) into a folder")
    p.add_argument("--solutions", action="store_true", help="the notebook with every exercise solved")
    p.add_argument("--out", default=".", metavar="DIR", help="the folder to copy it into (default: here)")
    p.set_defaults(func=cmd_notebook)

    p = sub.add_parser(
        "check", help="grade students' lab notebooks, confined: each exercise passed, or the mistake made"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="notebooks, or folders of them (every *.ipynb under)")
    p.add_argument("--jobs", type=_positive, default=None, metavar="N", help="notebooks at once (default: free cores)")
    p.add_argument("--shard", default=None, metavar="I/N", help="grade only the I-th of N fixed shares of the paths")
    p.add_argument("--timeout", type=_finite, default=300.0, metavar="S", help="seconds each cell may run (300)")
    p.add_argument(
        "--memory", default=None, metavar="SIZE", help="memory per notebook process, such as 4G (default: a share)"
    )
    p.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run the notebooks unconfined: only code you trust (the limits still apply)",
    )
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--report", default=None, metavar="FILE.html", help="also write the class report here")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("export", help="write a checkpoint as a Hugging Face transformers model folder")
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder")
    p.add_argument("--hf", required=True, metavar="OUT", help="the folder to write (GPT-2 or Llama format)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "seq2seq", help="the encoder-decoder Transformer (Vaswani et al. 2017) on source -> target tasks"
    )
    seq2seq = p.add_subparsers(dest="seq2seq_command", required=True, parser_class=_Parser)
    p = seq2seq.add_parser("show", help="print how teacher forcing turns a (source, target) pair into what is trained")
    p.add_argument("source", nargs="?", help="the source text (or --task for one of a task's pairs)")
    p.add_argument("target", nargs="?", help="the target text")
    p.add_argument("--task", default=None, help="show a training pair of this task instead")
    p.add_argument("--words", action="store_true", help="words as the tokens (default: characters, as the tasks)")
    p.set_defaults(func=cmd_seq2seq_show)
    p = seq2seq.add_parser("train", help="train an encoder-decoder on a task or a source<TAB>target file")
    p.add_argument("--task", default=None, help="copy | reverse | sort | addition | numbers | dates")
    p.add_argument("--data", default=None, help="a text file of source<TAB>target lines (instead of --task)")
    p.add_argument("--out", required=True, help="run folder: checkpoint/ and metrics.jsonl go here")
    p.add_argument("--max-time", type=_finite, default=None, help="training budget in seconds")
    p.add_argument("--steps", type=_positive, default=None, help="optimizer steps")
    p.add_argument("--preset", default="seq2seq-small", help="model sizes (default seq2seq-small)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model config field")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--lr", type=_finite, default=1e-3, help="peak learning rate (noam: a scale, 1e-3 = the paper's)")
    p.add_argument("--warmup-steps", type=_positive, default=200)
    p.add_argument(
        "--schedule", choices=("cosine", "noam"), default="cosine", help="noam: the paper's warm-up schedule"
    )
    p.add_argument("--label-smoothing", type=_finite, default=0.0, help="the paper's is 0.1")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_seq2seq_train)
    p = seq2seq.add_parser("eval", help="exact-match accuracy on the run's test split")
    p.add_argument("run", help="a run folder written by attnlab seq2seq train")
    p.add_argument("--beam", type=_positive, default=1, help="beam width (1: greedy)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_seq2seq_eval)
    p = seq2seq.add_parser("translate", help="decode a source text with a trained encoder-decoder")
    p.add_argument("run", help="a run folder written by attnlab seq2seq train")
    p.add_argument("--text", required=True, action="append", help="a source (give several --text for several)")
    p.add_argument("--beam", type=_positive, default=1, help="beam width (1: greedy)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_seq2seq_translate)

    verbs = [
        nested
        for verb in sub.choices.values()
        for nested in next(
            (a.choices.values() for a in verb._actions if isinstance(a, argparse._SubParsersAction)), [verb]
        )
    ]
    for verb in verbs:  # every verb (and `seq2seq show`, ...) takes --threads
        verb.add_argument(
            "--threads",
            type=int,
            default=None,
            metavar="N",
            help="CPU threads for PyTorch (default: one per free CPU, adjusted while training)",
        )
    return parser


# Each verb's output paths and what they must be: checked before any work, so a bad path costs nothing.
OUTPUTS = {
    "train": [("out", "dir")],
    "lab": [("out", "dir")],
    "compare": [("out", "dir")],
    "attention": [("out", "picture"), ("html", "file")],
    "embeddings": [("out", "picture")],
    "bench": [("out", "file")],
    "prepare": [("out", "file")],
    "export": [("hf", "dir")],
    "notebook": [("out", "dir")],
    "seq2seq": [("out", "dir")],
    "check": [("report", "file")],
}


def _check_outputs(args: argparse.Namespace) -> None:
    from .data import SOURCES_HELP
    from .runtime import check_output

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
    from .threads import use_threads
    from .train import TrainingDiverged, TrainingInterrupted

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


if __name__ == "__main__":
    sys.exit(main())
