"""The explorer's data and JSON API: every number it shows equals the model's own."""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from attnlab import FeedForwardLM, TransformerLM, preset_config
from attnlab.explorer import payloads, show
from attnlab.explorer.app import create_app
from attnlab.inspect.trace import trace
from attnlab.tokenizers import ByteTokenizer, CodepointTokenizer

from .conftest import run_cli

fastapi_testclient = pytest.importorskip("fastapi.testclient")

PROMPT = "Lily saw a cat. Lily"


@pytest.fixture(scope="module")
def model() -> TransformerLM:
    torch.manual_seed(0)
    m = TransformerLM(preset_config("lab", n_vocab=256, n_layers=2)).eval()
    with torch.no_grad():  # weights large enough that the heads attend unevenly
        for p in m.parameters():
            p.mul_(10)
    return m


@pytest.fixture(scope="module")
def client(model):
    return fastapi_testclient.TestClient(create_app(model, ByteTokenizer()))


def _model_weights(model, prompt):
    ids = ByteTokenizer().encode(prompt)
    with torch.no_grad():
        _, weights = model.forward_with_weights(torch.tensor([ids]))
    return ids, [w[0] for w in weights]


def test_api_attention_returns_the_models_weights_by_layer_head_query_key(client, model):
    r = client.post("/api/attention", json={"prompt": PROMPT})
    assert r.status_code == 200
    body = r.json()
    ids, weights = _model_weights(model, PROMPT)
    assert body["tokens"] == list(PROMPT.replace(" ", "␣"))  # labels: a space shows as a mark
    got = torch.tensor(body["weights"])
    assert got.shape == (2, 4, len(ids), len(ids))
    assert torch.allclose(got, torch.stack(weights), atol=1e-7)


def test_head_and_overview_encode_the_same_weights(client, model):
    _, weights = _model_weights(model, PROMPT)
    r = client.post("/api/head", json={"prompt": PROMPT, "layer": 1, "head": 2}).json()
    f32 = np.frombuffer(base64.b64decode(r["f32"]), dtype="<f4").reshape(len(PROMPT), len(PROMPT))
    assert np.array_equal(f32, weights[1][2].numpy())
    ov = client.post("/api/overview", json={"prompt": PROMPT}).json()
    u8 = np.frombuffer(base64.b64decode(ov["thumbs"][1][2]), dtype=np.uint8).reshape(len(PROMPT), len(PROMPT))
    assert np.abs(u8 / 255 - weights[1][2].numpy()).max() <= 0.5 / 255 + 1e-7


def test_a_long_prompt_is_pooled_for_the_model_view():
    torch.manual_seed(0)
    long_model = TransformerLM(preset_config("lab", n_vocab=256, max_len=1024)).eval()
    ov = payloads.overview(long_model, ByteTokenizer(), "a" * 1024)
    assert ov["size"] == payloads.THUMB and len(base64.b64encode(ov["thumbs"][0][0])) < 30_000
    assert sum(len(h) for layer in ov["thumbs"] for h in layer) == 4 * payloads.THUMB**2


def test_query_key_products_add_up_to_the_score(client, model):
    ids = ByteTokenizer().encode(PROMPT)
    _, cache = model.run_with_cache(torch.tensor([ids]), names=["blocks.0.attn.scores_BHLK"])
    pair = client.post("/api/query_key", json={"prompt": PROMPT, "layer": 0, "head": 1, "query": 19, "key": 0}).json()
    assert math.isclose(sum(pair["products"]), pair["score"], rel_tol=1e-5)
    assert math.isclose(
        pair["score"], float(cache["blocks.0.attn.scores_BHLK"][0, 1, 19, 0]), rel_tol=1e-4, abs_tol=1e-5
    )
    qkv = client.post("/api/qkv", json={"prompt": PROMPT, "layer": 0, "head": 1}).json()
    products = np.array(qkv["q"][19]) * np.array(qkv["k"][0]) * qkv["scale"]
    assert np.allclose(products, pair["products"], atol=1e-6)
    bad = client.post("/api/query_key", json={"prompt": PROMPT, "layer": 0, "head": 1, "query": 2, "key": 5})
    assert bad.status_code == 422 and "key <= query" in bad.json()["detail"]


