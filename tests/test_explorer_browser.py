"""The explorer in a real headless Chromium (Playwright): what a user sees equals what the model computes.

Chromium is Debian's (`/usr/bin/chromium`; `.ci/run` installs it when missing). With
ATTNLAB_SCREENSHOTS=DIR the tests also save the README's pictures of the head and the model view;
ATTNLAB_EXPLORER_RUN=RUN serves that run instead of one trained here for a few seconds:

    ATTNLAB_EXPLORER_RUN=runs/lab-tinystories/transformer ATTNLAB_SCREENSHOTS=docs \
        pytest tests/test_explorer_browser.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from attnlab.explorer.app import create_app
from attnlab.explorer.page import standalone_html
from attnlab.training import run

from .conftest import run_cli

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("ATTNLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium here: apt-get install chromium (.ci/run does)"),
    pytest.mark.slow,
]
PROMPT = "Lily had a red ball. Lily"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small Transformer trained for a few seconds (TinyStories when it is here), in a run folder."""
    if os.environ.get("ATTNLAB_EXPLORER_RUN"):
        return Path(os.environ["ATTNLAB_EXPLORER_RUN"])
    data = "tinystories" if os.environ.get("ATTNLAB_TINYSTORIES") else "builtin"
    out = tmp_path_factory.mktemp("explorer") / "run"
    config = {"n_layers": 2, "max_len": 128, "positions": "learned"}
    run.start(out, data=data, preset="lab", config=config, max_time=15, eval_every=100, final_eval_chars=100_000)
    return out


@pytest.fixture(scope="module")
def server(trained):
    from attnlab import load_checkpoint
    from attnlab.training.checkpoint import run_log

    ckpt = load_checkpoint(trained)
    metrics = run_log(ckpt.path)  # the rows `attnlab serve` hands the run card
    app = create_app(ckpt.model.eval(), ckpt.tokenizer, {"info": {}, "metrics": metrics})
    for url in _serve(app):
        yield url, ckpt


def _serve(app):
    """Serve `app` on a free loopback port in a thread while the caller uses its URL."""
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new", "--disable-gpu"])
        yield b
        b.close()


