"""``winback import contacts|orders|events FILE`` and ``winback import cdnow``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from winback.cli._app import (
    JsonOption,
    WorkspaceOption,
    app,
    console,
    err_console,
    print_json,
    workspace_from,
)
from winback.errors import InvalidMapping
from winback.ingest import ImportReport
from winback.ingest.transform import Options, parse_value_map, parse_where

import_app = typer.Typer(
    help="Load contacts, orders and events files (CSV, JSON Lines, Parquet), or CDNOW.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")

FileArgument = Annotated[
    Path, typer.Argument(help="CSV (any delimiter, UTF-8 or cp1252), .jsonl or .parquet file.")
]
MapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="canonical=their_header, for a column named differently in the file (repeatable).",
        show_default=False,
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
MapValueOption = Annotated[
    list[str] | None,
    typer.Option(
        "--map-value",
        help="field:from=to, a value rewritten before reading (repeatable), "
        "e.g. type:open=email_opened.",
        show_default=False,
    ),
]
WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        help="field=value or field!=value (values separated by |): only rows that match "
        "(repeatable; all must hold).",
        show_default=False,
    ),
]
DateFormatOption = Annotated[
    str | None,
    typer.Option(
        "--date-format",
        help="strftime format of the file's dates and times, e.g. %d/%m/%Y or '%d/%m/%Y %H:%M'.",
        show_default=False,
    ),
]
DecimalCommaOption = Annotated[
    bool,
    typer.Option(
        "--decimal-comma",
        help="Amounts use a decimal comma (1.234,56); 31,00-like amounts are read so anyway.",
    ),
]
DelimiterOption = Annotated[
    str | None,
    typer.Option(
        "--delimiter", help="CSV delimiter (default: sniffed: , ; tab |).", show_default=False
    ),
]
TimezoneOption = Annotated[
    str | None,
    typer.Option(
        "--timezone",
        help="Time zone of the file's times without an offset (default: the setting).",
        show_default=False,
    ),
]
PresetOption = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="Read a platform's export: shopify, woocommerce, mailchimp or klaviyo.",
        show_default=False,
    ),
]
MatchOption = Annotated[
    str | None,
    typer.Option(
        "--match",
        help="How rows find their contact: id (customer_id; rows without one by email) or "
        "email (by address, case-insensitive). Default: the preset's, else id.",
        show_default=False,
    ),
]


def parse_mapping(pairs: list[str] | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs or []:
        canonical, sep, theirs = pair.partition("=")
        if not sep or not canonical.strip() or not theirs.strip():
            raise InvalidMapping(
                f"--map {pair!r}: expected canonical=their_header, e.g. --map customer_id=CustomerNo"
            )
        mapping[canonical.strip()] = theirs.strip()
    return mapping


@contextmanager
def progress_bar(
    label: str, enabled: bool, *, in_bytes: bool = True
) -> Iterator[Callable[[int, int], None] | None]:
    """A Rich progress bar on stderr fed with (done, total) by the core: bytes read of the
    file size, or (``in_bytes=False``) items."""
    if not enabled:
        yield None
        return
    counts: tuple[ProgressColumn, ...] = (
        (DownloadColumn(), TransferSpeedColumn()) if in_bytes else (MofNCompleteColumn(),)
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *counts,
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def show(report: ImportReport, as_json: bool) -> None:
    if as_json:
        print_json(report.to_dict())
        return
    table = Table(
        title=f"Import of {report.kind} from {Path(report.source).name}", show_header=False
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("format", report.file_format)
    table.add_row("rows read", f"{report.read:,}")
    table.add_row("imported", f"{report.imported:,}")
    table.add_row("duplicates (already stored)", f"{report.duplicates:,}")
    table.add_row("rejected", f"{report.rejected:,}")
    if report.contacts_created:
        table.add_row("contacts created", f"{report.contacts_created:,}")
    if report.contacts_updated:
        table.add_row("contacts updated", f"{report.contacts_updated:,}")
    if report.phones_invalid:
        table.add_row("invalid phone numbers (not stored)", f"{report.phones_invalid:,}")
    if report.tags_added:
        table.add_row("tags added", f"{report.tags_added:,}")
    if report.filtered:
        table.add_row("filtered out (--where)", f"{report.filtered:,}")
    if report.orders_updated:
        table.add_row("orders updated (status, refund)", f"{report.orders_updated:,}")
    if report.consent_changes:
        table.add_row("consent changes logged", f"{report.consent_changes:,}")
    for kind, count in sorted(report.by_type.items()):
        table.add_row(f"  {kind}", f"{count:,}")
    table.add_row("seconds", f"{report.seconds:.1f}")
    console.print(table)
    for m in report.merged:
        console.print(
            f"merged contacts sharing {m['email']}: {', '.join(m['merged'])} into {m['survivor']}",
            markup=False,
        )
    if report.reject_file:
        console.print(
            f"[yellow]{report.rejected:,} rejected rows[/] with line, field, value and reason: "
            f"{report.reject_file}"
        )


def _run(
    kind: str,
    file: Path,
    workspace: Path | None,
    pairs: list[str] | None,
    as_json: bool,
    quiet: bool,
    preset: str | None = None,
    match: str | None = None,
    options: Options | None = None,
) -> None:
    mapping = parse_mapping(pairs)
    with workspace_from(workspace) as ws:
        with progress_bar(f"{kind} {file.name}", not (as_json or quiet)) as progress:
            method = getattr(ws.imports, kind)
            report = method(
                file,
                mapping=mapping,
                progress=progress,
                preset=preset,
                match=match,
                options=options,
            )
    show(report, as_json)


def _options(
    map_value: list[str] | None,
    where: list[str] | None,
    date_format: str | None,
    decimal_comma: bool,
    delimiter: str | None,
    timezone: str | None,
) -> Options:
    if delimiter in ("\\t", "tab"):
        delimiter = "\t"
    if delimiter is not None and len(delimiter) != 1:
        raise InvalidMapping(f"--delimiter {delimiter!r}: expected one character (or tab)")
    return Options(
        values=parse_value_map(map_value or []),
        where=parse_where(where or []),
        date_format=date_format,
        decimal_comma=decimal_comma,
        delimiter=delimiter,
        timezone=timezone,
    )


@import_app.command("contacts")
def import_contacts(
    file: FileArgument,
    map_: MapOption = None,
    preset: PresetOption = None,
    match: MatchOption = None,
    map_value: MapValueOption = None,
    where: WhereOption = None,
    date_format: DateFormatOption = None,
    decimal_comma: DecimalCommaOption = False,
    delimiter: DelimiterOption = None,
    timezone: TimezoneOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Upsert contacts by customer_id (or email); other columns become custom attributes."""
    _run(
        "contacts",
        file,
        workspace,
        map_,
        as_json,
        quiet,
        preset,
        match,
        _options(map_value, where, date_format, decimal_comma, delimiter, timezone),
    )


