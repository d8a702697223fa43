"""``ws.imports``: the Python API for loading files into the store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Engine

from winback.clock import Clock
from winback.config import Settings
from winback.ingest import importer
from winback.ingest.cdnow import CdnowReader
from winback.ingest.contacts import Contacts
from winback.ingest.events import Events
from winback.ingest.importer import Kind, Progress
from winback.ingest.orders import Orders
from winback.ingest.report import ImportReport


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
    ) -> ImportReport:
        return self._run(Contacts(), Path(path), mapping=mapping, progress=progress)

    def orders(
        self,
        path: Path | str,
        mapping: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        return self._run(Orders(), Path(path), mapping=mapping, progress=progress)

    def events(
        self,
        path: Path | str,
        mapping: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        return self._run(Events(), Path(path), mapping=mapping, progress=progress)

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

    def _run(
        self,
        kind: Kind,
        path: Path,
        *,
        mapping: Mapping[str, str] | None,
        progress: Progress | None,
    ) -> ImportReport:
        return importer.run(
            self.engine, self.settings, self.clock, kind, path, mapping=mapping, progress=progress
        )