def _open(browser, url: str, prompt: str = PROMPT):
    """The page with `prompt` looked at: its chips drawn (one per token of the bytes tokenizer)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.fill("#prompt", prompt)
    page.click("#go")
    n = len(prompt.encode("utf-8"))
    page.wait_for_function(f"document.querySelector('#status').textContent === '{n} tokens'")
    return page, errors


def _hovered_lines(page, layer: int, head: int, query: int) -> list[tuple[int, float]]:
    """The head view of `layer`.`head` with `query` hovered: (key, weight) of each line drawn from it."""
    page.select_option("#layer", str(layer))
    page.select_option("#head", str(head))
    page.wait_for_function(f"document.querySelector('#head').value === '{head}'")
    page.hover(f"#head-view .hv-left .hv-tok[data-i='{query}']")
    return page.eval_on_selector_all(".hv-line.hl", "els => els.map(e => [+e.dataset.k, +e.dataset.w])")


def _weights(ckpt, prompt):
    ids = ckpt.tokenizer.encode(prompt)
    with torch.no_grad():
        _, weights = ckpt.model.forward_with_weights(torch.tensor([ids]))
    return ids, weights


def test_chips_hover_and_the_highlighted_weights_equal_the_model(server, browser):
    url, ckpt = server
    page, errors = _open(browser, url)
    ids, weights = _weights(ckpt, PROMPT)
    assert page.locator("#chips .chip").count() == len(ids)
    query = len(ids) - 1
    lines = _hovered_lines(page, 1, 2, query)
    assert [k for k, _ in lines] == list(range(query + 1))
    expected = weights[1][0, 2, query]
    assert max(abs(w - float(expected[k])) for k, w in lines) < 1e-4
    assert "query 24" in page.text_content("#hv-weights")
    assert errors == []


def test_clicking_a_model_view_cell_opens_its_head(server, browser):
    url, ckpt = server
    page, errors = _open(browser, url)
    assert page.locator(".mv-cell").count() == ckpt.model.config.n_layers * ckpt.model.config.n_heads
    page.click(".mv-cell[data-layer='1'][data-head='3']")
    page.wait_for_function(
        "document.querySelector('#layer').value === '1' && document.querySelector('#head').value === '3'"
    )
    assert page.locator(".mv-cell.sel").get_attribute("data-head") == "3"
    if os.environ.get("ATTNLAB_SCREENSHOTS"):  # the head that looks hardest from the second "Lily" to the first
        out = Path(os.environ["ATTNLAB_SCREENSHOTS"])
        _, weights = _weights(ckpt, PROMPT)
        _, layer, head = max(
            (float(w[0, h, 21:, :4].sum()), i, h) for i, w in enumerate(weights) for h in range(w.shape[1])
        )
        page.click(f".mv-cell[data-layer='{layer}'][data-head='{head}']")
        page.wait_for_function(f"document.querySelector('#head').value === '{head}'")
        page.hover(".hv-left .hv-tok[data-i='23']")  # the second "Lily"'s "l"
        page.locator("#head-section").screenshot(path=str(out / "explorer_head_view.png"))
        page.locator("#model-section").screenshot(path=str(out / "explorer_model_view.png"))
    assert errors == []


def test_the_attribution_bars_are_the_models_parts_and_a_head_bar_opens_its_head(server, browser):
    from attnlab.inspect.attribution import direct_logit_attribution

    url, ckpt = server
    page, errors = _open(browser, url)
    page.wait_for_selector("#attr-view .bar-row")
    shown = page.eval_on_selector_all("#attr-view .bar-row", "els => els.map(e => [e.dataset.name, +e.dataset.value])")
    ids_1L = torch.tensor([ckpt.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        top = ckpt.model(ids_1L)[0, -1].topk(2).indices.tolist()
    att = direct_logit_attribution(ckpt.model, ids_1L, top[0], top[1])
    assert [n for n, _ in shown] == [n for n, _ in att.parts]
    assert all(abs(v - w) < 1e-5 for (_, v), (_, w) in zip(shown, att.parts, strict=True))
    summary = page.inner_text("#attr-sum")
    assert f"= {att.total:.3f}; the parts sum to {sum(v for _, v in att.parts):.3f}" in summary
    page.click("#attr-view .bar-row[data-name='blocks.1.attn.head.2']")
    page.wait_for_function(
        "document.querySelector('#layer').value === '1' && document.querySelector('#head').value === '2'"
    )
    page.fill("#attr-answer", "xy")  # two tokens: refused, said on the page
    page.click("#attr-go")
    page.wait_for_selector("#attr-view .error")
    assert "is 2 tokens" in page.inner_text("#attr-view")
    assert errors == []


def test_the_patching_grid_shows_the_sweep_and_a_head_cell_opens_its_head(server, browser):
    from attnlab.inspect.circuits import logit_diff
    from attnlab.inspect.patching import patch_sweep

    url, ckpt = server
    page, errors = _open(browser, url)
    corrupt = PROMPT.replace("Lily had", "Anna had")
    page.fill("#patch-corrupt", corrupt)
    page.fill("#patch-answer", " ")
    page.fill("#patch-wrong", "a")
    page.click("#patch-go")
    page.wait_for_selector("table.patch td")
    encode = ckpt.tokenizer.encode
    clean_1L, corrupt_1L = torch.tensor([encode(PROMPT)]), torch.tensor([encode(corrupt)])
    sweep = patch_sweep(ckpt.model, clean_1L, corrupt_1L, logit_diff(encode(" ")[0], encode("a")[0]), "resid")
    cells = page.eval_on_selector_all("table.patch td", "els => els.map(e => +e.dataset.value)")
    assert torch.allclose(torch.tensor(cells), sweep.values.flatten(), atol=1e-5)
    assert f"clean run {sweep.clean:.3f}, corrupted run {sweep.corrupt:.3f}" in page.inner_text("#patch-summary")
    page.select_option("#patch-over", "heads")
    page.click("#patch-go")
    page.wait_for_function("document.querySelectorAll('table.patch td.head-cell').length > 0")
    n_heads = ckpt.model.config.n_heads
    assert page.locator("table.patch td").count() == ckpt.model.config.n_layers * n_heads
    page.click(f"table.patch td[data-layer='1'][data-col='{n_heads - 1}']")
    page.wait_for_function(
        f"document.querySelector('#layer').value === '1' && document.querySelector('#head').value === '{n_heads - 1}'"
    )
    if os.environ.get("ATTNLAB_SCREENSHOTS"):
        out = Path(os.environ["ATTNLAB_SCREENSHOTS"])
        page.select_option("#patch-over", "resid")
        page.click("#patch-go")
        page.wait_for_selector("table.patch td:not(.head-cell)")
        page.locator("#patch-section").screenshot(path=str(out / "explorer_patching.png"))
        page.locator("#attr-section").screenshot(path=str(out / "explorer_attribution.png"))
    page.fill("#patch-corrupt", "Tom")  # another length: refused, said on the page
    page.click("#patch-go")
    page.wait_for_selector("#patch-view .error")
    assert "same number of tokens" in page.inner_text("#patch-view")
    assert errors == []


def test_generated_tokens_stream_in_and_equal_attnlab_generate_greedy(server, browser, trained, capsys):
    url, _ = server
    page, errors = _open(browser, url, "Once upon a time")
    page.check("#gen-greedy")
    page.fill("#gen-n", "30")
    page.click("#gen-go")
    page.wait_for_function("document.querySelectorAll('#gen-out .gen-token').length === 30")
    shown = page.text_content("#gen-out")
    code, out, _ = run_cli(
        ["generate", str(trained), "--prompt", "Once upon a time", "--greedy", "--max-new-tokens", "30"], capsys
    )
    assert code == 0 and shown == out[:-1]
    page.wait_for_function(f"document.querySelector('#status').textContent === '{16 + 30} tokens'")
    assert page.locator("#chips .chip").count() == len("Once upon a time") + 30  # the new tokens join the views
    assert errors == []


def test_markup_in_a_prompt_is_shown_as_text(server, browser):
    url, _ = server
    probe = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">"q"'
    page, errors = _open(browser, url, probe)
    assert page.evaluate("window.pwned") is None
    shown = "".join(page.eval_on_selector_all("#chips .chip", "els => els.map(e => e.textContent)"))
    assert shown == probe.replace(" ", "␣")  # a space is shown as a mark, everything else as typed
    assert page.locator("#chips img").count() == 0 and errors == []


def test_a_space_among_the_next_tokens_and_in_the_lens_is_a_visible_mark(server, browser):
    from attnlab.explorer.payloads import token_labels

    url, ckpt = server
    page, errors = _open(browser, url)
    ids = ckpt.tokenizer.encode(PROMPT)
    with torch.no_grad():
        probs_LV = ckpt.model(torch.tensor([ids]))[0].softmax(-1)
    space = ckpt.tokenizer.encode(" ")[0]
    after_word = [t for t in range(len(ids)) if int(probs_LV[t].argmax()) == space]
    assert after_word, "the model should guess a space after some word of the prompt"
    t = after_word[0]
    page.click(f"#chips .chip[data-i='{t}']")
    page.wait_for_function(f"document.querySelector('#next-view .note').textContent.startsWith('after position {t} ')")
    labels = page.eval_on_selector_all("#next-view .lbl", "els => els.map(e => e.textContent)")
    top_ids = probs_LV[t].topk(len(labels)).indices.tolist()
    assert len(labels) == 10 and labels[0] == "␣"
    assert all(label.strip() == label != "" for label in labels)  # no label is blank
    assert labels == [token_labels(ckpt.tokenizer)(i) for i in top_ids]  # the API's labels, in the model's order
    boxes = page.eval_on_selector_all("#lens div", "els => els.map(e => e.textContent)")
    n_layers = ckpt.model.config.n_layers
    assert len(boxes) == n_layers + 1 and boxes[-1].startswith(f"after block {n_layers - 1}: ␣ ")
    for box in boxes:  # "layer: token prob", the token never blank
        token = re.fullmatch(r"(embeddings|after block \d+): (.+) (\d\.\d\d)", box).group(2)
        assert token.strip() == token != ""
    assert page.text_content("#lens-label").startswith(f"after block {n_layers - 1}: ␣ ")
    assert errors == []


def test_the_run_card_shows_the_checkpoints_config_and_its_evaluations(server, browser, trained):
    from attnlab.runtime.files import read_json_lines
    from attnlab.training.train import log_rows

    url, ckpt = server
    page, errors = _open(browser, url)
    shown = dict(
        page.eval_on_selector_all("#card-config tr", "rows => rows.map(r => [r.dataset.key, r.cells[1].textContent])")
    )
    config = ckpt.model.config.to_dict()
    assert set(shown) == set(config)
    assert shown["norm_eps"] in ("1e-05", "0.00001") and config["norm_eps"] == 1e-05
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            assert shown[key] == json.dumps(value), key
        elif isinstance(value, int):
            assert int(re.sub(r"[^0-9-]", "", shown[key])) == value, key
        else:
            assert float(shown[key].replace(",", "")) == value, key  # exact: nothing rounded away (10,000.0 too)
    evals = log_rows(read_json_lines(trained / "metrics.jsonl"), "eval")
    assert evals, "the trained run should have logged an evaluation"
    assert page.text_content("#curve b") == "validation bits per character"
    assert page.get_attribute("#curve svg", "data-metric") == "val_bpc"
    dots = page.eval_on_selector_all("#curve circle", "els => els.map(e => [+e.dataset.step, +e.dataset.value])")
    assert dots == [[r["step"], r["val_bpc"]] for r in evals]
    assert "NaN" not in page.get_attribute("#curve polyline", "points")
    assert errors == []


def test_the_self_contained_file_works_from_disk_with_the_network_blocked(trained, browser, tmp_path):
    from attnlab import load_checkpoint

    ckpt = load_checkpoint(trained)
    path = tmp_path / "attention.html"
    path.write_text(standalone_html(ckpt.model, ckpt.tokenizer, PROMPT), encoding="utf-8")
    context = browser.new_context()
    blocked: list[str] = []

    def only_the_file(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function("document.querySelectorAll('#chips .chip').length > 0")
    ids, weights = _weights(ckpt, PROMPT)
    page.hover(f"#head-view .hv-left .hv-tok[data-i='{len(ids) - 1}']")
    lines = page.eval_on_selector_all(".hv-line.hl", "els => els.map(e => [+e.dataset.k, +e.dataset.w])")
    assert max(abs(w - float(weights[0][0, 0, len(ids) - 1, k])) for k, w in lines) < 1e-4
    page.keyboard.press("ArrowRight")
    assert "step 2 of" in page.text_content("#trace-view")
    assert blocked == [] and errors == []
    context.close()


# ---- an encoder-decoder run: the cross-attention mode -----------------------------------------


@pytest.fixture(scope="module")
def seq2seq_server():
    """`attnlab serve` of an encoder-decoder: ATTNLAB_SEQ2SEQ_RUN, or an untrained one of the reverse
    task's letters (weights scaled up so that its heads attend unevenly)."""
    from attnlab.data.tasks import PairVocab
    from attnlab.explorer.app import create_seq2seq_app
    from attnlab.models import Seq2SeqTransformer, preset_config
    from attnlab.training.seq2seq_run import Seq2SeqRun, load_seq2seq

    if os.environ.get("ATTNLAB_SEQ2SEQ_RUN"):
        run = load_seq2seq(os.environ["ATTNLAB_SEQ2SEQ_RUN"])
    else:
        vocab = PairVocab.from_pairs([("abcdefghijklmnopqrstuvwxyz", "")])
        torch.manual_seed(0)
        model = Seq2SeqTransformer(preset_config("seq2seq-small", n_vocab=vocab.n_vocab, n_enc_layers=2)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3)
        run = Seq2SeqRun(model, vocab, {"kind": "seq2seq", "task": "reverse", "step": 0})
    for url in _serve(create_seq2seq_app(run, _seq2seq_log())):
        yield url, run


