"""The notebooks, shipped with the package: `attnlab notebook [lab|circuits] [--solutions] [--out DIR]`
copies one.

Each has one source in Jupytext Markdown (`lab.md`, `circuits.md`); `python -m attnlab.notebooks.build`
makes the student notebook (each exercise's solution replaced by `raise NotImplementedError`) and the
solved one from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import AttnlabError
from ..runtime.files import write_text_atomically

HERE = Path(__file__).parent
# name: what it teaches (the `attnlab notebook NAME` choices, the name in each notebook's metadata)
NOTEBOOKS = {
    "lab": "implementing self-attention: an MLP and a Transformer LM, tensor by tensor",
    "circuits": "circuits in your own model: head detectors, activation patching, attribution, ablation",
}
STUDENT, SOLUTIONS = HERE / "lab.ipynb", HERE / "lab_solutions.ipynb"


def notebook_paths(name: str) -> tuple[Path, Path]:
    """The student and the solved notebook of `name`."""
    if name not in NOTEBOOKS:
        raise AttnlabError(f"notebook {name!r}: choose one of {', '.join(NOTEBOOKS)}")
    return HERE / f"{name}.ipynb", HERE / f"{name}_solutions.ipynb"


def copy_notebook(out: str | Path = ".", solutions: bool = False, name: str = "lab") -> Path:
    """Copy notebook `name` (or its solved version) into the folder `out`; returns the new file's path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AttnlabError(f"--out {out} is a file; give a folder to copy the notebook into")
    student, solved = notebook_paths(name)
    source = solved if solutions else student
    target = out / source.name
    if target.exists():
        raise AttnlabError(f"{target} exists; move it away or give another --out, so no work is overwritten")
    return write_text_atomically(target, source.read_text(encoding="utf-8"))


def how_to_open(path: Path) -> str:
    """How to open the notebook at `path` here: with JupyterLab, which the `student` extra installs when
    it is missing (the package itself does not need it)."""
    if shutil.which("jupyter-lab") is None:
        return f"JupyterLab is not installed here: pip install 'attnlab[student]', then: jupyter lab {path}"
    return f"open it with: jupyter lab {path}"
