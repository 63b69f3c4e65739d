"""The explorer in a real headless Chromium (Playwright): what a user sees equals what the model computes.

Chromium is Debian's (`/usr/bin/chromium`; `.ci/run` installs it when missing). With
ATTNLAB_SCREENSHOTS=DIR the tests also save the README's pictures of the head and the model view;
ATTNLAB_EXPLORER_RUN=RUN serves that run instead of one trained here for a few seconds:

    ATTNLAB_EXPLORER_RUN=runs/lab-tinystories/transformer ATTNLAB_SCREENSHOTS=docs \
        pytest tests/test_explorer_browser.py
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from attnlab import run
from attnlab.explorer.app import create_app
from attnlab.explorer.page import standalone_html

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
    import uvicorn

    from attnlab import load_checkpoint

    ckpt = load_checkpoint(trained)
    app = create_app(ckpt.model.eval(), ckpt.tokenizer, {"info": {}, "metrics": []})
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}", ckpt
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
    page.select_option("#layer", "1")
    page.select_option("#head", "2")
    page.wait_for_function("document.querySelector('#layer').value === '1'")
    query = len(ids) - 1
    page.hover(f"#head-view .hv-left .hv-tok[data-i='{query}']")
    lines = page.eval_on_selector_all(".hv-line.hl", "els => els.map(e => [+e.dataset.k, +e.dataset.w])")
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
    assert "".join(page.eval_on_selector_all("#chips .chip", "els => els.map(e => e.textContent)")) == probe
    assert page.locator("#chips img").count() == 0 and errors == []


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
