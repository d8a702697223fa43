"""``ws.imports``: the Python API for loading files into the store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine

from winback.clock import Clock
from winback.config import Settings
from winback.contact_merge import merge_all
from winback.errors import InvalidMapping
from winback.ingest import importer, matching, presets
from winback.ingest.cdnow import CdnowReader
from winback.ingest.contacts import Contacts
from winback.ingest.events import Events
from winback.ingest.importer import Kind, Progress
from winback.ingest.orders import Orders
from winback.ingest.readers import Reader, open_reader
from winback.ingest.report import ImportReport
from winback.ingest.transform import Options, Transformed


class Imports:
    """Imports files into a store. Each method streams the file in batches, writes bad rows
    to ``<file>.rejects.csv`` and returns an :class:`ImportReport`; it raises
    :class:`~winback.errors.UnreadableFile` or :class:`~winback.errors.NothingImported` only
    when no row could be used. ``progress(bytes_read, file_size)`` is called per batch.

    ``settings`` gives the time zone and currency of values that name none and the batch
    sizes; ``folder`` receives the reject file of the shipped CDNOW data."""

    def __init__(self, engine: Engine, settings: Settings, clock: Clock, folder: Path) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.folder = folder

    def contacts(
        self,
        path: Path | str,
        mapping: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        *,
        preset: str | None = None,
        match: str | None = None,
        options: Options | None = None,
    ) -> ImportReport:
        return self._run(
            Contacts(self.settings.phone_region), path, mapping, progress, preset, match, options
        )

    def orders(
        self,
        path: Path | str,
        mapping: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        *,
        preset: str | None = None,
        match: str | None = None,
        options: Options | None = None,
    ) -> ImportReport:
        return self._run(Orders(), path, mapping, progress, preset, match, options)

    def events(
        self,
        path: Path | str,
        mapping: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        *,
        preset: str | None = None,
        match: str | None = None,
        options: Options | None = None,
    ) -> ImportReport:
        return self._run(Events(), path, mapping, progress, preset, match, options)

    def _run(
        self,
        kind: Kind,
        path: Path | str,
        mapping: Mapping[str, str] | None,
        progress: Progress | None,
        preset: str | None,
        match: str | None,
        options: Options | None,
    ) -> ImportReport:
        """``preset`` reads a platform's export (:mod:`winback.ingest.presets`); ``match``
        (``id`` or ``email``, default: the preset's, else ``id``) says how rows find their
        contact (:mod:`winback.ingest.matching`); ``options`` how to read values
        (:mod:`winback.ingest.transform`)."""
        path = Path(path)
        options = options or Options()
        settings = self.settings
        if options.timezone:
            try:
                ZoneInfo(options.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise InvalidMapping(
                    f"--timezone {options.timezone}: not an IANA time zone (e.g. Europe/Rome)"
                ) from None
            settings = settings.model_copy(update={"timezone": options.timezone})
        reader: Reader = open_reader(
            path, wanted=list((mapping or {}).values()), delimiter=options.delimiter
        )
        transformed: Transformed | None = None
        try:
            if preset is not None:
                translated = presets.translate(preset, kind.name, reader)
                reader, match = translated, match or translated.match
            if options.rewrites:
                reader = transformed = Transformed(reader, options, mapping or {}, kind.canonical)
            wrapped = matching.wrap(kind, reader.columns, mapping or {}, match or "id")
        except BaseException:
            reader.close()
            raise
        report = importer.run(
            self.engine,
            settings,
            self.clock,
            wrapped,
            path,
            mapping=mapping,
            progress=progress,
            reader=reader,
        )
        if transformed is not None:
            report.filtered = transformed.filtered
        if wrapped is not kind:  # matched by address: contacts sharing one are merged
            merged = merge_all(self.engine, now=self.clock.now())
            report.merged = [m.to_dict() for m in merged]
        return report

    def cdnow(self, sample: bool = False, progress: Progress | None = None) -> ImportReport:
        """Load the shipped CDNOW data (master: 23,570 customers; sample: 2,357)."""
        reader = CdnowReader(sample)
        return importer.run(
            self.engine,
            self.settings,
            self.clock,
            Orders(),
            reader.path,
            reader=reader,
            source=f"cdnow:{'sample' if sample else 'master'}",
            rejects_to=self.folder / f"{reader.path.name}.rejects.csv",
            progress=progress,
        )
