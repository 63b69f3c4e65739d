"""Checks on what the package reads before it is used: JSON objects' fields and types, and the memory there is."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import AttnlabError


def json_type_name(value: Any) -> str:
    """What a JSON value is, in JSON's words (for messages about files that hold the wrong thing)."""
    if value is None:
        return "null"
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)


def _fits(value: Any, kind: Any) -> bool:
    """isinstance for JSON: a bool is not an int, and an int is a float."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds) or (isinstance(value, int) and float in kinds)


def check_object(
    value: Any, where: str, types: dict[str, Any], required: tuple[str, ...] = (), fix: str = ""
) -> dict[str, Any]:
    """`value` checked as a JSON object read from a file: only the keys of `types`, each of its type
    (a type or a tuple of them), and every key of `required` present. The error names the file
    (`where`), the key, what it holds and `fix`."""
    tail = f"; {fix}" if fix else ""
    if not isinstance(value, dict):
        raise AttnlabError(f"{where}: holds {json_type_name(value)}, not an object{tail}")
    if unknown := sorted(set(value) - set(types)):
        raise AttnlabError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}{tail}")
    if missing := [k for k in required if k not in value]:
        raise AttnlabError(f"{where}: missing key(s) {', '.join(missing)}{tail}")
    for key, item in value.items():
        if not _fits(item, types[key]):
            raise AttnlabError(f'{where}: "{key}" is {json_type_name(item)} ({str(item)[:40]}){tail}')
    return value


def field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """The JSON types each field of a dataclass may hold, from its annotations (`int | None` -> int or
    null, `tuple[float, int]` -> a list), for `check_object`."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[type, ...]] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        if origin in (tuple, list):
            out[f.name] = (list,)
        elif origin is dict:
            out[f.name] = (dict,)
        elif origin in (typing.Union, types.UnionType):
            out[f.name] = tuple(a for a in typing.get_args(hint) if isinstance(a, type))
        else:
            out[f.name] = (hint,)
    return out


def memory_limit() -> int:
    """Bytes of memory this process may use: the machine's, or less under a cgroup limit."""
    limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limit = min(limit, int(text))
    except OSError:
        pass
    return limit
