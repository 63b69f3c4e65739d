"""Property-based tests of the argument parser and of `--set` values: whatever a user types, the
answer is a parsed command or one line and exit 2, never a traceback; accepted values are valid."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnlab.cli import _check_outputs, build_parser
from attnlab.cli.options import parse_sets
from attnlab.errors import AttnlabError
from attnlab.models import ModelConfig, preset_config

VERBS = sorted(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001 - the verbs, from argparse
FLAGS = sorted(
    {
        flag
        for parser in build_parser()._subparsers._group_actions[0].choices.values()  # noqa: SLF001
        for action in parser._actions  # noqa: SLF001
        for flag in action.option_strings
        if flag not in ("-h", "--help")
    }
)
# Words a user might type: flags of any verb, numbers in every spelling, paths, and arbitrary text.
WORDS = st.one_of(
    st.sampled_from(FLAGS),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-1", "0", "1.5", "", " ", "--", "=", "a=b", "x" * 300]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, err.getvalue()


@QUICK
@given(verb=st.sampled_from(VERBS), words=st.lists(WORDS, max_size=6))
def test_any_words_after_a_verb_parse_or_are_one_line_exit_2(verb, words):
    code, err = _parse([verb, *words])
    assert code in (0, 2), (verb, words, code)
    if code == 2:
        assert err.count("\n") == 1 and "Traceback" not in err, err


@QUICK
@given(words=st.lists(WORDS, max_size=4))
def test_words_without_a_verb_are_one_line_exit_2(words):
    if words and words[0] in VERBS:
        return
    code, err = _parse(words)
    assert code in (0, 2)  # 0 only for --help and --version
    if code == 2:
        assert err.count("\n") == 1 and "Traceback" not in err, err


@QUICK
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70)))
def test_every_float_flag_accepts_exactly_the_finite_numbers(value):
    for argv in (
        ["train", "--out", "r", f"--lr={value!r}"],
        ["generate", "ck", "--prompt", "x", f"--temperature={value!r}"],
        ["bench", f"--budget={value!r}"],
    ):
        code, _ = _parse(argv)
        assert (code == 0) == math.isfinite(float(value)), (argv, code)


FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
SET_VALUES = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "yes", "0", "1", "", "relu", "rope", "rms", "post", "mlp", "sdpa"]),
    st.text(max_size=8),
)


@QUICK
@given(key=st.sampled_from(sorted(FIELDS)), value=SET_VALUES)
def test_a_set_value_gives_a_valid_config_or_one_attnlab_error(key, value):
    base = preset_config("lab")
    try:
        cfg = base.with_overrides(parse_sets([f"{key}={value}"]))
    except AttnlabError as e:  # the command line prints it on one line (cli.one_line)
        assert key in str(e)
        return
    cfg.validate()  # what was accepted is a config that validates again, and round-trips through JSON
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    for name in ("norm_eps", "rope_theta", "dropout"):
        assert math.isfinite(getattr(cfg, name))


@QUICK
@given(pair=st.text(max_size=20))
def test_a_set_pair_of_any_text_parses_or_names_the_form(pair):
    try:
        parsed = parse_sets([pair])
    except AttnlabError as e:
        assert "expected key=value" in str(e)
        return
    assert len(parsed) == 1 and "=" in pair


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=30))
def test_any_output_path_is_accepted_or_refused_in_one_line(tmp_path, name):
    args = build_parser().parse_args(["train", "--steps", "1", "--out", str(tmp_path / name) if name else ""])
    try:
        _check_outputs(args)
    except AttnlabError as e:
        assert "--out" in str(e)
    except ValueError as e:  # a NUL byte: no operating system takes it as a path
        pytest.fail(f"{name!r}: {e}")
