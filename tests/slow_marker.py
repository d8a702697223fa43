"""Keeps the ``slow`` marker honest: at the end of a run, lists the tests not marked slow
whose body took more than :data:`SLOW_SECONDS`, and the tests marked slow that took less
than :data:`FAST_SECONDS`. Timings depend on the machine's load, so this reports rather
than fails; a test named here on a quiet machine wants its marker added or removed.

Only the test's own call is timed: the set-up of shared fixtures (the PostgreSQL cluster,
a generated shop) is paid once per run, whichever test comes first."""

from __future__ import annotations

import pytest

#: A test whose call takes longer than this belongs under ``@pytest.mark.slow``.
SLOW_SECONDS = 5.0
#: A test marked slow that takes less than this does not belong there.
FAST_SECONDS = 1.0

_calls: dict[str, tuple[float, bool]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        _calls[report.nodeid] = (report.duration, "slow" in report.keywords)


def misfits(
    calls: dict[str, tuple[float, bool]], slow: float = SLOW_SECONDS, fast: float = FAST_SECONDS
) -> tuple[list[str], list[str]]:
    """(tests to mark slow, tests marked slow in vain), each as ``"<seconds> s <test>"``,
    slowest first. The marker is on the test function, so its parameters (``[sqlite]``,
    ``[postgres]``) count as one test, as slow as the slowest of them."""
    tests: dict[str, tuple[float, bool]] = {}
    for node, (seconds, marked) in calls.items():
        name = node.split("[", 1)[0]
        tests[name] = (max(seconds, tests.get(name, (0.0, marked))[0]), marked)
    ordered = sorted(tests.items(), key=lambda item: -item[1][0])
    unmarked = [f"{s:.1f} s {name}" for name, (s, marked) in ordered if not marked and s > slow]
    in_vain = [f"{s:.1f} s {name}" for name, (s, marked) in ordered if marked and s < fast]
    return unmarked, in_vain


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    unmarked, in_vain = misfits(_calls)
    if unmarked:
        terminalreporter.section(f"not marked slow, took longer than {SLOW_SECONDS:.0f} s")
        for line in unmarked:
            terminalreporter.write_line(line)
    if in_vain:
        terminalreporter.section(f"marked slow, took less than {FAST_SECONDS:.0f} s")
        for line in in_vain:
            terminalreporter.write_line(line)
