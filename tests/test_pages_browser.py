"""Every page attnlab writes, as a person sees it: opened from disk in headless Chromium with the
network cut off, its rendered text checked against the numbers in the run's files.

With ATTNLAB_SCREENSHOTS=DIR the lab report's test also saves the README's picture of it; with
ATTNLAB_LAB_RUN=RUN it checks that finished `attnlab lab` run instead of training one (the README's
picture comes from the README's own command):

    attnlab lab && ATTNLAB_LAB_RUN=runs/lab ATTNLAB_SCREENSHOTS=docs pytest tests/test_pages_browser.py -k builtin
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from attnlab import load_checkpoint
from attnlab.runtime.files import read_json_lines

from .conftest import run_subprocess
from .pages import launch, needs_chromium, open_offline, screenshot_to

playwright_sync = pytest.importorskip("playwright.sync_api")
pytestmark = [needs_chromium, pytest.mark.slow]
NAMES = {"mlp": "MLP", "transformer": "Transformer"}  # what the lab trains, as a reader calls them


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def _final_row(run_dir: Path) -> dict[str, Any]:
    rows = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r.get("final")]
    assert len(rows) == 1, f"{run_dir}: expected one final row"
    return rows[0]


def _trained(out: Path) -> list[str]:
    """The models a lab run trained: its sub-folders that hold a checkpoint, in the lab's order."""
    return [kind for kind in NAMES if (out / kind / "checkpoint").is_dir()]


def _no_gaps(text: str) -> str:
    return " ".join(text.split())


def check_lab_report(browser: Any, out: Path, screenshot: str | None = None) -> None:
    """The report of the lab run in `out` shows exactly its trained models, the right winner and margin,
    each model's samples under its own heading, and the positions lesson in its own section."""
    metrics = json.loads((out / "metrics.json").read_text())
    models = _trained(out)
    assert models == ["mlp", "transformer"]
    for kind in models:  # metrics.json agrees with each model's own log and checkpoint
        final = _final_row(out / kind)
        assert metrics[kind]["val_bpc"] == final["val_bpc"] and metrics[kind]["steps"] == final["step"]
        assert metrics[kind]["params"] == load_checkpoint(out / kind).model.num_params()
    with open_offline(browser, out / "report.html") as seen:
        assert seen.blocked == [] and seen.errors == [] and seen.broken_images() == []
        assert seen.page.locator("img").count() == 1  # the loss curves

        expected_rows = [
            [
                NAMES[k],
                f"{metrics[k]['params']:,}",
                f"{metrics[k]['val_bpc']:.3f}",
                f"{round(metrics[k]['tokens_per_s']):,}",
                f"{metrics[k]['steps']:,}",
                f"{metrics[k]['train_time_s']:.1f}",
            ]
            for k in models
        ]
        assert seen.table("table")[1:] == expected_rows

        scored = sorted((metrics[k]["val_bpc"], NAMES[k]) for k in models)
        (best, winner), (second, runner_up) = scored
        assert seen.text(".verdict") == (
            f"The {winner} wins by {second - best:.3f} bits per character "
            f"({best:.3f} vs {second:.3f} for the {runner_up})."
        )
        if all(metrics[k].get("known_words") is not None for k in models):
            words = ", ".join(f"{NAMES[k]} {metrics[k]['known_words']:.0%}" for k in models)
            assert f"Words of the samples below that are words of the training text: {words}." in seen.text("body")

        blocks = seen.page.locator(".samples")
        assert blocks.count() == len(metrics["prompts"])
        for i, prompt in enumerate(metrics["prompts"]):
            block = blocks.nth(i)
            assert block.locator("h3").all_inner_texts() == [NAMES[k] for k in models]
            shown = [_no_gaps(t) for t in block.locator(".sample").all_inner_texts()]
            assert shown == [_no_gaps(prompt + metrics[k]["samples"][i]) for k in models]

        lesson = metrics["positions_lesson"]
        headings = seen.texts("h2")
        assert headings.count("Why position embeddings") == 1
        section = seen.page.locator("h2:text-is('Why position embeddings') + p").inner_text()
        assert (
            f"({lesson['scheme']} positions here)" in _no_gaps(section)
            and f"scores {lesson['val_bpc_without_positions']:.2f} bits per character instead of "
            f"{lesson['val_bpc']:.2f}"
            in _no_gaps(section)
        )
        assert "positions_lesson" not in seen.text("body")
        if screenshot and (path := screenshot_to(screenshot)):  # down to the first prompt's samples
            box = blocks.first.bounding_box()
            width = seen.page.viewport_size["width"]
            top = {"x": 0, "y": 0, "width": width, "height": box["y"] + box["height"] + 16}
            seen.page.screenshot(path=str(path), clip=top, full_page=True)


