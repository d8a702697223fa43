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
from winback.generator.writer import Formatter


def customer_ids(index: NDArray[np.int64]) -> NDArray[np.bytes_]:
    """``C0000001`` style shop customer ids (1-based)."""
    digits = cast(NDArray[np.bytes_], (index + 1).astype(np.bytes_))
    return np.strings.add(b"C", np.strings.zfill(digits, 7))


def loyalty_tier(revenue_cents: NDArray[np.int64], buyer: NDArray[np.bool_]) -> NDArray[np.int64]:
    """0 none (prospect), 1 bronze, 2 silver (150+), 3 gold (500+ spent)."""
    tier = 1 + (revenue_cents >= 15_000).astype(np.int64) + (revenue_cents >= 50_000)
    return np.where(buyer, tier, 0)


TIERS = ("", "bronze", "silver", "gold")


def contact_lines(
    rng: np.random.Generator,
    pop: Population,
    orders: Orders,
    unsubscribed: NDArray[np.bool_],
    period: Period,
    fmt: Formatter,
    model: ShopModel,
) -> list[str]:
    n = pop.n
    ids = customer_ids(pop.index).astype(str).tolist()
    names = rng.integers(0, 8, (n, 2))
    style = rng.integers(0, 4, n)
    domain = np.where(
        pop.proxy & (rng.random(n) < 0.6),
        len(EMAIL_DOMAINS),
        rng.integers(0, len(EMAIL_DOMAINS), n),
    )
    domains = [*EMAIL_DOMAINS, PROXY_DOMAIN]
    has_phone = rng.random(n) < model.phone_share
    phone_digits = rng.integers(1_000_000, 9_999_999, n)
    has_birthday = rng.random(n) < model.birthday_share
    age_days = (np.minimum(rng.gamma(3.0, 7.0, n), 72) + 18) * 365.25
    birth = np.datetime64(period.end.isoformat(), "D") - age_days.astype(np.int64)
    birthdays = np.datetime_as_string(birth).tolist()
    created = np.where(pop.buyer, pop.acquired_at - rng.integers(30, 900, n), pop.acquired_at)
    created_text = fmt.timestamps(np.maximum(created, period.start_epoch))
    tier = loyalty_tier(orders.revenue_cents, pop.buyer)
    email_now = pop.email_consent & ~unsubscribed
    flags = ("false", "true")
    lines = []
    rows = zip(
        ids, pop.zone.tolist(), names[:, 0].tolist(), names[:, 1].tolist(), style.tolist(),
        (pop.index + 1).tolist(), domain.tolist(), has_phone.tolist(), phone_digits.tolist(),
        has_birthday.tolist(), birthdays, email_now.tolist(), pop.sms_consent.tolist(),
        pop.push_consent.tolist(), created_text, tier.tolist(), pop.channel.tolist(), strict=True,
    )  # fmt: skip
    for (
        cid,
        zone,
        fi,
        li,
        st,
        num,
        dom,
        ph,
        digits,
        hb,
        bday,
        em,
        sms,
        push,
        created_at,
        ti,
        ch,
    ) in rows:
        market = MARKETS[zone]
        first, last = market.first_names[fi], market.last_names[li]
        f, la = ascii_name(first), ascii_name(last)
        local = (f"{f}.{la}{num}", f"{f}{la}{num}", f"{f[0]}.{la}{num}", f"{la}.{f}{num}")[st]
        lines.append(
            f"{cid},{local}@{domains[dom]},{market.phone_prefix + str(digits) if ph else ''},"
            f"{first},{last},{bday if hb else ''},{market.zone},{market.locale},"
            f"{flags[em]},{flags[sms]},{flags[push]},{created_at},{TIERS[ti]},"
            f"{ACQUISITION_CHANNELS[ch]}\n"
        )
    return lines
