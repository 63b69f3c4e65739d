"""`attnlab serve`: the explorer as a small web app (FastAPI), its JSON API described at /openapi.json.

The page at `/` draws everything from the API; the routes only read the model, one request at a
time (a lock: the model is shared), and never take a file path from a request.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

from .. import __version__
from ..errors import AttnlabError
from ..models import LanguageModel, Sampling
from ..models.sampling import stream_tokens
from ..tokenizers import Tokenizer
from ..training.seq2seq_run import Seq2SeqRun
from . import payloads, seq2seq
from .page import render_page


class PromptIn(BaseModel):
    prompt: str = Field(min_length=1, max_length=payloads.MAX_PROMPT_CHARS, description="the text to look at")


class NextIn(PromptIn):
    k: int = Field(10, ge=1, le=100, description="how many next tokens per position")


class HeadIn(PromptIn):
    layer: int = Field(ge=0)
    head: int = Field(ge=0)


class PairIn(HeadIn):
    query: int = Field(ge=0)
    key: int = Field(ge=0)


class AttributeIn(PromptIn):
    answer: str | None = Field(None, max_length=64, description="the next token to explain (default: the most likely)")
    wrong: str | None = Field(None, max_length=64, description="the token it wins over (default: the runner-up)")


class PatchIn(BaseModel):
    clean: str = Field(min_length=1, max_length=payloads.MAX_PROMPT_CHARS, description="the clean prompt")
    corrupt: str = Field(min_length=1, max_length=payloads.MAX_PROMPT_CHARS, description="the corrupted prompt")
    answer: str = Field(min_length=1, max_length=64, description="the right next token")
    wrong: str | None = Field(None, max_length=64, description="a wrong next token")
    over: Literal["resid", "heads", "head-positions"] = "resid"


class KindIn(PromptIn):
    kind: Literal["encoder", "decoder", "cross"] = Field("cross", description="which attention of an encoder-decoder")


class KindHeadIn(KindIn):
    layer: int = Field(ge=0)
    head: int = Field(ge=0)


class GenerateIn(PromptIn):
    max_new_tokens: int = Field(100, ge=1, le=payloads.MAX_NEW_TOKENS)
    greedy: bool = False
    temperature: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**63)


def create_app(model: LanguageModel, tokenizer: Tokenizer, card: dict[str, Any] | None = None) -> FastAPI:
    """The explorer's app for one model (already loaded and checked)."""
    app = FastAPI(title="attnlab explorer", version=__version__, description="Attention, next tokens and traces.")
    lock = threading.Lock()
    model.eval()

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(model, tokenizer, *args)`, a payloads function, alone on the model; its refusals as HTTP 422."""
        with lock:
            try:
                return fn(model, tokenizer, *args)
            except AttnlabError as e:
                raise HTTPException(status_code=422, detail=str(e)) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return render_page(card=run_card())

    @app.get("/api/card", summary="the model's config, parameters by component, loss curve and samples")
    def run_card() -> dict[str, Any]:
        return payloads.run_card(model, **(card or {}))

    @app.post("/api/attention", summary="tokens and attention weights [layer][head][query][key]")
    def attention(body: PromptIn) -> dict[str, Any]:
        return run(payloads.attention, body.prompt)

    @app.post("/api/overview", summary="every head as a small byte image (weight x 255, base64), for the model view")
    def overview(body: PromptIn) -> dict[str, Any]:
        return payloads.as_text(run(payloads.overview, body.prompt))

    @app.post("/api/head", summary="one head's weights, query x key, as base64 little-endian float32")
    def head(body: HeadIn) -> dict[str, Any]:
        data = run(payloads.head, body.prompt, body.layer, body.head)
        return {"layer": body.layer, "head": body.head, "f32": base64.b64encode(data).decode("ascii")}

    @app.post("/api/query_key", summary="one query-key pair: the score dimension by dimension, the value passed on")
    def query_key(body: PairIn) -> dict[str, Any]:
        return run(payloads.query_key, body.prompt, body.layer, body.head, body.query, body.key)

    @app.post("/api/qkv", summary="one head's queries, keys and values at every position")
    def qkv(body: HeadIn) -> dict[str, Any]:
        return run(payloads.qkv, body.prompt, body.layer, body.head)

    @app.post("/api/next", summary="the top-k next tokens at every position, and the logit lens")
    def next_token(body: NextIn) -> dict[str, Any]:
        return run(payloads.next_token, body.prompt, body.k)

    @app.post("/api/trace", summary="the steps of `attnlab trace`, with a small grid of each tensor's values")
    def trace(body: PromptIn) -> dict[str, Any]:
        return run(payloads.trace_steps, body.prompt)

    @app.post("/api/attribute", summary="direct logit attribution of the next token: a part per head, MLP and bias")
    def attribute(body: AttributeIn) -> dict[str, Any]:
        return run(payloads.attribution, body.prompt, body.answer, body.wrong)

    @app.post("/api/patch", summary="activation patching of a clean prompt into a corrupted one, as `attnlab patch`")
    def patch(body: PatchIn) -> dict[str, Any]:
        return run(payloads.patching, body.clean, body.corrupt, body.answer, body.wrong, body.over)

    @app.post("/api/generate", summary="generated tokens as server-sent events, one `token` event each, then `done`")
    def generate(body: GenerateIn) -> StreamingResponse:
        try:
            sampling = Sampling(body.temperature, body.top_k, body.top_p, body.greedy, body.seed)
        except AttnlabError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        ids = run(lambda m, t, p: payloads.encode(m, t, p), body.prompt)

        def events() -> Iterator[str]:
            decoder = tokenizer.stream_decoder()
            device = next(model.parameters()).device
            with lock:
                steps = stream_tokens(model, torch.tensor([ids], device=device), body.max_new_tokens, sampling)
                for next_B1 in steps:
                    token_id = int(next_B1[0, 0])
                    chip = payloads.token_chips(tokenizer, [token_id])[0]
                    event = {**chip, "decoded": decoder.feed([token_id])}
                    yield f"event: token\ndata: {json.dumps(event)}\n\n"
            yield f"event: done\ndata: {json.dumps({'rest': decoder.flush()})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def create_seq2seq_app(run: Seq2SeqRun, metrics: list[dict[str, Any]] | None = None) -> FastAPI:
    """The explorer's app for an encoder-decoder run: its source, translation, three attentions and trace."""
    app = FastAPI(title="attnlab explorer", version=__version__, description="An encoder-decoder's attentions.")
    lock = threading.Lock()
    view = seq2seq.Seq2SeqView(run)

    def answer(fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(view, *args)`, a function of explorer.seq2seq, alone on the model; its refusals as HTTP 422."""
        with lock:
            try:
                return fn(view, *args)
            except AttnlabError as e:
                raise HTTPException(status_code=422, detail=str(e)) from None

    card = seq2seq.run_card(view, metrics)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return render_page(card=card)

    @app.get("/api/card", summary="the model's config, parameters by component, loss curve and task")
    def run_card() -> dict[str, Any]:
        return card

    @app.post("/api/overview", summary="source, translation, and one attention's heads as byte images")
    def overview(body: KindIn) -> dict[str, Any]:
        return payloads.as_text(answer(seq2seq.overview, body.prompt, body.kind))

    @app.post("/api/head", summary="one head's weights, query x key, as base64 little-endian float32")
    def head(body: KindHeadIn) -> dict[str, Any]:
        data = answer(seq2seq.head, body.prompt, body.kind, body.layer, body.head)
        return {"layer": body.layer, "head": body.head, "f32": base64.b64encode(data).decode("ascii")}

    @app.post("/api/qkv", summary="one head's queries, keys and values")
    def qkv(body: KindHeadIn) -> dict[str, Any]:
        return answer(seq2seq.qkv, body.prompt, body.kind, body.layer, body.head)

    @app.post("/api/trace", summary="the steps of `attnlab trace` through encoder and decoder, with values")
    def trace(body: PromptIn) -> dict[str, Any]:
        return answer(seq2seq.trace_steps, body.prompt)

    return app
