"""The import loop shared by contacts, orders and events.

Streams records from a reader in batches of ``import_batch_size`` (the first ones smaller,
see :data:`FIRST_BATCH`); each batch is parsed,
written in its own transaction (or, for kinds that offer ``unit`` on PostgreSQL, staged
into a commit unit of ``import_commit_rows`` rows written as one transaction), and reported
to the optional progress callback as ``(bytes_read, file_size)``. The core never prints. Bad rows go to the reject file and the
good rows are kept; :class:`~winback.errors.NothingImported` is raised only when not one row
could be used.
"""

from __future__ import annotations

import gc
import heapq
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from queue import Full, Queue
from typing import IO, Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, insert, update

from winback.clock import Clock
from winback.config import Settings
from winback.errors import InvalidMapping, MissingColumns, NothingImported
from winback.ingest.bulk import Dialect
from winback.ingest.fields import FieldError
from winback.ingest.readers import Reader, Record, open_reader, show_value
from winback.ingest.rejects import RejectWriter, reject_path
from winback.ingest.report import ImportReport
from winback.ports import ByteProgress
from winback.store.schema import imports
from winback.store.slices import held_connection

Progress = ByteProgress


@dataclass
class Reject:
    line: int
    field: str
    value: str
    reason: str


class Refused(Exception):
    """A field that cannot be used: the parser turns it into the row's :class:`Reject`."""

    def __init__(self, field: str, reason: str, value: Any) -> None:
        super().__init__(reason)
        self.field, self.reason, self.value = field, reason, value


_SAME = object()


def parse_field(field: str, parse: Callable[[Any], Any], value: Any, *, shown: Any = _SAME) -> Any:
    """``parse(value)``; a :class:`FieldError` refuses the row, showing ``shown`` (default:
    the value)."""
    try:
        return parse(value)
    except FieldError as e:
        raise Refused(field, e.reason, value if shown is _SAME else shown) from None


def required_field(field: str, value: Any, reason: str, shown: Any) -> Any:
    if value is None:
        raise Refused(field, reason, shown)
    return value


class StoreVersion:
    """SQLite: whether a writer's connection has seen a commit of another connection since
    a point in time (``PRAGMA data_version``: unchanged by the connection's own commits).

    What a parser process read from the store before a batch is what the writer would read
    while writing it, apart from the writer's own commits, as long as no other connection
    committed in between: :meth:`unchanged` (read inside the writer's transaction, which
    holds the write lock) tells, and once it has said no it says no for good."""

    def __init__(self, conn: Connection) -> None:
        raw = conn.connection.driver_connection
        assert raw is not None
        self.raw: Any = raw
        self.version: int | None = _data_version(raw)

    def unchanged(self, conn: Connection) -> bool:
        raw = conn.connection.driver_connection
        if self.version is None or raw is not self.raw or _data_version(raw) != self.version:
            self.version = None
            return False
        return True


def _data_version(raw: Any) -> int:
    cur = raw.cursor()
    try:
        cur.execute("PRAGMA data_version")
        return int(cur.fetchone()[0])
    finally:
        cur.close()