def test_next_tokens_and_the_lens_end_at_the_models_prediction(client, model):
    body = client.post("/api/next", json={"prompt": PROMPT, "k": 5}).json()
    ids = ByteTokenizer().encode(PROMPT)
    with torch.no_grad():
        probs_LV = model(torch.tensor([ids]))[0].softmax(-1)
    for t in (0, 7, len(ids) - 1):
        top = body["positions"][t]["top"]
        assert [e["id"] for e in top] == probs_LV[t].topk(5).indices.tolist()
        last_layer = body["lens"][t][-1]["top"][0]
        assert last_layer["token"] == top[0]["token"] and math.isclose(last_layer["prob"], top[0]["prob"], rel_tol=1e-4)
    assert [r["layer"] for r in body["lens"][0]] == ["embeddings", "after block 0", "after block 1"]


def test_the_trace_view_has_the_traces_steps(client, model):
    body = client.post("/api/trace", json={"prompt": "Lily"}).json()
    assert [s["name"] for s in body["steps"]] == [s.name for s in trace(model, ByteTokenizer().encode("Lily")).steps]
    assert body["steps"][0]["symbolic"] == "B L" and body["max_abs_diff"] < 1e-4
    masked = next(s for s in body["steps"] if s["name"].endswith("masked_BHLK"))
    assert masked["values"][0][1] is None and masked["values"][1][0] is not None  # -inf is null in JSON


def test_a_space_is_a_visible_mark_in_the_chips_the_next_tokens_and_the_lens(client, model):
    body = client.post("/api/next", json={"prompt": PROMPT, "k": 100}).json()
    ids = ByteTokenizer().encode(PROMPT)
    tops = [e for row in body["positions"] for e in row["top"]]
    lens = [e for row in body["lens"] for layer in row for e in layer["top"]]
    assert {e["token"] for e in tops + lens if e["id"] == ord(" ")} == {"␣"}
    assert {e["token"] for e in tops if e["id"] == ord("\n")} <= {"\\n"}
    assert sum(e["id"] == ord(" ") for e in tops) >= 5 and any(e["id"] == ord(" ") for e in lens)
    assert all(e["token"].strip() == e["token"] != "" for e in tops + lens)  # no label is blank or padded
    # the prompt's own tokens read as its chips do
    assert [r["token"] for r in body["positions"]] == [c["text"] for c in payloads.token_chips(ByteTokenizer(), ids)]
    assert body["positions"][3]["token"] == "y" and body["positions"][3]["actual_next"] == "␣"
    assert body["positions"][4]["token"] == "␣" and body["positions"][-1]["actual_next"] is None


