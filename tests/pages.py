"""Pages as a person sees them: opened from disk in headless Chromium with the network cut off.

Chromium is Debian's (`/usr/bin/chromium`; `.ci/run` installs it when missing); tests that use these
helpers skip with that reason without it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("ATTNLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium here: apt-get install chromium (.ci/run does)"
)


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless (root needs --no-sandbox)."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new", "--disable-gpu"]
    )


@dataclass
class OfflinePage:
    """A page opened from a file: `blocked` lists every request that left the file, `errors` every script error."""

    page: Any
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def text(self, selector: str) -> str:
        """The text of `selector` as rendered (CSS applied: what a reader sees, whitespace collapsed)."""
        return " ".join(self.page.inner_text(selector).split())

    def texts(self, selector: str) -> list[str]:
        return [" ".join(t.split()) for t in self.page.locator(selector).all_inner_texts()]

    def table(self, selector: str = "table") -> list[list[str]]:
        """The rows of the first table matching `selector`, each a list of its cells' rendered text."""
        return self.page.eval_on_selector(
            selector, "t => [...t.rows].map(r => [...r.cells].map(c => c.innerText.trim().replace(/\\s+/g, ' ')))"
        )

    def broken_images(self) -> list[str]:
        """The images that did not load (no pixels), by their alt text; [] when every one shows."""
        return self.page.eval_on_selector_all(
            "img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0 && e.naturalHeight > 0)).map(e => e.alt)"
        )


@contextmanager
def open_offline(browser: Any, path: Path, viewport: tuple[int, int] = (1200, 900)) -> Iterator[OfflinePage]:
    """`path` opened in its own browser context where only file:// requests are served."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    seen = OfflinePage(page=None)

    def only_the_file(route: Any) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            seen.blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_file)
    seen.page = context.new_page()
    seen.page.on("pageerror", lambda e: seen.errors.append(str(e)))
    seen.page.goto(Path(path).resolve().as_uri())
    seen.page.wait_for_load_state("load")
    try:
        yield seen
    finally:
        context.close()


def screenshot_to(name: str) -> Path | None:
    """Where to save the README's picture `name` (ATTNLAB_SCREENSHOTS=DIR), or None when not asked."""
    folder = os.environ.get("ATTNLAB_SCREENSHOTS")
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder) / name
