"""Shopify: the orders export (Orders > Export) and the customers export (Customers >
Export), CSV.

Orders: one row per line item; the first row of an order carries the order's figures
(``Financial Status``, ``Total``, ``Refunded Amount``, ``Cancelled at``, ``Discount Code``),
the following rows of the same ``Name`` only repeat it with their ``Lineitem ...`` cells.
Consecutive rows of one ``Name`` become one order whose ``items`` are its line items. The
order's id is Shopify's numeric ``Id`` (what the webhooks name, refunds included; the
``Name`` such as ``#1001`` when the export has no ``Id``). The export has no customer id:
orders find their contact by ``Email``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

from winback.ingest.fields import ItemsJson
from winback.ingest.presets import Columns, cell
from winback.ingest.presets._values import phone, timestamp, yes_no
from winback.ingest.readers import Record
from winback.ingest.readers import record as make_record

#: Shopify's ``Financial Status`` as our order status (``Cancelled at`` set: cancelled).
FINANCIAL_STATUS = {
    "paid": "paid",
    "partially_paid": "paid",
    "partially_refunded": "paid",
    "authorized": "paid",
    "pending": "pending",
    "refunded": "refunded",
    "voided": "cancelled",
    "expired": "failed",
}

ORDER_COLUMNS = [
    "order_id",
    "email",
    "ordered_at",
    "amount",
    "currency",
    "items",
    "coupon",
    "status",
    "refunded",
]


#: The positions in an order row of what every order needs (id, email, time, total).
REQUIRED = (0, 1, 2, 3)


def order_status(financial: str, cancelled_at: str) -> str:
    if cancelled_at:
        return "cancelled"
    word = financial.strip().lower()
    return FINANCIAL_STATUS.get(word, word)


#: The export's columns an order row is made of, in the order :meth:`_OrderRows.cells`
#: returns them.
NAME, EMAIL, FINANCIAL, CREATED, TOTAL, CURRENCY, CODE, REFUNDED, CANCELLED = range(9)
QTY, ITEM_NAME, PRICE, SKU, ID = range(9, 14)
_HEADERS: tuple[tuple[str, bool], ...] = (  # (header, needed)
    ("Name", True),
    ("Email", True),
    ("Financial Status", True),
    ("Created at", True),
    ("Total", True),
    ("Currency", False),
    ("Discount Code", False),
    ("Refunded Amount", False),
    ("Cancelled at", False),
    ("Lineitem quantity", False),
    ("Lineitem name", False),
    ("Lineitem price", False),
    ("Lineitem sku", False),
    ("Id", False),
)
#: A string as a JSON string, as ``json.dumps(..., ensure_ascii=False)`` writes it.
_quoted: Callable[[str], str] = json.encoder.encode_basestring


class _OrderRows:
    """The export's columns, and an order row from its first line and its line items."""

    def __init__(self, cols: Columns) -> None:
        self.positions = [cols.need(h) if needed else cols.find(h) for h, needed in _HEADERS]
        present = [i for i in self.positions if i is not None]
        self.width = 1 + max(present)
        self.pick = itemgetter(*present)
        self.complete_layout = len(present) == len(self.positions)
        # Where each cell is among the picked ones (None: a column the export lacks).
        slot = iter(range(len(present)))
        self.slots = [None if i is None else next(slot) for i in self.positions]
        # A further line item of an order needs only its name and item cells.
        self.name_at: int = cols.need("Name")
        item_at = [i for i in self.positions[QTY:ID] if i is not None]
        self.item_width = 1 + max([self.name_at, *item_at])
        self.pick_item = itemgetter(*item_at) if len(item_at) == ID - QTY else None

    def next_item(self, v: list[Any], name: str) -> str | None | bool:
        """For a text row of the order ``name`` with every item column: its line item as JSON
        (None:
        the row has none). False: anything else (another order, a short or odd row), for
        :meth:`cells` to read."""
        pick = self.pick_item
        if pick is None:
            return False
        try:
            if len(v) < self.item_width or v[self.name_at].strip() != name:
                return False
            qty, item_name, price, sku = pick(v)
            qty, item_name, price, sku = qty.strip(), item_name.strip(), price.strip(), sku.strip()
        except AttributeError:  # a cell that is not text
            return False
        return _item_json(item_name, sku, qty, price)

    def cells(self, v: list[Any]) -> list[str]:
        """The row's cells in :data:`_HEADERS` order, stripped (empty: column absent or row
        short): one C-level pick for a whole text row, :func:`cell` by cell otherwise."""
        if len(v) >= self.width:
            try:
                got = list(map(str.strip, self.pick(v)))
            except TypeError:  # a cell that is not text (a spreadsheet's number)
                pass
            else:
                if self.complete_layout:
                    return got
                return ["" if k is None else got[k] for k in self.slots]
        return [cell(v, i) for i in self.positions]

    @staticmethod
    def item(c: list[str]) -> str | None:
        return _item_json(c[ITEM_NAME], c[SKU], c[QTY], c[PRICE])

    @staticmethod
    def start(c: list[str]) -> list[Any]:
        return [
            c[ID] or c[NAME],
            c[EMAIL],
            timestamp(c[CREATED]),
            c[TOTAL],
            c[CURRENCY],
            [],
            c[CODE],
            order_status(c[FINANCIAL], c[CANCELLED]),
            c[REFUNDED],
        ]

    def complete(self, order: list[Any], c: list[str]) -> None:
        """Fill what the order's first row lacked from a later row of it."""
        if all(order[i] for i in REQUIRED):
            return
        for i, value in enumerate(self.start(c)):
            if i != 5 and not order[i] and value:
                order[i] = value


