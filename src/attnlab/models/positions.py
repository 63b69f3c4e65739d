"""How a Transformer knows where each token is: the position schemes, in one place.

Attention itself is blind to order (it sums over keys), so positions come in one of two ways:
added to the token embeddings before the first block (a learned table, or the 2017 paper's fixed
sin/cos table), or as a rotation of each head's queries and keys inside attention (RoPE). A scheme
says which, and everything that depends on positions asks it: the embeddings, attention, the trace,
the parameter count and the config's checks. A new scheme is one class here, added to `SCHEMES`.

`positions` is a slice (`slice(start, start + L)`: a sequence starting at `start`, as in training and
generation) or a tensor of explicit positions, (L,) or (B, L), for packed sequences or left-padded
batches, when the modules are used on their own (a model's forward uses consecutive positions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .config import ModelConfig

Positions = slice | torch.Tensor
Rotation = Callable[[torch.Tensor], torch.Tensor]


class PositionScheme(nn.Module):
    """No positions at all (`positions=none`): the base every scheme refines."""

    adds_to_embeddings = False  # True: `table_LC` gives vectors (the `embed.pos_LC` hook) added to the tokens
    meaning = ""  # what `embed.pos_LC` holds

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> PositionScheme:
        """The scheme sized for `cfg`."""
        return cls()

    @staticmethod
    def check(cfg: ModelConfig) -> str | None:
        """What is wrong with `cfg` for this scheme, or None."""
        return None

    def init_weights(self) -> None:
        """Initialise any learned parameters (GPT-2's initialisation, see `LanguageModel.init_weights`)."""

    @staticmethod
    def n_params(cfg: ModelConfig) -> int:
        return 0

    def token_scale(self) -> float:
        """The token embeddings are multiplied by this before positions are added."""
        return 1.0

    def table_LC(self, positions: Positions) -> torch.Tensor | None:
        """Vectors to add to the token embeddings at `positions`, or None."""
        return None

    def rotation(self, positions: Positions) -> Rotation | None:
        """A function that rotates each head's queries and keys at `positions`, or None."""
        return None


class LearnedPositions(PositionScheme):
    """One learned vector per position (GPT-2, and the lab): `weight` is a max_len x C table."""

    adds_to_embeddings = True
    meaning = "position embeddings: one learned vector per position"

    def __init__(self, max_len: int, emb_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, emb_dim))
        self.init_weights()

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> PositionScheme:
        return cls(cfg.max_len, cfg.emb_dim)

    def init_weights(self) -> None:
        nn.init.normal_(self.weight, 0.0, 0.02)

    @staticmethod
    def n_params(cfg: ModelConfig) -> int:
        return cfg.max_len * cfg.emb_dim

    def table_LC(self, positions: Positions) -> torch.Tensor:
        return self.weight[positions]  # a slice of the table: no lookup needed


def sinusoidal_positions_LC(L: int, C: int) -> torch.Tensor:
    """Vaswani et al. 2017: PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(p / 10000^(2i/C))."""
    pos_L1 = torch.arange(L, dtype=torch.float64)[:, None]
    freq_C2 = torch.pow(10000.0, -torch.arange(0, C, 2, dtype=torch.float64) / C)
    pe_LC = torch.zeros(L, C, dtype=torch.float64)
    pe_LC[:, 0::2] = torch.sin(pos_L1 * freq_C2)
    pe_LC[:, 1::2] = torch.cos(pos_L1 * freq_C2)
    return pe_LC.float()


class SinusoidalPositions(PositionScheme):
    """The 2017 paper's fixed sin/cos table; the token embeddings are scaled by sqrt(C) as there, so
    the table (entries up to 1) does not drown them (they start at std 0.02)."""

    adds_to_embeddings = True
    meaning = "position embeddings: the fixed sin/cos table of Vaswani et al. 2017"
    table: torch.Tensor  # max_len x C, a buffer (not saved: it is computed)

    def __init__(self, max_len: int, emb_dim: int) -> None:
        super().__init__()
        self.emb_dim = emb_dim
        self.register_buffer("table", sinusoidal_positions_LC(max_len, emb_dim), persistent=False)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> PositionScheme:
        return cls(cfg.max_len, cfg.emb_dim)

    @staticmethod
    def check(cfg: ModelConfig) -> str | None:
        if cfg.emb_dim % 2:
            return f"emb_dim={cfg.emb_dim}: sinusoidal positions pair sin/cos, so emb_dim must be even"
        return None

    def token_scale(self) -> float:
        return math.sqrt(self.emb_dim)

    def table_LC(self, positions: Positions) -> torch.Tensor:
        return self.table[positions]


