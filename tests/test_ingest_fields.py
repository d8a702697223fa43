"""Property tests for the import field parsers: round trips, never crash, garbage rejected
with a reason."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winback.ingest import fields
from winback.ingest.fields import FieldError
from winback.ingest.readers import sniff_delimiter, sniff_encoding
from winback.ingest.rejects import FORMULA_STARTS, formula_safe

ROME = ZoneInfo("Europe/Rome")
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
instants = st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(2199, 12, 30), timezones=offsets
)
PARSERS = [
    lambda v: fields.timestamp(v, ROME),
    fields.day,
    fields.decimal,
    fields.boolean,
    fields.json_object,
    fields.items,
    fields.email,
    fields.currency,
    fields.zone,
    fields.text,
]


@given(instants, st.sampled_from(["T", " "]))
def test_timestamp_round_trip_with_offset(value: datetime, sep: str) -> None:
    parsed = fields.timestamp(value.isoformat(sep), ROME)
    assert parsed == value and parsed is not None and parsed.tzinfo is UTC


@given(st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2199, 1, 1)))
def test_timestamp_without_offset_is_read_in_the_workspace_zone(value: datetime) -> None:
    parsed = fields.timestamp(value.isoformat(), ROME)
    # A wall time the zone shows twice (clocks going back) is read as its first occurrence:
    # the text carries no ``fold``.
    assert parsed == value.replace(tzinfo=ROME, fold=0).astimezone(UTC)


def test_bare_date_is_midnight_in_the_zone() -> None:
    assert fields.timestamp("2024-07-01", ROME) == datetime(2024, 6, 30, 22, tzinfo=UTC)
    assert fields.timestamp("2024-07-01T12:00:00Z", ROME) == datetime(2024, 7, 1, 12, tzinfo=UTC)


@given(st.dates(min_value=date(1850, 1, 1)))
def test_date_round_trip(value: date) -> None:
    assert fields.day(value.isoformat()) == value


@given(
    st.decimals(
        min_value=Decimal("-99999999999"),
        max_value=Decimal("99999999999"),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_decimal_round_trip(value: Decimal) -> None:
    assert fields.decimal(str(value)) == value


@given(st.sampled_from(sorted(fields.TRUE_WORDS | fields.FALSE_WORDS)), st.booleans())
def test_boolean_words_any_case(word: str, upper: bool) -> None:
    expected = word in fields.TRUE_WORDS
    assert fields.boolean(f" {word.upper() if upper else word} ") is expected


@given(
    st.text(min_size=1).filter(
        lambda s: s.strip().lower() not in fields.TRUE_WORDS | fields.FALSE_WORDS and s.strip()
    )
)
def test_boolean_garbage_is_rejected_with_a_reason(value: str) -> None:
    with pytest.raises(FieldError) as err:
        fields.boolean(value)
    assert "yes/no" in err.value.reason


@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4))
def test_json_object_round_trip(value: dict[str, object]) -> None:
    import json

    assert fields.json_object(json.dumps(value)) == value


@given(st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none(), st.binary()))
def test_parsers_never_crash(value: object) -> None:
    for parse in PARSERS:
        try:
            parse(value)
        except FieldError as err:
            assert err.reason


@given(st.text(alphabet="abcxyz!?#", min_size=1))
def test_garbage_timestamps_and_amounts_are_rejected(value: str) -> None:
    with pytest.raises(FieldError, match="ISO 8601"):
        fields.timestamp(value, ROME)
    with pytest.raises(FieldError, match="number"):
        fields.decimal(value)


def test_amount_with_decimal_comma_explains() -> None:
    with pytest.raises(FieldError, match="use . as the decimal separator"):
        fields.decimal("12,50")


@given(st.text())
def test_formula_safe_never_starts_a_formula_and_keeps_the_text(value: str) -> None:
    safe = formula_safe(value)
    assert not safe.startswith(FORMULA_STARTS)
    assert safe == value or safe == "'" + value


def test_formula_cells_are_prefixed() -> None:
    assert formula_safe('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert formula_safe("@SUM(A1)") == "'@SUM(A1)"
    assert formula_safe("-2") == "'-2"
    assert formula_safe("plain") == "plain"


def test_encoding_sniffing() -> None:
    assert sniff_encoding("\ufeffcustomer_id\nc1\n".encode()) == "utf-8-sig"
    assert sniff_encoding("name\nZoë\n".encode()) == "utf-8"
    assert sniff_encoding("name\nZoë\nRenée\n".encode("cp1252")) == "cp1252"
    # mostly UTF-8 with one stray latin-1 byte: stays UTF-8 (that row is rejected)
    assert sniff_encoding("Zoë,Renée\n".encode() + b"caf\xe9\n") == "utf-8"


@pytest.mark.parametrize(
    ("header", "expected"),
    [("a,b,c", ","), ("a;b;c", ";"), ("a\tb\tc", "\t"), ("a|b|c", "|"), ("single", ",")],
)
def test_delimiter_sniffing(header: str, expected: str) -> None:
    assert sniff_delimiter(header) == expected
