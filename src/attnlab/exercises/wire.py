"""The grader's messages to and from a sandbox: a JSON header and tensors, never pickles.

A message is a 4-byte big-endian length, that many bytes of JSON (an object), then `blob` bytes
(the header says how many) holding tensors in the safetensors format. What comes out of a sandbox
is read as untrusted data: sizes are checked before anything is allocated, JSON and safetensors are
parsed, nothing is unpickled or run.

Values cross as specs: a tensor is `{"tensor": key}` (its data in the blob), a module of attnlab's
is `{"module": class name, "config": {...}, "prefix": key}` (its weights in the blob), numbers,
strings, None and lists of them as themselves.
"""

from __future__ import annotations

import json
import struct
from typing import IO, TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

if TYPE_CHECKING:
    from ..models.attention import CausalSelfAttention
    from ..models.layers import Block
    from ..models.transformer import TransformerLM

MAX_HEADER = 4 << 20
MAX_BLOB = 512 << 20


class WireError(Exception):
    """A message that breaks the format: the other side is gone or not speaking it."""


def send(stream: IO[bytes], header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    blob = save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}) if tensors else b""
    head = json.dumps({**header, "blob": len(blob)}).encode("utf-8")
    stream.write(struct.pack(">I", len(head)) + head + blob)
    stream.flush()


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise WireError(f"the stream ended {left} bytes before the end of a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(stream: IO[bytes]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The next message: its header and its tensors (checked: sizes, JSON object, safetensors)."""
    (size,) = struct.unpack(">I", _read_exactly(stream, 4))
    if size > MAX_HEADER:
        raise WireError(f"a header of {size:,} bytes (at most {MAX_HEADER:,})")
    try:
        header = json.loads(_read_exactly(stream, size).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise WireError(f"a header that is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise WireError("a header that is not a JSON object")
    blob = header.get("blob", 0)
    if isinstance(blob, bool) or not isinstance(blob, int) or not 0 <= blob <= MAX_BLOB:
        raise WireError(f"a blob size of {blob!r}")
    tensors: dict[str, torch.Tensor] = {}
    if blob:
        try:
            tensors = load_tensors(_read_exactly(stream, blob))
        except WireError:
            raise
        except Exception as e:  # safetensors raises several kinds for a damaged blob
            raise WireError(f"tensors that are not safetensors ({type(e).__name__})") from None
    return header, tensors


MODULES = ("CausalSelfAttention", "Block", "TransformerLM")  # what the exercises take


def _module_classes() -> dict[str, type[CausalSelfAttention | Block | TransformerLM]]:
    """The classes of `MODULES`, by name (imported when a module is first sent or received)."""
    from ..models.attention import CausalSelfAttention
    from ..models.layers import Block
    from ..models.transformer import TransformerLM

    return {"CausalSelfAttention": CausalSelfAttention, "Block": Block, "TransformerLM": TransformerLM}


def encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` as a spec, adding its tensors to `tensors` under names that start with `key`."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value
        return {"tensor": key}
    if isinstance(value, nn.Module):
        name = type(value).__name__
        if name not in MODULES:
            raise TypeError(f"cannot send a {name}")
        assert isinstance(value, _module_classes()[name])  # the checks send attnlab's own modules, not look-alikes
        for param, t in value.state_dict().items():
            tensors[f"{key}.{param}"] = t
        return {"module": name, "config": value.config.to_dict(), "prefix": key}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    raise TypeError(f"cannot send a {type(value).__name__}")


def decode(spec: Any, tensors: dict[str, torch.Tensor], modules: dict[str, nn.Module] | None = None) -> Any:
    """The value a spec stands for (modules built from attnlab's classes and their weights)."""
    if isinstance(spec, dict) and "tensor" in spec:
        return tensors[spec["tensor"]]
    if isinstance(spec, dict) and "module" in spec:
        from ..models import ModelConfig

        prefix = spec["prefix"] + "."
        weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        cache_key = json.dumps([spec["module"], spec["config"]], sort_keys=True) + str(
            sorted((k, float(v.double().sum())) for k, v in weights.items())
        )
        if modules is not None and cache_key in modules:
            return modules[cache_key]
        module = _module_classes()[spec["module"]](ModelConfig(**spec["config"]))
        module.load_state_dict(weights)
        module.eval()
        if modules is not None:
            modules[cache_key] = module
        return module
    if isinstance(spec, list):
        return [decode(s, tensors, modules) for s in spec]
    return spec
