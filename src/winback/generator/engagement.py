"""Engagement: marketing emails (sent, delivered, bounced, opened by people or by privacy
proxies, clicked, unsubscribed) and site activity (page views, product views, cart adds),
for a whole chunk of customers at once.

Opens and clicks depend on the customer's engagement and on whether they are still alive
(customers who dropped out open less and less). Machine opens: a privacy-proxy user's client
fetches every delivered email within seconds (``{"machine": true}``) and their real opens are
invisible, though their clicks are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from winback.generator.model import SECONDS_PER_DAY, Period, ShopModel
from winback.generator.population import DAYS_PER_YEAR, Population, seconds_to_days
from winback.generator.purchases import NO_TIME, Orders, draw_products
from winback.generator.seasons import Campaigns, Warp, local_to_epoch, time_of_day

EVENT_TYPES = (
    "email_sent",
    "email_delivered",
    "email_opened",
    "email_clicked",
    "email_bounced",
    "email_unsubscribed",
    "email_complained",
    "page_view",
    "product_view",
    "cart_add",
)
(SENT, DELIVERED, OPENED, CLICKED, BOUNCED, UNSUBSCRIBED, COMPLAINED,
 PAGE_VIEW, PRODUCT_VIEW, CART_ADD) = range(10)  # fmt: skip
LAST_EMAIL_TYPE = COMPLAINED
PAGES = ("/", "/new-in", "/sale", "/search", "/account", "/blog", "/help", "/wishlist")
LANDING = len(PAGES)  # page index meaning "the campaign's landing page"


@dataclass
class Events:
    """Events of a chunk sorted by time. Property fields are -1 where they do not apply."""

    customer: NDArray[np.int64]
    type: NDArray[np.int64]
    at: NDArray[np.int64]
    campaign: NDArray[np.int64]
    machine: NDArray[np.bool_]
    hard_bounce: NDArray[np.bool_]
    page: NDArray[np.int64]
    category: NDArray[np.int64]
    sku: NDArray[np.int64]
    unsubscribed: NDArray[np.bool_]  # per customer

    def before(self, end: int) -> Events:
        """The events that happened before ``end`` (the export is taken at the end)."""
        keep = self.at < end
        fields = ("customer", "type", "at", "campaign", "machine", "hard_bounce", "page", "category", "sku")  # fmt: skip
        values: dict[str, Any] = {f: getattr(self, f)[keep] for f in fields}
        unsubscribed = np.zeros_like(self.unsubscribed)
        quit_ = (values["type"] == UNSUBSCRIBED) | (values["type"] == COMPLAINED)
        unsubscribed[values["customer"][quit_]] = True
        return Events(unsubscribed=unsubscribed, **values)

    @classmethod
    def concat(cls, parts: list[Events], n: int, *, by_time: bool = True) -> Events:
        def cat(name: str) -> NDArray[np.int64]:
            return np.concatenate([getattr(p, name) for p in parts])

        at = cat("at")
        order = np.argsort(at, kind="stable") if by_time else np.arange(len(at))
        unsub = np.zeros(n, bool)
        for p in parts:
            unsub |= p.unsubscribed
        fields = (
            "customer",
            "type",
            "at",
            "campaign",
            "machine",
            "hard_bounce",
            "page",
            "category",
            "sku",
        )
        values: dict[str, Any] = {f: cat(f)[order] for f in fields}
        return cls(unsubscribed=unsub, **values)


def _events(
    customer: NDArray[np.int64],
    kind: int | NDArray[np.int64],
    at: NDArray[np.int64],
    n_customers: int,
    **props: NDArray[np.int64] | NDArray[np.bool_],
) -> Events:
    m = len(customer)
    minus = np.full(m, -1, dtype=np.int64)
    no = np.zeros(m, dtype=bool)
    return Events(
        customer=customer,
        type=np.broadcast_to(np.asarray(kind, dtype=np.int64), (m,)).copy(),
        at=at,
        campaign=np.asarray(props.get("campaign", minus), dtype=np.int64),
        machine=np.asarray(props.get("machine", no), dtype=bool),
        hard_bounce=np.asarray(props.get("hard_bounce", no), dtype=bool),
        page=np.asarray(props.get("page", minus), dtype=np.int64),
        category=np.asarray(props.get("category", minus), dtype=np.int64),
        sku=np.asarray(props.get("sku", minus), dtype=np.int64),
        unsubscribed=np.zeros(n_customers, dtype=bool),
    )


def liveness(
    pop: Population, orders: Orders, who: NDArray[np.int64], at: NDArray[np.int64]
) -> NDArray[np.float64]:
    """How much of a customer's interest is left at ``at`` (1 while alive)."""
    dropped = orders.dropped_out_at[who]
    since_drop = np.maximum(at - dropped, 0) / SECONDS_PER_DAY
    bought = np.where(
        at < dropped, 1.0, 0.12 + 0.5 * np.exp(-np.where(at < dropped, 0, since_drop) / 90.0)
    )
    since_signup = np.maximum(at - pop.acquired_at[who], 0) / SECONDS_PER_DAY
    prospect = 0.25 + 0.75 * np.exp(-since_signup / 120.0)
    return np.where(pop.buyer[who], bought, prospect)


