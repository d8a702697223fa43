"""Benchmarks: ``make bench`` (all) or ``python -m benchmarks NAME...``.

Each ``bench_<name>.py`` module has ``run(quick: bool) -> dict`` that prints its figures as it
goes and returns them; the runner writes them to ``benchmarks/results/<name>.json``. They compare
side by side in one run (ours vs a reference or the raw limit) and report ratios. They are not
tests: nothing fails on a slow machine.
"""
