"""The shop generator: reproducible, canonical, realistic, honest about its dirty rows, and
consistent with its own ground truth."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from winback.cli import app
from winback.generator import (
    GeneratedShop,
    InvalidGeneratorParameters,
    ShopModel,
    generate_orders_arrays,
    generate_shop,
)

CUSTOMERS = 4_000
FILES = ("contacts.csv", "orders.csv", "events.csv", "ground_truth.csv", "dirty_rows.csv")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> GeneratedShop:
    return generate_shop(tmp_path_factory.mktemp("shop"), customers=CUSTOMERS, months=24, seed=7)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def header_of(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return fh.readline().rstrip("\n").split(",")


def dirty_lines(shop: GeneratedShop) -> dict[str, set[int]]:
    out: dict[str, set[int]] = defaultdict(set)
    for r in rows(shop.dirty_rows_path):
        if r["expect"] in ("reject", "duplicate"):
            out[r["file"]].add(int(r["line"]))
    return out


def good_rows(shop: GeneratedShop, name: str) -> list[dict[str, str]]:
    """Rows of a file without the extra (rejected or duplicate) dirty lines."""
    skip = dirty_lines(shop)[name]
    path = shop.out_dir / name
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return [r for r in reader if reader.line_num not in skip]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def digest(folder: Path) -> dict[str, str]:
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILES}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = generate_shop(tmp_path / "a", customers=1500, months=12, seed=3)
    b = generate_shop(tmp_path / "b", customers=1500, months=12, seed=3)
    c = generate_shop(tmp_path / "c", customers=1500, months=12, seed=4)
    assert digest(a.out_dir) == digest(b.out_dir)
    other = digest(c.out_dir)
    assert all(other[f] != digest(a.out_dir)[f] for f in FILES)


@pytest.mark.slow
def test_worker_processes_do_not_change_the_bytes(tmp_path: Path) -> None:
    one = generate_shop(
        tmp_path / "one", customers=41_000, months=3, seed=9, mean_events=3, workers=1
    )
    two = generate_shop(
        tmp_path / "two", customers=41_000, months=3, seed=9, mean_events=3, workers=2
    )
    assert digest(one.out_dir) == digest(two.out_dir)
    # Order ids run on across the three chunks, in file order.
    ids = [r["order_id"] for r in good_rows_from(one.out_dir, "orders.csv")]
    assert ids == [f"O{i:09d}" for i in range(1, one.orders + 1)]


def test_columns_are_exactly_canonical(shop: GeneratedShop) -> None:
    assert header_of(shop.contacts_path) == [
        "customer_id", "email", "phone", "first_name", "last_name", "birthday", "timezone",
        "locale", "email_consent", "sms_consent", "push_consent", "created_at", "loyalty_tier",
        "acquisition_channel",
    ]  # fmt: skip
    assert header_of(shop.orders_path) == [
        "order_id", "customer_id", "ordered_at", "amount", "currency", "items", "coupon",
    ]  # fmt: skip
    assert header_of(shop.events_path) == [
        "event_id", "customer_id", "type", "occurred_at", "properties",
    ]  # fmt: skip
    assert header_of(shop.ground_truth_path) == [
        "customer_id", "purchase_rate_per_year", "dropout_p", "alive_at_end",
        "p_buy_30d_no_contact", "p_buy_30d_if_contacted", "mean_spend", "dropped_out_at",
    ]  # fmt: skip


def test_good_rows_are_valid_and_counts_agree(shop: GeneratedShop) -> None:
    contacts = good_rows(shop, "contacts.csv")
    orders = good_rows(shop, "orders.csv")
    events = good_rows(shop, "events.csv")
    assert len(contacts) == CUSTOMERS == len(rows(shop.ground_truth_path))
    assert len(orders) == shop.orders and len(events) == shop.events
    assert shop.orders_lines == len(rows(shop.orders_path))
    ids = {c["customer_id"] for c in contacts}
    assert len(ids) == CUSTOMERS
    assert len({o["order_id"] for o in orders}) == len(orders)
    start, end = datetime(2024, 3, 1).astimezone(), datetime(2026, 3, 1).astimezone()
    for o in orders:
        assert o["customer_id"] in ids
        assert start <= parse_time(o["ordered_at"]) < end
        items = json.loads(o["items"])
        total = sum(round(i["price"] * 100) * i["qty"] for i in items)
        assert total == round(float(o["amount"]) * 100), o
        assert {"sku", "category", "qty", "price"} == set(items[0])
    types = Counter(e["type"] for e in events)
    assert set(types) == {
        "email_sent", "email_delivered", "email_opened", "email_clicked", "email_bounced",
        "email_unsubscribed", "email_complained", "page_view", "product_view", "cart_add",
    }  # fmt: skip
    assert all("2024-02-29T23" < e["occurred_at"] < "2026-03-01" for e in events)
    for e in events[:5000]:
        assert e["customer_id"] in ids
        json.loads(e["properties"])
        parse_time(e["occurred_at"])
    views = [json.loads(e["properties"]) for e in events if e["type"] == "product_view"]
    assert all({"sku", "category"} <= set(v) for v in views)


def test_consent_and_profile_rates_are_realistic(shop: GeneratedShop) -> None:
    contacts = good_rows(shop, "contacts.csv")
    quit_ = {e["customer_id"] for e in good_rows(shop, "events.csv") if e["type"] in ("email_unsubscribed", "email_complained")}  # fmt: skip
    assert quit_ and all(
        c["email_consent"] == "false" for c in contacts if c["customer_id"] in quit_
    )
    share = {k: sum(c[k] == "true" for c in contacts) / len(contacts) for k in ("email_consent", "sms_consent", "push_consent")}  # fmt: skip
    assert 0.6 < share["email_consent"] < 0.72  # 70% at sign-up, minus unsubscribes
    assert 0.25 < share["sms_consent"] < 0.35 and 0.16 < share["push_consent"] < 0.24
    zones = Counter(c["timezone"] for c in contacts)
    assert {"Europe/Rome", "America/New_York", "Asia/Tokyo", "Australia/Sydney"} <= set(zones)
    assert 0.7 < sum(bool(c["birthday"]) for c in contacts) / len(contacts) < 0.9


def test_dirty_rows_are_about_the_share_asked_and_really_dirty(shop: GeneratedShop) -> None:
    records = rows(shop.dirty_rows_path)
    total_lines = shop.contacts_lines + shop.orders_lines + shop.events_lines
    assert 0.006 < len(records) / total_lines < 0.014
    kinds = Counter((r["file"], r["kind"]) for r in records)
    assert ("orders.csv", "duplicate") in kinds and ("orders.csv", "bad_amount") in kinds
    assert ("events.csv", "bad_json") in kinds and ("contacts.csv", "missing_customer_id") in kinds
    lines = {f: (shop.out_dir / f).read_text(encoding="utf-8").split("\n") for f in ("contacts.csv", "orders.csv", "events.csv")}  # fmt: skip
    for r in records:
        text = lines[r["file"]][int(r["line"]) - 1]
        fields = next(csv.reader([text]))
        columns = header_of(shop.out_dir / r["file"])
        value = fields[columns.index(r["field"])]
        assert value == r["value"], r
        kind = r["kind"]
        if kind == "bad_date":
            with pytest.raises(ValueError):
                datetime.fromisoformat(value)
        elif kind == "bad_amount":
            with pytest.raises(ValueError):
                float(value)
        elif kind.startswith("missing_"):
            assert value == ""
        elif kind == "bad_json":
            with pytest.raises(ValueError):
                json.loads(value)
        elif kind == "duplicate":
            previous = lines[r["file"]][: int(r["line"]) - 1]
            assert text in previous
        elif kind == "email_case_space":
            assert value != value.strip().lower() and "@" in value
        elif kind == "formula_name":
            assert value[0] in "=+-@"
        else:
            pytest.fail(f"undocumented kind {kind}")


def test_behaviour_has_one_time_buyers_and_seasons(shop: GeneratedShop) -> None:
    orders = good_rows(shop, "orders.csv")
    per_customer = Counter(o["customer_id"] for o in orders)
    one_time = sum(1 for c in per_customer.values() if c == 1) / len(per_customer)
    assert 0.25 < one_time < 0.6
    assert 0.7 < len(per_customer) / CUSTOMERS < 0.9  # about 20% prospects never buy
    by_month = Counter(
        parse_time(o["ordered_at"]).month for o in orders if o["ordered_at"] < "2025-03"
    )
    assert (by_month[11] + by_month[12]) / 61 > 1.4 * by_month[7] / 31
    bf = Counter(o["ordered_at"][:10] for o in orders)
    assert bf["2025-11-28"] > 2.0 * np.median(list(bf.values()))  # Black Friday


def test_machine_opens_are_flagged_and_within_seconds_of_delivery(shop: GeneratedShop) -> None:
    events = good_rows(shop, "events.csv")
    delivered: dict[str, datetime] = {}
    machine: list[tuple[str, datetime]] = []
    human: list[tuple[str, datetime]] = []
    for e in events:
        props = json.loads(e["properties"])
        if e["type"] == "email_delivered":
            delivered[props["message_id"]] = parse_time(e["occurred_at"])
        elif e["type"] == "email_opened":
            (machine if props.get("machine") else human).append(
                (props["message_id"], parse_time(e["occurred_at"]))
            )
    assert machine and human
    assert 0.2 < len(machine) / len(delivered) < 0.5
    lags = [(at - delivered[m]).total_seconds() for m, at in machine]
    assert all(0 < lag < 30 for lag in lags)
    human_lags = sorted((at - delivered[m]).total_seconds() for m, at in human)
    assert human_lags[len(human_lags) // 2] > 600


def test_lapsed_customers_open_less_and_visit_less(shop: GeneratedShop) -> None:
    truth = {r["customer_id"]: r for r in rows(shop.ground_truth_path)}
    dropped = {c: parse_time(t["dropped_out_at"]) for c, t in truth.items() if t["dropped_out_at"]}
    delivered: Counter[str] = Counter()
    opened: Counter[str] = Counter()
    visits: Counter[str] = Counter()
    recent = datetime(2025, 12, 1).astimezone()
    for e in good_rows(shop, "events.csv"):
        c, at = e["customer_id"], parse_time(e["occurred_at"])
        state = "lapsed" if c in dropped and at > dropped[c] else "alive"
        if e["type"] == "email_delivered":
            delivered[state] += 1
        elif e["type"] == "email_opened" and '"machine"' not in e["properties"]:
            opened[state] += 1
        elif e["type"] == "page_view" and at >= recent:
            visits["lapsed" if c in dropped else truth[c]["alive_at_end"]] += 1
    assert opened["lapsed"] / delivered["lapsed"] < 0.6 * opened["alive"] / delivered["alive"]
    buyers_alive = sum(1 for t in truth.values() if t["alive_at_end"] == "true")
    assert visits["lapsed"] / len(dropped) < 0.5 * visits["true"] / buyers_alive


def test_ground_truth_is_consistent_with_the_orders(shop: GeneratedShop) -> None:
    truth = {r["customer_id"]: r for r in rows(shop.ground_truth_path)}
    last: dict[str, datetime] = {}
    for o in good_rows(shop, "orders.csv"):
        at = parse_time(o["ordered_at"])
        last[o["customer_id"]] = max(at, last.get(o["customer_id"], at))
    dead = [t for t in truth.values() if t["dropped_out_at"]]
    assert dead
    for t in dead:
        assert t["alive_at_end"] == "false" and float(t["p_buy_30d_no_contact"]) == 0
        assert last[t["customer_id"]] == parse_time(t["dropped_out_at"])  # nothing after dropout
    alive = [t for t in truth.values() if t["alive_at_end"] == "true"]
    assert all(t["customer_id"] in last and float(t["p_buy_30d_no_contact"]) > 0 for t in alive)
    uplift = [float(t["p_buy_30d_if_contacted"]) - float(t["p_buy_30d_no_contact"]) for t in alive]
    assert sum(u < 0 for u in uplift) / len(uplift) == pytest.approx(
        0.05, abs=0.025
    )  # sleeping dogs
    assert np.median(uplift) > 0
    prospects = [t for t in truth.values() if t["customer_id"] not in last]
    assert all(t["dropout_p"] == "" and t["purchase_rate_per_year"] == "0.0000" for t in prospects)
    # Recently lapsed customers are likelier to come back than long-dead ones.
    end = datetime(2026, 3, 1).astimezone()
    recent = [
        float(t["p_buy_30d_if_contacted"])
        for t in dead
        if (end - parse_time(t["dropped_out_at"])).days < 90
    ]
    old = [
        float(t["p_buy_30d_if_contacted"])
        for t in dead
        if (end - parse_time(t["dropped_out_at"])).days > 365
    ]
    assert np.mean(recent) > 3 * np.mean(old)


def test_order_arrays_are_the_orders_of_the_files(shop: GeneratedShop) -> None:
    arrays = generate_orders_arrays(CUSTOMERS, 24, 7)
    orders = good_rows(shop, "orders.csv")
    assert len(arrays.customer) == len(orders)
    assert arrays.ordered_at.dtype == np.dtype("datetime64[s]")
    from_file = sorted((o["customer_id"], o["ordered_at"][:19], o["amount"]) for o in orders)
    from_arrays = sorted(
        (f"C{c + 1:07d}", str(t), f"{a:.2f}")
        for c, t, a in zip(
            arrays.customer.tolist(), arrays.ordered_at, arrays.amount.tolist(), strict=True
        )
    )
    assert from_file == from_arrays


def test_a_bgnbd_fit_recovers_the_generating_parameters() -> None:
    """Maximum likelihood BG/NBD (Fader, Hardie and Lee 2005) on the generated orders, in
    years, gives back r, alpha, a and b: the purchase process really is BG/NBD."""
    from scipy.optimize import minimize
    from scipy.special import betaln, gammaln

    n = 20_000
    arrays = generate_orders_arrays(n, 24, 5)
    years = (arrays.ordered_at - np.datetime64("2026-03-01T00:00:00")).astype(np.int64) / (365.25 * 86_400)  # fmt: skip
    order = np.lexsort((years, arrays.customer))
    who, when = arrays.customer[order], years[order]
    count = np.bincount(who, minlength=n)
    buyers = count > 0
    first = (np.cumsum(count) - count)[buyers]
    x = (count[buyers] - 1).astype(float)
    age = -when[first]  # T: from the first purchase to the end
    recency = when[first + count[buyers] - 1] - when[first]  # t_x

    def negative_log_likelihood(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(log_params)
        common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
        alive = betaln(a, b + x) + common - (r + x) * np.log(alpha + age)
        dropped = np.where(x > 0, betaln(a + 1, b + x - 1) + common - (r + x) * np.log(alpha + recency), -np.inf)  # fmt: skip
        return float(-np.logaddexp(alive, dropped).sum())

    fit = np.exp(minimize(negative_log_likelihood, np.zeros(4), method="L-BFGS-B").x)
    model = ShopModel()
    assert fit == pytest.approx([model.r, model.alpha, model.a, model.b], rel=0.2)


def test_mean_orders_scales_the_purchase_rates() -> None:
    arrays = generate_orders_arrays(5000, 24, 1, mean_orders=10)
    assert len(arrays.customer) / 5000 == pytest.approx(10, rel=0.12)


def test_mean_events_scales_sends_and_visits(tmp_path: Path) -> None:
    shop = generate_shop(tmp_path, customers=3000, months=12, seed=2, mean_events=6, dirty_share=0)
    assert shop.events / 3000 == pytest.approx(6, rel=0.15)
    assert shop.dirty_rows == 0 and shop.orders_lines == shop.orders


def test_bad_parameters_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(InvalidGeneratorParameters, match="months"):
        generate_shop(tmp_path, customers=10, months=0, seed=1)
    with pytest.raises(InvalidGeneratorParameters, match="mean orders"):
        generate_orders_arrays(10, 12, 1, mean_orders=0.5)


def test_cli_end_to_end_with_json_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["generate-shop", "--customers", "800", "--months", "6", "--seed", "5", "--out",
         str(tmp_path / "s"), "--end", "2025-12-01", "--dirty-share", "0.02", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["customers"] == 800 and summary["end"] == "2025-12-01"
    assert summary["start"] == "2025-06-01"
    assert summary["orders"] == len(good_rows_from(tmp_path / "s", "orders.csv"))
    params = json.loads((tmp_path / "s" / "parameters.json").read_text())
    assert params["seed"] == 5 and params["dirty_share"] == 0.02
    assert date.fromisoformat(summary["end"]) == date(2025, 12, 1)


def test_cli_prints_a_summary_and_refuses_bad_dates(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["generate-shop", "--customers", "300", "--months", "3", "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Wrote 300 contacts" in result.output and (tmp_path / "orders.csv").exists()
    bad = runner.invoke(app, ["generate-shop", "--out", str(tmp_path), "--end", "01/03/2026"])
    assert bad.exit_code == 2 and "expected a date like 2026-03-01" in bad.output


def good_rows_from(folder: Path, name: str) -> list[dict[str, str]]:
    skip = {int(r["line"]) for r in rows(folder / "dirty_rows.csv") if r["file"] == name and r["expect"] in ("reject", "duplicate")}  # fmt: skip
    with (folder / name).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return [r for r in reader if reader.line_num not in skip]