def simulate_emails(
    rng: np.random.Generator,
    pop: Population,
    orders: Orders,
    campaigns: Campaigns,
    period: Period,
    model: ShopModel,
) -> Events:
    n, c = pop.n, len(campaigns.times)
    per_year = c / (period.days / DAYS_PER_YEAR) if c else 1.0
    reach = np.minimum(
        model.emails_per_month
        * model.activity
        * 12
        / per_year
        * np.where(campaigns.appeal > 1.05, 1.6, 1.0),
        1.0,
    )
    eligible = pop.email_consent[:, None] & (pop.acquired_at[:, None] < campaigns.times[None, :])
    chosen = eligible & (rng.random((n, c)) < reach[None, :])
    who, camp = np.nonzero(chosen)  # sorted by customer, then campaign
    m = len(who)
    sent = campaigns.times[camp] + rng.integers(0, 1800, m)
    hard = pop.bad_address[who]
    bounced = hard | (rng.random(m) < 0.008)
    life = liveness(pop, orders, who, sent)
    e = pop.engagement[who]
    opens = ~bounced & (rng.random(m) < np.clip(0.6 * e * life * campaigns.appeal[camp], 0, 0.9))
    clicks = opens & (rng.random(m) < 0.1 + 0.35 * e)
    unsub_p = 0.0015 + 0.006 * (1 - life) + 0.012 * pop.sleeping_dog[who]
    unsub = ~bounced & (rng.random(m) < unsub_p)
    # Spam complaints: rarer, likelier from lapsed customers and sleeping dogs.
    complaint_p = 0.0002 + 0.0008 * (1 - life) + 0.002 * pop.sleeping_dog[who]
    complaint = ~bounced & ~unsub & (rng.random(m) < complaint_p)

    # Nothing is sent after a hard bounce or an unsubscribe.
    stop = (hard | unsub | complaint).astype(np.int64)
    before = np.cumsum(stop) - stop
    first_of = np.searchsorted(who, who)  # index of each customer's first pair
    keep = (before - before[first_of]) == 0
    who, camp, sent, hard, bounced, opens, clicks, unsub, complaint = (
        x[keep] for x in (who, camp, sent, hard, bounced, opens, clicks, unsub, complaint)
    )
    m = len(who)
    delivered_at = sent + rng.integers(1, 30, m)
    read_at = delivered_at + np.minimum(
        rng.lognormal(np.log(5400), 1.4, m), 5 * SECONDS_PER_DAY
    ).astype(np.int64)
    click_at = read_at + rng.integers(5, 300, m)
    proxy = pop.proxy[who]
    machine = ~bounced & proxy & (rng.random(m) < 0.97)

    unsubscribed = np.zeros(n, dtype=bool)
    unsubscribed[who[unsub | complaint]] = True  # complainers are unsubscribed too
    ok = ~bounced
    human = opens & ~proxy
    parts = [
        _events(who, SENT, sent, n, campaign=camp),
        _events(who[ok], DELIVERED, delivered_at[ok], n, campaign=camp[ok]),
        _events(who[bounced], BOUNCED, sent[bounced] + rng.integers(2, 90, int(bounced.sum())), n,
                campaign=camp[bounced], hard_bounce=hard[bounced]),
        _events(who[machine], OPENED, delivered_at[machine] + rng.integers(1, 15, int(machine.sum())), n,
                campaign=camp[machine], machine=np.ones(int(machine.sum()), bool)),
        _events(who[human], OPENED, read_at[human], n, campaign=camp[human]),
        _events(who[clicks], CLICKED, click_at[clicks], n, campaign=camp[clicks]),
        _events(who[unsub], UNSUBSCRIBED, read_at[unsub] + rng.integers(10, 120, int(unsub.sum())), n,
                campaign=camp[unsub]),
        _events(who[complaint], COMPLAINED, read_at[complaint] + rng.integers(10, 600, int(complaint.sum())), n,
                campaign=camp[complaint]),
    ]  # fmt: skip
    landing = clicks & pop.tracked[who]
    parts.append(
        _events(who[landing], PAGE_VIEW, click_at[landing] + rng.integers(1, 6, int(landing.sum())), n,
                campaign=camp[landing], page=np.full(int(landing.sum()), LANDING))
    )  # fmt: skip
    events = Events.concat(parts, n, by_time=False)
    events.unsubscribed = unsubscribed
    return events


