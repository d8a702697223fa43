"""Import of generated order rows into SQLite and PostgreSQL, against the raw driver limit.

- ours: ``ws.imports.orders(file)``: sniffing, CSV parsing, validation of every field,
  time-zone conversion, staging, dedup against the store and within the file, contact lookup
  (creation of unknown ones), incremental contact attributes, reject file, one transaction
  per ``import_batch_size`` rows.
- raw limit: the same rows, pre-parsed outside the timer, bulk-inserted into ``orders`` by the
  driver alone (sqlite3 ``executemany`` / psycopg ``COPY``), with no parsing or validation.

Both start from a migrated store that already holds the customers, so both measure orders.
Orders are parsed in a parser process forked by the import: ours' CPU time includes it
(``parser_cpu_seconds``: its share) and its peak memory is reported as ``parser_peak_rss_mb``.
Each run happens in its own subprocess, which reports its own peak memory (``VmHWM``); the
import is run on a small and on the full file to show that memory does not grow with it.
Sizes: 10 million rows (``--quick``: 200,000), small file 1 million (``--quick``: 50,000);
``WINBACK_BENCH_ROWS`` / ``WINBACK_BENCH_SMALL_ROWS`` override them and ``WINBACK_BENCH_DBS``
(``sqlite,postgres``) picks the databases. Figures already measured for the same sizes are
kept in ``benchmarks/work/`` and reused, so an interrupted run resumes.

A second comparison imports a Shopify orders export (one row per line item, 1 to 3 items
per order, statuses and refunds as Shopify writes them) with ``--preset shopify``, matched by
email against the preloaded customers, against the raw limit inserting the same orders.
``WINBACK_BENCH_SHOPIFY_ROWS`` sets its size in file rows (default 20,000; the issue's figure
is 10,000,000), ``WINBACK_BENCH_SHOPIFY_SMALL_ROWS`` the small file's (default a tenth), on
which only the preset runs, for memory. ``WINBACK_BENCH_PARTS`` (``canonical,shopify``)
picks the comparisons. ``WINBACK_BENCH_PARTS=shopify10m`` runs that comparison alone on a
10,000,000-row export (small file 1,000,000 rows) in a temporary folder outside the
repository, removed afterwards; the preset's run also reports its resident memory at each
tenth of the file read (``VmRSS``), to show that it stays flat. ``WINBACK_BENCH_WORK`` puts
the generated files and stores elsewhere than ``benchmarks/work/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
#: Generated files, stores and partial figures (``WINBACK_BENCH_WORK``: elsewhere, e.g. a
#: temporary folder outside the repository for the 10M-row files).
WORK = Path(os.environ.get("WINBACK_BENCH_WORK") or HERE / "work")
ROOT = HERE.parent


def generate(path: Path, rows: int, seed: int = 7) -> Path:
    """A canonical orders CSV: ``rows`` orders of ``rows // 10`` customers (numpy, chunked)."""
    if path.exists() and path.with_suffix(".ok").exists():
        return path
    rng = np.random.default_rng(seed)
    customers = max(rows // 10, 1)
    start = np.datetime64("2022-01-01T00:00:00")
    chunk = 500_000
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("order_id,customer_id,ordered_at,amount,currency\n")
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            ids = np.arange(first, first + n)
            cust = rng.integers(0, customers, n)
            secs = rng.integers(0, 3 * 365 * 86400, n)
            stamps = np.datetime_as_string(start + secs.astype("timedelta64[s]"), unit="s")
            cents = rng.gamma(2.0, 2500.0, n).astype(np.int64) + 100
            lines = [
                f"o{i},c{c},{t}Z,{m // 100}.{m % 100:02d},EUR\n"
                for i, c, t, m in zip(
                    ids.tolist(), cust.tolist(), stamps.tolist(), cents.tolist(), strict=True
                )
            ]
            out.write("".join(lines))
    path.with_suffix(".ok").write_text(str(rows))
    return path


SHOPIFY_HEADER = (
    "Name,Email,Financial Status,Currency,Total,Discount Code,Created at,Lineitem quantity,"
    "Lineitem name,Lineitem price,Lineitem sku,Cancelled at,Refunded Amount,Id\n"
)


def generate_shopify(path: Path, rows: int, seed: int = 11) -> tuple[Path, Path, int]:
    """A Shopify orders export of about ``rows`` line-item rows (orders of 1-3 items by
    ``rows // 20`` customers), and the same orders as a canonical CSV for the raw limit.
    Returns both paths and the number of orders."""
    canonical = path.with_name(path.stem + "-canonical.csv")
    done = path.with_suffix(".ok")
    if path.exists() and done.exists():
        return path, canonical, int(done.read_text())
    rng = np.random.default_rng(seed)
    customers = max(rows // 20, 1)
    start = np.datetime64("2022-01-01T00:00:00")
    written = orders = 0
    with (
        path.open("w", encoding="utf-8", newline="") as out,
        canonical.open("w", encoding="utf-8", newline="") as raw,
    ):
        out.write(SHOPIFY_HEADER)
        raw.write("order_id,customer_id,ordered_at,amount,currency\n")
        while written < rows:
            n = 50_000
            cust = rng.integers(0, customers, n).tolist()
            secs = rng.integers(0, 3 * 365 * 86400, n)
            stamps = np.datetime_as_string(start + secs.astype("timedelta64[s]"), unit="s")
            items = rng.integers(1, 4, n).tolist()
            cents = (rng.gamma(2.0, 1500.0, (n, 3)).astype(np.int64) + 100).tolist()
            kind = rng.random(n).tolist()
            lines, canon = [], []
            for k in range(n):
                if written >= rows:
                    break
                orders += 1
                number = 100000 + orders
                at = stamps[k].replace("T", " ") + " +0000"
                prices = cents[k][: items[k]]
                total = sum(prices)
                status, refunded = "paid", 0
                if kind[k] < 0.05:
                    status, refunded = "refunded", total
                elif kind[k] < 0.08:
                    status, refunded = "partially_refunded", total // 3
                elif kind[k] < 0.10:
                    status = "voided"
                email = f"c{cust[k]}@example.com"
                money = f"{total // 100}.{total % 100:02d}"
                for j, price in enumerate(prices):
                    first = j == 0
                    lines.append(
                        f"#{number},{email},{status if first else ''},{'EUR' if first else ''},"
                        f"{money if first else ''},,{at},1,Item {j},{price // 100}.{price % 100:02d},"
                        f"SKU-{j},,{f'{refunded // 100}.{refunded % 100:02d}' if first else ''},"
                        f"{number if first else ''}\n"
                    )
                    written += 1
                if status in ("paid", "partially_refunded"):
                    net = total - refunded
                    canon.append(
                        f"{number},c{cust[k]},{stamps[k]}Z,{net // 100}.{net % 100:02d},EUR\n"
                    )
            out.write("".join(lines))
            raw.write("".join(canon))
    done.write_text(str(orders))
    return path, canonical, orders


def customers_of(rows: int) -> int:
    return max(rows // 10, 1)


# -- children (run in a subprocess so that the peak memory is theirs alone) -------------------


def _preload_contacts(url: str, count: int) -> None:
    """Contacts ``c0``... (internal ids 1...), with the addresses ``c<n>@example.com``."""
    from winback.store.engine import make_engine

    engine = make_engine(url)
    now = "2026-01-01 00:00:00.000000"
    rows = [(f"c{i}", f"c{i}@example.com", "{}", 0, 0, now, now) for i in range(count)]
    with engine.begin() as conn:
        raw: Any = conn.connection.driver_connection
        cur = raw.cursor()
        sql = (
            "INSERT INTO contacts (customer_id, email, attributes, orders_count, "
            "revenue_total, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        if engine.dialect.name == "postgresql":
            with cur.copy(
                "COPY contacts (customer_id, email, attributes, orders_count, revenue_total, "
                "created_at, updated_at) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cur.executemany(sql, rows)
    engine.dispose()


def child_ours(workspace: Path, file: Path, preset: str | None = None) -> dict[str, Any]:
    import winback

    ws = winback.open(workspace)
    samples: list[tuple[float, float]] = []  # (share of the file read, resident MB)

    def progress(done: int, size: int) -> None:
        samples.append((done / size if size else 1.0, rss_mb()))

    started, cpu, times = time.perf_counter(), time.process_time(), os.times()
    report = ws.imports.orders(file, preset=preset, progress=progress)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    # The parser process (orders are parsed in a forked child): its CPU time counts too.
    done = os.times()
    parser_cpu = (done.children_user - times.children_user) + (
        done.children_system - times.children_system
    )
    ws.close()
    return {
        "rows": report.imported,
        "seconds": seconds,
        "cpu_seconds": round(cpu + parser_cpu, 2),
        "parser_cpu_seconds": round(parser_cpu, 2),
        "parser_peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
        "rejected": report.rejected,
        "rss_mb_by_share_read": _tenths(samples),
    }


def _tenths(samples: list[tuple[float, float]]) -> list[list[float]]:
    """The first sample at or past each tenth of the file: (share read, resident MB)."""
    picked: list[list[float]] = []
    for tenth in range(1, 11):
        for share, mb in samples:
            if share >= tenth / 10 - 1e-9:
                if not picked or picked[-1][0] != round(share, 3):
                    picked.append([round(share, 3), mb])
                break
    return picked


def rss_mb() -> float:
    """This process's resident memory now (``VmRSS``; 0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _parsed_chunks(file: Path, postgres: bool, chunk: int) -> Iterator[list[tuple[Any, ...]]]:
    from datetime import UTC, datetime
    from decimal import Decimal

    with file.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows: list[tuple[Any, ...]] = []
        for order_id, customer, at, amount, currency in reader:
            stamp = datetime.fromisoformat(at).astimezone(UTC)
            contact_id = int(customer[1:]) + 1
            if postgres:
                rows.append((order_id, contact_id, stamp, Decimal(amount), currency))
            else:
                text = stamp.replace(tzinfo=None).isoformat(" ", "microseconds")
                rows.append((order_id, contact_id, text, float(amount), currency))
            if len(rows) >= chunk:
                yield rows
                rows = []
        if rows:
            yield rows


def child_raw(url: str, file: Path, cache_mb: int | None = None) -> dict[str, Any]:
    """Bulk insert by the driver alone; only the inserts are timed. ``cache_mb`` (SQLite):
    the connection's page cache instead of the store's (the import's own, for a second
    reference with the same memory)."""
    from sqlalchemy import event

    from winback.store.engine import make_engine

    engine = make_engine(url)
    if cache_mb is not None and engine.dialect.name == "sqlite":

        def cache(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA cache_size={-1024 * cache_mb}")

        event.listen(engine, "connect", cache)
    postgres = engine.dialect.name == "postgresql"
    timed = 0.0
    cpu = 0.0
    count = 0
    for rows in _parsed_chunks(file, postgres, 50_000):
        started, cpu_started = time.perf_counter(), time.process_time()
        with engine.begin() as conn:
            raw: Any = conn.connection.driver_connection
            cur = raw.cursor()
            if postgres:
                with cur.copy(
                    "COPY orders (order_id, contact_id, ordered_at, amount, currency) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cur.executemany(
                    "INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        timed += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        count += len(rows)
    engine.dispose()
    return {"rows": count, "seconds": timed, "cpu_seconds": round(cpu, 2)}


def _child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["ours", "raw", "shopify"])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--url")
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--cache-mb", type=int)
    args = parser.parse_args(argv)
    if args.mode in ("ours", "shopify"):
        out = child_ours(args.workspace, args.file, "shopify" if args.mode == "shopify" else None)
    else:
        out = child_raw(args.url, args.file, args.cache_mb)
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux ``VmHWM``: ``ru_maxrss`` would report at
    least the parent's peak at the time of the fork (the kernel carries it over ``exec``),
    which hid the child's own figure behind the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# -- parent ----------------------------------------------------------------------------------


def _spawn(*args: str) -> dict[str, Any]:
    # The caller's PYTHONPATH first (a source tree to measure), then the repository's root.
    path = [p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_import", "--child", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _fresh_store(db: str, name: str, cluster: Any, customers: int) -> tuple[Path, str]:
    import winback

    folder = WORK / f"run-{db}-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    if db == "sqlite":
        ws = winback.init(folder, environ={})
    else:
        url = cluster.create_database(f"bench_{name}")
        ws = winback.init(folder, environ={"WINBACK_DATABASE_URL": url})
    url = ws.database_url
    ws.close()
    _preload_contacts(url, customers)
    if db != "sqlite":  # the child opens the workspace with this environment variable
        (folder / "winback.toml").write_text(
            (folder / "winback.toml").read_text() + f'\ndatabase_url = "{url}"\n'
        )
    return folder, url


def run(quick: bool) -> dict[str, Any]:
    from tests.pgcluster import PostgresCluster

    WORK.mkdir(exist_ok=True)
    big_n = int(os.environ.get("WINBACK_BENCH_ROWS", 200_000 if quick else 10_000_000))
    small_n = int(os.environ.get("WINBACK_BENCH_SMALL_ROWS", 50_000 if quick else 1_000_000))
    parts = os.environ.get("WINBACK_BENCH_PARTS", "canonical,shopify").split(",")
    if "shopify10m" in parts:
        return shopify_10m()
    figures: dict[str, Any] = {"rows": big_n, "small_rows": small_n}
    dbs = os.environ.get("WINBACK_BENCH_DBS", "sqlite,postgres").split(",")
    cluster = PostgresCluster().start() if "postgres" in dbs else None
    try:
        if "canonical" in parts:
            big = generate(WORK / f"orders-{big_n}.csv", big_n)
            small = generate(WORK / f"orders-{small_n}.csv", small_n)
            for db in dbs:
                figures[db] = _one_database(db, cluster, big, big_n, small, small_n)
        if "shopify" in parts:
            shopify_n = int(os.environ.get("WINBACK_BENCH_SHOPIFY_ROWS", 20_000))
            small_shop = int(os.environ.get("WINBACK_BENCH_SHOPIFY_SMALL_ROWS", shopify_n // 10))
            files = [
                generate_shopify(WORK / f"shopify-{n}.csv", n) for n in (shopify_n, small_shop)
            ]
            for db in dbs:
                figures[f"{db}_shopify"] = _shopify(db, cluster, files, (shopify_n, small_shop))
    finally:
        if cluster is not None:
            cluster.stop()
    return figures


def shopify_10m() -> dict[str, Any]:
    """``WINBACK_BENCH_PARTS=shopify10m``: the Shopify comparison on a 10,000,000-row
    line-item export (small file 1,000,000 rows), its files and stores in a temporary folder
    outside the repository (``WINBACK_BENCH_WORK`` to choose it), removed afterwards.
    ``WINBACK_BENCH_DBS`` picks the databases as for the other parts."""
    import tempfile

    from tests.pgcluster import PostgresCluster

    global WORK
    rows = int(os.environ.get("WINBACK_BENCH_SHOPIFY_ROWS", 10_000_000))
    small = int(os.environ.get("WINBACK_BENCH_SHOPIFY_SMALL_ROWS", rows // 10))
    dbs = os.environ.get("WINBACK_BENCH_DBS", "sqlite,postgres").split(",")
    chosen = os.environ.get("WINBACK_BENCH_WORK")
    saved, WORK = WORK, Path(tempfile.mkdtemp(prefix="winback-bench-", dir=chosen or None))
    figures: dict[str, Any] = {"file_rows": rows, "small_file_rows": small, "work": str(WORK)}
    cluster = PostgresCluster().start() if "postgres" in dbs else None
    try:
        started = time.perf_counter()
        files = [generate_shopify(WORK / f"shopify-{n}.csv", n) for n in (rows, small)]
        figures["generate_seconds"] = round(time.perf_counter() - started, 1)
        figures["file_mb"] = round(files[0][0].stat().st_size / 2**20, 1)
        for db in dbs:
            figures[db] = _shopify(db, cluster, files, (rows, small))
            (Path(chosen or tempfile.gettempdir()) / f"shopify10m-{db}.json").write_text(
                json.dumps(figures[db], indent=2)
            )
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(WORK, ignore_errors=True)
        WORK = saved
    return figures


def _one_database(
    db: str, cluster: Any, big: Path, big_n: int, small: Path, small_n: int
) -> dict[str, Any]:
    """ours on the full file, the raw limit on the full file, ours on the small file (for
    memory). Each figure is printed, and saved under benchmarks/work/, as soon as it is known."""
    partial = WORK / f"import-{db}-{big_n}.json"
    done: dict[str, Any] = json.loads(partial.read_text()) if partial.exists() else {}

    def step(name: str, *args: str) -> dict[str, Any]:
        if name not in done:
            store, url = _fresh_store(
                db, name, cluster, customers_of(small_n if name == "small" else big_n)
            )
            if name == "raw":
                done[name] = _spawn("raw", "--url", url, "--file", str(big))
            else:
                done[name] = _spawn(
                    "ours",
                    "--workspace",
                    str(store),
                    "--file",
                    str(small if name == "small" else big),
                )
            shutil.rmtree(store, ignore_errors=True)
            if db == "postgres":
                cluster_drop(cluster, f"bench_{name}")
            partial.write_text(json.dumps(done))
        print(f"{db:9} {name:5} {json.dumps(done[name])}", flush=True)
        return dict(done[name])

    ours, raw, ours_small = step("big"), step("raw"), step("small")
    ours_rate = ours["rows"] / ours["seconds"]
    raw_rate = raw["rows"] / raw["seconds"]
    f = {
        "ours_rows_per_s": round(ours_rate),
        "raw_rows_per_s": round(raw_rate),
        "ratio": round(ours_rate / raw_rate, 3),
        "ours_seconds": round(ours["seconds"], 1),
        "raw_seconds": round(raw["seconds"], 1),
        "ours_peak_rss_mb": ours["peak_rss_mb"],
        "ours_small_peak_rss_mb": ours_small["peak_rss_mb"],
        "raw_peak_rss_mb": raw["peak_rss_mb"],
        "imported": ours["rows"],
    }
    if "cpu_seconds" in ours and "cpu_seconds" in raw:
        # CPU time of this process (all its threads), during the timed part only. On SQLite
        # the database works inside the process, so this is all the work; on PostgreSQL the
        # server's share is not in it. Unlike wall time it hardly depends on the machine's
        # load: the ratio ours/raw that a loaded machine tends to.
        f["ours_cpu_seconds"] = ours["cpu_seconds"]
        f["raw_cpu_seconds"] = raw["cpu_seconds"]
        f["cpu_ratio"] = round(raw["cpu_seconds"] / ours["cpu_seconds"], 3)
    print(
        f"{db:9} ours {f['ours_rows_per_s']:>9,} rows/s   raw {f['raw_rows_per_s']:>9,} rows/s"
        f"   ratio {f['ratio']:.0%}   peak memory {f['ours_small_peak_rss_mb']} MB at "
        f"{small_n:,} rows vs {f['ours_peak_rss_mb']} MB at {big_n:,} rows",
        flush=True,
    )
    if "cpu_ratio" in f:
        print(
            f"{db:9} CPU time ours {f['ours_cpu_seconds']} s, raw {f['raw_cpu_seconds']} s "
            f"(ratio {f['cpu_ratio']:.0%}; in-process only)",
            flush=True,
        )
    return f


def _shopify(
    db: str,
    cluster: Any,
    files: list[tuple[Path, Path, int]],
    sizes: tuple[int, int],
) -> dict[str, Any]:
    """The Shopify export with the preset against the raw insert of its counted orders, on
    the full file, and the preset alone on the small file (for memory). On SQLite the raw
    limit runs a second time with the page cache the import's writer has
    (``import_cache_mb``): the same memory for both."""
    from winback.config import Settings

    (export, canonical, orders), (small_export, _small_canonical, _small_orders) = files
    rows, small_rows = sizes
    found: dict[str, Any] = {}
    runs: list[tuple[str, int, tuple[str, ...]]] = [
        ("shopify", rows, ("shopify", "--file", str(export))),
        ("rawshop", rows, ("raw", "--file", str(canonical))),
        ("shopsmall", small_rows, ("shopify", "--file", str(small_export))),
    ]
    if db == "sqlite":  # the raw limit again, with the page cache the import's writer has
        cache_mb = str(Settings().import_cache_mb)
        runs.append(("rawcache", rows, ("raw", "--file", str(canonical), "--cache-mb", cache_mb)))
    for name, size, (mode, *args) in runs:
        store, url = _fresh_store(db, name, cluster, max(size // 20, 1))
        if mode == "shopify":
            found[name] = _spawn(mode, "--workspace", str(store), *args)
        else:
            found[name] = _spawn(mode, "--url", url, *args)
        print(f"{db:9} {name:9} {json.dumps(found[name])}", flush=True)
        shutil.rmtree(store, ignore_errors=True)
        if db == "postgres":
            cluster_drop(cluster, f"bench_{name}")
    ours, raw, small = found["shopify"], found["rawshop"], found["shopsmall"]
    # Both rates in orders per second: ours stores every order (counted or not), the raw
    # limit only the counted ones it was given.
    ours_rate, raw_rate = ours["rows"] / ours["seconds"], raw["rows"] / raw["seconds"]
    f = {
        "file_rows": rows,
        "orders": orders,
        "imported": ours["rows"],
        "raw_inserted": raw["rows"],
        "ours_orders_per_s": round(ours_rate),
        "raw_orders_per_s": round(raw_rate),
        "ratio": round(ours_rate / raw_rate, 3),
        "ours_seconds": round(ours["seconds"], 2),
        "raw_seconds": round(raw["seconds"], 2),
        "ours_cpu_seconds": ours["cpu_seconds"],
        "ours_parser_cpu_seconds": ours.get("parser_cpu_seconds"),
        "raw_cpu_seconds": raw["cpu_seconds"],
        # CPU per order, raw over ours (in-process CPU only: on PostgreSQL the server's
        # share is in neither figure).
        "cpu_ratio": round(
            (raw["cpu_seconds"] / raw["rows"]) / (ours["cpu_seconds"] / ours["rows"]), 3
        ),
        "ours_peak_rss_mb": ours["peak_rss_mb"],
        "ours_parser_peak_rss_mb": ours.get("parser_peak_rss_mb"),
        "raw_peak_rss_mb": raw["peak_rss_mb"],
        "small_file_rows": small_rows,
        "ours_small_parser_peak_rss_mb": small.get("parser_peak_rss_mb"),
        "ours_small_peak_rss_mb": small["peak_rss_mb"],
        "ours_rss_mb_by_share_read": ours.get("rss_mb_by_share_read"),
        "ours_file_rows_per_s": round(rows / ours["seconds"]),
        "rejected": ours["rejected"],
    }
    same = found.get("rawcache")
    if same is not None:  # SQLite: the raw limit with the import's page cache
        same_rate = same["rows"] / same["seconds"]
        f["raw_same_cache_mb"] = Settings().import_cache_mb
        f["raw_same_cache_orders_per_s"] = round(same_rate)
        f["raw_same_cache_seconds"] = round(same["seconds"], 2)
        f["ratio_same_cache"] = round(ours_rate / same_rate, 3)
    print(
        f"{db:9} shopify {rows:,} rows, {orders:,} orders: ours {f['ours_orders_per_s']:,} "
        f"orders/s, raw {f['raw_orders_per_s']:,} orders/s, ratio {f['ratio']:.0%} "
        f"(CPU per order {f['cpu_ratio']:.0%}); peak memory {f['ours_small_peak_rss_mb']} MB "
        f"at {small_rows:,} rows vs {f['ours_peak_rss_mb']} MB at {rows:,} rows",
        flush=True,
    )
    if same is not None:
        print(
            f"{db:9} raw with the import's page cache ({f['raw_same_cache_mb']} MiB): "
            f"{f['raw_same_cache_orders_per_s']:,} orders/s, ratio {f['ratio_same_cache']:.0%}",
            flush=True,
        )
    return f


def cluster_drop(cluster: Any, name: str) -> None:
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