def _lab_run(request: pytest.FixtureRequest, fixture: str) -> Path:
    if os.environ.get("ATTNLAB_LAB_RUN"):
        return Path(os.environ["ATTNLAB_LAB_RUN"])
    return request.getfixturevalue(fixture)[0]


def test_the_lab_report_on_the_builtin_corpus_shows_the_two_models_and_the_lesson(browser, request):
    check_lab_report(browser, _lab_run(request, "lab_builtin"), screenshot="lab_report.png")


def test_the_lab_report_on_tinystories_shows_the_two_models_and_the_lesson(browser, lab_tinystories):
    check_lab_report(browser, lab_tinystories[0])


def test_the_compare_report_ranks_every_variant_from_its_own_log(browser, corpus_file: Path, tmp_path: Path):
    out = tmp_path / "compare"
    args = ["compare", "--data", str(corpus_file), "--preset", "lab", "--steps", "30", "--eval-every", "10"]
    args += ["--out", str(out)]
    proc = run_subprocess([*args, "--vary", "positions=learned,none"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    finals = {r["name"]: _final_row(out / "runs" / r["name"]) for r in results}
    assert sorted(finals) == ["positions=learned", "positions=none"]
    ranked = sorted(finals, key=lambda name: finals[name]["val_bpc"])
    with open_offline(browser, out / "report.html") as seen:
        assert seen.blocked == [] and seen.errors == [] and seen.broken_images() == []
        rows = seen.table("table")[1:]
        assert [r[0] for r in rows] == ranked
        for row in rows:
            final = finals[row[0]]
            params = load_checkpoint(out / "runs" / row[0]).model.num_params()
            assert row[1] == f"{params:,}" and row[3] == f"{final['val_bpc']:.3f}" and row[5] == f"{final['step']:,}"
            assert row[2] == f"{round(final['tokens_per_s']):,}"
        assert seen.texts("h3.sample-title") == [r["name"] for r in results]
        assert all(t.startswith("Once upon a time") for t in seen.texts(".sample"))


def test_the_self_contained_attention_page_shows_the_models_numbers_offline(browser, tmp_path: Path, corpus_file):
    import torch

    run = tmp_path / "run"
    trained = run_subprocess(
        ["train", "--data", str(corpus_file), "--preset", "lab", "--steps", "30", "--out", str(run)], timeout=300
    )
    assert trained.returncode == 0, trained.stderr
    prompt = "Tom had a red ball."
    page_path = tmp_path / "attention.html"
    proc = run_subprocess(["attention", str(run), "--prompt", prompt, "--html", str(page_path)])
    assert proc.returncode == 0, proc.stderr
    ckpt = load_checkpoint(run)
    ids = ckpt.tokenizer.encode(prompt)
    with torch.no_grad():
        probs = ckpt.model(torch.tensor([ids]))[0, -1].float().softmax(-1)
    top = probs.topk(10).values.tolist()
    with open_offline(browser, page_path, viewport=(1400, 1800)) as seen:
        seen.page.wait_for_function("document.querySelectorAll('#chips .chip').length > 0")
        assert seen.blocked == [] and seen.errors == [] and seen.broken_images() == []
        assert seen.page.locator("#chips .chip").count() == len(ids)
        assert f"{ckpt.model.num_params():,} parameters" in seen.text("#model-line")
        assert seen.text("#next-view .note").startswith(f"after position {len(ids) - 1} ")
        shown = seen.page.eval_on_selector_all(
            "#next-view .bar-row", "rows => rows.map(r => r.lastElementChild.textContent)"
        )
        assert shown == [f"{p:.3f}" for p in top]
        cfg = ckpt.model.config
        assert seen.page.locator("#model-view .mv-cell").count() == cfg.n_layers * cfg.n_heads


def test_the_class_report_shows_each_exercises_passes_the_mistakes_to_teach_every_grade_and_the_hints(
    browser, tmp_path: Path
):
    from collections import Counter

    from attnlab.exercises import MISTAKES
    from attnlab.exercises.gradebook import write_class_report

    from .test_gradebook import EXERCISES, synthetic_class

    reports = synthetic_class()  # six notebooks; paths and errors with commas, quotes, newlines and markup
    n = len(reports)
    page_path = write_class_report(reports, tmp_path / "class.html")
    with open_offline(browser, page_path) as seen:
        assert seen.blocked == [] and seen.errors == [] and seen.broken_images() == []
        assert seen.page.locator("img").count() == 1  # the mistakes chart
        mean = sum(r.score for r in reports) / n
        clean = sum(all(g == "passed" for g in r.grades.values()) and not r.errors for r in reports)
        assert seen.text("p.data") == (
            f"{n} notebooks: mean score {mean:.1f} of {len(EXERCISES)} exercises, {clean} passed every exercise "
            f"without an error, {sum(bool(r.errors) for r in reports)} had errors."
        )

        expected = []
        for e in EXERCISES:
            grades = Counter(r.grades[e] for r in reports)
            named = sorted(((g, c) for g, c in grades.items() if g in MISTAKES), key=lambda gc: (-gc[1], gc[0]))
            expected.append(
                [e, str(grades["passed"]), f"{grades['passed'] / n:.0%}", ", ".join(f"{g} {c}" for g, c in named)]
                + [str(grades[g]) for g in ("wrong", "reference", "not written", "not checked")]
            )
        assert seen.table("table.exercises")[1:] == expected

        made = Counter(g for r in reports for g in r.grades.values() if g in MISTAKES)
        ranked = sorted(made, key=lambda m: (-made[m], m))
        items = seen.page.locator("ol.mistakes > li")
        assert items.count() == len(ranked) == 5
        for i, m in enumerate(ranked):
            item = items.nth(i)
            assert item.locator(".id").inner_text() == m
            assert item.locator(".count").inner_text() == str(made[m])
            where = [e for e in EXERCISES if any(r.grades[e] == m for r in reports)]
            assert item.locator(".where").inner_text() == ", ".join(where)
            assert item.locator(".what").inner_text() == MISTAKES[m].what
            assert item.locator(".fix").inner_text() == f"Fix: {MISTAKES[m].fix}"

        rows = seen.table("table.grades")
        assert rows[0] == ["notebook", "score", *EXERCISES, "errors"]
        assert rows[1:] == [
            [r.path, str(r.score), *(r.grades[e] for e in EXERCISES), str(len(r.errors)) if r.errors else ""]
            for r in reports
        ]

        assert seen.table("table.hints")[1:] == [["attention", "class/ada/lab.ipynb class/ben/lab.ipynb", "61"]]
        assert seen.texts("h3.notebook") == [r.path for r in reports if r.errors]
        assert seen.texts("ul.errors li") == [" ".join(e.split()) for r in reports for e in r.errors]
        if path := screenshot_to("class_report.png"):
            seen.page.screenshot(path=str(path), full_page=True)
