"""Contact records: ids, names, email addresses, phones, birthdays, consent, custom
attributes (``loyalty_tier``, ``acquisition_channel``)."""

from __future__ import annotations

from typing import cast

import numpy as np
from numpy.typing import NDArray

from winback.generator.locales import (
    ACQUISITION_CHANNELS,
    EMAIL_DOMAINS,
    MARKETS,
    PROXY_DOMAIN,
    ascii_name,
)
from winback.generator.model import Period, ShopModel
from winback.generator.population import Population
from winback.generator.purchases import Orders
from winback.generator.writer import Formatter, Line, Text, number_text, table, to_text


def customer_ids(index: NDArray[np.int64]) -> NDArray[np.bytes_]:
    """``C0000001`` style shop customer ids (1-based)."""
    digits = cast(NDArray[np.bytes_], (index + 1).astype(np.bytes_))
    return np.strings.add(b"C", np.strings.zfill(digits, 7))


def loyalty_tier(revenue_cents: NDArray[np.int64], buyer: NDArray[np.bool_]) -> NDArray[np.int64]:
    """0 none (prospect), 1 bronze, 2 silver (150+), 3 gold (500+ spent)."""
    tier = 1 + (revenue_cents >= 15_000).astype(np.int64) + (revenue_cents >= 50_000)
    return np.where(buyer, tier, 0)


TIERS = ("", "bronze", "silver", "gold")


def _tables() -> dict[str, NDArray[np.bytes_]]:
    """Byte-string tables indexed by market, name, style, consent and tier."""
    local, names, zone_consent = [], [], []
    for market in MARKETS:
        for first in market.first_names:
            for last in market.last_names:
                f, la = ascii_name(first), ascii_name(last)
                local += [f"{f}.{la}", f"{f}{la}", f"{f[0]}.{la}", f"{la}.{f}"]
                names.append(f",{first},{last},")
        for flags in range(8):
            consent = ",".join("true" if flags >> bit & 1 else "false" for bit in (2, 1, 0))
            zone_consent.append(f",{market.zone},{market.locale},{consent},")
    tier_channel = [f",{t},{c}\n" for t in TIERS for c in ACQUISITION_CHANNELS]
    return {
        "local": table([x.encode() for x in local]),
        "names": table([x.encode() for x in names]),
        "zone_consent": table([x.encode() for x in zone_consent]),
        "tier_channel": table([x.encode() for x in tier_channel]),
        "domain": table([f"@{d},".encode() for d in (*EMAIL_DOMAINS, PROXY_DOMAIN)]),
        "phone": table([b""] + [m.phone_prefix.encode() for m in MARKETS]),
    }


_TABLES: dict[str, NDArray[np.bytes_]] = {}


def contact_text(
    rng: np.random.Generator,
    pop: Population,
    orders: Orders,
    unsubscribed: NDArray[np.bool_],
    period: Period,
    fmt: Formatter,
    model: ShopModel,
) -> Text:
    """The chunk's lines of ``contacts.csv``."""
    if not _TABLES:
        _TABLES.update(_tables())
    tab = _TABLES
    n = pop.n
    names = rng.integers(0, 8, (n, 2))
    style = rng.integers(0, 4, n)
    domain = np.where(
        pop.proxy & (rng.random(n) < 0.6),
        len(EMAIL_DOMAINS),
        rng.integers(0, len(EMAIL_DOMAINS), n),
    )
    has_phone = rng.random(n) < model.phone_share
    phone_digits = rng.integers(1_000_000, 9_999_999, n)
    has_birthday = rng.random(n) < model.birthday_share
    age_days = (np.minimum(rng.gamma(3.0, 7.0, n), 72) + 18) * 365.25
    birth = np.datetime64(period.end.isoformat(), "D") - age_days.astype(np.int64)
    birthdays = np.datetime_as_string(birth).astype(np.bytes_)
    birthdays[~has_birthday] = b""
    created = np.where(pop.buyer, pop.acquired_at - rng.integers(30, 900, n), pop.acquired_at)
    tier = loyalty_tier(orders.revenue_cents, pop.buyer)
    email_now = pop.email_consent & ~unsubscribed
    consent = 4 * email_now + 2 * pop.sms_consent + pop.push_consent.astype(np.int64)
    person = (pop.zone * 8 + names[:, 0]) * 8 + names[:, 1]
    phone = number_text(phone_digits)
    phone[~has_phone] = b""
    line = Line(n).fixed(customer_ids(pop.index).view(np.uint8).reshape(n, -1)).const(b",")
    line.var(tab["local"][person * 4 + style]).var(number_text(pop.index + 1))
    line.var(tab["domain"][domain]).var(tab["phone"][np.where(has_phone, pop.zone + 1, 0)])
    line.var(phone).var(tab["names"][person]).var(birthdays)
    line.var(tab["zone_consent"][pop.zone * 8 + consent])
    line.fixed(*fmt.timestamp_blocks(np.maximum(created, period.start_epoch)))
    line.var(tab["tier_channel"][tier * len(ACQUISITION_CHANNELS) + pop.channel])
    return to_text(line.build())