def simulate_visits(
    rng: np.random.Generator,
    pop: Population,
    orders: Orders,
    first_item: tuple[NDArray[np.int64], NDArray[np.int64]],
    period: Period,
    warp: Warp,
    offsets: NDArray[np.int64],
    model: ShopModel,
) -> Events:
    """Browsing sessions (page view, product views, maybe a cart add) of tracked customers,
    more frequent while alive, plus the product view and cart add just before each order."""
    n = pop.n
    end_day = float(period.days)
    start = seconds_to_days(pop.acquired_at, period)
    dropped = np.where(
        orders.dropped_out_at == NO_TIME,
        end_day,
        seconds_to_days(np.minimum(orders.dropped_out_at, period.end_epoch), period),
    )
    base = model.base_visits_per_year / DAYS_PER_YEAR * model.activity
    per_purchase = model.visits_per_purchase * model.activity
    alive_rate = np.where(pop.buyer, per_purchase * pop.rate + base, base)
    # Two stints per customer: alive (acquisition to dropout) and afterwards, quieter.
    lo = np.concatenate([start, dropped])
    hi = np.concatenate([dropped, np.full(n, end_day)])
    rate = np.concatenate([alive_rate, np.full(n, base * 0.4)])
    owner = np.concatenate([np.arange(n), np.arange(n)])
    w_lo, w_hi = warp.forward(lo), warp.forward(hi)
    counts = rng.poisson(rate * np.maximum(w_hi - w_lo, 0) * pop.tracked[owner])
    who = np.repeat(owner, counts)
    w = np.repeat(w_lo, counts) + rng.random(len(who)) * np.repeat(w_hi - w_lo, counts)
    day = np.floor(warp.backward(w)).astype(np.int64)
    at = local_to_epoch(period, day, time_of_day(rng, len(who)), pop.zone[who], offsets)
    at = np.clip(at, pop.acquired_at[who], period.end_epoch - 600)
    s = len(who)
    page = rng.integers(0, len(PAGES), s)
    views = rng.poisson(2.0, s)
    v_who = np.repeat(who, views)
    v_at = np.repeat(at, views) + _within(rng.integers(15, 200, len(v_who)), views)
    v_cat, v_sku = draw_products(rng, pop.favourite[v_who])
    session_last = np.cumsum(views) - 1
    carts = (views > 0) & (rng.random(s) < 0.1)
    c_idx = session_last[carts]
    parts = [
        _events(who, PAGE_VIEW, at, n, page=page),
        _events(v_who, PRODUCT_VIEW, v_at, n, category=v_cat, sku=v_sku),
        _events(v_who[c_idx], CART_ADD, v_at[c_idx] + rng.integers(10, 120, len(c_idx)), n,
                category=v_cat[c_idx], sku=v_sku[c_idx]),
    ]  # fmt: skip
    # The visit that ended in each order of a tracked customer.
    tracked = pop.tracked[orders.customer] & (
        rng.random(len(orders.customer)) < min(1.0, 0.6 * model.activity)
    )
    o_who, o_at = orders.customer[tracked], orders.at[tracked]
    cat, sku = first_item[0][tracked], first_item[1][tracked]
    k = len(o_who)
    parts.append(
        _events(o_who, PRODUCT_VIEW, o_at - rng.integers(300, 1800, k), n, category=cat, sku=sku)
    )
    parts.append(
        _events(o_who, CART_ADD, o_at - rng.integers(60, 290, k), n, category=cat, sku=sku)
    )
    return Events.concat(parts, n, by_time=False)


def _within(gaps: NDArray[np.int64], sizes: NDArray[np.int64]) -> NDArray[np.int64]:
    """Running sums of ``gaps`` restarting at each group (groups of ``sizes`` in a row)."""
    run = np.cumsum(gaps)
    starts = np.cumsum(sizes) - sizes
    before = np.concatenate([[0], run])[starts]
    result: NDArray[np.int64] = run - np.repeat(before, sizes)
    return result
