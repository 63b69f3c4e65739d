"""One attention, one cache, one base (issue 24): generation and the encoder-decoder's decoding and
training steps on the shared machinery, against the code before it, side by side in one process.

The old code is imported from a git worktree of `--old` (made here, removed after) as the package
`attnlab_old`, next to today's `attnlab`; each old model gets its new twin's weights. Every round
measures every job on old and new alternately (the order flips each round); the figures are medians
over `--rounds`:

- LM generation with the KV cache: tokens/s, `small` (random weights: its speed does not depend on
  them), a 16-token prompt and 200 new tokens, greedy;
- encoder-decoder greedy decoding (a batch of 64 test sources) and beam search (beam 4, one source
  at a time, 16 sources): sources/s, `seq2seq-small` trained here for `--train-steps` steps on the
  reverse task, so that it ends its targets with <eos> as a trained model does;
- an encoder-decoder training step: forward and backward of a batch of 64 reverse pairs, steps/s.

Old and new must agree: the same generated tokens and translations, the same loss (checked, and
written to the JSON).

    python benchmarks/one_machinery.py --rounds 7 --out benchmarks/results/one_machinery.json
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from machine import machine_state

import attnlab
from attnlab.data.tasks import PAD, PairVocab, held_out_pairs, task_pairs, teacher_forcing
from attnlab.models import Seq2SeqTransformer, build_model, preset_config
from attnlab.models.translate import beam_search, greedy_decode

ROOT = Path(__file__).resolve().parent.parent


def load_old(src: Path) -> ModuleType:
    """The package at `src` (a worktree's src/attnlab) imported as `attnlab_old`."""
    spec = importlib.util.spec_from_file_location(
        "attnlab_old", src / "__init__.py", submodule_search_locations=[str(src)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["attnlab_old"] = module
    spec.loader.exec_module(module)
    importlib.import_module("attnlab_old.models.translate")
    return module


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def train_reverse(model: Seq2SeqTransformer, vocab: PairVocab, steps: int) -> None:
    """A few hundred teacher-forced steps: enough for the model to end its targets with <eos>."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stream = task_pairs("reverse", "train", seed=0)
    model.train()
    for _ in range(steps):
        batch = teacher_forcing(list(itertools.islice(stream, 64)), vocab)
        loss = step_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


def step_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    logits_BLV = model(batch.encoder_input_BS, batch.decoder_input_BL)
    return F.cross_entropy(logits_BLV.flatten(0, 1), batch.labels_BL.flatten(), ignore_index=PAD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default="557d13f", help="the commit before the shared machinery")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(worktree), args.old], check=True
        )
        try:
            old = load_old(worktree / "src" / "attnlab")
            results = measure(old, args)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    results = {
        "machine": machine_state(load),
        "old_commit": args.old,
        "rounds": args.rounds,
        **results,
    }
    print(table(results["jobs"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


def measure(old: ModuleType, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    lm = {"new": build_model(preset_config("small")).eval()}
    lm["old"] = old.models.build_model(old.models.preset_config("small")).eval()
    lm["old"].load_state_dict(lm["new"].state_dict())
    prompt_BL = torch.randint(0, 256, (1, 16))

    test = held_out_pairs("reverse")
    vocab = PairVocab.from_pairs([*itertools.islice(task_pairs("reverse", "train"), 2000), *test])
    cfg = preset_config("seq2seq-small", model="seq2seq", n_vocab=vocab.n_vocab)
    s2s = {"new": Seq2SeqTransformer(cfg)}
    train_reverse(s2s["new"], vocab, args.train_steps)
    s2s["old"] = old.models.Seq2SeqTransformer(old.models.ModelConfig(**cfg.to_dict())).eval()
    s2s["old"].load_state_dict(s2s["new"].state_dict())
    greedy_src_BS = teacher_forcing(test[:64], vocab).encoder_input_BS
    beam_sources = [torch.tensor(vocab.encode(s)) for s, _ in test[64:80]]
    train_batch = teacher_forcing(list(itertools.islice(task_pairs("reverse", "train", seed=7), 64)), vocab)
    max_len = cfg.max_len
    decoders = {
        "new": (greedy_decode, beam_search),
        "old": (old.models.translate.greedy_decode, old.models.translate.beam_search),
    }

    def generate(which: str) -> tuple[float, Any]:
        t, out = timed(lambda: lm[which].generate(prompt_BL, 200, greedy=True))
        return 200 / t, out[0].tolist()

    def greedy(which: str) -> tuple[float, Any]:
        t, out = timed(lambda: decoders[which][0](s2s[which], greedy_src_BS, max_len))
        return len(out) / t, out

    def beam(which: str) -> tuple[float, Any]:
        t, out = timed(lambda: [decoders[which][1](s2s[which], src_S, max_len, beam=4) for src_S in beam_sources])
        return len(out) / t, out

    def train_step(which: str, steps: int = 5) -> tuple[float, Any]:
        model = s2s[which].train()
        losses = []
        t0 = time.perf_counter()
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            loss = step_loss(model, train_batch)
            loss.backward()
            losses.append(loss.item())
        t = time.perf_counter() - t0
        model.eval()
        return steps / t, losses[0]

    jobs = {
        "lm_generate_kv_cache": ("LM generation, KV cache (`small`, 200 tokens)", "tokens/s", generate),
        "seq2seq_greedy": ("encoder-decoder greedy decoding (batch of 64)", "sources/s", greedy),
        "seq2seq_beam4": ("encoder-decoder beam search, beam 4", "sources/s", beam),
        "seq2seq_train_step": ("encoder-decoder forward + backward (batch 64)", "steps/s", train_step),
    }
    speeds = {job: {"old": [], "new": []} for job in jobs}
    agree: dict[str, bool] = {}
    for job, (_, _, fn) in jobs.items():  # warm-up, and the check that old and new compute the same
        outs = {which: fn(which)[1] for which in ("old", "new")}
        same = outs["old"] == outs["new"] if job != "seq2seq_train_step" else abs(outs["old"] - outs["new"]) < 1e-5
        agree[job] = bool(same)
    for r in range(args.rounds):
        for job, (_, unit, fn) in jobs.items():
            for which in ("old", "new") if r % 2 == 0 else ("new", "old"):
                speed, _ = fn(which)
                speeds[job][which].append(speed)
                print(f"round {r} {job} {which}: {speed:,.1f} {unit}", flush=True)
    return {
        "seq2seq": {"preset": "seq2seq-small", "task": "reverse", "train_steps": args.train_steps},
        "jobs": {
            job: {
                "what": what,
                "unit": unit,
                "old": round(statistics.median(speeds[job]["old"]), 2),
                "new": round(statistics.median(speeds[job]["new"]), 2),
                "new_over_old": round(statistics.median(speeds[job]["new"]) / statistics.median(speeds[job]["old"]), 3),
                "same_output": agree[job],
                "all": {k: [round(x, 2) for x in v] for k, v in speeds[job].items()},
            }
            for job, (what, unit, _) in jobs.items()
        },
    }


def table(jobs: dict[str, Any]) -> str:
    lines = ["| job | unit | before | after | after / before | same output |", "|---|---|---:|---:|---:|---|"]
    for j in jobs.values():
        same = "yes" if j["same_output"] else "NO"
        lines.append(
            f"| {j['what']} | {j['unit']} | {j['old']:,.1f} | {j['new']:,.1f} | {j['new_over_old']:.3f} | {same} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    assert attnlab.__version__
    main()
