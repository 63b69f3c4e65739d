"""The modules' names before they were grouped by layer (`attnlab.train` is now `attnlab.training.train`):
importing an old name gives the module under its new one, with a DeprecationWarning, so code written
against earlier versions keeps running."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "attnlab.lab": "attnlab.apps.lab",
    "attnlab.compare": "attnlab.apps.compare",
    "attnlab.bench": "attnlab.apps.bench",
    "attnlab.views": "attnlab.inspect.views",
    "attnlab.run": "attnlab.training.run",
    "attnlab.train": "attnlab.training.train",
    "attnlab.optim": "attnlab.training.optim",
    "attnlab.checkpoint": "attnlab.training.checkpoint",
    "attnlab.seq2seq_run": "attnlab.training.seq2seq_run",
    "attnlab.tokens": "attnlab.data.tokens",
    "attnlab.prepare": "attnlab.data.token_files",
    "attnlab.builtin_corpus": "attnlab.data.builtin_corpus",
    "attnlab.tasks": "attnlab.data.tasks",
    "attnlab.threads": "attnlab.runtime.threads",
    "attnlab.distributed": "attnlab.runtime.distributed",
}


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(name, self) if name in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} is now {MOVED[spec.name]}", DeprecationWarning, stacklevel=3)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when it was imported under its new name."""


def install() -> None:
    """Answer the old names. One the package already holds as another attribute (`attnlab.train`, the
    function) is registered at once, so importing it never replaces that attribute."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
    package = sys.modules["attnlab"]
    for old, new in MOVED.items():
        leaf = old.rsplit(".", 1)[1]
        if new in sys.modules and old not in sys.modules and hasattr(package, leaf):
            sys.modules[old] = sys.modules[new]
