"""Take a part out of a trained model and see what it was doing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import AttnlabError
from ..models import LanguageModel
from ..models.positions import PositionScheme


@contextlib.contextmanager
def without_positions(model: LanguageModel) -> Iterator[LanguageModel]:
    """The same model, for the `with` block, with no position information at all.

    Whatever its scheme (a learned or sin/cos table added to the tokens, or queries and keys
    rotated by position), the model then sees its context as a bag of tokens: the causal mask
    still tells a position how many tokens came before it, but not which came where. The lab's
    answer to "why position embeddings": how much worse the model predicts without them.
    """
    embed = getattr(model, "embed", None)
    if embed is None or getattr(embed, "pos", None) is None:
        raise AttnlabError("this model has no positions to take out (the MLP sees one token at a time)")
    scheme = embed.pos
    embed.pos = _NoPositions(scheme.token_scale())
    try:
        yield model
    finally:
        embed.pos = scheme


class _NoPositions(PositionScheme):
    """Adds and rotates nothing, but scales the tokens as the model's own scheme does (sin/cos: by sqrt(C)),
    so that only the position information goes."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def token_scale(self) -> float:
        return self.scale
