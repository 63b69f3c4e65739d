"""Model configuration: one dataclass for both models, named presets, `key=value` overrides."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from ..errors import AttnlabError
from ..runtime.checks import check_object
from .positions import SCHEMES

MODEL_KINDS = ("mlp", "transformer", "seq2seq")
ATTN_IMPLS = ("sdpa", "explicit")
NORMS = ("layer", "rms")
NORM_PLACEMENTS = ("pre", "post")
MLPS = ("relu", "gelu", "swiglu", "relu2")
CHOICES = {
    "model": MODEL_KINDS,
    "attn_impl": ATTN_IMPLS,
    "norm": NORMS,
    "norm_placement": NORM_PLACEMENTS,
    "positions": SCHEMES,  # learned, sinusoidal, rope, none: see positions.py
    "mlp": MLPS,
}


@dataclass
class ModelConfig:
    model: str = "transformer"  # "mlp" (the one-token baseline), "transformer", or "seq2seq" (encoder-decoder)
    n_vocab: int = 256  # vocabulary size V (set from the tokenizer)
    max_len: int = 64  # context length: the longest sequence L the model sees
    emb_dim: int = 32  # channels C of the embeddings and the residual stream
    n_hidden: int = 128  # hidden width F of the MLP
    head_dim: int = 5  # D, per head; independent of emb_dim / n_heads
    n_heads: int = 4  # H attention heads
    n_layers: int = 1  # Transformer blocks
    dropout: float = 0.0  # on attention weights and residual branches (training only)
    attn_impl: str = "sdpa"  # "sdpa": F.scaled_dot_product_attention; "explicit": written out
    # Block variants (defaults: GPT-2's choices, which are also the lab's).
    norm: str = "layer"  # "layer": LayerNorm; "rms": RMSNorm (no mean subtraction, no bias)
    norm_bias: bool = True  # LayerNorm with a bias (GPT-2) or without; RMSNorm never has one
    norm_eps: float = 1e-5  # added to the variance inside the norms, so that a constant vector divides by no 0
    norm_placement: str = "pre"  # "pre": x + f(norm(x)) (GPT-2); "post": norm(x + f(x)) (Vaswani et al. 2017)
    positions: str = "learned"  # "learned", "sinusoidal" (2017), "rope" (rotary, on q and k), "none"
    rope_theta: float = 10000.0  # RoPE base: angle of pair i is position * theta^(-2i/D)
    mlp: str = "relu"  # "relu" (the lab), "gelu" (tanh approximation, GPT-2), "swiglu" (W2(SiLU(W1 x) * W3 x)),
    # or "relu2" (ReLU squared, So et al. 2021 "Primer", as in the nanoGPT speedrun)
    n_kv_heads: int = 0  # grouped-query attention: key/value heads shared by n_heads / n_kv_heads queries (0 = n_heads)
    bias: bool = True  # biases in the attention and MLP projections
    tie_embeddings: bool = True  # LM head = token embedding^T (else its own V x C matrix)
    zero_init: bool = False  # LMs: attention and MLP output projections start at 0 (each block starts as the identity)
    qk_norm: bool = False  # LMs: RMSNorm (with a gain) on each head's queries and keys before q . k
    # The encoder-decoder (model="seq2seq"): n_layers decoder blocks, and
    n_enc_layers: int = 0  # encoder blocks (0 = n_layers)
    n_src_vocab: int = 0  # the source's vocabulary (0 = the target's: one table embeds both, as in the paper)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def grouped(self) -> bool:
        """Grouped-query attention: fewer key/value heads than query heads."""
        return self.kv_heads != self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    def validate(self) -> None:
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise AttnlabError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(choices)}")
        for name in ("n_vocab", "max_len", "emb_dim", "n_hidden", "head_dim", "n_heads", "n_layers"):
            if getattr(self, name) < 1:
                raise AttnlabError(f"{name}={getattr(self, name)}: must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise AttnlabError(f"dropout={self.dropout}: must be in [0, 1)")
        if self.n_kv_heads < 0 or self.n_heads % self.kv_heads:
            raise AttnlabError(f"n_kv_heads={self.n_kv_heads}: must divide n_heads={self.n_heads} (0 = n_heads)")
        if problem := SCHEMES[self.positions].check(self):
            raise AttnlabError(problem)
        if self.n_enc_layers < 0 or self.n_src_vocab < 0:
            raise AttnlabError("n_enc_layers and n_src_vocab: must be >= 0 (0 = as the decoder's)")
        if self.model == "seq2seq" and (self.grouped or self.positions == "rope" or self.qk_norm):
            raise AttnlabError("model=seq2seq: the encoder-decoder takes no n_kv_heads, rotary positions or qk_norm")
        for name in ("norm_eps", "rope_theta"):  # NaN fails every comparison, so ask for what is right
            value = getattr(self, name)
            if not (0 < value < math.inf):
                raise AttnlabError(f"{name}={value}: must be a finite number > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model config") -> ModelConfig:
        """A config saved with `to_dict` (a checkpoint's config.json): keys and value types checked first."""
        types = {f.name: type(f.default) for f in fields(cls)}
        return cls(**check_object(d, where, types))

    def with_overrides(self, overrides: dict[str, Any]) -> ModelConfig:
        """This config with some fields changed: values as `--set key=value` strings, converted to each
        field's type, or already typed (`{"n_heads": 8, "bias": False}`)."""
        types: dict[str, type] = {f.name: type(f.default) for f in fields(self)}  # every field has a default
        values = self.to_dict()
        for key, raw in overrides.items():
            if key not in types:
                raise AttnlabError(f"--set {key}=...: no such config field; fields: {', '.join(types)}")
            if not isinstance(raw, str):
                values[key] = raw
                continue
            try:
                values[key] = _parse_bool(raw) if types[key] is bool else types[key](raw)
            except ValueError:
                raise AttnlabError(f"--set {key}={raw}: expected a {types[key].__name__}") from None
        return ModelConfig(**values)


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


# Sizes per preset. The MLP uses the same emb_dim / n_hidden so the two models compare fairly.
# The project's own presets leave n_vocab to the tokenizer (default 256, bytes); the published
# architectures below carry their own n_vocab (GPT-2's BPE, 50257), which an explicit n_vocab overrides.
PRESETS: dict[str, dict[str, Any]] = {
    # The lab's exact sizes: C=32, H=4, D=5, F=128, one block.
    "lab": dict(max_len=64, emb_dim=32, n_hidden=128, head_dim=5, n_heads=4, n_layers=1),
    # The best model for about 10 minutes on 2 CPU cores, in the lab's architecture (learned positions:
    # `attnlab lab` trains it). `--set positions=rope` and `--optimizer muon` make it learn faster (README).
    "small": dict(max_len=128, emb_dim=128, n_hidden=512, head_dim=32, n_heads=4, n_layers=4),
    # GPU sizes (nanoGPT's Shakespeare-char model and a GPT-2-small shape).
    "medium": dict(max_len=256, emb_dim=384, n_hidden=1536, head_dim=64, n_heads=6, n_layers=6, dropout=0.1),
    "large": dict(max_len=512, emb_dim=768, n_hidden=3072, head_dim=64, n_heads=12, n_layers=12, dropout=0.1),
}

# The encoder-decoder for attnlab's tasks (`attnlab seq2seq train`): the paper's design at the `small`
# LM's sizes, 3 + 3 blocks, sources and targets up to 96 characters.
PRESETS["seq2seq-small"] = dict(
    model="seq2seq", max_len=96, emb_dim=128, n_hidden=512, head_dim=32, n_heads=4, n_layers=3,
    norm_placement="post", positions="sinusoidal",
)  # fmt: skip

# The encoder-decoder of Vaswani et al. 2017, "Attention Is All You Need", Table 3: N = 6 blocks in
# each of encoder and decoder, d_model, d_ff, h heads of d_k = 64, dropout; post-norm, sinusoidal
# positions, ReLU, one 37,000-token vocabulary shared by source and target, whose embedding is also
# the pre-softmax matrix. The paper counts 65 M and 213 M parameters.
for _name, (_c, _f, _heads, _drop) in {
    "vaswani-base": (512, 2048, 8, 0.1),
    "vaswani-big": (1024, 4096, 16, 0.3),
}.items():
    PRESETS[_name] = dict(
        model="seq2seq", n_vocab=37000, max_len=512, emb_dim=_c, n_hidden=_f, head_dim=64, n_heads=_heads,
        n_layers=6, dropout=_drop, norm_placement="post", positions="sinusoidal",
    )  # fmt: skip

# GPT-2 (Radford et al. 2019), the sizes of the four released checkpoints (n_embd, n_layer, n_head in
# their config.json): n_ctx 1024, head dim 64, MLP width 4 * d_model, vocabulary 50257.
# With the tied head these give exactly 124,439,808 / 354,823,168 / 774,030,080 / 1,557,611,200 parameters.
_GPT2_SIZES = {
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
for _name, (_c, _layers, _heads) in _GPT2_SIZES.items():
    PRESETS[_name] = dict(
        n_vocab=50257, max_len=1024, emb_dim=_c, n_hidden=4 * _c, head_dim=64, n_heads=_heads, n_layers=_layers
    )

# GPT-3 (Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1): n_layers, d_model,
# n_heads, d_head as printed there; n_ctx 2048, d_ff = 4 * d_model, the GPT-2 vocabulary (50257).
# Two rows of the table do not add up. 13B prints d_model = 5140 although 40 heads x 128 = 5120; the
# table's 5140 is kept (head_dim is independent of emb_dim here, and the total stays within 0.5% of 13B).
# XL prints 24 heads x 128 = 3072 attention channels for d_model = 2048: built literally that gives
# 1.52B parameters, not the table's 1.3B. The 1.3B count needs H*D = d_model, as in every other row, so
# gpt3-1.3b keeps d_head 128 with 16 heads (the shape of Megatron-LM's and GPT-Neo's 1.3B models).
_GPT3_SIZES = {  # name: (n_layers, d_model, n_heads, d_head)
    "gpt3-125m": (12, 768, 12, 64),
    "gpt3-350m": (24, 1024, 16, 64),
    "gpt3-760m": (24, 1536, 16, 96),
    "gpt3-1.3b": (24, 2048, 16, 128),  # table: 24 heads; see above
    "gpt3-2.7b": (32, 2560, 32, 80),
    "gpt3-6.7b": (32, 4096, 32, 128),
    "gpt3-13b": (40, 5140, 40, 128),
    "gpt3-175b": (96, 12288, 96, 128),
}
for _name, (_layers, _c, _heads, _d) in _GPT3_SIZES.items():
    PRESETS[_name] = dict(
        n_vocab=50257, max_len=2048, emb_dim=_c, n_hidden=4 * _c, head_dim=_d, n_heads=_heads, n_layers=_layers
    )
del _name, _c, _layers, _heads, _d


def preset_config(name: str, model: str = "transformer", n_vocab: int | None = None, **overrides: Any) -> ModelConfig:
    """The config of a named preset; `n_vocab=None` keeps the preset's own vocabulary (else 256).

    An explicit `n_vocab` (usually the tokenizer's) wins over the preset's, and `overrides` win over both
    for every other field.
    """
    if name not in PRESETS:
        raise AttnlabError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"n_vocab": 256, "model": model, **PRESETS[name], **overrides}
    if n_vocab is not None:
        values["n_vocab"] = n_vocab
    return ModelConfig(**values)