def test_one_function_labels_every_token_of_every_tokenizer():
    from attnlab.tokenizers import CharTokenizer

    tok = ByteTokenizer()
    assert [c["text"] for c in payloads.token_chips(tok, tok.encode("a b\tc\n"))] == ["a", "␣", "b", "\\t", "c", "\\n"]
    label = payloads.token_labels(tok)
    assert [label(i) for i in (32, 10, 97, 0xC3)] == ["␣", "\\n", "a", "<0xC3>"]
    chars = CharTokenizer.from_text("ab c")
    assert payloads.token_labels(chars)(chars.encode(" ")[0]) == "␣"
    assert payloads.printable("<bos> x") == "<bos>␣x"


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_generate_streams_the_greedy_tokens(client, model):
    r = client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 12, "greedy": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert [e for e, _ in events] == ["token"] * 12 + ["done"]
    expected = model.generate(torch.tensor([ByteTokenizer().encode(PROMPT)]), 12, greedy=True)[0, len(PROMPT) :]
    assert [d["id"] for e, d in events if e == "token"] == expected.tolist()


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/api/attention", {"prompt": ""}, "at least 1 character"),
        ("/api/attention", {"prompt": "x" * (payloads.MAX_PROMPT_CHARS + 1)}, "at most"),
        ("/api/attention", {"prompt": "x" * 100}, "this model sees at most 64"),
        ("/api/generate", {"prompt": "x", "max_new_tokens": payloads.MAX_NEW_TOKENS + 1}, "less than or equal"),
        ("/api/generate", {"prompt": "x", "temperature": 0}, "greater than 0"),
        ("/api/head", {"prompt": "x", "layer": 7, "head": 0}, "this model has 2 layers"),
        ("/api/next", {"prompt": "x", "k": 0}, "greater than or equal to 1"),
        ("/api/attribute", {"prompt": "x", "answer": "ab"}, "is 2 tokens"),
        ("/api/attribute", {"prompt": "x", "answer": "a", "wrong": "a"}, "the answer itself"),
        ("/api/patch", {"clean": "ab", "corrupt": "abc", "answer": "a"}, "same number of tokens"),
        ("/api/patch", {"clean": "ab", "corrupt": "ac", "answer": "a", "over": "layers"}, "Input should be"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(client, path, body, words):
    r = client.post(path, json=body)
    assert 400 <= r.status_code < 500
    detail = r.json()["detail"]
    text = detail if isinstance(detail, str) else " ".join(d["msg"] for d in detail)
    assert words in text


def test_the_api_is_described_by_openapi(client):
    spec = client.get("/openapi.json").json()
    assert {
        "/api/attention",
        "/api/overview",
        "/api/head",
        "/api/qkv",
        "/api/next",
        "/api/trace",
        "/api/generate",
        "/api/attribute",
        "/api/patch",
    } <= set(spec["paths"])
    page = client.get("/")
    assert page.status_code == 200 and 'id="attnlab-data"' in page.text


def test_the_mlp_baseline_says_why_it_has_no_attention():
    mlp_client = fastapi_testclient.TestClient(
        create_app(FeedForwardLM(preset_config("lab", model="mlp")), ByteTokenizer())
    )
    body = mlp_client.post("/api/attention", json={"prompt": "abc"}).json()
    assert body["weights"] is None and "no attention" in body["why"]
    assert mlp_client.post("/api/next", json={"prompt": "abc"}).json()["lens"] is None


def test_chips_show_which_byte_of_a_character_a_token_is():
    tok = ByteTokenizer()
    chips = payloads.token_chips(tok, tok.encode("é😀a\n<b>"))
    assert [c["text"] for c in chips] == [
        "é 1/2",
        "é 2/2",
        "😀 1/4",
        "😀 2/4",
        "😀 3/4",
        "😀 4/4",
        "a",
        "\\n",
        "<",
        "b",
        ">",
    ]
    assert [c["partial"] for c in chips][:7] == [True] * 6 + [False]
    assert [c["text"] for c in payloads.token_chips(CodepointTokenizer(), CodepointTokenizer().encode("é!"))] == [
        "é",
        "!",
    ]


def test_fifty_concurrent_requests_complete(model):
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_app(model, ByteTokenizer()), host="127.0.0.1", port=0, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with ThreadPoolExecutor(50) as pool:
            prompts = [f"{PROMPT} {i}" for i in range(50)]
            codes = list(
                pool.map(
                    lambda p: (
                        httpx.post(f"http://127.0.0.1:{port}/api/attention", json={"prompt": p}, timeout=60).status_code
                    ),
                    prompts,
                )
            )
        assert codes == [200] * 50
    finally:
        server.should_exit = True
        thread.join(10)


def test_attention_html_writes_one_self_contained_file(tmp_path, capsys):
    out = tmp_path / "a.html"
    code, stdout, _ = run_cli(
        ["attention", "--random", "--preset", "lab", "--prompt", "<img src=x onerror=alert(1)>", "--html", str(out)],
        capsys,
    )
    assert code == 0 and stdout.strip() == str(out)
    page = out.read_text()
    fetched = page.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace is a name, not a request
    assert "http://" not in fetched and "https://" not in fetched and "<link" not in page and "<script src" not in page
    assert "<img src=x" not in page  # the prompt is data, never markup


def test_show_gives_each_view_its_own_frame(model):
    a, b = show(model, ByteTokenizer(), "ab"), show(model, ByteTokenizer(), "cd")
    assert a.data.startswith('<iframe id="attnlab-view-') and a.data.split('"')[1] != b.data.split('"')[1]


def test_serve_refuses_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(["serve", str(tmp_path / "nothing")], capsys)
    assert code == 2 and err.count("\n") == 1
    code, _, err = run_cli(["serve", str(tmp_path), "--port", "70000"], capsys)
    assert code == 2 and "--port" in err


LOGS = {  # a run's metrics.jsonl: training rows, evaluations, and the final (bigger) evaluation
    "with kinds": [
        {"kind": "train", "step": 50, "train_loss": 3.1},
        {"kind": "eval", "step": 100, "train_loss": 2.9, "val_loss": 2.0, "val_bpc": 2.9},
        {"kind": "train", "step": 150, "train_loss": 2.6},
        {"kind": "eval", "step": 200, "train_loss": 2.5, "val_loss": 1.7, "val_bpc": 2.45},
        {"kind": "final", "step": 200, "train_loss": 2.5, "val_loss": 1.6, "val_bpc": 2.31, "final": True},
    ],
    "before kinds": [
        {"step": 50, "train_loss": 3.1},
        {"step": 100, "train_loss": 2.9, "val_loss": 2.0, "val_bpc": 2.9},
        {"step": 150, "train_loss": 2.6},
        {"step": 200, "train_loss": 2.5, "val_loss": 1.7, "val_bpc": 2.45},
        {"step": 200, "train_loss": 2.5, "val_loss": 1.6, "val_bpc": 2.31, "final": True},
    ],
}


@pytest.mark.parametrize("log", LOGS)
def test_the_run_card_curve_is_the_runs_evaluations_named_as_such(model, tmp_path, log):
    from attnlab.training.checkpoint import run_log

    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LOGS[log]))
    metrics = run_log(tmp_path / "checkpoint")  # the rows `attnlab serve` hands the card
    app_client = fastapi_testclient.TestClient(create_app(model, ByteTokenizer(), {"metrics": metrics}))
    assert app_client.get("/api/card").json()["curve"] == {
        "metric": "val_bpc",
        "label": "validation bits per character",
        "points": [{"step": 100, "value": 2.9}, {"step": 200, "value": 2.45}],  # not the final 2.31
    }
    assert payloads.run_card(model)["curve"]["points"] == []