@import_app.command("orders")
def import_orders(
    file: FileArgument,
    map_: MapOption = None,
    preset: PresetOption = None,
    match: MatchOption = None,
    map_value: MapValueOption = None,
    where: WhereOption = None,
    date_format: DateFormatOption = None,
    decimal_comma: DecimalCommaOption = False,
    delimiter: DelimiterOption = None,
    timezone: TimezoneOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Add orders (deduplicated by order_id); unknown customers are created."""
    _run(
        "orders",
        file,
        workspace,
        map_,
        as_json,
        quiet,
        preset,
        match,
        _options(map_value, where, date_format, decimal_comma, delimiter, timezone),
    )


@import_app.command("events")
def import_events(
    file: FileArgument,
    map_: MapOption = None,
    preset: PresetOption = None,
    match: MatchOption = None,
    map_value: MapValueOption = None,
    where: WhereOption = None,
    date_format: DateFormatOption = None,
    decimal_comma: DecimalCommaOption = False,
    delimiter: DelimiterOption = None,
    timezone: TimezoneOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Add events (deduplicated by event_id or content); purchase events become orders."""
    _run(
        "events",
        file,
        workspace,
        map_,
        as_json,
        quiet,
        preset,
        match,
        _options(map_value, where, date_format, decimal_comma, delimiter, timezone),
    )


@import_app.command("cdnow")
def import_cdnow(
    sample: Annotated[
        bool, typer.Option("--sample", help="The 1/10 sample (2,357 customers).")
    ] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Load the CDNOW data set shipped with winback as contacts and orders."""
    with workspace_from(workspace) as ws:
        with progress_bar("CDNOW", not (as_json or quiet)) as progress:
            report = ws.imports.cdnow(sample=sample, progress=progress)
    show(report, as_json)