def rotate_pairs(x_BHLD: torch.Tensor, cos_LD: torch.Tensor, sin_LD: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + D/2) of x by the angles whose cosines and sines are given."""
    half = x_BHLD.shape[-1] // 2
    rotated_BHLD = torch.cat([-x_BHLD[..., half:], x_BHLD[..., :half]], dim=-1)
    return x_BHLD * cos_LD.to(x_BHLD.dtype) + rotated_BHLD * sin_LD.to(x_BHLD.dtype)


def rotate_pairs_rolled(x_BHLD: torch.Tensor, cos_LD: torch.Tensor, signed_sin_LD: torch.Tensor) -> torch.Tensor:
    """`rotate_pairs` in fewer, larger ops, the same numbers (tested): one roll swaps the halves, and the
    minus sign of the first half rides on the sines (`signed_sin_LD`: -sin, then +sin). What the model
    runs: a decoding step is a chain of tiny ops, so each one it saves counts (~2x faster here)."""
    rolled_BHLD = x_BHLD.roll(x_BHLD.shape[-1] // 2, dims=-1)
    return x_BHLD * cos_LD.to(x_BHLD.dtype) + rolled_BHLD * signed_sin_LD.to(x_BHLD.dtype)


class RotaryEmbedding(PositionScheme):
    """Rotary positions (Su et al. 2021): rotate pairs of q and k channels by position-dependent angles.

    Channel i is paired with channel i + D/2 (the "rotate half" layout of GPT-NeoX and Llama), and
    the pair rotates by angle position * theta^(-2i/D). Scores q.k then depend only on the offset
    between the two positions. Nothing is learned: cos and sin are tables of max_len rows.
    """

    # Buffers of max_len x D (not saved: they are computed).
    cos_LD: torch.Tensor
    sin_LD: torch.Tensor
    signed_sin_LD: torch.Tensor

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq_D2 = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles_LD2 = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq_D2
        angles_LD = torch.cat([angles_LD2, angles_LD2], dim=-1)
        self.register_buffer("cos_LD", angles_LD.cos().float(), persistent=False)
        self.register_buffer("sin_LD", angles_LD.sin().float(), persistent=False)
        signed_LD = torch.cat([-angles_LD2.sin(), angles_LD2.sin()], dim=-1)  # for `rotate_pairs_rolled`
        self.register_buffer("signed_sin_LD", signed_LD.float(), persistent=False)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> PositionScheme:
        return cls(cfg.head_dim, cfg.max_len, cfg.rope_theta)

    @staticmethod
    def check(cfg: ModelConfig) -> str | None:
        if cfg.head_dim % 2:
            return f"head_dim={cfg.head_dim}: rotary positions rotate pairs, so head_dim must be even"
        return None

    def _angles(self, positions: Positions) -> tuple[torch.Tensor, torch.Tensor]:
        cos, signed_sin = self.cos_LD[positions], self.signed_sin_LD[positions]
        if cos.dim() == 3:  # (B, L, D): one row of positions per sequence, shared by its heads
            cos, signed_sin = cos[:, None], signed_sin[:, None]
        return cos, signed_sin

    def rotation(self, positions: Positions) -> Rotation:
        cos, signed_sin = self._angles(positions)  # looked up once per forward, used by every layer
        return lambda x_BHLD: rotate_pairs_rolled(x_BHLD, cos, signed_sin)

    def forward(self, x_BHLD: torch.Tensor, positions: Positions | int = 0) -> torch.Tensor:
        """x rotated at `positions`: a start offset, a slice, or a tensor of positions (L,) or (B, L)."""
        if isinstance(positions, int):
            positions = slice(positions, positions + x_BHLD.shape[-2])
        return self.rotation(positions)(x_BHLD)


SCHEMES: dict[str, type[PositionScheme]] = {
    "learned": LearnedPositions,
    "sinusoidal": SinusoidalPositions,
    "rope": RotaryEmbedding,
    "none": PositionScheme,
}


def make_positions(cfg: ModelConfig) -> PositionScheme:
    """The position scheme `cfg.positions` names, sized for `cfg`."""
    return SCHEMES[cfg.positions].from_config(cfg)
