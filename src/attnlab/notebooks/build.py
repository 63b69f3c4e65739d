"""Build each notebook's student and solution versions from its source (`lab.md`, `circuits.md`);
`--check` verifies the built ones are current.

In a code cell, the lines between `# BEGIN SOLUTION` and `# END SOLUTION` are the solution: the
solutions notebook keeps them (without the markers), the student notebook gets one line instead,
`raise NotImplementedError("...")` at the same indentation, so its check says "not implemented yet"
and the notebook goes on with the reference. Outputs are never stored. Each notebook names itself in
its metadata (`"attnlab": {"notebook": "circuits"}`), so `attnlab check` grades it on its exercises.

    python -m attnlab.notebooks.build           # write lab.ipynb, lab_solutions.ipynb, circuits.ipynb, ...
    python -m attnlab.notebooks.build --check   # exit 1 if either is stale or holds outputs (CI)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import NOTEBOOKS, notebook_paths

HERE = Path(__file__).parent
BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION(?:: (.*))?$")
END = re.compile(r"^\s*# END SOLUTION$")


def split_solutions(code: str, student: bool) -> str:
    """`code` with each solution block kept (solutions) or replaced by a NotImplementedError (student)."""
    out: list[str] = []
    inside = False
    for line in code.splitlines():
        if m := BEGIN.match(line):
            inside = True
            if student:
                hint = m.group(2) or "your code here"
                out.append(f'{m.group(1)}raise NotImplementedError("{hint}")')
        elif END.match(line):
            if not inside:
                raise ValueError(f"END SOLUTION without BEGIN: {line!r}")
            inside = False
        elif not (inside and student):
            out.append(line)
    if inside:
        raise ValueError("BEGIN SOLUTION without END")
    return "\n".join(out)


def build() -> dict[Path, str]:
    """Every notebook, student and solved, as JSON text, keyed by the path it belongs at."""
    texts = {}
    for name in NOTEBOOKS:
        student, solved = notebook_paths(name)
        for path, for_student in ((student, True), (solved, False)):
            texts[path] = _notebook(name, for_student)
    return texts


def _notebook(name: str, student: bool) -> str:
    """Notebook `name` built from its source, for the student (exercises to write) or solved."""
    import jupytext
    import nbformat

    nb = jupytext.reads((HERE / f"{name}.md").read_text(encoding="utf-8"), fmt="md")
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = split_solutions(cell.source, student)
            cell.outputs, cell.execution_count = [], None
        cell.metadata = {}
        cell.pop("id", None)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "attnlab": {"notebook": name},
    }
    nb.nbformat, nb.nbformat_minor = 4, 4
    nbformat.validate(nb)
    return str(nbformat.writes(nb)) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the built notebooks are current")
    args = parser.parse_args()
    stale = []
    for path, text in build().items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale or with outputs: {', '.join(stale)}; run python -m attnlab.notebooks.build", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
