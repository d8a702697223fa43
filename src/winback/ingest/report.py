"""The summary an import ends with (also recorded in the ``imports`` table)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ImportReport:
    """What one import did.

    ``read`` counts data rows (not the header); ``imported`` rows were new (for contacts:
    created or changed); ``duplicates`` were already in the store (re-imports, unchanged
    contacts); ``rejected`` rows went to ``reject_file`` with their line, field, value and
    reason. ``read == imported + duplicates + rejected``. ``orders_updated`` of the
    duplicates changed a stored order's status or refunded amount. ``merged`` lists the
    contacts an import matched by address merged because they shared it
    (:mod:`winback.contact_merge`).
    """

    kind: str
    source: str
    read: int = 0
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    reject_file: Path | None = None
    contacts_created: int = 0
    contacts_updated: int = 0
    consent_changes: int = 0
    orders_updated: int = 0
    filtered: int = 0
    tags_added: int = 0
    phones_invalid: int = 0
    invalid_phones: list[dict[str, Any]] = field(default_factory=list)  # the first 100
    merged: list[dict[str, Any]] = field(default_factory=list)
    import_id: int | None = None
    seconds: float = 0.0
    file_format: str = ""
    by_type: dict[str, int] = field(default_factory=dict)

    def note_invalid_phone(self, line: int, value: str, reason: str) -> None:
        """A phone number that is not valid: the contact is imported without it."""
        self.phones_invalid += 1
        if len(self.invalid_phones) < 100:
            self.invalid_phones.append({"line": line, "value": value, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reject_file"] = str(self.reject_file) if self.reject_file else None
        return data
