"""Run the benchmarks and write their figures under benchmarks/results/."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def main() -> None:
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"which to run (default all: {', '.join(names)})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for name in args.names or names:
        if name not in names:
            raise SystemExit(f"no benchmark {name!r}; there are: {', '.join(names)}")
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"== {name} ==", flush=True)
        started = time.perf_counter()
        figures = module.run(quick=args.quick)
        record = {
            "benchmark": name,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": __import__("os").cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "quick": args.quick,
            "seconds": round(time.perf_counter() - started, 1),
            "figures": figures,
        }
        out = RESULTS / f"{name}{'-quick' if args.quick else ''}.json"
        out.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"-> {out}", flush=True)


if __name__ == "__main__":
    main()
