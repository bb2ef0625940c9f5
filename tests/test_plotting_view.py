"""The view state: URL and JSON round trips, clear errors, step tokens."""

import pandas as pd
import pytest

from circuitviz.plotting.view import (
    ViewState,
    load_view,
    resolve_token,
    save_view,
    step_tokens,
    token_label,
)

FULL = ViewState(
    run="sv-circuit-1",
    step="120",
    threshold=0.0125,
    top_n=None,
    node="a3.h1",
    compare="before",
    compare_mode="side",
    color_by="target",
    node_color="induction",
    only_circuit=True,
    task="sv",
    overlay=("a", "b"),
    presentation=True,
)


def test_url_round_trip():
    assert ViewState.from_query(FULL.to_query()) == (FULL, [])
    assert ViewState().to_query() == {}  # defaults stay out of the URL


def test_json_round_trip(tmp_path):
    assert ViewState.from_json(FULL.to_json()) == FULL
    assert load_view(save_view(FULL, tmp_path / "v.view.json")) == FULL


def test_bad_url_parameters_are_dropped_and_reported():
    view, problems = ViewState.from_query({"run": "x", "top_n": "many", "threshold": "-1"})
    assert view.run == "x" and view.top_n == ViewState().top_n and view.threshold == 0
    assert len(problems) == 2
    assert any("top_n" in p for p in problems)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("threshold", -0.5, "threshold"),
        ("top_n", 0, "top_n"),
        ("color_by", "red", "color_by"),
        ("step", "middle", "step"),
        ("compare_mode", "stack", "compare_mode"),
        ("node_color", "rainbow", "node_color"),
    ],
)
def test_validation_names_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        ViewState(**{field: value})


def test_view_file_errors():
    with pytest.raises(ValueError, match="JSON"):
        ViewState.from_json("not json")
    with pytest.raises(ValueError, match="circuitviz view"):
        ViewState.from_json("{}")
    with pytest.raises(ValueError, match="unknown fields"):
        ViewState.from_json('{"circuitviz_view": 1, "colour": "red"}')


def test_step_tokens():
    snaps = pd.DataFrame(
        {"label": ["before", "during", "during", "after"], "step": [0, 50, 100, 150]}
    )
    assert step_tokens(snaps) == ["before", "50", "100", "after"]
    assert token_label("after", snaps) == "after (step 150)"
    assert token_label("50", snaps) == "step 50"
    assert resolve_token(snaps, None) == 3
    assert resolve_token(snaps, "100") == 2
    with pytest.raises(KeyError, match="no snapshot at step '70'"):
        resolve_token(snaps, "70")
    with pytest.raises(KeyError, match="no circuit snapshots"):
        resolve_token(snaps.iloc[0:0], None)
