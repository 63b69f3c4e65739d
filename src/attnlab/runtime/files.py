"""Files: atomic writes, reading JSON and JSON lines, and output paths checked before any work."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import AttnlabError


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


def read_json(path: Path, fix: str = "") -> Any:
    """A JSON file's value; a file that is not UTF-8 JSON (cut short, binary) is one line naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AttnlabError(f"{path}: not valid JSON ({str(e)[:80]}){'; ' + fix if fix else ''}") from None


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
