"""One chunk of customers turned into CSV text, in this process or in worker processes.

Chunks are independent (each has its own random streams), so they can be simulated in
parallel; the main process numbers the orders and events, adds the dirty rows and writes the
chunks in order, so the files are the same whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from multiprocessing.pool import AsyncResult

import numpy as np

from winback.generator.contacts import contact_text, customer_ids
from winback.generator.context import Context, population
from winback.generator.engagement import Events, simulate_emails, simulate_visits
from winback.generator.purchases import NO_TIME, draw_baskets, draw_coupons
from winback.generator.truth import ground_truth
from winback.generator.writer import Formatter, Line, Text, digits, number_text, to_text

ORDER_ID_DIGITS = 9
EVENT_ID_DIGITS = 10


@dataclass
class ChunkText:
    """A chunk's lines; order and event ids are numbered from 0 until :func:`renumber`."""

    k: int
    customers_done: int
    numbered: bool
    orders: Text
    events: Text
    contacts: Text
    truth: bytes


def render_chunk(ctx: Context, fmt: Formatter, k: int, first_order: int = 0, first_event: int = 0) -> ChunkText:  # fmt: skip
    """Chunk ``k`` as text; ids start at the given numbers (0: to be renumbered)."""
    s, period = ctx.settings, ctx.period
    pop, orders = population(ctx, k)
    ids = customer_ids(pop.index)
    rng = np.random.default_rng([s.seed, 3, k])
    baskets = draw_baskets(rng, orders.cents, pop.favourite[orders.customer])
    coupon = draw_coupons(rng, orders.at, orders.first, period, s.model.coupon_share)
    order_text = fmt.orders(
        first_order, ids, orders.customer, orders.at, orders.cents, coupon, baskets
    )

    first = np.cumsum(baskets.per_order) - baskets.per_order
    first_items = (baskets.category[first], baskets.sku[first])
    emails = simulate_emails(np.random.default_rng([s.seed, 4, k]), pop, orders, ctx.campaigns, period, s.model)  # fmt: skip
    visits = simulate_visits(np.random.default_rng([s.seed, 5, k]), pop, orders, first_items, period, ctx.warp, ctx.offsets, s.model)  # fmt: skip
    events = Events.concat([emails, visits], pop.n).before(period.end_epoch)
    event_text = fmt.events(first_event, events, ids, number_text(pop.index + 1))

    contacts = contact_text(np.random.default_rng([s.seed, 6, k]), pop, orders, events.unsubscribed, period, fmt, s.model)  # fmt: skip
    truth = ground_truth(pop, orders, period, ctx.warp, s.model)
    n = pop.n
    dropout = fmt.decimal(np.nan_to_num(truth.dropout_p), 4)
    dropout[np.isnan(truth.dropout_p)] = b""
    alive = truth.dropped_out_at == NO_TIME
    dropped = fmt.timestamp_text(np.where(alive, 0, truth.dropped_out_at))
    dropped[alive] = b""
    line = Line(n).fixed(ids.view(np.uint8).reshape(n, -1)).const(b",")
    line.var(fmt.decimal(truth.purchase_rate_per_year, 4)).const(b",").var(dropout)
    line.var(np.where(truth.alive_at_end, b",true,", b",false,"))
    line.var(fmt.decimal(truth.p_no_contact, 6)).const(b",")
    line.var(fmt.decimal(truth.p_if_contacted, 6)).const(b",")
    line.var(fmt.decimal(truth.mean_spend, 2)).const(b",").var(dropped).const(b"\n")
    done = int(pop.index[-1]) + 1
    return ChunkText(
        k,
        done,
        first_order > 0,
        order_text,
        event_text,
        contacts,
        bytes(to_text(line.build()).data),
    )


def renumber(text: Text, first: int, width: int) -> Text:
    """The text with the ``width`` digits after each line's first byte set to ``first``,
    ``first + 1``, ... (the ids of orders and events)."""
    if text.lines == 0:
        return text
    buffer = bytearray(text.data)
    data = np.frombuffer(buffer, dtype=np.uint8)
    starts = text.offsets[:-1] + 1
    ids = np.arange(first, first + text.lines, dtype=np.int64)
    data[starts[:, None] + np.arange(width)] = digits(ids, width, zero_pad=True)
    return Text(buffer, text.offsets)


_WORKER: list[tuple[Context, Formatter]] = []


def _init_worker(ctx: Context) -> None:
    _WORKER.append((ctx, Formatter(ctx.period, ctx.campaigns.names)))


def _work(k: int) -> ChunkText:
    ctx, fmt = _WORKER[0]
    return render_chunk(ctx, fmt, k)


def rendered_chunks(ctx: Context, workers: int) -> Iterator[ChunkText]:
    """The chunks in order, rendered by ``workers`` processes (here when 1), at most two
    per worker ahead of the consumer."""
    if workers <= 1 or ctx.chunks <= 1:
        fmt = Formatter(ctx.period, ctx.campaigns.names)
        orders = events = 0
        for k in range(ctx.chunks):
            chunk = render_chunk(ctx, fmt, k, orders + 1, events + 1)
            orders, events = orders + chunk.orders.lines, events + chunk.events.lines
            yield chunk
        return
    # fork where there is one: nothing to re-import, and scripts need no __main__ guard.
    methods = multiprocessing.get_all_start_methods()
    start = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with start.Pool(workers, initializer=_init_worker, initargs=(ctx,)) as pool:
        todo = iter(range(ctx.chunks))
        pending: deque[AsyncResult[ChunkText]] = deque(
            pool.apply_async(_work, (k,)) for k in islice(todo, 2 * workers)
        )
        while pending:
            result = pending.popleft().get()
            following = next(todo, None)
            if following is not None:
                pending.append(pool.apply_async(_work, (following,)))
            yield result
