"""The report that keeps the ``slow`` marker honest."""

from __future__ import annotations

from tests.slow_marker import misfits


def test_misfits_name_unmarked_slow_tests_and_marked_fast_ones() -> None:
    calls = {
        "t.py::test_big[sqlite]": (0.4, False),
        "t.py::test_big[postgres]": (7.5, False),  # the slowest parameter counts
        "t.py::test_quick": (0.2, False),
        "t.py::test_kill[sqlite]": (0.3, True),
        "t.py::test_kill[postgres]": (0.6, True),  # marked, yet every parameter is quick
        "t.py::test_soak": (40.0, True),
        "t.py::test_import": (6.0, False),
    }
    unmarked, in_vain = misfits(calls, slow=5.0, fast=1.0)
    assert unmarked == ["7.5 s t.py::test_big", "6.0 s t.py::test_import"]
    assert in_vain == ["0.6 s t.py::test_kill"]
