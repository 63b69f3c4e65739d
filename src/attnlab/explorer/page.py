"""The explorer's one page, for the server (it fetches from the API) or as a self-contained file
(every view's data embedded: no server, no network)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from ..errors import AttnlabError
from ..models import LanguageModel, TransformerLM
from ..tokenizers import Tokenizer
from . import payloads

MAX_STATIC_WEIGHTS = 4_000_000  # weights a self-contained file embeds exactly (16 MB of float32)


def _cividis() -> list[str]:
    """matplotlib's cividis as 256 CSS colours (the lab's attention colour map)."""
    from matplotlib import colormaps

    rgb = (colormaps["cividis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def _script_json(data: dict[str, Any]) -> str:
    """JSON that is safe inside <script>: no "</script>", "<!--" or "<" can end or open a tag."""
    return (
        json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )


def render_page(card: dict[str, Any], static: dict[str, Any] | None = None) -> str:
    """The page's HTML: `static` holds every view's data for a self-contained file; None: use the API."""
    env = Environment(loader=PackageLoader("attnlab", "templates"), autoescape=select_autoescape(["html"]))
    data = {"mode": "static" if static else "server", "card": card, "cividis": _cividis(), "static": static}
    return env.get_template("explorer.html").render(data_json=_script_json(data))


def static_data(model: LanguageModel, tokenizer: Tokenizer, prompt: str) -> dict[str, Any]:
    """Every view's data for one prompt: the overview, each head's exact weights and q/k/v, next tokens, trace."""
    ov = payloads.as_text(payloads.overview(model, tokenizer, prompt))
    if isinstance(model, TransformerLM):
        cfg, L = model.config, len(ov["ids"])
        n_weights = cfg.n_layers * cfg.n_heads * L * L
        if n_weights > MAX_STATIC_WEIGHTS:
            raise AttnlabError(
                f"a file for {L} tokens would hold {n_weights:,} weights; shorten the prompt "
                f"(at most {MAX_STATIC_WEIGHTS:,}) or use attnlab serve, which sends one head at a time"
            )
    return {
        "prompt": prompt,
        "overview": ov,
        "heads": payloads.every_head(model, tokenizer, prompt),
        "next": payloads.next_token(model, tokenizer, prompt),
        "trace": payloads.trace_steps(model, tokenizer, prompt),
    }


def standalone_html(model: LanguageModel, tokenizer: Tokenizer, prompt: str, card: dict[str, Any] | None = None) -> str:
    """The explorer for one prompt as one HTML file that needs nothing else."""
    return render_page(card or payloads.run_card(model), static_data(model, tokenizer, prompt))