def _seq2seq_log() -> list[dict]:
    """ATTNLAB_SEQ2SEQ_RUN's metrics.jsonl, or a log of training rows only (a seq2seq run logs no val_bpc)."""
    from attnlab.runtime.files import read_json_lines

    if os.environ.get("ATTNLAB_SEQ2SEQ_RUN"):
        return read_json_lines(Path(os.environ["ATTNLAB_SEQ2SEQ_RUN"]) / "metrics.jsonl")
    return [{"kind": "train", "step": 50, "train_loss": 3.25}, {"kind": "train", "step": 100, "train_loss": 1.5}]


def test_the_cross_attention_mode_shows_target_rows_over_source_columns(seq2seq_server, browser):
    from attnlab.training.seq2seq_run import source_and_reading

    url, run = seq2seq_server
    source = "abcdefghij"
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("document.querySelector('#status').textContent.includes('source tokens')")
    assert page.is_hidden("#next-section") and page.is_hidden("#gen-section") and page.is_visible("#kind")
    page.fill("#prompt", source)
    page.click("#go")
    src, tgt = source_and_reading(run, source)
    page.wait_for_function(f"document.querySelector('#status').textContent.startsWith('{len(src)} source tokens')")
    _, cache = run.model.run_with_cache(torch.tensor([src]), torch.tensor([tgt]))
    assert page.locator("#chips .chip").count() == len(src)
    assert page.locator("#target-chips .chip").count() == len(tgt)
    # cross: the decoder's positions on the left, the source's on the right; every source key is seen
    left = page.eval_on_selector_all("#head-view .hv-left .hv-tok", "els => els.map(e => e.textContent)")
    right = page.eval_on_selector_all("#head-view .hv-right .hv-tok", "els => els.map(e => e.textContent)")
    assert left == [run.vocab.token(i) for i in tgt] and right == list(source)
    query = len(tgt) - 1
    lines = _hovered_lines(page, 1, 2, query)
    assert [k for k, _ in lines] == list(range(len(src)))
    expected = cache["decoder.1.cross.weights_BHLS"][0, 2, query]
    assert max(abs(w - float(expected[k])) for k, w in lines) < 1e-5
    n_heads = run.model.config.n_heads
    assert page.locator(".mv-cell").count() == len(run.model.decoder) * n_heads
    size = page.eval_on_selector(".mv-cell canvas", "c => [c.height, c.width]")
    assert size == [len(tgt), len(src)]
    if os.environ.get("ATTNLAB_SCREENSHOTS"):  # the head that reads the source most nearly backwards
        out = Path(os.environ["ATTNLAB_SCREENSHOTS"])
        backwards = torch.arange(len(src) - 1, -1, -1)
        _, layer, head = max(
            (float(w_LS[0, h, :-1].argmax(-1).eq(backwards).float().mean()), i, h)
            for i in range(len(run.model.decoder))
            for h in range(n_heads)
            for w_LS in [cache[f"decoder.{i}.cross.weights_BHLS"]]
        )
        page.click(f".mv-cell[data-layer='{layer}'][data-head='{head}']")
        page.wait_for_function(f"document.querySelector('#head').value === '{head}'")
        page.mouse.move(0, 0)  # no query hovered: every weight above 0.1 drawn
        page.locator("#head-section").screenshot(path=str(out / "explorer_cross_head_view.png"))
        page.locator("#model-section").screenshot(path=str(out / "explorer_cross_model_view.png"))
    # the encoder: source to source, every key; the decoder: target to target, the earlier keys only
    page.select_option("#kind", "encoder")
    page.wait_for_function(f"document.querySelectorAll('.mv-cell').length === {len(run.model.encoder) * n_heads}")
    page.hover("#head-view .hv-left .hv-tok[data-i='0']")
    assert len(page.eval_on_selector_all(".hv-line.hl", "els => els")) == len(src)
    page.select_option("#kind", "decoder")
    page.wait_for_function(
        f"document.querySelectorAll('#head-view .hv-right .hv-tok').length === {len(tgt)}"
        " && document.querySelector('.mv-cell canvas').width === document.querySelector('.mv-cell canvas').height"
    )
    lines = _hovered_lines(page, 1, 2, 3)
    assert [k for k, _ in lines] == [0, 1, 2, 3]
    expected = cache["decoder.1.attn.weights_BHLK"][0, 2, 3]
    assert max(abs(w - float(expected[k])) for k, w in lines) < 1e-5
    page.keyboard.press("ArrowRight")
    assert "step 2 of" in page.text_content("#trace-view") and "tgt_BL" in page.text_content("#trace-view")
    assert errors == []


def test_the_encoder_decoders_card_draws_its_training_loss(seq2seq_server, browser):
    from attnlab.training.train import log_rows

    url, _ = seq2seq_server
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("document.querySelector('#status').textContent.includes('source tokens')")
    assert page.text_content("#curve b") == "training loss (nats per token)"
    assert page.get_attribute("#curve svg", "data-metric") == "train_loss"
    rows = log_rows(_seq2seq_log(), "train")
    dots = page.eval_on_selector_all("#curve circle", "els => els.map(e => [+e.dataset.step, +e.dataset.value])")
    assert dots == [[r["step"], r["train_loss"]] for r in rows]
    points = page.get_attribute("#curve polyline", "points")
    assert "NaN" not in points and len(points.split()) == len(rows)
    first, last = rows[0], rows[-1]
    assert page.text_content("#curve svg text") == (
        f"{first['train_loss']:.3f} at step {first['step']:,} → {last['train_loss']:.3f} at step {last['step']:,}"
    )
    assert errors == []