def _item_json(name: str, sku: str, qty: str, price: str) -> str | None:
    """A line item as the JSON object ``{"name", "sku", "quantity", "price"}`` (the empty ones
    left out; a quantity of digits as a number) as ``json.dumps(..., ensure_ascii=False)``
    writes it, so that an order's items are joined as text, with no objects built to be
    encoded; None: the row has no item."""
    if not (name or sku):
        return None
    if name and sku and qty.isdigit() and price:  # every cell: one format, the common case
        return (
            f'{{"name": {_quoted(name)}, "sku": {_quoted(sku)}, "quantity": {int(qty)}, '
            f'"price": {_quoted(price)}}}'
        )
    text = '{"name": ' + _quoted(name)
    if sku:
        text += ', "sku": ' + _quoted(sku)
    if qty:
        text += ', "quantity": ' + (str(int(qty)) if qty.isdigit() else _quoted(qty))
    if price:
        text += ', "price": ' + _quoted(price)
    return text + "}"


def _done(line: int, order: list[Any]) -> Record:
    items = order[5]
    order[5] = ItemsJson("[" + ", ".join(items) + "]") if items else ""
    return make_record(line, order)


def orders(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    rows = _OrderRows(cols)

    def grouped() -> Iterator[Record]:
        line, order, name = 0, None, None
        whole = False  # the current order has all of :data:`REQUIRED`
        for record in records:
            if record.problem is not None:
                yield record
                continue
            if whole and order is not None and name is not None:
                found: Any = rows.next_item(record.values, name)
                if found is not False:
                    if found is not None:
                        order[5].append(found)
                    continue
            c = rows.cells(record.values)
            if order is not None and c[NAME] == name:
                rows.complete(order, c)
            else:
                if order is not None:
                    yield _done(line, order)
                line, order, name = record.line, rows.start(c), c[NAME]
            whole = bool(order[0] and order[1] and order[2] and order[3])  # all of REQUIRED
            found = rows.item(c)
            if found is not None:
                order[5].append(found)
        if order is not None:
            yield _done(line, order)

    return ORDER_COLUMNS, grouped()


CUSTOMER_COLUMNS = [
    "customer_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "email_consent",
    "sms_consent",
    "tags",
    "note",
]


def customers(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_id = cols.find("Customer ID", "ID")
    i_email = cols.need("Email")
    i_first = cols.find("First Name")
    i_last = cols.find("Last Name")
    i_phone = cols.find("Phone")
    i_address_phone = cols.find("Default Address Phone")
    i_email_ok = cols.find("Accepts Email Marketing", "Accepts Marketing")
    i_sms_ok = cols.find("Accepts SMS Marketing")
    i_tags = cols.find("Tags")
    i_note = cols.find("Note")

    def rows() -> Iterator[Record]:
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            yield Record(
                record.line,
                [
                    phone(cell(v, i_id)),
                    cell(v, i_email),
                    phone(cell(v, i_phone) or cell(v, i_address_phone)),
                    cell(v, i_first),
                    cell(v, i_last),
                    yes_no(cell(v, i_email_ok)),
                    yes_no(cell(v, i_sms_ok)),
                    cell(v, i_tags),
                    cell(v, i_note),
                ],
            )

    return CUSTOMER_COLUMNS, rows()