def test_the_run_card_takes_a_lab_models_samples(tmp_path):
    from attnlab.training.checkpoint import lab_samples

    (tmp_path / "transformer").mkdir()
    lab = {"prompts": ["Once", "The dog"], "transformer": {"samples": [" upon a time", " ran"]}}
    (tmp_path / "metrics.json").write_text(json.dumps(lab))
    assert lab_samples(tmp_path / "transformer") == {"Once": " upon a time", "The dog": " ran"}
    assert lab_samples(tmp_path / "mlp") == {}


# ---- an encoder-decoder run: the cross-attention mode -----------------------------------------


@pytest.fixture(scope="module")
def seq2seq_client():
    """An untrained encoder-decoder on the reverse task's letters, with weights scaled up so its heads
    attend unevenly, served as `attnlab serve` serves a seq2seq run."""
    from attnlab.data.tasks import PairVocab
    from attnlab.explorer.app import create_seq2seq_app
    from attnlab.models import Seq2SeqTransformer
    from attnlab.training.seq2seq_run import Seq2SeqRun

    vocab = PairVocab.from_pairs([("abcdefghijklmnopqrstuvwxyz", "")])
    torch.manual_seed(0)
    cfg = preset_config("seq2seq-small", n_vocab=vocab.n_vocab, n_enc_layers=2, n_layers=3)
    model = Seq2SeqTransformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    run = Seq2SeqRun(model, vocab, {"kind": "seq2seq", "task": "reverse", "step": 0})
    metrics = [{"step": 10, "train_loss": 2.5}, {"step": 20, "train_loss": 1.5}]
    return fastapi_testclient.TestClient(create_seq2seq_app(run, metrics)), run


def _reading(run, source):
    from attnlab.training.seq2seq_run import source_and_reading

    src, tgt = source_and_reading(run, source)
    _, cache = run.model.run_with_cache(torch.tensor([src]), torch.tensor([tgt]))
    return src, tgt, cache


