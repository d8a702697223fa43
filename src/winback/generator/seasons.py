"""Seasonality, holidays and the time of day: when in the year and in the day people buy.

Purchases and visits are generated in *warped time*: a customer's rate is constant on a
clock that runs faster in busy days (Black Friday, December) and slower in quiet ones
(August), so one Poisson draw per customer gives seasonal timestamps without a loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from winback.generator.model import SECONDS_PER_DAY, Period

# Relative demand by month (January .. December), before holidays.
MONTH_FACTOR = np.array([0.85, 0.80, 0.90, 0.95, 0.95, 0.85, 0.72, 0.68, 0.95, 1.00, 1.35, 1.55])
# Weekday factor, Monday .. Sunday.
WEEKDAY_FACTOR = np.array([1.05, 1.0, 1.0, 1.0, 0.95, 0.95, 1.05])
# Share of activity per local hour of the day.
HOUR_WEIGHT = np.array(
    [0.8, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.8, 2.8, 3.6, 4.2, 4.8]
    + [5.6, 5.4, 4.6, 4.4, 4.6, 5.2, 6.0, 6.8, 7.2, 6.6, 4.8, 2.4]
)
EXTRA_DAYS = 31
"""The intensity grid runs this many days past the end (the ground truth's next 30 days)."""


def black_friday(year: int) -> date:
    """The fourth Friday of November."""
    first = date(year, 11, 1)
    first_friday = first + timedelta(days=(4 - first.weekday()) % 7)
    return first_friday + timedelta(weeks=3)


def holiday_factors(day: date) -> float:
    """Multiplier of the ordinary demand on holidays and sales days."""
    bf = black_friday(day.year)
    if day == bf:
        return 3.5
    if day == bf + timedelta(days=3):  # Cyber Monday
        return 2.5
    if bf < day < bf + timedelta(days=3):
        return 1.6
    if day.month == 12 and 10 <= day.day <= 20:
        return 1.3
    if day.month == 12 and day.day in (24, 25, 26):
        return 0.45
    if (day.month, day.day) in ((1, 1), (12, 31)):
        return 0.5
    if day.month == 2 and 7 <= day.day <= 13:  # before Valentine's day
        return 1.25
    if day.month == 1 and 2 <= day.day <= 10:  # January sales
        return 1.2
    return 1.0


def daily_intensity(period: Period) -> NDArray[np.float64]:
    """Demand multiplier per day from the period's start to ``EXTRA_DAYS`` past its end,
    normalised so that it averages 1 over the period."""
    n = period.days + EXTRA_DAYS
    days = [period.start + timedelta(days=i) for i in range(n)]
    values = np.array(
        [MONTH_FACTOR[d.month - 1] * WEEKDAY_FACTOR[d.weekday()] * holiday_factors(d) for d in days]
    )
    result: NDArray[np.float64] = values / values[: period.days].mean()
    return result


@dataclass(frozen=True)
class Warp:
    """Maps days since the period's start to warped time and back (piecewise linear)."""

    grid: NDArray[np.float64]
    cumulative: NDArray[np.float64]
    intensity: NDArray[np.float64]

    @classmethod
    def for_period(cls, period: Period) -> Warp:
        intensity = daily_intensity(period)
        cumulative = np.concatenate([[0.0], np.cumsum(intensity)])
        return cls(np.arange(len(cumulative), dtype=np.float64), cumulative, intensity)

    def forward(self, days: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.interp(days, self.grid, self.cumulative)

    def backward(self, warped: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.interp(warped, self.cumulative, self.grid)


def utc_offsets(period: Period, zones: list[str]) -> NDArray[np.int64]:
    """UTC offset in seconds per zone (rows) and day (columns, at local noon)."""
    n = period.days + EXTRA_DAYS
    out = np.zeros((len(zones), n), dtype=np.int64)
    for z, name in enumerate(zones):
        tz = ZoneInfo(name)
        for i in range(n):
            d = period.start + timedelta(days=i)
            noon = datetime(d.year, d.month, d.day, 12, tzinfo=UTC).astimezone(tz)
            offset = noon.utcoffset()
            out[z, i] = int(offset.total_seconds()) if offset is not None else 0
    return out


def time_of_day(rng: np.random.Generator, n: int) -> NDArray[np.int64]:
    """Local seconds since midnight, following the daily activity curve."""
    hours = rng.choice(24, size=n, p=HOUR_WEIGHT / HOUR_WEIGHT.sum())
    return hours.astype(np.int64) * 3600 + rng.integers(0, 3600, size=n)


def local_to_epoch(
    period: Period,
    day: NDArray[np.int64],
    seconds: NDArray[np.int64],
    zone: NDArray[np.int64],
    offsets: NDArray[np.int64],
) -> NDArray[np.int64]:
    """Epoch seconds of local ``day`` (since the start) at local ``seconds`` in ``zone``."""
    day = np.clip(day, 0, offsets.shape[1] - 1)
    return period.start_epoch + day * SECONDS_PER_DAY + seconds - offsets[zone, day]


@dataclass(frozen=True)
class Campaigns:
    """The shop's marketing emails: a send time, a name and an appeal per campaign."""

    times: NDArray[np.int64]
    names: list[str]
    appeal: NDArray[np.float64]


def campaigns(period: Period, rng: np.random.Generator) -> Campaigns:
    """Weekly newsletters (Tuesdays 08:00 UTC) plus holiday campaigns."""
    items: list[tuple[int, str, float]] = []
    day = period.start + timedelta(days=(1 - period.start.weekday()) % 7)
    while day < period.end:
        items.append((_epoch(day, 8), f"newsletter-{day.isoformat()}", 1.0))
        day += timedelta(weeks=1)
    for year in range(period.start.year, period.end.year + 1):
        bf = black_friday(year)
        specials = [
            (bf - timedelta(days=7), 9, "black-friday-teaser", 1.1),
            (bf, 6, "black-friday", 1.4),
            (bf + timedelta(days=3), 7, "cyber-monday", 1.25),
            (date(year, 12, 12), 9, "christmas-gifts", 1.2),
            (date(year, 1, 3), 9, "january-sales", 1.1),
        ]
        for d, hour, name, weight in specials:
            if period.start <= d < period.end:
                items.append((_epoch(d, hour), f"{name}-{year}", weight))
    items.sort()
    appeal = np.array([a for _, _, a in items]) * rng.uniform(0.8, 1.2, len(items))
    return Campaigns(
        times=np.array([t for t, _, _ in items], dtype=np.int64),
        names=[n for _, n, _ in items],
        appeal=appeal,
    )


def _epoch(day: date, hour: int) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp())
