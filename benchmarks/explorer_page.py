"""How long the explorer takes to draw a prompt, and how many bytes it fetches, in headless Chromium.

For each case the page is served by `attnlab serve`'s app (uvicorn, loopback), the prompt typed in and
"Look inside" clicked; the time runs from the click to the page fully drawn (chips, model view, head
view, next tokens and trace: the status line shows the token count), the bytes are the bodies of the
API responses. Cases: the `small` preset (4 layers x 4 heads) at 128 tokens, and the same blocks with a
1,024-token context at 1,024 tokens. Untrained weights (the time does not depend on them); medians of
`--rounds` rounds.

    python benchmarks/explorer_page.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import uvicorn
from playwright.sync_api import sync_playwright

from attnlab import TransformerLM, preset_config
from attnlab.explorer.app import create_app
from attnlab.tokenizers import ByteTokenizer

CASES = [("small, 128 tokens", {}, 128), ("small blocks, 1,024-token context, 1,024 tokens", {"max_len": 1024}, 1024)]


def serve(model: TransformerLM) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(model, ByteTokenizer()), host="127.0.0.1", port=0, log_level="error")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "explorer_page.json"))
    args = parser.parse_args()
    chromium = os.environ.get("ATTNLAB_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--headless=new", "--disable-gpu"])
        for name, changes, n_tokens in CASES:
            torch.manual_seed(0)
            model = TransformerLM(preset_config("small", n_vocab=256, **changes)).eval()
            server, url = serve(model)
            prompt = ("Once upon a time, there was a little dog named Max. " * 40)[:n_tokens]
            times, sizes = [], []
            for _ in range(args.rounds):
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.goto(url)
                page.wait_for_function("document.querySelector('#status').textContent.endsWith('tokens')")
                fetched: list[int] = []

                def count(response, fetched=fetched):  # noqa: ANN001 - a Playwright Response
                    if "/api/" in response.url:
                        fetched.append(len(response.body()))

                page.on("response", count)
                page.fill("#prompt", prompt)
                t0 = time.perf_counter()
                page.click("#go")
                page.wait_for_function(
                    f"document.querySelector('#status').textContent === '{n_tokens} tokens'", timeout=120_000
                )
                times.append(time.perf_counter() - t0)
                sizes.append(sum(fetched))
                page.remove_listener("response", count)
                page.close()
            server.should_exit = True
            rows.append(
                {
                    "case": name,
                    "tokens": n_tokens,
                    "median_s": statistics.median(times),
                    "times_s": times,
                    "api_bytes": statistics.median(sizes),
                }
            )
            print(
                f"{name}: {rows[-1]['median_s']:.2f} s to draw, {rows[-1]['api_bytes'] / 1e6:.2f} MB fetched",
                file=sys.stderr,
            )
        browser.close()
    out = {
        "command": " ".join(["python", "benchmarks/explorer_page.py", *sys.argv[1:]]),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}, {Path(chromium).name}",
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("| case | time to fully drawn (median) | API bytes |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['median_s']:.2f} s | {r['api_bytes'] / 1e6:.2f} MB |")


if __name__ == "__main__":
    main()
