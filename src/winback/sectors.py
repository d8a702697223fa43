"""Shop sectors and the inactivity window each implies.

"Every company has its own definition of inactivity [...] evaluated according to 2 elements:
the average frequency of purchase and the sector of activity" (the sources). The cadence
model reads each customer's own frequency once they have enough orders; for a shop (or
customers) too thin for it, the ``sector`` setting gives the fixed inactivity window
(``dormant_days``) a sensible default: about twice the sector's typical repurchase
interval, the usual "lapsed" threshold of 1.5 to 2 times the normal time between orders.
The intervals, their sources and which of them are assumptions are in docs/settings.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sector:
    #: Typical days between two orders of a repeat customer in the sector.
    repurchase_days: int
    #: The default inactivity window (``dormant_days``) for a shop of the sector.
    dormant_days: int


SECTORS: dict[str, Sector] = {
    "grocery": Sector(repurchase_days=14, dormant_days=30),
    "pets": Sector(repurchase_days=30, dormant_days=60),
    "beauty": Sector(repurchase_days=60, dormant_days=120),
    "fashion": Sector(repurchase_days=90, dormant_days=180),
    "electronics": Sector(repurchase_days=365, dormant_days=365),
    "travel": Sector(repurchase_days=365, dormant_days=540),
    "furniture": Sector(repurchase_days=730, dormant_days=730),
}

#: The seed's window when no sector is set.
DEFAULT_DORMANT_DAYS = 90
