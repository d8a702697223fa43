"""Summary data for the "buy till you die" models, from raw transactions.

The literature's names (Fader, Hardie and Lee 2005), per customer, at the end of a
calibration period:

- ``frequency`` (*x*): the number of **repeat** transactions, i.e. distinct purchase days
  after the first one. Purchases on the same day count as one transaction, as in the papers.
- ``recency`` (*t_x*): the time of the last transaction measured from the first one
  (0 for customers with no repeat transaction).
- ``T``: the customer's age, from the first transaction to the end of the calibration period.
- ``monetary_value`` (*m_x*): the mean value of the repeat transactions (0 when ``x = 0``),
  the input of the Gamma-Gamma spend model.

Everything is vectorised with NumPy: one sort and a few reductions, no Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FloatArray = np.ndarray  # float64 arrays (loosely typed: NumPy stubs are too strict)
IntArray = np.ndarray  # int64 arrays


@dataclass(frozen=True)
class Transactions:
    """Purchases as parallel arrays: ``customer`` (any integer code), ``day`` (integer day
    number, e.g. days since 1970-01-01) and ``amount``."""

    customer: IntArray
    day: IntArray
    amount: FloatArray

    def __post_init__(self) -> None:
        n = len(self.customer)
        if len(self.day) != n or len(self.amount) != n:
            raise ValueError("customer, day and amount must have the same length")

    def __len__(self) -> int:
        return len(self.customer)


@dataclass(frozen=True)
class Summary:
    """Per-customer summary (one row per customer, ordered by ``customer``).

    Times are in ``unit_days`` days (7 for weeks as in the papers). ``first_day`` and
    ``last_day`` are day numbers; ``orders``/``revenue`` count every purchase up to the end of
    calibration (used by RFM); ``holdout_frequency`` counts transactions after it.
    """

    customer: IntArray
    frequency: FloatArray
    recency: FloatArray
    T: FloatArray
    monetary_value: FloatArray
    first_day: IntArray
    last_day: IntArray
    orders: IntArray
    revenue: FloatArray
    holdout_frequency: FloatArray
    calibration_end: int
    unit_days: float = 1.0
    extra: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.customer)


def _sort_order(cust: IntArray, day: IntArray) -> IntArray | None:
    """The permutation that sorts by (customer, day), or None when already sorted. One
    argsort of a combined integer key (much faster than a two-key lexsort)."""
    c0, d0 = int(cust.min()), int(day.min())
    span = int(day.max()) - d0 + 1
    if (int(cust.max()) - c0 + 1) * span < 2**62:
        key = (cust - c0) * span + (day - d0)
        if bool(np.all(key[1:] >= key[:-1])):
            return None
        return np.argsort(key)  # ties (same customer and day) are summed: order is moot
    return np.lexsort((day, cust))


def sort_transactions(tx: Transactions) -> Transactions:
    """The same transactions ordered by (customer, day)."""
    if len(tx) == 0:
        return tx
    order = _sort_order(np.asarray(tx.customer), np.asarray(tx.day))
    if order is None:
        return tx
    return Transactions(tx.customer[order], tx.day[order], tx.amount[order])


def summary_data(
    tx: Transactions,
    calibration_end: int,
    *,
    observation_end: int | None = None,
    unit_days: float = 1.0,
) -> Summary:
    """Frequency / recency / T / monetary value per customer from transactions.

    ``calibration_end`` is the day number at which T is measured (inclusive: purchases on
    that day belong to the calibration period); transactions after it up to
    ``observation_end`` (default: all) are counted in ``holdout_frequency``. Customers whose
    first purchase is after ``calibration_end`` are left out.
    """
    cust = np.asarray(tx.customer, dtype=np.int64)
    day = np.asarray(tx.day, dtype=np.int64)
    amount = np.asarray(tx.amount, dtype=np.float64)
    if observation_end is not None:
        keep = day <= observation_end
        cust, day, amount = cust[keep], day[keep], amount[keep]
    n = len(cust)
    if n:
        dense = _summary_dense(cust, day, amount, calibration_end, unit_days)
        if dense is not None:
            return dense
        order = _sort_order(cust, day)
        if order is not None:
            cust, day, amount = cust[order], day[order], amount[order]
    if n == 0:
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0)
        return Summary(
            empty_i, empty_f, empty_f, empty_f, empty_f, empty_i, empty_i, empty_i, empty_f,
            empty_f, calibration_end, unit_days,
        )  # fmt: skip
    # Collapse same-day purchases into one transaction (summing their value).
    new_tx = np.empty(n, dtype=bool)
    new_tx[0] = True
    np.not_equal(cust[1:], cust[:-1], out=new_tx[1:])
    new_tx[1:] |= day[1:] != day[:-1]
    tx_start = np.flatnonzero(new_tx)
    t_cust = cust[tx_start]
    t_day = day[tx_start]
    t_amount = np.add.reduceat(amount, tx_start)
    t_orders = np.diff(np.append(tx_start, n))
    in_cal = t_day <= calibration_end
    # Customers: those with a first transaction in calibration.
    first_of_cust = np.empty(len(t_cust), dtype=bool)
    first_of_cust[0] = True
    np.not_equal(t_cust[1:], t_cust[:-1], out=first_of_cust[1:])
    cust_start = np.flatnonzero(first_of_cust)
    keep_cust = t_day[cust_start] <= calibration_end
    cust_id = t_cust[cust_start]
    cust_index = np.cumsum(first_of_cust) - 1  # transaction -> customer row
    n_cust = len(cust_start)
    cal_count = np.bincount(cust_index, weights=in_cal, minlength=n_cust)
    hold_count = np.bincount(cust_index, weights=~in_cal, minlength=n_cust)
    cal_amount = np.bincount(cust_index, weights=np.where(in_cal, t_amount, 0.0), minlength=n_cust)
    cal_orders = np.bincount(cust_index, weights=np.where(in_cal, t_orders, 0), minlength=n_cust)
    first_day = t_day[cust_start]
    first_amount = t_amount[cust_start]
    # Last calibration transaction: the maximum day among in-calibration transactions.
    last_day = np.full(n_cust, np.iinfo(np.int64).min, dtype=np.int64)
    cal_idx = np.flatnonzero(in_cal)
    # Transactions are sorted by (customer, day): the last in-calibration one per customer
    # is where the customer index changes in the filtered sequence.
    ci = cust_index[cal_idx]
    is_last = np.empty(len(ci), dtype=bool)
    if len(ci):
        is_last[-1] = True
        np.not_equal(ci[1:], ci[:-1], out=is_last[:-1])
    last_day[ci[is_last]] = t_day[cal_idx[is_last]]
    return _finish(
        cust_id[keep_cust], cal_count[keep_cust], hold_count[keep_cust], cal_amount[keep_cust],
        cal_orders[keep_cust], first_day[keep_cust], first_amount[keep_cust],
        last_day[keep_cust], calibration_end, unit_days,
    )  # fmt: skip


def _summary_dense(
    cust: IntArray, day: IntArray, amount: FloatArray, calibration_end: int, unit_days: float
) -> Summary | None:
    """The fast path for dense customer codes (such as contact ids): one sort of a combined
    (customer, day) key finds the distinct transactions; everything per customer is a
    ``bincount`` over the raw rows, so amounts are never permuted."""
    n = len(cust)
    c0, d0 = int(cust.min()), int(day.min())
    crange, span = int(cust.max()) - c0 + 1, int(day.max()) - d0 + 1
    if crange > 4 * n + 1024 or crange * span >= 2**62:
        return None
    ci = cust - c0
    uk = np.sort(ci * span + (day - d0))  # (np.unique's hash path is slow on 10M keys)
    distinct = np.empty(n, dtype=bool)
    distinct[0] = True
    np.not_equal(uk[1:], uk[:-1], out=distinct[1:])
    uk = uk[distinct]  # distinct (customer, day), sorted
    u_c = uk // span
    u_d = uk - u_c * span + d0
    first = np.empty(len(uk), dtype=bool)
    first[0] = True
    np.not_equal(u_c[1:], u_c[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    n_cust = len(starts)
    row_of_u = np.cumsum(first) - 1
    in_cal_u = u_d <= calibration_end
    cal_count = np.bincount(row_of_u, weights=in_cal_u, minlength=n_cust)
    hold_count = np.bincount(row_of_u, weights=~in_cal_u, minlength=n_cust)
    first_day = u_d[starts]
    last_day = np.full(n_cust, np.iinfo(np.int64).min, dtype=np.int64)
    cal_idx = np.flatnonzero(in_cal_u)
    rc = row_of_u[cal_idx]
    if len(rc):
        is_last = np.empty(len(rc), dtype=bool)
        is_last[-1] = True
        np.not_equal(rc[1:], rc[:-1], out=is_last[:-1])
        last_day[rc[is_last]] = u_d[cal_idx[is_last]]
    lookup = np.full(crange, -1, dtype=np.int64)
    lookup[u_c[starts]] = np.arange(n_cust)
    row = lookup[ci]
    in_cal = day <= calibration_end
    cal_orders = np.bincount(row, weights=in_cal, minlength=n_cust)
    cal_amount = np.bincount(row, weights=np.where(in_cal, amount, 0.0), minlength=n_cust)
    on_first = day == first_day[row]
    first_amount = np.bincount(row, weights=np.where(on_first, amount, 0.0), minlength=n_cust)
    keep = first_day <= calibration_end
    return _finish(
        (u_c[starts] + c0)[keep], cal_count[keep], hold_count[keep], cal_amount[keep],
        cal_orders[keep], first_day[keep], first_amount[keep], last_day[keep],
        calibration_end, unit_days,
    )  # fmt: skip


def _finish(
    cust_id: IntArray,
    cal_count: FloatArray,
    hold_count: FloatArray,
    cal_amount: FloatArray,
    cal_orders: FloatArray,
    first_day: IntArray,
    first_amount: FloatArray,
    last_day: IntArray,
    calibration_end: int,
    unit_days: float,
) -> Summary:
    frequency = cal_count - 1.0
    repeat_amount = cal_amount - first_amount
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(frequency > 0, repeat_amount / np.maximum(frequency, 1), 0.0)
    recency = (last_day - first_day) / unit_days
    T = (calibration_end - first_day) / unit_days
    return Summary(
        customer=cust_id,
        frequency=frequency,
        recency=recency.astype(np.float64),
        T=T.astype(np.float64),
        monetary_value=monetary,
        first_day=first_day,
        last_day=last_day,
        orders=cal_orders.astype(np.int64),
        revenue=cal_amount,
        holdout_frequency=hold_count,
        calibration_end=calibration_end,
        unit_days=unit_days,
    )
