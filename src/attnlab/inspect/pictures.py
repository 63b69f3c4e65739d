"""Pictures: attention weights as heatmaps, and the token embedding table in two dimensions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..models.seq2seq import Seq2SeqTransformer, attention_names
from ..tokenizers import Tokenizer


def shown_tokens(labels: list[str]) -> list[str]:
    """Tokens as a picture's labels: spaces as ␣, and an invisible one by its escape (\\n)."""
    return [(t if t.strip() else repr(t)[1:-1] or "␣").replace(" ", "␣") for t in labels]


def save_figure(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def attention_figure(
    weights_LHQK: list[torch.Tensor],
    tokens: list[str],
    out: Path,
    head: tuple[int, int] | None = None,
    keys: list[str] | None = None,
    causal: bool = True,
    title: str = "attention weights (masked future keys left empty)",
) -> Path:
    """One heatmap per layer x head (or one large panel for `head=(layer, head)`).

    Rows are queries (`tokens`), columns keys (`keys`, default the same tokens); the colour is the
    weight (cividis, 0 to 1); with `causal`, cells above the diagonal are masked and left empty (white).
    """
    panels = [(layer, h) for layer in range(len(weights_LHQK)) for h in range(weights_LHQK[layer].shape[0])]
    if head is not None:
        panels = [head]
    n_layers = 1 if head is not None else len(weights_LHQK)
    n_heads = 1 if head is not None else weights_LHQK[0].shape[0]
    keys = tokens if keys is None else keys
    Q, K = len(tokens), len(keys)
    cell = 0.32 if head is None else 0.5
    width, height = max(2.6, K * cell), max(2.6, Q * cell)
    fig = Figure(figsize=(n_heads * width + 1.2, n_layers * height + 0.6), constrained_layout=True)
    axes = np.atleast_2d(fig.subplots(n_layers, n_heads, squeeze=False))
    norm = Normalize(vmin=0.0, vmax=1.0)
    cmap = _cmap("cividis")
    future_QK = np.triu(np.ones((Q, K), dtype=bool), k=1 + K - Q) if causal else np.zeros((Q, K), dtype=bool)

    image = None
    for ax, (layer, h) in zip(axes.flat, panels, strict=True):
        w_QK = weights_LHQK[layer][h].float().cpu().numpy()
        image = ax.imshow(np.ma.masked_array(w_QK, mask=future_QK), cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(f"layer {layer}, head {h}", fontsize=9)
        font = 8 if max(Q, K) <= 24 else 6
        ax.set_xticks(range(K), shown_tokens(keys), rotation=90, fontsize=font)
        ax.set_yticks(range(Q), shown_tokens(tokens), fontsize=font)
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_ylabel("query (attending)", fontsize=8)
    assert image is not None
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention weight")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out)


SEQ2SEQ_ATTENTIONS = (  # kind, causal, what its picture shows
    ("encoder", False, "encoder self-attention: every source position sees every other"),
    ("decoder", True, "decoder self-attention (causal): the target read so far"),
    ("cross", False, "cross-attention: where in the source each target position looks"),
)


@torch.no_grad()
def seq2seq_attention_figures(
    model: Seq2SeqTransformer,
    src_BS: torch.Tensor,
    tgt_BL: torch.Tensor,
    sources: list[str],
    reads: list[str],
    out: Path,
    prompt: str,
) -> list[Path]:
    """An encoder-decoder's three attentions for one source (`prompt`: ids `src_BS`, tokens `sources`) and
    what its decoder reads (ids `tgt_BL`, tokens `reads`): the pictures OUT-encoder, OUT-decoder and
    OUT-cross (with OUT's suffix), each a panel per layer x head."""
    _, cache = model.run_with_cache(src_BS, tgt_BL)
    out = Path(out)
    written = []
    for kind, causal, what in SEQ2SEQ_ATTENTIONS:
        stack = model.encoder if kind == "encoder" else model.decoder
        weights = [cache[attention_names(kind, i)[3]][0] for i in range(len(stack))]
        queries, keys = (sources, sources) if kind == "encoder" else (reads, reads if kind == "decoder" else sources)
        path = out.with_name(f"{out.stem}-{kind}{out.suffix}")
        written.append(attention_figure(weights, queries, path, keys=keys, causal=causal, title=f"{what} ({prompt!r})"))
    return written


def _cmap(name: str) -> Colormap:
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="white")


def displayable_tokens(tokenizer: Tokenizer) -> list[int]:
    """Ids whose token is one printable character (or a newline): the ones worth drawing."""
    ids = []
    for i in range(tokenizer.n_vocab):
        s = tokenizer.token_str(i)
        if (len(s) == 1 and s.isprintable()) or s == "\\n":
            ids.append(i)
    return ids


def pca_2d(E_NC: torch.Tensor) -> np.ndarray:
    """Rows projected on their first two principal components."""
    x = E_NC.detach().double().cpu().numpy()
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def _kind(ch: str) -> str:
    if ch.islower():
        return "lowercase"
    if ch.isupper():
        return "uppercase"
    if ch.isdigit():
        return "digit"
    return "space and punctuation"


def embeddings_figure(E_VC: torch.Tensor, tokenizer: Tokenizer, out: Path, ids: list[int] | None = None) -> Path:
    """2-D PCA of the token embedding table, each token drawn as its character."""
    ids = ids if ids is not None else displayable_tokens(tokenizer)
    xy = pca_2d(E_VC[ids])
    fig = Figure(figsize=(9, 8), constrained_layout=True)
    ax = fig.subplots()
    colours = {
        "lowercase": "tab:blue",
        "uppercase": "tab:orange",
        "digit": "tab:green",
        "space and punctuation": "tab:red",
    }
    labels = [tokenizer.token_str(i) for i in ids]
    for kind, colour in colours.items():
        sel = [j for j, s in enumerate(labels) if _kind(s) == kind]
        if sel:
            ax.scatter(xy[sel, 0], xy[sel, 1], s=0, label=kind)  # invisible: sets limits and the legend
            for j in sel:
                text = {" ": "␣", "\\n": "⏎"}.get(labels[j], labels[j])
                ax.text(
                    xy[j, 0],
                    xy[j, 1],
                    text,
                    color=colour,
                    fontsize=11,
                    ha="center",
                    va="center",
                    fontfamily="monospace",
                )
    ax.margins(0.08)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(f"token embeddings ({len(ids)} tokens, {E_VC.shape[1]} dims) projected by PCA")
    ax.legend(
        handles=[
            _legend_patch(colour, kind) for kind, colour in colours.items() if any(_kind(s) == kind for s in labels)
        ],
        loc="best",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    return save_figure(fig, out)


def _legend_patch(colour: str, label: str) -> Patch:
    return Patch(color=colour, label=label)


def nearest_neighbours(
    E_VC: torch.Tensor, tokenizer: Tokenizer, queries: list[int], k: int = 5, among: list[int] | None = None
) -> dict[str, list[tuple[str, float]]]:
    """For each query token, the k most similar tokens by cosine similarity of their embeddings."""
    among = among if among is not None else displayable_tokens(tokenizer)
    E_NC = torch.nn.functional.normalize(E_VC[among].detach().float(), dim=-1)
    out = {}
    for q in queries:
        sims_N = E_NC @ torch.nn.functional.normalize(E_VC[q].detach().float(), dim=0)
        order = [j for j in sims_N.argsort(descending=True).tolist() if among[j] != q][:k]
        out[tokenizer.token_str(q)] = [(tokenizer.token_str(among[j]), round(sims_N[j].item(), 4)) for j in order]
    return out


def format_neighbours(table: dict[str, list[tuple[str, float]]]) -> str:
    """`nearest_neighbours` as lines: each token, then its neighbours with their cosine similarity."""
    return "\n".join(
        f"  {token!r:>6} -> " + "  ".join(f"{t!r} {s:.2f}" for t, s in near) for token, near in table.items()
    )
