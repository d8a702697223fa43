"""Value conversions shared by the presets."""

from __future__ import annotations

import re

_SPACED_OFFSET = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) ([+-]\d{2}:?\d{2})$"
)
_UTC_SUFFIX = re.compile(r"^(.*\d) (UTC|GMT|Z)$")


def timestamp(text: str) -> str:
    """A platform's time as ISO 8601: ``2024-01-15 10:22:33 -0500`` (Shopify) becomes
    ``2024-01-15 10:22:33-05:00``, ``... UTC`` becomes ``...+00:00``; anything else is left
    for the canonical parser to accept or reject."""
    text = text.strip()
    if len(text) == 25 and text[19] == " " and text[20] in "+-" and text[21:25].isdigit():
        return text[:19] + text[20:23] + ":" + text[23:]  # Shopify's form, the common case
    m = _SPACED_OFFSET.match(text)
    if m:
        offset = m.group(2)
        if ":" not in offset:
            offset = offset[:3] + ":" + offset[3:]
        return m.group(1) + offset
    m = _UTC_SUFFIX.match(text)
    if m:
        return m.group(1) + "+00:00"
    return text


def phone(text: str) -> str:
    """A phone number as exported: the leading apostrophe spreadsheet exports add to keep
    ``+39...`` from being read as a formula is removed."""
    return text.strip().lstrip("'").strip()


def yes_no(text: str) -> str:
    """A platform's consent word as ours (``yes``/``no``; empty: not stated)."""
    word = text.strip().lower()
    if word in ("yes", "true", "1", "subscribed", "y"):
        return "yes"
    if word in ("no", "false", "0", "unsubscribed", "not_subscribed", "n", "cleaned"):
        return "no"
    return ""
