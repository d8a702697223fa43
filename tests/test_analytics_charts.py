from __future__ import annotations

import re

from winback.analytics.charts import columns


def test_column_axis_ends_on_round_numbers() -> None:
    svg = columns(["a", "b"], [[3587.0, 120.0]], names=["customers"], title="t")
    labels = re.findall(r"text-anchor='end' font-size='11'>([^<]+)<", svg)
    assert labels == ["0", "1.0k", "2.0k", "3.0k", "4.0k"]


def test_columns_leave_out_missing_values() -> None:
    """A figure the analysis could not compute (None in a stored report) draws nothing."""
    svg = columns(
        ["1", "2", "3"],
        [[4.0, None, 2.0], [None, 3.0, None]],
        names=["actual", "model"],
        title="holdout",
        lines=True,
    )
    assert svg.count("<circle") == 3
    assert svg.count("<polyline") == 2
