"""The ``sector`` setting: the default inactivity window of a shop's trade."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import T0
from tests.flows.helpers import add_order, entries, make_contacts, set_contact
from winback.config import load_settings
from winback.errors import InvalidSetting
from winback.sectors import SECTORS
from winback.workspace import Workspace

NO_PURCHASE = "Customers - No Purchase last 90d"


def test_sector_sets_the_window_unless_dormant_days_is_given(tmp_path: Path) -> None:
    assert load_settings(tmp_path, {}).dormant_days == 90
    (tmp_path / "winback.toml").write_text('sector = "fashion"\n')
    assert load_settings(tmp_path, {}).dormant_days == 180
    assert load_settings(tmp_path, {"WINBACK_SECTOR": "grocery"}).dormant_days == 30
    assert load_settings(tmp_path, {"WINBACK_DORMANT_DAYS": "45"}).dormant_days == 45
    (tmp_path / "winback.toml").write_text('sector = "fashion"\ndormant_days = 60\n')
    assert load_settings(tmp_path, {}).dormant_days == 60
    with pytest.raises(InvalidSetting, match="sector = 'toys'.*grocery"):
        load_settings(tmp_path, {"WINBACK_SECTOR": "toys"})


def test_every_sector_window_is_at_least_its_repurchase_interval() -> None:
    for name, sector in SECTORS.items():
        assert sector.repurchase_days <= sector.dormant_days <= 2.2 * sector.repurchase_days, name


def test_a_grocery_shop_counts_a_customer_dormant_after_a_month(workspace: Workspace) -> None:
    (forty_days,) = make_contacts(workspace, 1, at=T0 - timedelta(days=400))
    add_order(workspace, forty_days, at=T0 - timedelta(days=40))
    grocery = load_settings(None, {"WINBACK_SECTOR": "grocery"}).dormant_days
    shop = workspace.replace(
        settings=workspace.settings.model_copy(update={"dormant_days": grocery})
    )
    shop.segments.refresh(T0)
    assert [m["contact_id"] for m in shop.segments.members(NO_PURCHASE)] == [forty_days]
    workspace.segments.refresh(T0)  # no sector: the seed's 90 days
    assert workspace.segments.members(NO_PURCHASE) == []


def test_a_sector_makes_one_order_customers_overdue(workspace: Workspace) -> None:
    single_100, single_50, analysed = make_contacts(workspace, 3, at=T0 - timedelta(days=400))
    add_order(workspace, single_100, at=T0 - timedelta(days=100))
    add_order(workspace, single_50, at=T0 - timedelta(days=50))
    add_order(workspace, analysed, at=T0 - timedelta(days=100))
    set_contact(workspace, analysed, days_overdue=-10.0)  # the cadence model says not yet
    beauty = workspace.replace(settings=workspace.settings.model_copy(update={"sector": "beauty"}))
    workspace.flows.add("cadence-retention", now=T0)
    # Without a sector one order says nothing about a customer's cadence.
    workspace.flows.tick(T0 + timedelta(hours=1))
    assert entries(workspace, "cadence-retention") == {}
    # Beauty repurchases every 60 days: the one-order customer of 100 days ago is overdue.
    beauty.flows.tick(T0 + timedelta(days=1, hours=1))
    assert set(entries(beauty, "cadence-retention")) == {single_100}
