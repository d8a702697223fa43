"""Coupons from a pattern or an imported pool, recorded on the message, redeemed by orders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.delivery_support import add_contact, add_message, configure, outbox_row, smtp_server
from winback.delivery.coupons import generate_code
from winback.errors import DefinitionError
from winback.store.schema import coupons, orders
from winback.workspace import Workspace


def _codes(ws: Workspace) -> list[dict[str, object]]:
    with ws.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(coupons).order_by(coupons.c.id)).mappings()]


def test_pool_codes_are_assigned_once_and_redeemed(workspace: Workspace, tmp_path: Path) -> None:
    pool = tmp_path / "codes.csv"
    pool.write_text("code,value\nSPRING-1,10\nSPRING-2,10\nSPRING-1,10\n", encoding="utf-8")
    assert workspace.delivery.import_coupons(pool, pool="spring") == (2, 1)
    assert workspace.delivery.import_coupons(pool, pool="spring") == (0, 3)
    a = add_contact(workspace, "a", email="a@example.com")
    b = add_contact(workspace, "b", email="b@example.com")
    c = add_contact(workspace, "c", email="c@example.com")
    payload = {"coupon": {"pool": "spring"}}
    ids = [
        add_message(
            workspace, x, "feedback-coupon", key=f"k{x}", priority="transactional", payload=payload
        )
        for x in (a, b)
    ]
    with smtp_server() as (url, inbox, _):
        workspace = configure(workspace, smtp_url=url)
        assert workspace.delivery.deliver_due().counts == {"sent": 2}
        # The pool is empty now: the next message waits (retried later), it is not lost.
        late = add_message(
            workspace, c, "feedback-coupon", key="late", priority="transactional", payload=payload
        )
        workspace.delivery.deliver_due()
    got = {
        m["To"]: re.search(r"SPRING-\d", m.get_body(("plain",)).get_content()).group(0)  # type: ignore[union-attr]
        for m in inbox.messages
    }
    assert sorted(got.values()) == ["SPRING-1", "SPRING-2"]
    rows = _codes(workspace)
    assert {r["outbox_id"] for r in rows} == set(ids)
    assert {(r["contact_id"], r["code"]) for r in rows} == {
        (a, got["a@example.com"]),
        (b, got["b@example.com"]),
    }
    row = outbox_row(workspace, late)
    assert row["status"] == "pending" and "pool 'spring' has 0 free codes" in row["last_error"]
    with workspace.engine.begin() as conn:
        conn.execute(
            orders.insert().values(
                order_id="o1",
                contact_id=a,
                ordered_at=workspace.clock.now(),
                amount=20,
                currency="EUR",
                coupon=got["a@example.com"],
            )
        )
    assert workspace.delivery.redeem_coupons() == 1
    assert workspace.delivery.coupon_counts() == {"codes": 2, "assigned": 2, "redeemed": 1}
    assert workspace.delivery.redeem_coupons() == 0


def test_pattern_codes_are_unique_and_stable_per_message(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    cids = [add_contact(ws, f"c{i}", email=f"c{i}@example.com") for i in range(20)]
    for cid in cids:
        add_message(ws, cid, "birthday", key=f"b{cid}", flow="birthday")
    with smtp_server() as (url, inbox, _):
        ws = configure(ws, smtp_url=url, quiet_hours="", coupon_pattern="BDAY-{RANDOM6}")
        ws.delivery.deliver_due()
    codes = [r["code"] for r in _codes(ws)]
    assert len(codes) == 20 and len(set(codes)) == 20
    assert all(re.fullmatch(r"BDAY-[A-Z2-9]{6}", str(c)) for c in codes)
    for msg in inbox.messages:
        assert re.search(r"BDAY-[A-Z2-9]{6}", msg.get_body(("html",)).get_content())  # type: ignore[union-attr]
    # The same message asking again (a resend after a crash) gets the same code.
    from winback.delivery.coupons import assign

    first = _codes(ws)[0]
    with ws.engine.begin() as conn:
        again = assign(
            conn,
            [(int(first["outbox_id"]), int(first["contact_id"]), None)],  # type: ignore[call-overload]
            pattern="X-{RANDOM4}",
            at=ws.clock.now(),
        )
    assert again == {first["outbox_id"]: first["code"]}


def test_bad_pool_files_and_patterns(tmp_path: Path, sqlite_workspace: Workspace) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("id,value\n1,2\n", encoding="utf-8")
    with pytest.raises(DefinitionError, match="bad.csv:1: no 'code' column"):
        sqlite_workspace.delivery.import_coupons(f, pool="p")
    g = tmp_path / "codes.txt"
    g.write_text("OK-1\nhas space\n", encoding="utf-8")
    with pytest.raises(DefinitionError, match="codes.txt:2: coupon code 'has space'"):
        sqlite_workspace.delivery.import_coupons(g, pool="p")
    with pytest.raises(DefinitionError, match="no \\{RANDOMn\\}"):
        generate_code("FIXED")
