"""The explorer: attention, next tokens, the logit lens and the trace of any attnlab model, in a browser.

- `attnlab serve RUN_OR_CKPT`: a local web app (`explorer.app.create_app`) with a JSON API (`serve`,
  `checkpoint_app`: which app a run gets);
- `attnlab attention CKPT --prompt TEXT --html OUT.html`: the same views as one self-contained file
  (`attention_files`, which draws the pictures of `--out` too);
- `show(model, tokenizer, prompt)`: that file inline in a Jupyter notebook.
"""

from __future__ import annotations

import html
import importlib.util
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AttnlabError
from ..inspect.views import Subject, attention_picture, no_target, seq2seq_attention_pictures
from ..models import LanguageModel
from ..runtime.devices import resolve_device
from ..runtime.environment import notice
from ..runtime.files import write_text_atomically
from ..tokenizers import Tokenizer
from ..training.checkpoint import is_seq2seq, lab_samples, load_for_text, resolve_checkpoint, run_folder, run_log
from ..training.seq2seq_run import load_seq2seq
from .page import standalone_html

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

_views = itertools.count()


def show(model: LanguageModel, tokenizer: Tokenizer, prompt: str, height: int = 900) -> Any:
    """Display the explorer for `prompt` in a notebook cell (no server, no network).

    Each view lives in its own iframe, so several views on one page keep their own state, styles and
    scripts.
    """
    from IPython.display import HTML

    page = standalone_html(model, tokenizer, prompt)
    view = f"attnlab-view-{next(_views)}"
    return HTML(
        f'<iframe id="{view}" srcdoc="{html.escape(page, quote=True)}" '
        f'style="width:100%;height:{int(height)}px;border:1px solid #ddd" sandbox="allow-scripts"></iframe>'
    )


def attention_files(
    subject: Subject,
    prompt: str,
    out: str | Path | None = None,
    page: str | Path | None = None,
    head: str | None = None,
    target: str | None = None,
) -> list[Path]:
    """`attnlab attention`: the attention picture `out` (`head` 'LAYER.HEAD': that head alone) and/or the
    explorer's views as one self-contained file, `page`, for `prompt`. An encoder-decoder run draws its
    three attentions (OUT-encoder, OUT-decoder, OUT-cross) with `target` (default: its greedy translation)
    as the target. Returns the files written, in order."""
    if not out and not page:
        raise AttnlabError("say what to write: --out PICTURE.png, --html PAGE.html, or both")
    if subject.is_seq2seq():
        if page or head:
            raise AttnlabError("an encoder-decoder run draws all its heads as pictures: drop --html and --head")
        return seq2seq_attention_pictures(subject, prompt, Path(str(out)), target)
    no_target(target)
    model, tokenizer = subject.load()
    written = []
    if page:
        written.append(write_text_atomically(Path(page), standalone_html(model, tokenizer, prompt)))
    if out:
        written.append(attention_picture(model, tokenizer, prompt, Path(out), head))
    return written


def checkpoint_app(checkpoint: str | Path, device: str = "cpu") -> tuple[Any, Path]:
    """The explorer's app for a run or checkpoint folder, and the checkpoint it serves: an encoder-decoder's
    page (source, translation, its three attentions), or a language model's with its run card (the run's
    settings, its metrics log and, for a model of `attnlab lab`, the lab's samples). Needs FastAPI."""
    from .app import create_app, create_seq2seq_app

    if is_seq2seq(checkpoint):
        run = load_seq2seq(checkpoint, resolve_device(device))
        path = resolve_checkpoint(checkpoint)
        return create_seq2seq_app(run, run_log(path)), path
    ckpt = load_for_text(checkpoint, resolve_device(device))
    assert ckpt.tokenizer is not None  # load_for_text
    info = {**ckpt.state.get("run", {}), "samples": lab_samples(run_folder(ckpt.path))}
    return create_app(ckpt.model.eval(), ckpt.tokenizer, {"info": info, "metrics": run_log(ckpt.path)}), ckpt.path


def serve(
    checkpoint: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    ready: Callable[[str], None] = print,
) -> None:
    """Serve the explorer of a run or checkpoint folder (`checkpoint_app`) at http://HOST:PORT/ until
    Ctrl-C; `ready` is handed the line that says where, once the model is loaded."""
    needs = "attnlab serve needs FastAPI and uvicorn: pip install 'attnlab[explorer]'"
    if importlib.util.find_spec("fastapi") is None:  # looked for before the explorer's app, which imports it
        raise AttnlabError(needs)
    try:
        import uvicorn
    except ImportError:
        raise AttnlabError(needs) from None
    if not 0 < port < 65536:
        raise AttnlabError(f"--port {port}: must be between 1 and 65535")
    app, path = checkpoint_app(checkpoint, device)
    if host not in LOCAL_HOSTS:
        notice(f"warning: serving on {host}: anyone who can reach this address can use the explorer")
    ready(f"attnlab explorer for {path}: http://{host}:{port}/  (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["attention_files", "checkpoint_app", "serve", "show", "standalone_html"]
