"""The RFM table (125 cells, each exactly one of the 11 segments), its override, the
tie-aware scores, and that docs/analytics.md shows the table the code uses."""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.analytics.rfm import (
    DEFAULT_TABLE,
    SEGMENTS,
    RFMTableError,
    build_table,
    quantile_scores,
    score,
    table_markdown,
)
from winback.config import Settings
from winback.errors import InvalidSetting

DOCS = Path(__file__).resolve().parents[1] / "docs" / "analytics.md"


def test_every_one_of_the_125_cells_has_exactly_one_of_the_11_segments() -> None:
    cells = set(product(range(1, 6), range(1, 6), range(1, 6)))
    assert set(DEFAULT_TABLE) == cells and len(DEFAULT_TABLE) == 125
    assert all(DEFAULT_TABLE[c] in SEGMENTS for c in cells)
    assert set(DEFAULT_TABLE.values()) == set(SEGMENTS)  # all 11 are used


def test_table_is_sensible_at_the_corners() -> None:
    assert DEFAULT_TABLE[(5, 5, 5)] == "Champions"
    assert DEFAULT_TABLE[(1, 1, 1)] == "Lost"
    assert DEFAULT_TABLE[(5, 1, 1)] == "New Customers"
    assert DEFAULT_TABLE[(1, 5, 5)] == "Can't Lose Them"
    assert DEFAULT_TABLE[(2, 4, 3)] == "At Risk"


def test_docs_show_the_table_the_code_uses() -> None:
    assert table_markdown() in DOCS.read_text(encoding="utf-8"), (
        "docs/analytics.md is stale: paste winback.analytics.rfm.table_markdown()"
    )


def test_override_cells_with_wildcards_later_keys_winning() -> None:
    table = build_table({"5**": "Champions", "51*": "New Customers", "111": "Gone"})
    assert table[(5, 3, 2)] == "Champions"
    assert table[(5, 1, 4)] == "New Customers"
    assert table[(1, 1, 1)] == "Gone"
    assert table[(4, 4, 4)] == DEFAULT_TABLE[(4, 4, 4)]
    with pytest.raises(RFMTableError, match="'56x'"):
        build_table({"56x": "Nope"})


def test_override_is_validated_in_settings() -> None:
    assert Settings(rfm_table={"5*1": "New Customers"}).rfm_table == {"5*1": "New Customers"}
    from winback.config import load_settings

    with pytest.raises(InvalidSetting, match="rfm_table"):
        load_settings(None, {"WINBACK_RFM_TABLE": "x"})


def test_one_time_buyers_do_not_break_frequency_scores() -> None:
    rng = np.random.default_rng(1)
    freq = np.concatenate([np.ones(6000), rng.integers(2, 30, 4000)]).astype(float)
    f = quantile_scores(freq)
    assert set(f[freq == 1]) == {1}
    assert set(np.unique(f)) == {1, 2, 3, 4, 5}  # repeat buyers spread over 2..5
    counts = np.bincount(f[freq > 1], minlength=6)[2:]
    assert counts.min() > 500


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=300))
def test_scores_are_monotone_and_ties_never_split(values: list[int]) -> None:
    v = np.array(values, dtype=float)
    s = quantile_scores(v)
    assert s.min() >= 1 and s.max() <= 5
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(s[order]) >= 0)
    for value in np.unique(v):
        assert len(set(s[v == value])) == 1
    r = quantile_scores(v, higher_is_better=False)
    assert np.all(r == 6 - s)


def test_score_assigns_segments_by_the_table() -> None:
    rec = np.array([1.0, 400.0, 5.0, 200.0, 30.0, 90.0])
    freq = np.array([9.0, 1.0, 1.0, 7.0, 3.0, 2.0])
    mon = np.array([900.0, 10.0, 20.0, 700.0, 80.0, 50.0])
    out = score(rec, freq, mon)
    for r, f, m, seg in zip(out.r, out.f, out.m, out.segment, strict=True):
        assert DEFAULT_TABLE[(r, f, m)] == seg
    assert out.segment[0] == "Champions"
