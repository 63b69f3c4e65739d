"""The lab report: a real PNG figure and a self-contained, escaped report.html."""

from __future__ import annotations

import matplotlib.image as mpimg

from attnlab.report import write_lab_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _curve(start_loss: float, start_bpc: float, seconds_per_step: float) -> list[dict]:
    rows: list[dict] = []
    for step in range(0, 101, 10):
        row = {"step": step, "elapsed_s": step * seconds_per_step, "train_loss": start_loss - 0.01 * step}
        if step % 50 == 0:
            row.update(val_loss=start_loss - 0.01 * step, val_bpc=start_bpc - 0.008 * step)
        rows.append(row)
    rows.append(
        {
            "step": 100,
            "elapsed_s": 100 * seconds_per_step,
            "val_loss": start_loss - 1.05,
            "val_bpc": start_bpc - 0.85,
            "final": True,
        }
    )
    return rows


def _metrics() -> dict:
    return {
        "mlp": {
            "params": 12345,
            "val_bpc": 2.5,
            "val_loss": 1.7,
            "tokens_per_s": 50000.0,
            "steps": 300,
            "train_time_s": 60.0,
            "samples": ["the mlp rambles on", "<script>alert(1)</script> & more"],
            "config": {"model": "mlp"},
        },
        "transformer": {
            "params": 1234567,
            "val_bpc": 1.87654,
            "val_loss": 1.3,
            "tokens_per_s": 20000.4,
            "steps": 120,
            "train_time_s": 60.0,
            "samples": [" there was a cat.", "\nShe went to the park."],
            "config": {"model": "transformer"},
        },
        "data": {"source": "builtin", "train_chars": 1200000, "val_chars": 130000},  # no "tokenizer"
        "prompts": ["Once upon a time", "One day, "],
        "models": ["mlp", "transformer"],
        # Not a model, though it has a val_bpc (lower than both models'): the report once listed it as the winner.
        "positions_lesson": {"scheme": "rope", "eval_tokens": 4096, "val_bpc": 1.5, "val_bpc_without_positions": 6.0},
    }


def test_write_lab_report(tmp_path):
    metrics = _metrics()
    curves = {"mlp": _curve(3.0, 3.4, 0.2), "transformer": _curve(3.2, 3.6, 0.5)}
    html_path = write_lab_report(tmp_path, metrics, curves)

    png = tmp_path / "loss_curves.png"
    assert png.exists()
    assert png.read_bytes()[:8] == PNG_MAGIC
    pixels = mpimg.imread(png)
    assert pixels.shape[1] > 600
    assert pixels.std() > 0.05

    assert html_path == tmp_path / "report.html"
    page = html_path.read_text(encoding="utf-8")
    assert "attnlab lab report" in page
    assert "data:image/png;base64," in page
    assert "12,345" in page and "1,234,567" in page
    assert "2.500" in page and "1.877" in page
    assert "The Transformer wins by <b>0.623 bits per character</b>" in page
    assert "positions_lesson" not in page and page.count('<div class="samples" style="--columns: 2">') == 2
    assert "<b>6.00</b> bits per character instead of\n1.50 (first 4,096 validation tokens)" in page
    assert "1,200,000" in page and "130,000" in page
    for sample in ("the mlp rambles on", " there was a cat.", "\nShe went to the park."):
        assert sample in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "<script>" not in page
    assert "white-space: pre-wrap" in page


def test_compare_report_shares_the_page_shell_and_escapes_samples(tmp_path):
    from attnlab.report import write_compare_report

    results = [
        {"name": "n_heads=1", "params": 1000, "tokens_per_s": 10.0, "val_bpc": 2.25, "best_step": 90, "steps": 100},
        {"name": "n_heads=4", "params": 1000, "tokens_per_s": 12.0, "val_bpc": 2.0, "best_step": 100, "steps": 100},
    ]
    curves = {r["name"]: _curve(3.0, 3.4, 0.2) for r in results}
    samples = {"n_heads=1": "<b>bold</b>", "n_heads=4": " a tale"}
    data = {"source": "builtin", "train_chars": 1200000, "val_chars": 130000, "tokenizer": "bytes"}
    page = write_compare_report(tmp_path, results, curves, samples, "Once", data).read_text()
    lab = write_lab_report(tmp_path / "lab", _metrics(), {"mlp": _curve(3.0, 3.4, 0.2)}).read_text()
    style = page[page.index("<style>") : page.index("</style>")]
    assert style == lab[lab.index("<style>") : lab.index("</style>")]  # one shell for both reports
    assert page.index("n_heads=4") < page.index("n_heads=1")  # best first
    assert "2.000" in page and "1,200,000" in page and "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert (tmp_path / "validation_curves.png").read_bytes()[:8] == PNG_MAGIC


def test_log_rows_say_their_kind_and_old_logs_are_read_by_their_keys():
    from attnlab.training.train import log_kind, log_rows

    new = [
        {"kind": "train", "step": 10, "train_loss": 2.0},
        {"kind": "eval", "step": 20, "train_loss": 1.9, "val_bpc": 2.5},
        {"kind": "final", "step": 20, "train_loss": 1.9, "val_bpc": 2.4, "final": True},
    ]
    old = [{k: v for k, v in row.items() if k != "kind"} for row in new]
    assert [log_kind(r) for r in new] == [log_kind(r) for r in old] == ["train", "eval", "final"]
    assert log_rows(new, "eval") == [new[1]] and log_rows(old, "final") == [old[2]]


def test_the_curves_plot_the_evaluations_not_the_final_figure():
    from attnlab.report import loss_figure, validation_figure

    rows = _curve(3.0, 3.4, 0.2)  # evaluations at steps 0, 50, 100, then the final figure over the whole split
    evals = [(r["elapsed_s"], r["val_bpc"]) for r in rows[:-1] if "val_bpc" in r]
    (line,) = validation_figure({"a": rows}).axes[0].get_lines()
    assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == evals
    train_line, val_line = (ax.get_lines()[0] for ax in loss_figure({"mlp": rows}).axes)
    assert list(zip(val_line.get_xdata(), val_line.get_ydata(), strict=True)) == evals
    assert list(train_line.get_xdata()) == list(range(0, 101, 10))  # the final row adds no training point


def test_a_run_too_short_for_an_evaluation_says_so_on_its_curves():
    from attnlab.report import NO_EVALUATIONS, loss_figure, validation_figure

    rows = [r for r in _curve(3.0, 3.4, 0.2) if "val_bpc" not in r or r.get("final")]  # training rows, the final
    ax = validation_figure({"a": rows}).axes[0]
    assert ax.get_lines() == [] and [t.get_text() for t in ax.texts] == [NO_EVALUATIONS]
    ax_train, ax_val = loss_figure({"mlp": rows}).axes
    assert len(ax_train.get_lines()) == 1 and [t.get_text() for t in ax_val.texts] == [NO_EVALUATIONS]
