"""``ws.imports``: the Python API for loading files into the store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from winback.ingest import importer
from winback.ingest.cdnow import CdnowReader
from winback.ingest.contacts import Contacts
from winback.ingest.events import Events
from winback.ingest.importer import Progress
from winback.ingest.orders import Orders
from winback.ingest.report import ImportReport
from winback.workspace import Workspace


class Imports:
    """Imports files into a workspace's store. Each method streams the file in batches,
    writes bad rows to ``<file>.rejects.csv`` and returns an :class:`ImportReport`; it raises
    :class:`~winback.errors.UnreadableFile` or :class:`~winback.errors.NothingImported` only
    when no row could be used. ``progress(bytes_read, file_size)`` is called per batch."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def contacts(
        self,
        path: Path | str,
        mapping: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        return importer.run(
            self.workspace, Contacts(), Path(path), mapping=mapping, progress=progress
        )

    def orders(
        self,
        path: Path | str,
        mapping: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        return importer.run(
            self.workspace, Orders(), Path(path), mapping=mapping, progress=progress
        )

    def events(
        self,
        path: Path | str,
        mapping: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        return importer.run(
            self.workspace, Events(), Path(path), mapping=mapping, progress=progress
        )

    def cdnow(self, sample: bool = False, progress: Progress | None = None) -> ImportReport:
        """Load the shipped CDNOW data (master: 23,570 customers; sample: 2,357)."""
        reader = CdnowReader(sample)
        rejects = self.workspace.path / f"{reader.path.name}.rejects.csv"
        return importer.run(
            self.workspace,
            Orders(),
            reader.path,
            reader=reader,
            source=f"cdnow:{'sample' if sample else 'master'}",
            rejects_to=rejects,
            progress=progress,
        )
