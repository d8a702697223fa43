"""Data sets shipped with winback (CDNOW, with its README and attribution)."""

from __future__ import annotations

from pathlib import Path

CDNOW = Path(__file__).parent / "cdnow"
CDNOW_MASTER = CDNOW / "CDNOW_master.txt"
CDNOW_SAMPLE = CDNOW / "CDNOW_sample.txt"
