"""The lab notebook, shipped with the package: `attnlab notebook [--solutions] [--out DIR]` copies it.

`lab.md` is the one source (Jupytext Markdown); `python -m attnlab.notebooks.build` makes `lab.ipynb`
(each exercise's solution replaced by `raise NotImplementedError`) and `lab_solutions.ipynb` from it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AttnlabError
from ..runtime.files import write_text_atomically

HERE = Path(__file__).parent
STUDENT, SOLUTIONS = HERE / "lab.ipynb", HERE / "lab_solutions.ipynb"


def copy_notebook(out: str | Path = ".", solutions: bool = False) -> Path:
    """Copy the lab notebook (or its solved version) into the folder `out`; returns the new file's path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AttnlabError(f"--out {out} is a file; give a folder to copy the notebook into")
    source = SOLUTIONS if solutions else STUDENT
    target = out / source.name
    if target.exists():
        raise AttnlabError(f"{target} exists; move it away or give another --out, so no work is overwritten")
    return write_text_atomically(target, source.read_text(encoding="utf-8"))
