"""Dirty rows land exactly where the manifest says, and the good rows survive in order."""

from __future__ import annotations

import csv
import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.generator.dirty import CONTACT_KINDS, EVENT_KINDS, ORDER_KINDS, plan_dirty
from winback.generator.shop import _Output
from winback.generator.writer import CONTACT_COLUMNS, EVENT_COLUMNS, ORDER_COLUMNS, Text


def order_line(i: int) -> bytes:
    return b'O%09d,C%07d,2025-01-01T10:00:00+00:00,%d.50,EUR,"[{""sku"":""A"",""qty"":1}]",\n' % (i, i % 7, i)  # fmt: skip


def event_line(i: int) -> bytes:
    return b'E%010d,C%07d,page_view,2025-01-01T10:00:00+00:00,"{""url"":""/a,b""}"\n' % (i, i % 5)


def contact_line(i: int) -> bytes:
    return (b"C%07d,name%d@example.com,,Ann,Lee,,Europe/Rome,it-IT,true,false,false,"
            b"2025-01-01T10:00:00+00:00,gold,organic\n") % (i, i)  # fmt: skip


FILES = {
    "orders.csv": (order_line, ORDER_KINDS, ORDER_COLUMNS),
    "events.csv": (event_line, EVENT_KINDS, EVENT_COLUMNS),
    "contacts.csv": (contact_line, CONTACT_KINDS, CONTACT_COLUMNS),
}


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(FILES)),
    sizes=st.lists(st.integers(0, 120), min_size=1, max_size=4),
    share=st.floats(0, 0.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_manifest_points_at_the_dirty_lines(name: str, sizes: list[int], share: float, seed: int) -> None:  # fmt: skip
    make, kinds, columns = FILES[name]
    out, manifest = io.BytesIO(), io.StringIO()
    writer = csv.writer(manifest, lineterminator="\n")
    output = _Output(out, name, columns)
    originals: list[bytes] = []
    for k, size in enumerate(sizes):
        lines = [make(len(originals) + i + 1) for i in range(size)]
        originals += lines
        lengths = np.array([len(x) for x in lines], dtype=np.int64)
        text = Text(b"".join(lines), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        plan = plan_dirty(np.random.default_rng([seed, k]), size, kinds, share, text.line)
        output.write(text, plan, writer)
    written = out.getvalue().decode().split("\n")[:-1]
    assert written[0] == ",".join(columns) and len(written) == output.lines
    records = list(csv.reader(io.StringIO(manifest.getvalue())))
    extra, changed = set(), {}
    for file, line, kind, field, expect, value in records:
        assert file == name
        fields = next(csv.reader([written[int(line) - 1]]))
        assert fields[columns.index(field)] == value, (kind, line)
        if expect in ("reject", "duplicate"):
            extra.add(int(line))
        else:
            changed[int(line)] = columns.index(field)
    good = [(i, x) for i, x in enumerate(written[1:], start=2) if i not in extra]
    assert len(good) == len(originals)
    for (number, line), original in zip(good, originals, strict=True):
        ours, theirs = next(csv.reader([line])), next(csv.reader([original.decode()]))
        if number in changed:  # only the documented field differs
            del ours[changed[number]], theirs[changed[number]]
        assert ours == theirs
