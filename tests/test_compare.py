import json
from pathlib import Path

import pytest

from attnlab.apps.compare import parse_vary, run_compare, variants
from attnlab.errors import AttnlabError

from .conftest import run_cli


def test_vary_values_and_paired_fields() -> None:
    assert parse_vary("n_heads=1,2") == [{"n_heads": "1"}, {"n_heads": "2"}]
    assert parse_vary("n_heads:head_dim=1:128,2:64") == [
        {"n_heads": "1", "head_dim": "128"},
        {"n_heads": "2", "head_dim": "64"},
    ]


def test_several_varies_make_a_grid_or_one_at_a_time() -> None:
    specs = ["n_heads=1,2", "positions=learned,none"]
    assert len(variants(specs)) == 4
    assert variants(specs, one_at_a_time=True) == [
        {"n_heads": "1"},
        {"n_heads": "2"},
        {"positions": "learned"},
        {"positions": "none"},
    ]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("n_heads", "expected FIELD=v1,v2"),
        ("n_heads=", "expected FIELD"),
        ("a:b=1:2,3", "has 1 values for 2 fields"),
        ("n_heads:n_heads=1:2", "names n_heads twice"),
        ("n_heads:head_dim: n_heads=1:8:2", "names n_heads twice"),
    ],
)
def test_bad_vary_specs(spec: str, message: str) -> None:
    with pytest.raises(AttnlabError, match=message):
        parse_vary(spec)


@pytest.mark.parametrize(
    "specs",
    [["n_heads=1,2", "n_heads=4"], ["n_heads:head_dim=1:8,2:4", "head_dim=4,8"], ["bias=true", "n_heads=2", "bias=0"]],
)
def test_a_field_in_two_varies_of_a_grid_is_refused_not_overwritten(specs: list[str]) -> None:
    with pytest.raises(AttnlabError, match=r"is varied by --vary '.*' too; give all its values in one --vary"):
        variants(specs)


def test_one_at_a_time_may_vary_a_field_in_two_options() -> None:
    """Each option varies alone there, so nothing is overwritten: the values of both are trained."""
    assert variants(["n_heads=1,2", "n_heads=4"], one_at_a_time=True) == [
        {"n_heads": "1"},
        {"n_heads": "2"},
        {"n_heads": "4"},
    ]


def test_compare_trains_each_variant_and_skips_finished_ones(corpus_file: Path, tmp_path: Path) -> None:
    kw = dict(
        vary=["positions=learned,none"],
        data=str(corpus_file),
        out=tmp_path,
        max_time=None,
        steps=40,
        preset="lab",
        train_overrides={"eval_every": 20},
    )
    results = run_compare(**kw)
    assert [r["variant"] for r in results] == [{"positions": "learned"}, {"positions": "none"}]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == results
    for r in results:
        assert {"config", "params", "val_bpc", "tokens_per_s"} <= set(r) and r["steps"] == 40
        assert r["config"]["positions"] == r["variant"]["positions"]
    assert results[0]["params"] - results[1]["params"] == 64 * 32  # the learned position table
    html = (tmp_path / "report.html").read_text()
    assert "positions=none" in html and "data:image/png;base64," in html
    logs = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/metrics.jsonl")}
    again = run_compare(**kw)
    assert [r["val_bpc"] for r in again] == [r["val_bpc"] for r in results]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/metrics.jsonl")} == logs  # nothing retrained


def test_a_variant_equal_to_an_earlier_one_is_not_trained_twice(corpus_file: Path, tmp_path: Path) -> None:
    results = run_compare(
        ["n_heads=4,2", "positions=learned"],
        data=str(corpus_file),
        out=tmp_path,
        max_time=None,
        steps=10,
        preset="lab",
        one_at_a_time=True,
    )
    assert [r["name"] for r in results] == ["n_heads=4", "n_heads=2", "positions=learned"]
    assert results[2]["same_as"] == "n_heads=4" and results[2]["val_bpc"] == results[0]["val_bpc"]
    assert not (tmp_path / "runs" / "positions=learned").exists()


def test_compare_cli_bad_field_fails_before_training(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["compare", "--vary", "colour=red,blue", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "no such config field" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["compare", "--vary", "n_kv_heads=3", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "n_kv_heads=3" in err
    assert not (tmp_path / "c").exists()
