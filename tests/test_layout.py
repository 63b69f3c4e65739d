"""The README's "Project layout" is the package as it is: every module listed, no module listed that is
not there, each folder under the layer the import-linter contract puts it in."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "src" / "attnlab"
ENTRY = re.compile(r"^(?P<indent> +)(?P<name>[\w]+(?:\.py|/))(?: |$)")


def _layout_block() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Project layout") :]
    block = section[section.index("```\nsrc/attnlab/") + 4 :]
    return block[: block.index("```")].splitlines()


def _listed() -> tuple[set[str], list[tuple[str, str]]]:
    """The paths the README lists (relative to src/attnlab), and each top-level entry with its layer."""
    paths, layered, folder, layer = set(), [], None, "command line"
    for line in _layout_block()[1:]:
        if line.strip().startswith("──"):
            layer = line.strip(" ─")
            continue
        m = ENTRY.match(line)
        if m is None:
            continue
        name, depth = m["name"], len(m["indent"]) // 2
        if depth == 1:
            folder = name if name.endswith("/") else None
            paths.add(name.rstrip("/"))
            layered.append((name.rstrip("/").removesuffix(".py"), layer))
        else:
            assert folder is not None and depth == 2, line
            paths.add(folder + name)
    return paths, layered


def _modules() -> set[str]:
    """Every module and package of the package but the dunder files."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if "__pycache__" in rel.parts:
            continue
        if len(rel.parts) > 1:
            out.add(rel.parts[0])
        if not rel.name.startswith("__"):
            out.add(rel.as_posix())
    return out


def test_the_readme_lists_every_module_and_only_those():
    listed, _ = _listed()
    modules = _modules()
    assert sorted(modules - listed) == [], "modules the README's Project layout does not list"
    assert sorted(listed - modules) == [], "the README's Project layout lists modules that do not exist"


def test_the_readme_puts_each_folder_in_the_layer_of_the_contract():
    config = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib: Python 3.11 and later
    contract = config[config.index('name = "Layers') :]
    layers = re.findall(r'^  "([^"]+)",$', contract[: contract.index("\n]")], re.M)
    assert len(layers) == 5, layers
    layer_of = {}
    for index, layer in enumerate(layers):
        for name in re.split(r"[|:]", layer):
            layer_of[name.strip(" ()").removeprefix("attnlab.")] = index
    _, layered = _listed()
    order = {title: i for i, title in enumerate(dict.fromkeys(title for _, title in layered))}
    for name, title in layered:
        if name.startswith("_"):
            continue  # the version and the old names: imported by nothing in the package but its __init__
        assert name in layer_of, f"{name} is in no layer of the contract"
        assert layer_of[name] == order[title], (name, title)


def test_the_modules_old_names_still_import_as_the_moved_modules():
    import importlib
    import warnings

    import attnlab
    from attnlab._moved import MOVED

    for old, new in MOVED.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert importlib.import_module(old) is importlib.import_module(new), old
    from attnlab.train import cosine_lr  # as the README showed it before

    assert cosine_lr is importlib.import_module("attnlab.training.train").cosine_lr
    assert attnlab.train is attnlab.training.train.train  # still the function, after importing the old module name
