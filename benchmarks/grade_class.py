"""How long `attnlab check` takes to grade a class, and what the sandbox itself costs per notebook.

The class: 20 copies of the lab notebook (src/attnlab/notebooks): 8 solved, 6 unsolved (the student
version), 6 with one named mistake each (attention without scaling, split_heads without the
transpose, a mask that hides the diagonal, ...). It is graded with the command a teacher runs,

    attnlab check CLASS --jobs 2 --format csv

timed from start to end (quick mode: the notebook's models train 5 s each). The sandbox's own cost:
a small notebook (one exercise) graded `--rounds` times with and without the sandbox, interleaved;
the median difference is bubblewrap's start, mounts and the user switch.

    python benchmarks/grade_class.py --out benchmarks/results/grade_class.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from attnlab.notebooks import SOLUTIONS, STUDENT

MISTAKES = {  # a change to the solutions notebook -> the mistake it makes
    "no_scaling": ("/ math.sqrt(D)", ""),
    "split_without_transpose": (
        "x_BLE.view(B, L, n_heads, E // n_heads).transpose(1, 2)",
        "x_BLE.view(B, n_heads, L, E // n_heads)",
    ),
    "hides_self": ("triu(diagonal=1)", "triu(diagonal=0)"),
    "drops_last_id": ("for ch in doc if ord(ch) < 256]", "for ch in doc if ord(ch) < 256][:-1]"),
    "merge_without_transpose": ("z_BHLD.transpose(1, 2).reshape(B, L, H * D)", "z_BHLD.reshape(B, L, H * D)"),
    "no_residual": ("x_BLC = x_BLC + block.attn(block.ln1(x_BLC))", "x_BLC = block.attn(block.ln1(x_BLC))"),
}


def make_class(folder: Path) -> dict[str, str]:
    """Write the 20 notebooks; their expected grade of the changed exercise (or "solved"/"unsolved")."""
    expected = {}
    for i in range(8):
        (folder / f"solved_{i}.ipynb").write_bytes(SOLUTIONS.read_bytes())
        expected[f"solved_{i}"] = "solved"
    for i in range(6):
        (folder / f"unsolved_{i}.ipynb").write_bytes(STUDENT.read_bytes())
        expected[f"unsolved_{i}"] = "unsolved"
    for mistake, (old, new) in MISTAKES.items():
        nb = nbformat.read(SOLUTIONS, as_version=4)
        found = False
        for cell in nb.cells:
            if old in cell.source:
                cell.source, found = cell.source.replace(old, new), True
        if not found:
            raise SystemExit(f"{old!r} is not in the solutions notebook any more: update MISTAKES")
        nbformat.write(nb, folder / f"{mistake}.ipynb")
        expected[mistake] = mistake
    return expected


def check(args: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "attnlab", "check", *args], capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="small-notebook gradings with and without the sandbox")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": f"attnlab check CLASS --jobs {args.jobs} --format csv",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "class"
        folder.mkdir()
        expected = make_class(folder)
        seconds, proc = check([str(folder), "--jobs", str(args.jobs), "--format", "csv"])
        rows = {Path(r["notebook"]).stem: r for r in csv.DictReader(io.StringIO(proc.stdout))}
        wrong = []
        for name, want in expected.items():
            row = rows[name]
            grades = [row[e] for e in row if e not in ("notebook", "score", "errors")]
            ok = (
                all(g == "passed" for g in grades)
                if want == "solved"
                else all(g == "not written" for g in grades)
                if want == "unsolved"
                else want in grades
            )
            if not ok or (want != "unsolved" and row["errors"]):
                wrong.append((name, row))
        results["class"] = {
            "notebooks": len(expected),
            "seconds": round(seconds, 1),
            "per_notebook_s": round(seconds / len(expected), 1),
            "graded_as_expected": len(expected) - len(wrong),
            "unexpected": wrong,
        }
        print(json.dumps(results["class"], indent=2), flush=True)

        small = nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell(
                    "import torch\ndef split_heads(x, n):\n    B, L, E = x.shape\n"
                    "    return x.view(B, L, n, E // n).transpose(1, 2)"
                )
            ]
        )
        one = Path(tmp) / "one.ipynb"
        nbformat.write(small, one)
        times: dict[str, list[float]] = {"sandbox": [], "no_sandbox": []}
        for r in range(args.rounds):
            order = ["sandbox", "no_sandbox"] if r % 2 == 0 else ["no_sandbox", "sandbox"]
            for how in order:
                extra = ["--no-sandbox"] if how == "no_sandbox" else []
                t, p = check([str(one), "--format", "json", *extra])
                if p.returncode not in (0, 1):
                    raise SystemExit(p.stderr)
                times[how].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        results["sandbox_cost"] = {
            "rounds": args.rounds,
            "median_s": {k: round(v, 2) for k, v in med.items()},
            "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "sandbox_minus_none_s": round(med["sandbox"] - med["no_sandbox"], 2),
        }
        print(json.dumps(results["sandbox_cost"], indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
