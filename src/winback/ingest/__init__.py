"""File import: contacts, orders and events from CSV, JSON Lines and Parquet, streamed in
batches with set-based writes; bad rows to a reject file; re-imports add nothing.

Reach it as ``workspace.imports`` (:class:`Imports`)."""

from __future__ import annotations

from winback.ingest.facade import Imports
from winback.ingest.rejects import formula_safe
from winback.ingest.report import ImportReport

__all__ = ["ImportReport", "Imports", "formula_safe"]