@pytest.mark.parametrize(
    ("kind", "name", "queries", "keys"),
    [
        ("cross", "decoder.1.cross.weights_BHLS", "target", "source"),
        ("encoder", "encoder.1.attn.weights_BHLK", "source", "source"),
        ("decoder", "decoder.1.attn.weights_BHLK", "target", "target"),
    ],
)
def test_each_attention_of_an_encoder_decoder_is_served_exactly(seq2seq_client, kind, name, queries, keys):
    client, run = seq2seq_client
    src, tgt, cache = _reading(run, "lilyhadaball")
    ov = client.post("/api/overview", json={"prompt": "lilyhadaball", "kind": kind}).json()
    assert [c["id"] for c in ov["source"]] == src and [c["id"] for c in ov["target"]] == tgt
    assert ov["translation"] == run.vocab.decode(tgt[1:]) and ov["target"][0]["text"] == "<bos>"
    ids = {"source": src, "target": tgt}
    assert ov["ids"] == ids[queries] and [c["id"] for c in ov["key_chips"]] == ids[keys]
    assert ov["causal"] == (kind == "decoder") and ov["layers"] == (2 if kind == "encoder" else 3)
    assert (ov["size"], ov["cols"]) == (len(ids[queries]), len(ids[keys]))
    thumb = np.frombuffer(base64.b64decode(ov["thumbs"][1][2]), np.uint8).reshape(ov["size"], ov["cols"])
    expected = cache[name][0, 2]
    assert np.array_equal(thumb, (expected * 255).round().to(torch.uint8).numpy())
    h = client.post("/api/head", json={"prompt": "lilyhadaball", "kind": kind, "layer": 1, "head": 2}).json()
    w = np.frombuffer(base64.b64decode(h["f32"]), "<f4").reshape(expected.shape)
    assert np.array_equal(w, expected.numpy())
    q = client.post("/api/qkv", json={"prompt": "lilyhadaball", "kind": kind, "layer": 1, "head": 2}).json()
    scores = torch.tensor(q["q"]) @ torch.tensor(q["k"]).T * q["scale"]
    if kind == "decoder":
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), -math.inf)
    assert torch.allclose(scores.softmax(-1), expected, atol=1e-5)


def test_the_encoder_decoder_page_trace_card_and_refusals(seq2seq_client):
    client, run = seq2seq_client
    page = client.get("/")
    assert page.status_code == 200 and '"model":"seq2seq"' in page.text
    card = client.get("/api/card").json()
    assert card["info"]["task"] == "reverse" and card["info"]["example"]
    assert card["total_params"] == run.model.num_params()
    assert card["curve"] == {
        "metric": "train_loss",
        "label": "training loss (nats per token)",
        "points": [{"step": 10, "value": 2.5}, {"step": 20, "value": 1.5}],
    }
    tr = client.post("/api/trace", json={"prompt": "abc"}).json()
    assert tr["source_tokens"] == ["a", "b", "c"] and tr["max_abs_diff"] < 1e-4
    names = [s["name"] for s in tr["steps"]]
    assert names.index("memory_BSC") < names.index("decoder.0.cross.weights_BHLS")
    for body, status, message in (
        ({"prompt": "abc", "kind": "encoder", "layer": 2, "head": 0}, 422, "the encoder has 2 layers of 4 heads"),
        ({"prompt": "ab1", "kind": "cross", "layer": 0, "head": 0}, 422, "not in the vocabulary"),
        ({"prompt": "a" * 500, "kind": "cross", "layer": 0, "head": 0}, 422, "shorten it"),
        ({"prompt": "abc", "kind": "sideways", "layer": 0, "head": 0}, 422, "encoder"),
    ):
        r = client.post("/api/head", json=body)
        assert r.status_code == status and message in json.dumps(r.json()["detail"]), r.json()
    assert client.post("/api/generate", json={"prompt": "abc"}).status_code == 404  # no sampling: it translates


def test_attribution_explains_the_models_choice_over_its_runner_up_or_over_the_token_given(client, model):
    from attnlab.inspect.attribution import direct_logit_attribution

    prompt = "abc"  # the model's choice is an ASCII character here ("\\"), which can be typed as one token
    ids_1L = torch.tensor([ByteTokenizer().encode(prompt)])
    with torch.no_grad():
        first, second = model(ids_1L)[0, -1].topk(2).indices.tolist()
    assert first < 128
    for body, (answer, wrong) in [
        ({}, (first, second)),
        ({"wrong": chr(first)}, (second, first)),  # the wrong token given is the model's choice: explain the runner-up
        ({"answer": "q"}, (ord("q"), first)),
    ]:
        view = client.post("/api/attribute", json={"prompt": prompt, **body}).json()
        assert (view["answer_id"], view["wrong_id"]) == (answer, wrong)
        att = direct_logit_attribution(model, ids_1L, answer, wrong)
        assert view["logit_diff"] == pytest.approx(att.total, abs=1e-5)
        assert [p["value"] for p in view["parts"]] == pytest.approx([v for _, v in att.parts], abs=1e-5)
        assert [p["head"] for p in view["parts"] if p["head"]] == [[i, h] for i in range(2) for h in range(4)]
