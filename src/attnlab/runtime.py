"""Runtime helpers every layer may use: devices, precision, the cache folder, and notices to the user."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .errors import AttnlabError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CACHE_ENV = "ATTNLAB_CACHE"


def notice(msg: str) -> None:
    """A message for the user on stderr that does not break a progress bar."""
    tqdm.write(msg, file=sys.stderr)


def cache_dir() -> Path:
    """Where attnlab keeps what it can rebuild (token files, trained BPEs): `$ATTNLAB_CACHE` or ~/.cache/attnlab."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "attnlab"))


def resolve_device(device: str = "auto") -> str:
    """`auto` picks cuda, then mps, then cpu; any other name must exist on this machine."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise AttnlabError(f"--device {device}: not available here ({str(e).splitlines()[0][:120]})") from None
    return device


def check_dtype(dtype: str, flag: str = "--dtype") -> None:
    if dtype not in DTYPES:
        raise AttnlabError(f"{flag} {dtype}: choose one of {', '.join(DTYPES)}")


def autocast_context(device: str, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: matmuls in bf16/fp16, reductions kept in fp32 by autocast."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=DTYPES[dtype])


def available_devices() -> list[str]:
    """The devices this machine has: cpu, then cuda and mps where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def environment() -> dict[str, Any]:
    """What attnlab runs with here: versions, devices, threads, folders (`attnlab info`)."""
    from .threads import thread_settings

    devices = available_devices()
    if "cuda" in devices:
        devices = ["cpu", *(f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count()))]
        devices += ["mps"] if "mps" in available_devices() else []
    try:
        version = importlib.metadata.version("attnlab")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree (PYTHONPATH=src), not installed
        from ._version import __version__ as version
    return {
        "attnlab": version,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "devices": devices,
        "threads": thread_settings(),
        "cache": str(cache_dir()),
        "tinystories": os.environ.get("ATTNLAB_TINYSTORIES"),
    }


def format_environment(info: dict[str, Any]) -> str:
    """`environment()` as lines for a person."""
    t = info["threads"]
    lines = [
        f"attnlab {info['attnlab']}, torch {info['torch']}, Python {info['python']}",
        f"devices: {', '.join(info['devices'])}",
        f"threads: {t['torch']} (CPUs this process may use: {t['available_cpus']}; "
        + ("adjusted while training to the CPUs other processes leave free)" if t["adaptive"] else "fixed)"),
        *(f"  {k}={v}" for k, v in t["env"].items()),
        f"cache: {info['cache']}",
        f"TinyStories folder (ATTNLAB_TINYSTORIES): {info['tinystories'] or 'not set'}",
    ]
    return "\n".join(lines)


def synchronize(device: str) -> None:
    """Wait for `device` to finish its queued work (a no-op on the CPU), so timings are honest."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)  # that GPU: with no argument, only the current one
    elif device == "mps":
        torch.mps.synchronize()


def write_text_atomically(path: Path, text: str) -> Path:
    """Write `path` whole or not at all (a temporary file beside it, then a rename); returns `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AttnlabError(f"cannot write {path}: {e.strerror}; give a writable path") from None
    return path


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, one per line; a line cut short (a kill, an interrupted
    kernel) or anything but an object is skipped, so the rest of the file still counts. [] if absent."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


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
    out = {}
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


def read_json(path: Path, fix: str = "") -> Any:
    """A JSON file's value; a file that is not UTF-8 JSON (cut short, binary) is one line naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AttnlabError(f"{path}: not valid JSON ({str(e)[:80]}){'; ' + fix if fix else ''}") from None


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


PICTURE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")
NAME_MAX, PATH_MAX = 255, 4096  # bytes in a file name and in a path on Linux and macOS file systems


def check_output(text: str, flag: str, kind: str) -> Path:
    """An output path checked before any work starts: `kind` "dir" (a run folder), "file" or "picture".

    Refused in one line: an empty path, a folder where a file goes or the other way round, a path under
    a file, a place that cannot be written. A picture without a suffix gets ".png"; one whose suffix
    matplotlib does not write is refused.
    """
    if not text or not text.strip():
        raise AttnlabError(f"{flag} is empty; give a {'folder' if kind == 'dir' else 'file'} name")
    if "\x00" in text:
        raise AttnlabError(f"{flag} {text!r}: a path cannot hold a NUL character")
    path = Path(text)
    longest = max((os.fsencode(part) for part in path.parts), key=len)
    if len(longest) > NAME_MAX or len(os.fsencode(text)) >= PATH_MAX:
        raise AttnlabError(
            f"{flag}: a path of {len(os.fsencode(text))} bytes with a name of {len(longest)}, longer than file "
            f"systems take ({NAME_MAX} a name, {PATH_MAX - 1} a path); give a shorter one"
        )
    if kind != "dir" and path.is_dir():
        raise AttnlabError(f"{flag} {path} is a folder; give a file name")
    if kind == "picture":
        if not path.suffix:
            path = path.with_name(path.name + ".png")
        elif path.suffix.lower() not in PICTURE_SUFFIXES:
            raise AttnlabError(
                f"{flag} {path}: pictures are written as {', '.join(PICTURE_SUFFIXES)}; change the suffix"
            )
    if kind == "dir" and path.exists() and not path.is_dir():
        raise AttnlabError(f"{flag} {path} is a file; give a folder (the output is several files)")
    for place in (path, *path.parents) if kind == "dir" else path.parents:
        if place.exists():
            if not place.is_dir():
                raise AttnlabError(f"{flag} {path} lies under {place}, which is a file; give another path")
            if not os.access(place, os.W_OK | os.X_OK):
                raise AttnlabError(f"{flag} {path}: {place} is not writable; give a path you may write to")
            if why := _cannot_create_in(place):
                raise AttnlabError(f"{flag} {path}: nothing can be created in {place} ({why}); give another path")
            break
    return path


def _cannot_create_in(folder: Path) -> str | None:
    """Why no file can be created in the existing `folder`, or None: found by creating and removing an
    empty file there, since `os.access` says yes to root even where the file system refuses (/proc,
    /sys). The folder's times are put back, so the check leaves no trace."""
    try:
        before = folder.stat()
        fd, name = tempfile.mkstemp(prefix=".attnlab-check-", dir=folder)
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    os.unlink(name)
    with contextlib.suppress(OSError):
        os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
    return None
