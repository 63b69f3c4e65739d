"""The lab's step-by-step walk through a model, recomputed from its parameters.

Every step is computed here with plain tensor operations on the model's weights (not read back
from the forward pass), then checked against the model's own activation cache. The final logits
are compared with `model(ids)`: the walk is the model, written out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..models import FeedForwardLM, LanguageModel, ModelConfig, TransformerLM
from ..models.attention import Attention
from ..models.hooks import generic_name, meaning, symbolic_shape
from ..models.layers import MLP, Block, Embeddings
from ..models.norms import RMSNorm
from ..models.positions import PositionScheme, Rotation
from ..models.seq2seq import Seq2SeqTransformer

Heads = list[dict[str, Any]]  # one row per attention head: its value path (see `_value_paths`)


class Add(Protocol):
    """Records one step of the walk (its hook name, its tensor, and a meaning other than the usual one) and
    returns the tensor, so that a step can be recorded where it is computed."""

    def __call__(self, name: str, tensor: torch.Tensor, text: str | None = None, /) -> torch.Tensor: ...


@dataclass
class Step:
    name: str  # the hook name (the cache key) this step reproduces
    tensor: torch.Tensor
    meaning: str
    cache_diff: float | None = None  # max |walk - model cache|

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "symbolic": symbolic_shape(self.name),
            "shape": list(self.tensor.shape),
            "meaning": self.meaning,
            "cache_diff": self.cache_diff,
        }


@dataclass
class Trace:
    tokens: list[str]
    steps: list[Step]
    max_abs_diff: float  # max |walk logits - model(ids) logits|
    heads: Heads = field(default_factory=list)
    sources: list[str] | None = None  # an encoder-decoder's source tokens (`tokens`: what its decoder reads)

    def to_dict(self) -> dict[str, Any]:
        source = {"source_tokens": self.sources} if self.sources is not None else {}
        return {
            "tokens": self.tokens,
            **source,
            "steps": [s.row() for s in self.steps],
            "max_abs_diff": self.max_abs_diff,
            "heads": self.heads,
        }


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0.0)


def _norm(x_BLC: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """LayerNorm (x - mean) / sqrt(var + eps) * w + b, or RMSNorm x / sqrt(mean(x^2) + eps) * w."""
    if isinstance(norm, RMSNorm):
        return x_BLC / torch.sqrt(x_BLC.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    # The models' norms come from make_norm (or are QK-norm's RMSNorm): the other kind is a LayerNorm.
    assert isinstance(norm, nn.LayerNorm), f"not a norm of the model's: {type(norm).__name__}"
    mean_BL1 = x_BLC.mean(-1, keepdim=True)
    var_BL1 = x_BLC.var(-1, keepdim=True, unbiased=False)
    out_BLC = (x_BLC - mean_BL1) / torch.sqrt(var_BL1 + norm.eps) * norm.weight
    return out_BLC + norm.bias if norm.bias is not None else out_BLC


def _activation(pre_BLF: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "gelu":  # GPT-2's tanh approximation
        return 0.5 * pre_BLF * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre_BLF + 0.044715 * pre_BLF**3)))
    if kind == "swiglu":  # SiLU(x) = x * sigmoid(x); the product with W3 x follows
        return pre_BLF * torch.sigmoid(pre_BLF)
    if kind == "relu2":
        return pre_BLF.clamp_min(0) ** 2
    return pre_BLF.clamp_min(0)


def _mlp_steps(add: Add, p: str, x_BLC: torch.Tensor, mlp: MLP) -> torch.Tensor:
    pre_BLF = add(p + "mlp.pre_BLF", _linear(x_BLC, mlp.fc_in))
    hidden_BLF = _activation(pre_BLF, mlp.kind)
    if mlp.fc_up is not None:
        hidden_BLF = hidden_BLF * add(p + "mlp.up_BLF", _linear(x_BLC, mlp.fc_up))
    hidden_BLF = add(p + "mlp.hidden_BLF", hidden_BLF)
    return add(p + "mlp.out_BLC", _linear(hidden_BLF, mlp.fc_out))


def _attention_steps(
    add: Add, p: str, x_BLC: torch.Tensor, attn: Attention, heads: Heads, rotate: Rotation | None,
    memory_BSC: torch.Tensor | None = None, causal: bool = True, kind: str | None = None,
) -> torch.Tensor:  # fmt: skip
    """One attention sublayer at prefix `p` (e.g. "blocks.0.attn."). Keys and values come from x_BLC
    (self-attention) or from the encoder's output memory_BSC (cross-attention); `kind` labels the
    heads' rows of an encoder-decoder (encoder, decoder, cross)."""
    B, L, _ = x_BLC.shape
    H, G, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    keys_BKC = x_BLC if memory_BSC is None else memory_BSC
    K, keys = keys_BKC.shape[1], getattr(attn, "keys", "K")  # "S": the keys are source positions
    q_BHLD = _linear(x_BLC, attn.w_q).view(B, L, H, D).transpose(1, 2)
    k_BGKD = _linear(keys_BKC, attn.w_k).view(B, K, G, D).transpose(1, 2)
    v_BGKD = _linear(keys_BKC, attn.w_v).view(B, K, G, D).transpose(1, 2)
    # QK-norm (a model has both norms or neither): each head's q and k to a learned length (RMSNorm over D)
    if attn.q_norm is not None and attn.k_norm is not None:
        q_BHLD, k_BGKD = _norm(q_BHLD, attn.q_norm), _norm(k_BGKD, attn.k_norm)
    if rotate is not None:  # rotary positions: q and k turned by their position's angle
        q_BHLD, k_BGKD = rotate(q_BHLD), rotate(k_BGKD)
    q_BHLD = add(p + "q_BHLD", q_BHLD)
    k_BGKD, v_BGKD = add(p + attn.k_name, k_BGKD), add(p + attn.v_name, v_BGKD)
    k_BHKD, v_BHKD = k_BGKD.repeat_interleave(H // G, dim=1), v_BGKD.repeat_interleave(H // G, dim=1)
    scores_BHLK = add(p + f"scores_BHL{keys}", q_BHLD @ k_BHKD.transpose(-2, -1) / math.sqrt(D))
    if causal:
        future_LK = torch.ones(L, K, dtype=torch.bool, device=x_BLC.device).triu(1)
        masked_BHLK = add(p + f"masked_BHL{keys}", scores_BHLK.masked_fill(future_LK, -math.inf))
    else:  # one sequence has no padding to hide: every query sees every key
        masked_BHLK = add(p + f"masked_BHL{keys}", scores_BHLK, _UNMASKED[keys])
    exp_BHLK = torch.exp(masked_BHLK - masked_BHLK.amax(-1, keepdim=True))
    weights_BHLK = add(p + f"weights_BHL{keys}", exp_BHLK / exp_BHLK.sum(-1, keepdim=True))
    z_BHLD = add(p + "z_BHLD", weights_BHLK @ v_BHKD)
    out_BLC = add(p + "out_BLC", _linear(z_BHLD.transpose(1, 2).reshape(B, L, H * D), attn.w_o))
    rows = _value_paths(int(p.split(".")[1]), attn, z_BHLD, out_BLC)
    heads += [{"attention": kind, **row} for row in rows] if kind else rows
    return out_BLC


_UNMASKED = {
    "K": "the scores as they are: no key is hidden (a source has no future; padding, none here, would be -inf)",
    "S": "the scores as they are: every source position may be read (padding, none here, would be -inf)",
}


# What each position scheme does to the token embeddings and to what enters the first block; the hook
# table (hooks.MEANINGS) says what any model may do, a trace says what this one does.
_TOKENS_UNDER = {
    "learned": "",
    "sinusoidal": ", x sqrt(C) so that the sin/cos table added next does not drown them",
    "rope": " (no position vector is added: RoPE turns each head's queries and keys instead)",
    "none": " (this model has no positions)",
}
_SUM_UNDER = {
    "learned": "token embeddings + learned position embeddings",
    "sinusoidal": "token embeddings x sqrt(C) + the sin/cos position table",
    "rope": "the token embeddings alone (RoPE brings positions in inside attention)",
    "none": "the token embeddings alone (no positions)",
}
_ACTIVATED = {
    "relu": "ReLU(W1 x)",
    "gelu": "GELU(W1 x), tanh approximation",
    "relu2": "ReLU(W1 x) squared",
    "swiglu": "SiLU(W1 x) * W3 x (SwiGLU)",
}
_NORMS = {"layer": "LayerNorm", "rms": "RMSNorm"}


def _embedding_meanings(cfg: ModelConfig, prefix: str, whose: str, into: str) -> dict[str, str]:
    """The meanings of a Transformer's (or one side of an encoder-decoder's) embedding steps under its scheme."""
    if cfg.positions not in _TOKENS_UNDER:  # a scheme added since: the hook table's general words
        return {}
    tokens = f"{whose} embeddings: one row of the embedding table per token"
    return {
        prefix + "tok_BLC": tokens + _TOKENS_UNDER[cfg.positions],
        prefix + "sum_BLC": f"{into}: {_SUM_UNDER[cfg.positions]}",
    }


def _mlp_meanings(cfg: ModelConfig) -> dict[str, str]:
    """The hidden layer named by the model's one activation, not the list of all four."""
    up = {"mlp.up_BLF": "the linear branch W3 x that SiLU(W1 x) multiplies (SwiGLU)"} if cfg.mlp == "swiglu" else {}
    return {"mlp.hidden_BLF": f"MLP hidden layer after the activation: {_ACTIVATED[cfg.mlp]}", **up}


def _attention_meanings(cfg: ModelConfig) -> dict[str, str]:
    """Queries and keys as this model makes them: QK-norm and RoPE named only when it has them."""
    qk = (", normalised to a learned length (QK-norm)" if cfg.qk_norm else "") + (
        ", then turned by its position's angle (RoPE)" if cfg.positions == "rope" else ""
    )
    shared = f"grouped-query attention: each serves {cfg.n_heads // cfg.kv_heads} query heads"
    return {
        "attn.q_BHLD": f"queries: what each position looks for, per head{qk}",
        "attn.k_BHKD": f"keys: what each position offers to be found by, per head{qk}",
        "attn.k_BGKD": f"keys, per key/value head ({shared}){qk}",
        "attn.v_BGKD": f"values, per key/value head ({shared})",
    }


def model_meanings(model: LanguageModel | Seq2SeqTransformer) -> dict[str, str]:
    """Each step's meaning for this model, by generic hook name, where it depends on the model's choices
    (positions, activation, norms, attention variants); other steps keep the hook table's meaning."""
    cfg = model.config
    if isinstance(model, FeedForwardLM):  # one token at a time: no positions, no attention, no residual
        return {
            "embed.tok_BLC": "token embeddings: one row of the embedding table per token, the MLP's only input",
            **_mlp_meanings(cfg),
            "mlp.out_BLC": "MLP output, projected back to C: what the LM head reads (no residual stream, no norm)",
        }
    if isinstance(model, Seq2SeqTransformer):
        return {
            **_embedding_meanings(cfg, "src_embed.", "source token", "the encoder's input"),
            **_embedding_meanings(cfg, "embed.", "target token", "the decoder's input"),
            **_attention_meanings(cfg),
            **_mlp_meanings(cfg),
        }
    norm, post = _NORMS[cfg.norm], cfg.norm_placement == "post"
    return {
        **_embedding_meanings(cfg, "embed.", "token", "the residual stream entering block 0"),
        **_attention_meanings(cfg),
        **_mlp_meanings(cfg),
        "ln1_BLC": f"{norm} of the residual stream after adding the attention output (post-norm): the MLP's input"
        if post
        else f"{norm} of the residual stream: the attention's input",
        "ln2_BLC": f"{norm} of the residual stream after adding the MLP output (post-norm): the block's output"
        if post
        else f"{norm} of the residual stream: the MLP's input",
        "resid_post_BLC": "residual stream after adding the MLP output, before the block's norm (ln2_BLC)"
        if post
        else "residual stream after adding the MLP output: the block's output",
        "final_ln_BLC": f"final {norm} of the residual stream: what the LM head reads",
    }


def _scheme(embed: Embeddings) -> PositionScheme:
    """The position scheme of a Transformer's embeddings (only the MLP baseline's have none; "none" is a scheme)."""
    assert embed.pos is not None, "a Transformer's embeddings have a position scheme"
    return embed.pos


def _embedding_steps(add: Add, p: str, embed: Embeddings, ids_BL: torch.Tensor) -> torch.Tensor:
    """Token rows (x sqrt(C) with the 2017 sin/cos table), plus position vectors when the scheme adds them."""
    pos = _scheme(embed)
    x_BLC = add(p + "tok_BLC", embed.tok.weight[ids_BL] * pos.token_scale())
    if (pos_LC := pos.table_LC(slice(0, ids_BL.shape[1]))) is not None:  # None: the scheme adds no vectors
        x_BLC = x_BLC + add(p + "pos_LC", pos_LC, pos.meaning)
    return add(p + "sum_BLC", x_BLC)


@torch.no_grad()
def trace(model: LanguageModel, ids: list[int], token_strs: list[str] | None = None) -> Trace:
    """Walk `ids` (one sequence) through `model` step by step."""
    model.eval()
    device = next(model.parameters()).device
    ids_BL = torch.tensor([ids], device=device)
    steps: list[Step] = [Step("ids_BL", ids_BL, "token ids: the text after the tokenizer")]
    fitted = model_meanings(model)

    def add(name: str, tensor: torch.Tensor, text: str | None = None) -> torch.Tensor:
        steps.append(Step(name, tensor, text or fitted.get(generic_name(name)) or meaning(name)))
        return tensor

    heads: Heads = []
    cfg = model.config
    if isinstance(model, FeedForwardLM):
        x_BLC = _mlp_steps(add, "", add("embed.tok_BLC", model.embed.tok.weight[ids_BL]), model.mlp)
    else:
        assert isinstance(model, TransformerLM)
        x_BLC = _embedding_steps(add, "embed.", model.embed, ids_BL)  # the position scheme decides the rest
        rotate = _scheme(model.embed).rotation(slice(0, ids_BL.shape[1]))
        for i, block in enumerate(model.blocks):
            assert isinstance(block, Block)  # a TransformerLM's blocks are all Blocks
            p = f"blocks.{i}."
            if cfg.norm_placement == "post":
                x_BLC = add(
                    p + "resid_mid_BLC", x_BLC + _attention_steps(add, p + "attn.", x_BLC, block.attn, heads, rotate)
                )
                x_BLC = add(p + "ln1_BLC", _norm(x_BLC, block.ln1))
                x_BLC = add(p + "resid_post_BLC", x_BLC + _mlp_steps(add, p, x_BLC, block.mlp))
                x_BLC = add(p + "ln2_BLC", _norm(x_BLC, block.ln2))
            else:
                ln1_BLC = add(p + "ln1_BLC", _norm(x_BLC, block.ln1))
                attn_BLC = _attention_steps(add, p + "attn.", ln1_BLC, block.attn, heads, rotate)
                x_BLC = add(p + "resid_mid_BLC", x_BLC + attn_BLC)
                ln2_BLC = add(p + "ln2_BLC", _norm(x_BLC, block.ln2))
                x_BLC = add(p + "resid_post_BLC", x_BLC + _mlp_steps(add, p, ln2_BLC, block.mlp))
        if model.final_ln is not None:
            x_BLC = add("final_ln_BLC", _norm(x_BLC, model.final_ln))
    W_U_VC = model.lm_head.weight if model.lm_head is not None else model.embed.tok.weight
    logits_BLV = add("logits_BLV", x_BLC @ W_U_VC.T)
    add("probs_BLV", logits_BLV.softmax(-1), "softmax of the logits: next-token probabilities")

    _, cache = model.run_with_cache(ids_BL)
    for step in steps:
        if step.name in cache:
            step.cache_diff = _max_diff(step.tensor, cache[step.name])
    max_abs_diff = (logits_BLV - model(ids_BL)).abs().max().item()
    return Trace(token_strs or [str(i) for i in ids], steps, max_abs_diff, heads)


@torch.no_grad()
def trace_seq2seq(
    model: Seq2SeqTransformer,
    src: list[int],
    tgt: list[int],
    source_strs: list[str] | None = None,
    target_strs: list[str] | None = None,
) -> Trace:
    """Walk one source (`src`) and one decoder input (`tgt`: <bos> and the target so far) through the
    encoder, then the decoder, step by step; every step is checked as in `trace`."""
    model.eval()
    device = next(model.parameters()).device
    src_BS, tgt_BL = torch.tensor([src], device=device), torch.tensor([tgt], device=device)
    steps = [
        Step("src_BS", src_BS, "source token ids: the encoder's input"),
        Step("tgt_BL", tgt_BL, "decoder input ids: <bos> then the target so far (the target shifted right)"),
    ]
    fitted = model_meanings(model)

    def add(name: str, tensor: torch.Tensor, text: str | None = None) -> torch.Tensor:
        steps.append(Step(name, tensor, text or fitted.get(generic_name(name)) or meaning(name)))
        return tensor

    heads: Heads = []
    x_BSC = _embedding_steps(add, "src_embed.", model.src_embed or model.embed, src_BS)
    for i, block in enumerate(model.encoder):
        assert isinstance(block, Block)  # the encoder's and the decoder's layers are all Blocks
        x_BSC = _seq2seq_block_steps(add, f"encoder.{i}.", x_BSC, block, heads)
    if model.enc_ln is not None:
        x_BSC = _norm(x_BSC, model.enc_ln)
    memory_BSC = add("memory_BSC", x_BSC)
    x_BLC = _embedding_steps(add, "embed.", model.embed, tgt_BL)
    for i, block in enumerate(model.decoder):
        assert isinstance(block, Block)
        x_BLC = _seq2seq_block_steps(add, f"decoder.{i}.", x_BLC, block, heads, memory_BSC)
    if model.dec_ln is not None:
        x_BLC = add("dec_ln_BLC", _norm(x_BLC, model.dec_ln))
    W_U_VC = model.lm_head.weight if model.lm_head is not None else model.embed.tok.weight
    logits_BLV = add("logits_BLV", x_BLC @ W_U_VC.T, "logits: one score per target-vocabulary entry for the next token")
    add("probs_BLV", logits_BLV.softmax(-1), "softmax of the logits: next-token probabilities")

    _, cache = model.run_with_cache(src_BS, tgt_BL)
    for step in steps:
        if step.name in cache:
            step.cache_diff = _max_diff(step.tensor, cache[step.name])
    max_abs_diff = (logits_BLV - model(src_BS, tgt_BL)).abs().max().item()
    tokens = target_strs or [str(i) for i in tgt]
    return Trace(tokens, steps, max_abs_diff, heads, source_strs or [str(i) for i in src])


def _seq2seq_block_steps(
    add: Add, p: str, x_BLC: torch.Tensor, block: Block, heads: Heads, memory_BSC: torch.Tensor | None = None
) -> torch.Tensor:
    """An encoder block (without `memory_BSC`) or a decoder block: each sublayer with its norm and
    residual, post-norm norm(x + f(x)) or pre-norm x + f(norm(x)), in the block's own order."""
    decoder = memory_BSC is not None
    sublayers: dict[str, Callable[[torch.Tensor, str], torch.Tensor]] = {
        "attn": lambda h_BLC, q: _attention_steps(
            add, q, h_BLC, block.attn, heads, None, causal=decoder, kind="decoder" if decoder else "encoder"
        ),
        "mlp": lambda h_BLC, q: _mlp_steps(add, p, h_BLC, block.mlp),
    }
    if (cross := block.cross) is not None:  # only a decoder block has one (and only its sublayers() lists it)
        sublayers["cross"] = lambda h_BLC, q: _attention_steps(
            add, q, h_BLC, cross, heads, None, memory_BSC, causal=False, kind="cross"
        )
    for sub, norm, resid in block.sublayers():
        f, norm_module = sublayers[sub], getattr(block, norm)
        if block.post_norm:
            x_BLC = add(p + f"{resid}_BLC", x_BLC + f(x_BLC, p + f"{sub}."))
            x_BLC = add(p + f"{norm}_BLC", _norm(x_BLC, norm_module))
        else:
            h_BLC = add(p + f"{norm}_BLC", _norm(x_BLC, norm_module))
            x_BLC = add(p + f"{resid}_BLC", x_BLC + f(h_BLC, p + f"{sub}."))
    return x_BLC


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return math.inf
    return (a[finite].double() - b[finite].double()).abs().max().item() if finite.any() else 0.0


def _value_paths(layer: int, attn: Attention, z_BHLD: torch.Tensor, out_BLC: torch.Tensor) -> Heads:
    """Each head's value path: "value down" C -> D (its rows of w_v) and "value up" D -> C (its columns of w_o).

    The attention output is the sum over heads of z_h @ W_up_h^T, plus the shared output bias; the
    difference between that sum and the model's output is reported as `sum_diff`.
    """
    D = attn.head_dim
    C = attn.w_o.weight.shape[0]
    per_kv = attn.n_heads // attn.n_kv_heads  # query heads sharing one value head (1 without GQA)
    total_BLC = torch.zeros_like(out_BLC) if attn.w_o.bias is None else attn.w_o.bias.expand_as(out_BLC).clone()
    rows: Heads = []
    for h in range(attn.n_heads):
        g = h // per_kv
        down_DC = attn.w_v.weight[g * D : (g + 1) * D]
        up_CD = attn.w_o.weight[:, h * D : (h + 1) * D]
        total_BLC += z_BHLD[:, h] @ up_CD.T
        rows.append(
            {
                "layer": layer,
                "head": h,
                "value_down": {
                    "shape": [C, D],
                    "params": down_DC.numel() + (D if attn.w_v.bias is not None else 0),
                    "what": "C -> D: rows of w_v (+ bias)" + (f", shared by {per_kv} heads" if per_kv > 1 else ""),
                },
                "value_up": {"shape": [D, C], "params": up_CD.numel(), "what": "D -> C: columns of w_o"},
            }
        )
    diff = (total_BLC - out_BLC).abs().max().item()
    for row in rows:
        row["sum_diff"] = diff
    return rows


def format_trace(tr: Trace, fmt: str = "table") -> str:
    """The walk as an aligned text table or as Markdown."""
    header = ["#", "name", "symbolic", "shape", "meaning"]
    rows = [
        [str(i), s.name, symbolic_shape(s.name), "x".join(map(str, s.tensor.shape)), s.meaning]
        for i, s in enumerate(tr.steps)
    ]
    tokens = " ".join(repr(t) for t in tr.tokens)
    if tr.sources is not None:  # an encoder-decoder: what the encoder reads, then what the decoder reads
        tokens = " ".join(repr(t) for t in tr.sources) + "\ndecoder reads: " + tokens
    heads = [
        (f"{h['attention']} " if "attention" in h else "") + f"layer {h['layer']} head {h['head']}: "
        f"value down {h['value_down']['shape'][0]}->{h['value_down']['shape'][1]}"
        f" ({h['value_down']['params']:,} params), value up {h['value_up']['shape'][0]}->{h['value_up']['shape'][1]}"
        f" ({h['value_up']['params']:,} params)"
        for h in tr.heads
    ]
    check = f"max |walk logits - model(ids) logits| = {tr.max_abs_diff:.3g}"
    label = "tokens" if tr.sources is None else "source"
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") if j else c for j, c in enumerate(r)) + " |" for r in rows]
        extra = [f"- {h}" for h in heads]
        return "\n".join([f"{label}: {tokens}", "", *lines, "", *extra, "", check])
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header) - 1)]

    def fmt_row(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]

    lines = [fmt_row(header), *(fmt_row(r) for r in rows)]
    return "\n".join([f"{label}: {tokens}", "", *lines, "", *heads, "", check])