def sqlite_file(engine: Engine) -> str | None:
    """The SQLite store's file, or None (PostgreSQL, an in-memory store)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


@dataclass
class Context:
    """What a batch writer needs to know about the import it belongs to."""

    dialect: Dialect
    tz: ZoneInfo
    currency: str
    import_id: int
    now: datetime
    source: str
    report: ImportReport
    extra: dict[str, Any] = field(default_factory=dict)
    #: SQLite: the store's file (None: PostgreSQL, or a store without a file), which a
    #: parser process may read (see :class:`StoreVersion`).
    store_path: str | None = None
    #: SQLite: what the store looked like to the writer before the parser process started.
    store_version: StoreVersion | None = None


@dataclass
class BatchResult:
    imported: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)

    def keep_first(
        self, batch: list[Any], duplicate: Callable[[int, str, str], Reject]
    ) -> tuple[list[Any], dict[str, int]]:
        """The rows whose key (``row[1]``) is new in this batch, and the line of each key;
        a repeat later in the batch is rejected as a duplicate of the first."""
        keys = [row[1] for row in batch]
        if len(set(keys)) == len(keys):  # no repeat: the common case, without a Python loop
            return batch, dict(zip(keys, [row[0] for row in batch], strict=True))
        first_line: dict[str, int] = {}
        rows: list[Any] = []
        for row in batch:
            seen = first_line.get(row[1])
            if seen is not None:
                self.rejects.append(duplicate(row[0], row[1], f"line {seen}"))
                continue
            first_line[row[1]] = row[0]
            rows.append(row)
        return rows, first_line

    def settle(
        self,
        staged: int,
        inserted: set[str],
        stored_by_this_import: set[str],
        first_line: dict[str, int],
        duplicate: Callable[[int, str, str], Reject],
    ) -> None:
        """Count what the insert did with ``staged`` rows: ``inserted`` keys are new; a key
        that an earlier batch of this same import stored is a repeat within the file
        (rejected); the rest were stored by an earlier import (duplicates)."""
        self.imported = len(inserted)
        if len(inserted) == staged:
            return
        in_file = stored_by_this_import - inserted
        for key in sorted(in_file, key=lambda k: first_line[k]):
            self.rejects.append(duplicate(first_line[key], key, "an earlier line"))
        self.duplicates = staged - len(inserted) - len(in_file)

    def settle_counts(
        self,
        imported: int,
        not_new: list[str],
        stored_by_this_import: set[str],
        first_line: dict[str, int],
        duplicate: Callable[[int, str, str], Reject],
    ) -> None:
        """Like :meth:`settle`, from the keys that were ``not_new``: those an earlier batch of
        this same import stored are repeats within the file (rejected); the rest were stored
        by an earlier import (duplicates)."""
        self.imported = imported
        for key in sorted(stored_by_this_import, key=lambda k: first_line[k]):
            self.rejects.append(duplicate(first_line[key], key, "an earlier line"))
        self.duplicates = len(not_new) - len(stored_by_this_import)


class Kind(Protocol):
    """One kind of import file (contacts, orders, events)."""

    name: str
    canonical: tuple[str, ...]
    required: tuple[str, ...]

    def bind(self, columns: list[str], index: dict[str, int], ctx: Context) -> None: ...

    def parse(self, record: Record) -> Any: ...

    def write(self, conn: Connection, batch: list[Any], ctx: Context) -> BatchResult: ...


def resolve_columns(
    columns: list[str], mapping: Mapping[str, str], kind: Kind, path: Path
) -> dict[str, int]:
    """Index of each canonical column in the file, honouring ``--map canonical=header``."""
    for canonical in mapping:
        if canonical not in kind.canonical:
            raise InvalidMapping(
                f"--map {canonical}=...: {canonical!r} is not a {kind.name} column "
                f"(expected one of: {', '.join(kind.canonical)})"
            )
    exact = {name: i for i, name in reversed(list(enumerate(columns)))}
    folded = {name.strip().lower(): i for i, name in reversed(list(enumerate(columns)))}
    index: dict[str, int] = {}
    for canonical in kind.canonical:
        if canonical in mapping:
            theirs = mapping[canonical]
            found = exact.get(theirs, folded.get(theirs.strip().lower()))
            if found is None:
                raise InvalidMapping(
                    f"--map {canonical}={theirs}: {path.name} has no column {theirs!r} "
                    f"(its columns: {', '.join(columns)})"
                )
            index[canonical] = found
        elif canonical in exact:
            index[canonical] = exact[canonical]
        elif canonical in folded:
            index[canonical] = folded[canonical]
    missing = [c for c in kind.required if c not in index]
    if missing:
        raise MissingColumns(
            f"{path}: no {', '.join(missing)} column in the header "
            f"(found: {', '.join(columns) or 'nothing'}). Rename the column(s) or map them, "
            f"e.g. `--map {missing[0]}=<your header>`. Importing {kind.name} needs: "
            f"{', '.join(kind.required)}."
        )
    return index


def run(
    engine: Engine,
    settings: Settings,
    clock: Clock,
    kind: Kind,
    path: Path,
    *,
    mapping: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    reader: Reader | None = None,
    source: str | None = None,
    rejects_to: Path | None = None,
) -> ImportReport:
    """Import ``path`` as ``kind``; see the module docstring."""
    started = time.perf_counter()
    path = Path(path)
    reader = reader or open_reader(path, wanted=list((mapping or {}).values()))
    label = source or f"import:{path.name}"
    report = ImportReport(kind=kind.name, source=str(path), file_format=reader.description)
    try:
        index = resolve_columns(reader.columns, mapping or {}, kind, path)
        rejects = RejectWriter(rejects_to or reject_path(path))
        now = clock.now()
        dialect = Dialect(engine.dialect.name)
        with engine.begin() as conn:
            import_id = int(
                conn.execute(
                    insert(imports)
                    .values(kind=kind.name, source=str(path), started_at=now)
                    .returning(imports.c.id)
                ).scalar_one()
            )
        report.import_id = import_id
        ctx = Context(
            dialect=dialect,
            tz=settings.tz,
            currency=settings.currency,
            import_id=import_id,
            now=now,
            source=label,
            report=report,
            store_path=sqlite_file(engine),
        )
        kind.bind(reader.columns, index, ctx)
        try:
            with closing(_parsed_batches(reader, kind, settings.import_batch_size)) as batches:
                if ctx.dialect.postgres and hasattr(kind, "unit"):
                    _write_in_units(
                        engine,
                        settings.import_commit_rows,
                        kind,
                        batches,
                        ctx,
                        rejects,
                        progress,
                        reader.size,
                    )
                else:
                    _write_in_batches(
                        engine, settings, kind, batches, ctx, rejects, progress, reader.size
                    )
        finally:
            rejects.close()
        if progress is not None:
            progress(reader.size, reader.size)
        report.rejected = rejects.count
        report.reject_file = rejects.written
        report.file_format = reader.description  # with what reading found (encodings)
        report.seconds = round(time.perf_counter() - started, 3)
        with engine.begin() as conn:
            conn.execute(
                update(imports)
                .where(imports.c.id == import_id)
                .values(
                    finished_at=clock.now(),
                    rows_read=report.read,
                    rows_imported=report.imported,
                    rows_duplicate=report.duplicates,
                    rows_rejected=report.rejected,
                    reject_file=str(report.reject_file) if report.reject_file else None,
                )
            )
    finally:
        reader.close()
    if report.imported == 0 and report.duplicates == 0:
        raise _nothing(report, kind)
    return report


@dataclass
class ParsedBatch:
    rows: list[Any]
    rejects: list[Reject]
    read: int
    bytes_read: int
    #: What the parser process found in the store for these rows (the kind's
    #: ``resolve_apart``; None: nothing, the writer looks everything up).
    resolved: Any = None

    def add(self, record: Record, kind: Kind) -> None:
        """Parse one record into a row or a reject."""
        self.read += 1
        if record.problem is not None:
            self.rejects.append(Reject(record.line, "(row)", _joined(record), record.problem))
            return
        parsed = kind.parse(record)
        if isinstance(parsed, Reject):
            self.rejects.append(parsed)
        else:
            self.rows.append(parsed)

    def full(self, size: int) -> bool:
        return len(self.rows) >= size or len(self.rejects) >= size


_DONE = object()


def _parsed_batches(reader: Reader, kind: Kind, size: int) -> Generator[ParsedBatch]:
    """Batches parsed while the caller writes the previous one: in a parser process for a
    kind whose parsing keeps no state the writer needs (``parse_apart``, see
    :func:`_parsed_apart`), else in a background thread."""
    if getattr(kind, "parse_apart", False) and can_parse_apart():
        return _parsed_apart(reader, kind, size)
    return _parsed_in_thread(reader, kind, size)


def can_parse_apart() -> bool:
    """Whether a parser process can be forked here (Linux: ``fork`` is safe and cheap)."""
    return sys.platform.startswith("linux")


def _parsed_apart(reader: Reader, kind: Kind, size: int) -> Generator[ParsedBatch]:
    """Batches parsed in a forked parser process, handed over a pipe as plain pickles.

    Parsing and writing then run on two cores instead of taking turns at one interpreter
    lock. The child inherits the reader and the bound kind (nothing is re-opened or
    re-bound), parses with :func:`_produce` into a one-slot queue, and sends each batch as
    soon as the writer takes the previous one: at most the batch being written here and, in
    the child, one being sent, one waiting and one being parsed, whatever the file size.
    Once the file is read the child sends the reader's final description and filter count
    (:func:`_reader_state`), which are set on ``reader`` here. The child never uses this
    process's connections: the objects that exist at the fork are frozen out of its garbage
    collector, so that no database connection of this process is finalised there, and it
    leaves with ``os._exit`` (no exit handlers, no second flush of this process's output
    buffers). A kind with ``resolve_apart`` (SQLite) reads the store there through a
    read-only connection of its own, and each batch carries what it found
    (:attr:`ParsedBatch.resolved`)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    gc.freeze()
    try:
        parser = context.Process(
            target=_parse_apart,
            args=(reader, kind, size, sender),
            name="winback-import-parser",
            daemon=True,
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process with threads (a progress bar's
            # refresh thread, a server's workers): a lock another thread held at the fork
            # stays held in the child. The child runs only the reader and the parser, which
            # take no such lock (no logging, no output, no store).
            warnings.simplefilter("ignore", DeprecationWarning)
            parser.start()
    finally:
        gc.unfreeze()
    sender.close()
    try:
        while True:
            try:
                tag, item = receiver.recv()
            except EOFError:
                parser.join(5)
                raise RuntimeError(
                    f"the import's parser process ended unexpectedly (exit code "
                    f"{parser.exitcode}); nothing after the batches already written was "
                    "imported"
                ) from None
            if tag == "batch":
                yield item
                item = None  # let this batch go before the next one arrives
            elif tag == "done":
                reader.description = item["description"]
                if item["filtered"] is not None:
                    setattr(reader, "filtered", item["filtered"])  # noqa: B010
                return
            else:
                raise item
    finally:
        receiver.close()
        if parser.is_alive():
            parser.terminate()
        parser.join()


def _parse_apart(reader: Reader, kind: Kind, size: int, sender: Any) -> None:
    """The parser process: :func:`_produce` in a thread, its batches sent over ``sender``
    (the send of one overlaps the parsing of the next), then the reader's state or the
    error."""
    code = 0
    try:
        handoff = _Handoff()
        worker = threading.Thread(target=_produce, args=(reader, kind, size, handoff), daemon=True)
        worker.start()
        resolve = getattr(kind, "resolve_apart", None)
        while True:
            item = handoff.queue.get()
            if item is _DONE:
                sender.send(("done", _reader_state(reader)))
                break
            if isinstance(item, BaseException):
                sender.send(("error", _picklable(item)))
                break
            if resolve is not None and item.rows:
                try:
                    item.resolved = resolve(item.rows)
                except Exception:  # the store could not be read: the writer looks them up
                    item.resolved = None
            sender.send(("batch", item))
    except BaseException:  # the writer went away (broken pipe) or the child was interrupted
        code = 1
    finally:
        os._exit(code)


def _reader_state(reader: Reader) -> dict[str, Any]:
    """What reading the whole file changed on the reader: its description (encodings found)
    and, for a filtering reader, how many rows it filtered."""
    return {"description": reader.description, "filtered": getattr(reader, "filtered", None)}


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.dumps(error)
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _parsed_in_thread(reader: Reader, kind: Kind, size: int) -> Generator[ParsedBatch]:
    """Batches parsed in a background thread while the caller writes the previous one.

    Parsing is pure Python; the database drivers release the GIL while the database works, so
    reading and parsing batch N+1 overlaps with writing batch N. At most one parsed batch
    waits in the queue (parsing is faster than writing, so one is enough to keep the writer
    busy), so memory stays bounded whatever the file size: the batch being written, the one
    waiting and the one being parsed."""
    handoff = _Handoff()
    worker = threading.Thread(
        target=_produce,
        args=(reader, kind, size, handoff),
        name="winback-import-parser",
        daemon=True,
    )
    worker.start()
    try:
        while True:
            item = handoff.queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        handoff.stop.set()
        worker.join()


class _Handoff:
    """One slot between the parsing thread and the writer; ``put`` gives up once the writer
    has ``stop`` set."""

    def __init__(self) -> None:
        self.queue: Queue[Any] = Queue(maxsize=1)
        self.stop = threading.Event()

    def put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False


#: Rows of the first batch: the writer starts as soon as these are parsed instead of waiting
#: for a full batch (each further batch is twice the previous one, up to the batch size).
FIRST_BATCH = 2_000


def _produce(reader: Reader, kind: Kind, size: int, handoff: _Handoff) -> None:
    """Parse batches of up to ``size`` rows into ``handoff``, then :data:`_DONE` (or the
    error). The first batches are smaller (:data:`FIRST_BATCH`, doubling) so that writing
    overlaps parsing from the start, also in a file of a single batch."""
    try:
        batch = ParsedBatch([], [], 0, 0)
        limit = min(size, FIRST_BATCH)
        for record in reader.records():
            batch.add(record, kind)
            if batch.full(limit):
                batch.bytes_read = reader.bytes_read()
                if not handoff.put(batch):
                    return
                batch = ParsedBatch([], [], 0, 0)
                limit = min(size, limit * 2)
        batch.bytes_read = reader.size
        if handoff.put(batch):
            handoff.put(_DONE)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        handoff.put(exc)


def _write_in_batches(
    engine: Engine,
    settings: Settings,
    kind: Kind,
    batches: Iterator[ParsedBatch],
    ctx: Context,
    rejects: RejectWriter,
    progress: Progress | None,
    size: int,
) -> None:
    """Write each batch in a transaction of its own, all on one connection. On SQLite that
    connection has a page cache of ``import_cache_mb`` for the import, and checkpoints the
    WAL once it holds :data:`~winback.store.slices.PASS_WAL_PAGES` instead of after every
    batch (:func:`~winback.store.slices.held_connection`): a batch changes a page of each
    index not in file order for most of its rows, and those pages were spilled and read
    again within the batch, then copied into the database file after each commit."""
    with held_connection(engine, cache_mb=settings.import_cache_mb) as conn:
        if ctx.store_path is not None and getattr(kind, "resolve_apart", None) is not None:
            # On the connection that writes every batch, before the first batch is taken:
            # taking it starts the parser process, whose reads of the store come after this.
            ctx.store_version = StoreVersion(conn)
        for parsed in batches:
            ctx.report.read += parsed.read
            found = list(parsed.rejects)
            if parsed.rows:
                ctx.extra["resolved_apart"] = parsed.resolved
                found.extend(_flush(conn, kind, parsed.rows, ctx))
            for reject in sorted(found, key=lambda r: r.line):  # in file order
                _reject(rejects, reject)
            rejects.flush()
            if progress is not None:
                progress(parsed.bytes_read, size)
            del parsed, found  # let this batch go before the next one arrives


def _flush(conn: Connection, kind: Kind, batch: list[Any], ctx: Context) -> list[Reject]:
    """Write one batch in its own transaction; returns the rows rejected while writing."""
    with conn.begin():
        result = kind.write(conn, batch, ctx)
    ctx.report.imported += result.imported
    ctx.report.duplicates += result.duplicates
    return result.rejects


class Unit(Protocol):
    """Several batches written in one transaction (see :func:`_write_in_units`)."""

    staged: int

    def add(self, batch: list[Any]) -> list[Reject]: ...

    def finish(self) -> BatchResult: ...


def _write_in_units(
    engine: Engine,
    limit: int,
    kind: Any,
    batches: Iterator[ParsedBatch],
    ctx: Context,
    rejects: RejectWriter,
    progress: Progress | None,
    size: int,
) -> None:
    """Write the batches in commit units of about ``import_commit_rows`` rows: each unit is
    one transaction in which ``kind.unit(conn, ctx)`` stages batch after batch and finally
    writes them all, so the client still holds one batch at a time. The rejects of a unit's
    batches wait in a temporary file until the unit is written, then go to the reject file
    merged with the repeats found while writing, in line order."""
    report = ctx.report
    done = object()
    it = iter(batches)
    parsed: Any = next(it, done)
    while parsed is not done:
        spool = _RejectSpool()
        try:
            with engine.begin() as conn:
                unit: Unit = kind.unit(conn, ctx)
                while parsed is not done:
                    report.read += parsed.read
                    found = list(parsed.rejects)
                    if parsed.rows:
                        found.extend(unit.add(parsed.rows))
                    spool.add(sorted(found, key=lambda r: r.line))
                    if progress is not None:
                        progress(parsed.bytes_read, size)
                    # A full unit is written before the next batch is taken (one batch
                    # less in memory while the server works); this batch is let go first.
                    parsed = None
                    del found
                    if unit.staged >= limit:
                        break
                    parsed = next(it, done)
                result = unit.finish()
            # Committed: count it, and report its rejects merged with the repeats found.
            report.imported += result.imported
            report.duplicates += result.duplicates
            for reject in heapq.merge(spool.rejects(), result.rejects, key=lambda r: r.line):
                _reject(rejects, reject)
            rejects.flush()
        finally:
            spool.close()
        if parsed is None:
            parsed = next(it, done)


class _RejectSpool:
    """Rejects held back until their commit unit is written, in a temporary file (a file can
    be all rejects; memory stays flat). Added in line order; read back in the same order."""

    def __init__(self) -> None:
        self.file: IO[str] | None = None

    def add(self, found: list[Reject]) -> None:
        if not found:
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile("w+", encoding="utf-8")
        for r in found:
            self.file.write(json.dumps([r.line, r.field, r.value, r.reason]) + "\n")

    def rejects(self) -> Iterator[Reject]:
        if self.file is None:
            return
        self.file.seek(0)
        for text in self.file:
            yield Reject(*json.loads(text))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _reject(rejects: RejectWriter, reject: Reject) -> None:
    rejects.add(reject.line, reject.field, reject.value, reject.reason)


def _joined(record: Record) -> str:
    return ",".join(show_value(v) for v in record.values)


def _nothing(report: ImportReport, kind: Kind) -> NothingImported:
    if report.read == 0:
        message = f"{report.source}: no data rows after the header; nothing to import."
    else:
        message = (
            f"{report.source}: none of the {report.read} rows could be imported; every row "
            f"was rejected. See {report.reject_file} for the line, field, value and reason of "
            f"each. Check that this file holds {kind.name}, and map differently named columns "
            f"with --map (columns: {', '.join(kind.canonical)})."
        )
    error = NothingImported(message)
    error.report = report  # type: ignore[attr-defined]
    return error
