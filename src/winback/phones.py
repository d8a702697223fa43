"""Phone numbers in E.164 (``+393281234567``), with the ``phonenumbers`` library.

A number with a leading ``+`` (or ``00``) is read as international; any other in the
default region (the ``phone_region`` setting, an ISO 3166 code such as ``IT``). Spaces,
dots, dashes, brackets and a spreadsheet's leading apostrophe are ignored.
"""

from __future__ import annotations

import phonenumbers


class InvalidPhone(ValueError):
    """A text that is not a valid phone number; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def e164(text: str, region: str | None) -> str:
    """``text`` as an E.164 number; raises :class:`InvalidPhone`."""
    raw = text.strip().lstrip("'").strip()
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    if not raw.startswith("+") and not region:
        raise InvalidPhone(
            "no country code (+...) and no default region (set phone_region, e.g. IT)"
        )
    try:
        number = phonenumbers.parse(raw, None if raw.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number ({exc._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid phone number for its country")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
