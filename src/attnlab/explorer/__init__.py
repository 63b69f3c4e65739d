"""The explorer: attention, next tokens, the logit lens and the trace of any attnlab model, in a browser.

- `attnlab serve RUN_OR_CKPT`: a local web app (`explorer.app.create_app`) with a JSON API;
- `attnlab attention CKPT --prompt TEXT --html OUT.html`: the same views as one self-contained file;
- `show(model, tokenizer, prompt)`: that file inline in a Jupyter notebook.
"""

from __future__ import annotations

import html
import itertools
from typing import Any

from ..models import LanguageModel
from ..tokenizers import Tokenizer
from .page import standalone_html

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


__all__ = ["show", "standalone_html"]
