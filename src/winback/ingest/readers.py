"""Readers: CSV (delimiter and encoding sniffed), JSON Lines and Parquet, streamed.

A reader exposes ``columns`` (the file's own header names) and yields :class:`Record`
tuples ``(line, values, problem)``: ``values`` is aligned to ``columns`` and ``problem`` is a
reason when the record could not be split into fields at all (wrong field count, broken
JSON), in which case ``values`` holds the raw text. Readers also report how many bytes they
have consumed, for progress bars, and never hold more than one record in memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from winback.errors import UnreadableFile

SNIFF_BYTES = 1 << 20
DELIMITERS = (",", ";", "\t", "|")
csv.field_size_limit(1 << 24)


class Record(NamedTuple):
    line: int
    values: list[Any]
    problem: str | None = None


def record(line: int, values: list[Any]) -> Record:
    """``Record(line, values)`` without a problem, built by ``tuple.__new__`` directly (a
    named tuple's own constructor is a Python function: a third of a microsecond per row)."""
    made: Record = _new_tuple(Record, (line, values, None))
    return made


_new_tuple: Any = tuple.__new__


class Reader(Protocol):
    path: Path
    columns: list[str]
    size: int
    description: str

    def records(self) -> Iterator[Record]: ...

    def bytes_read(self) -> int: ...

    def close(self) -> None: ...


def open_reader(
    path: Path, *, wanted: list[str] | None = None, delimiter: str | None = None
) -> Reader:
    """A reader for ``path``, chosen by its extension (.jsonl/.ndjson, .parquet, else CSV).

    ``wanted`` lists extra column names to look for in JSON Lines objects, whose keys may
    differ from one line to the next; ``delimiter`` overrides the CSV delimiter sniffed."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"{path}: no such file")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if suffixes and suffixes[-1] in (".jsonl", ".ndjson"):
            return JsonLinesReader(path, wanted or [])
        if suffixes and suffixes[-1] in (".parquet", ".pq"):
            return ParquetReader(path)
        return CsvReader(path, delimiter)
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot be read ({exc.strerror or exc})") from None


def sniff_encoding(head: bytes) -> str:
    """UTF-8 (with or without BOM) when the bytes mostly decode as UTF-8, else cp1252, else
    latin-1. (A CSV file without BOM is read as UTF-8 whatever this says, each line not
    valid UTF-8 decoded as :data:`FALLBACK`: see :class:`CsvReader`.)"""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:  # the common case, decided without looking at every character in Python
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    decoded = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(head, final=False)
    bad = sum(1 for ch in decoded if "\udc80" <= ch <= "\udcff")
    good = sum(1 for ch in decoded if ord(ch) > 127 and not "\udc80" <= ch <= "\udcff")
    if bad == 0 or good >= bad:
        return "utf-8"
    try:
        head.decode("cp1252")
    except UnicodeDecodeError:
        return "latin-1"
    return "cp1252"


def sniff_delimiter(header_line: str) -> str:
    """The candidate delimiter that occurs most often in the header line (default comma)."""
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


#: The encoding of a line of a CSV file that is not valid UTF-8 (Windows' Western European
#: code page: Excel's "CSV" export on most Western systems).
FALLBACK = "cp1252"
#: Lines read in the fallback encoding listed by a reader (all are counted).
FALLBACK_LINES_SHOWN = 100
#: Undecodable bytes met so far by every reader (only ever grows): a reader checks the rows
#: it yields for them only once it has changed.
_escapes = [0]


_surrogateescape = codecs.lookup_error("surrogateescape")


def _counting_escape(exc: UnicodeError) -> tuple[str | bytes, int]:
    _escapes[0] += 1
    return _surrogateescape(exc)


codecs.register_error("winback-escape", _counting_escape)
_ESCAPED = re.compile("[\udc80-\udcff]+")


def _from_fallback(match: re.Match[str]) -> str:
    raw = bytes(ord(ch) - 0xDC00 for ch in match.group())
    # Bytes the fallback does not define either stay escaped: the field check rejects them.
    return raw.decode(FALLBACK, errors="surrogateescape")


def reencoded(row: list[str]) -> list[str] | None:
    """``row`` with the bytes that were not valid UTF-8 decoded as :data:`FALLBACK`, or
    ``None`` when it had none. Valid UTF-8 around them is kept as it is, so a line that
    mixes both comes out right too."""
    try:
        "".join(row).encode("utf-8")
        return None
    except UnicodeEncodeError:
        return [_ESCAPED.sub(_from_fallback, value) for value in row]


class CsvReader:
    """A CSV file, decoded as UTF-8 (or the encoding its byte order mark names). A line
    that is not valid UTF-8 is decoded as :data:`FALLBACK` and listed in
    ``fallback_lines`` (the first :data:`FALLBACK_LINES_SHOWN`; ``fallback_count`` counts
    them all); the description names them once the file is read. Files are never decoded
    whole in a guessed encoding: one mixing UTF-8 and cp1252 rows (a UTF-8 export appended
    to by a Windows tool) comes out right on every line."""

    def __init__(self, path: Path, delimiter: str | None = None) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._raw = path.open("rb")
        head = self._raw.read(SNIFF_BYTES)
        self._raw.seek(0)
        sniffed = sniff_encoding(head)
        self.encoding = sniffed if sniffed in ("utf-8-sig", "utf-16") else "utf-8"
        errors = "strict" if self.encoding == "utf-16" else "winback-escape"
        self.fallback_lines: list[int] = []
        self.fallback_count = 0
        self._escapes_seen = _escapes[0]
        self._text = io.TextIOWrapper(self._raw, encoding=self.encoding, errors=errors, newline="")
        first = head.decode(self.encoding, errors="replace").lstrip("\ufeff")
        self.delimiter = delimiter or sniff_delimiter(first.splitlines()[0] if first else "")
        self._reader = csv.reader(self._text, delimiter=self.delimiter)
        try:
            header = next(self._reader)
        except StopIteration:
            raise UnreadableFile(f"{path}: the file is empty (expected a header line)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UnreadableFile(f"{path}: the header line cannot be read ({exc})") from None
        self.columns = [h.strip() for h in header]
        if not any(self.columns):
            raise UnreadableFile(f"{path}: the first line is empty (expected a header line)")
        if self._escapes_seen != _escapes[0]:
            self.columns = reencoded(self.columns) or self.columns
        self.description = self._describe()

    def _describe(self) -> str:
        name = {"utf-8-sig": "UTF-8 with BOM", "utf-8": "UTF-8"}.get(self.encoding, self.encoding)
        if self.fallback_count:
            lines = ", ".join(map(str, self.fallback_lines))
            more = ", ..." if self.fallback_count > len(self.fallback_lines) else ""
            name += (
                f" ({self.fallback_count:,} lines not valid UTF-8 read as {FALLBACK}: "
                f"{lines}{more})"
            )
        shown = {"\t": "tab"}.get(self.delimiter, self.delimiter)
        return f"CSV, {name}, delimiter {shown!r}"

    def _fallback(self, line: int) -> None:
        self.fallback_count += 1
        if len(self.fallback_lines) < FALLBACK_LINES_SHOWN:
            self.fallback_lines.append(line)

    def bytes_read(self) -> int:
        return min(self._raw.tell(), self.size)

    def records(self) -> Iterator[Record]:
        width = len(self.columns)
        reader = self._reader
        previous = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                self.description = self._describe()
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                yield Record(previous + 1, [], f"cannot be split into fields: {exc}")
                previous = reader.line_num
                continue
            line = previous + 1
            previous = reader.line_num
            if self._escapes_seen != _escapes[0]:  # some bytes so far were not UTF-8
                fixed = reencoded(row)
                if fixed is not None:
                    row = fixed
                    if reencoded(fixed) is None:  # else bytes neither encoding defines
                        self._fallback(line)
            if len(row) == width:
                yield _new_tuple(Record, (line, row, None))
            elif not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            else:
                yield Record(
                    line,
                    [self.delimiter.join(row)],
                    f"expected {width} fields as in the header, found {len(row)}",
                )

    def close(self) -> None:
        self._text.close()


class JsonLinesReader:
    def __init__(self, path: Path, wanted: list[str]) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._raw = path.open("rb")
        self.description = "JSON Lines"
        first: dict[str, Any] = {}
        for raw_line in self._raw:
            if raw_line.strip():
                try:
                    loaded = json.loads(raw_line)
                except ValueError:
                    loaded = {}
                first = loaded if isinstance(loaded, dict) else {}
                break
        self._raw.seek(0)
        self.columns = list(first)
        for name in wanted:
            if name not in self.columns:
                self.columns.append(name)
        self._pos = 0

    def bytes_read(self) -> int:
        return self._pos

    def records(self) -> Iterator[Record]:
        columns = self.columns
        known = set(columns)
        for number, raw_line in enumerate(self._raw, start=1):
            self._pos += len(raw_line)
            if not raw_line.strip():
                continue
            try:
                obj = json.loads(raw_line)
            except UnicodeDecodeError:
                yield Record(number, [_show_bytes(raw_line)], "not valid UTF-8")
                continue
            except (ValueError, RecursionError) as exc:
                reason = f"not a valid JSON object ({exc})"
                if not raw_line.endswith(b"\n"):
                    reason = "last line is incomplete: " + reason
                yield Record(number, [_show_bytes(raw_line)], reason)
                continue
            if not isinstance(obj, dict):
                yield Record(number, [_show_bytes(raw_line)], "expected a JSON object per line")
                continue
            values = [obj.get(c) for c in columns]
            extra = [k for k in obj if k not in known]
            if extra:  # keys not in the first line: keep them as (name, value) pairs
                values.append({k: obj[k] for k in extra})
            yield Record(number, values)

    def close(self) -> None:
        self._raw.close()


class ParquetReader:
    def __init__(self, path: Path) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UnreadableFile(
                f"{path}: reading Parquet needs pyarrow; install the extra with "
                "`pip install 'winback[parquet]'`, or export the file as CSV"
            ) from None
        self.path = path
        self.size = path.stat().st_size
        try:
            self._file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises its own error types
            raise UnreadableFile(f"{path}: not a readable Parquet file ({exc})") from None
        self.columns = list(self._file.schema_arrow.names)
        self._rows = max(self._file.metadata.num_rows, 1)
        self._done = 0
        self.description = "Parquet"

    def bytes_read(self) -> int:
        return int(self.size * min(self._done / self._rows, 1.0))

    def records(self) -> Iterator[Record]:
        columns = self.columns
        number = 0
        for batch in self._file.iter_batches(batch_size=10_000):
            for obj in batch.to_pylist():
                number += 1
                self._done = number
                yield Record(number, [obj.get(c) for c in columns])

    def close(self) -> None:
        self._file.close()


def _show_bytes(raw: bytes) -> str:
    return raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")


def show_value(value: Any) -> str:
    """A cell as text for a reject file; undecodable bytes appear as ``\\xNN``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
