"""What every family of verbs shares: the parser (a usage error is one line), the value types, and the
flags several verbs take, added by name with `add_flags`.

```python
p = verbs.add_parser("train", help="...")
add_flags(p, "data", "model", "training")          # groups of flags, as `train`, `lab` and `compare` take them
add_flags(p, "--eval-every", "--resume")           # or single flags
add_flags(p, "--steps", steps={"type": positive})  # with some of a flag's settings changed, by its dest
command(p, cmd_train)                              # what the verb runs; every verb takes --threads
```
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import AttnlabError
from ..training.optim import OPTIMIZERS, SCHEDULES

if TYPE_CHECKING:
    from ..inspect.views import Subject

EXIT_BAD_INPUT = 2
Verbs = Any  # what `add_subparsers` returns: its `add_parser(name, help=...)` makes the parser of a verb


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, one_line(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


def one_line(text: str) -> str:
    """A message on one line whatever the user typed into it: line breaks in echoed values are escaped."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


# ---- value types ------------------------------------------------------------------------------


def finite(text: str) -> float:
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


def seed(text: str) -> int:
    """argparse type: a seed torch and numpy both take."""
    return _integer(text, 0, 2**63, "between 0 and 2**63 - 1")


def on_off(text: str) -> bool:
    """argparse type: on or off."""
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r}: give on or off")
    return text == "on"


def positive(text: str) -> int:
    """argparse type: a count of at least one."""
    return _integer(text, 1, None, ">= 1")


def parse_sets(pairs: list[str] | None) -> dict[str, str]:
    """`--set KEY=VALUE` options as {key: value} (the config checks the values)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AttnlabError(f"--set {pair!r}: expected key=value, e.g. --set n_heads=8")
        out[key.strip()] = value.strip()
    return out


# ---- shared flags -----------------------------------------------------------------------------

# Each shared flag once, as add_argument takes it. A default of None means "not given": the library's
# default applies (so `attnlab train --resume` keeps the run's own settings).
FLAGS: dict[str, dict[str, Any]] = {
    "--data": {"help": "builtin | tinystories | tinystories-full | PATH | FILE.bin (default: builtin)"},
    "--tokenizer": {"help": "bytes (default) | codepoint | char | bpe:N (byte-level BPE with N tokens)"},
    "--preset": {"help": "model sizes: lab | small (default) | medium | large"},
    "--set": {"action": "append", "metavar": "KEY=VALUE", "help": "override a model config field"},
    "--steps": {"type": int, "help": "optimizer steps"},
    "--max-time": {"type": finite, "help": "training budget in seconds (per model)"},
    "--batch-size": {"type": int, "help": "sequences per step and process (default 16)"},
    "--grad-accum": {"type": int, "help": "micro-batches per optimizer step (default 1)"},
    "--lr": {"type": finite, "help": "peak learning rate"},
    "--min-lr-ratio": {"type": finite, "help": "the schedule ends at lr x this (default 0.1; 0 to 1)"},
    "--embed-lr-ratio": {
        "type": finite,
        "help": "the embeddings' (and an untied head's) learning rate as a multiple of lr (default 1)",
    },
    "--schedule": {
        "choices": SCHEDULES,
        "help": "cosine (default) | wsd: hold, then decay | noam: the Transformer paper's warm-up, then 1/sqrt(step)",
    },
    "--eval-every": {"type": int, "help": "steps between evaluations and checkpoints"},
    "--seed": {"type": seed},
    "--device": {"help": "auto (cuda, mps, cpu) | cpu | cuda | cuda:1 | mps"},
    "--dtype": {
        "choices": ("fp32", "bf16", "fp16"),
        "help": "autocast precision (default fp32; bf16 is ~100x slower on CPUs without bf16 units)",
    },
    "--compile": {"action": "store_true", "help": "torch.compile the model"},
    "--tf32": {
        "type": on_off,
        "metavar": "on|off",
        "help": "CUDA: fp32 matmuls on TF32 tensor cores (default on; off: full fp32)",
    },
    "--optimizer": {
        "choices": OPTIMIZERS,
        "help": "adamw (default) | muon: Muon for the hidden weight matrices, AdamW for the rest",
    },
    "--resume": {"action": "store_true", "default": False, "help": "continue the run in --out from its checkpoint"},
    "--threads": {
        "type": int,
        "metavar": "N",
        "help": "CPU threads for PyTorch (default: one per free CPU, adjusted while training)",
    },
}
GROUPS = {
    "data": ("--data", "--tokenizer"),  # what a model trains on
    "model": ("--preset", "--set"),  # which model: a preset and changes to its config
    "training": (  # how it trains: TrainConfig fields (`training_fields`)
        "--steps",
        "--max-time",
        "--batch-size",
        "--grad-accum",
        "--lr",
        "--min-lr-ratio",
        "--embed-lr-ratio",
        "--schedule",
        "--eval-every",
        "--seed",
        "--device",
        "--dtype",
        "--compile",
        "--tf32",
        "--optimizer",
    ),
    "threads": ("--threads",),  # every verb (`command`)
}


def dest(flag: str) -> str:
    """'--max-time' -> 'max_time': the attribute argparse stores a flag in."""
    return flag.lstrip("-").replace("-", "_")


def add_flags(parser: argparse.ArgumentParser, *names: str, **changes: dict[str, Any]) -> None:
    """Add shared flags to `parser`: each name is a group of `GROUPS` or a flag of `FLAGS`, in order.
    `changes` replaces settings of a flag, by its dest: `add_flags(p, "--steps", steps={"type": positive})`."""
    for name in names:
        if name not in GROUPS and name not in FLAGS:
            raise KeyError(f"no flag or group of flags {name!r}; the groups: {', '.join(GROUPS)}")
        for flag in GROUPS.get(name, (name,)):
            parser.add_argument(flag, **{"default": None, **FLAGS[flag], **changes.get(dest(flag), {})})


def training_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given by the "training" flags (the others keep the library's defaults)."""
    given = {dest(flag): getattr(args, dest(flag), None) for flag in GROUPS["training"]}
    return {k: v for k, v in given.items() if v is not None}


def command(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]) -> None:
    """The verb of `parser` runs `run(args)` (its exit status), and takes the flags every verb takes."""
    add_flags(parser, "threads")
    parser.set_defaults(func=run)


# ---- the model a looking verb looks at -----------------------------------------------------------


def add_subject(p: argparse.ArgumentParser, prompt: bool = True, top: int | None = None) -> None:
    """The model to look at (a checkpoint, or an untrained preset), for most views the prompt, and for
    the tables of likely tokens how many rows (`--top`, default `top`) and in which format."""
    p.add_argument("checkpoint", nargs="?", help="a checkpoint folder or a run folder")
    p.add_argument("--random", action="store_true", help="an untrained model of --preset instead of a checkpoint")
    p.add_argument("--preset", default=None, help="with --random: the model sizes (default: lab)")
    p.add_argument("--model", choices=("mlp", "transformer"), default="transformer", help="with --random")
    p.add_argument("--seed", type=seed, default=0, help="with --random: the initialisation seed")
    p.add_argument("--device", default="cpu")
    if prompt:
        p.add_argument("--prompt", required=True)
    if top is not None:
        p.add_argument("--top", type=positive, default=top)
        p.add_argument("--format", choices=("text", "json"), default="text")


def subject(args: argparse.Namespace) -> Subject:
    """The model a looking verb looks at, from `add_subject`'s flags."""
    from ..inspect.views import Subject

    return Subject(args.checkpoint, args.random, args.preset, args.model, args.seed, args.device)
