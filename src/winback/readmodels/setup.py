"""The setup page: what is configured and what is missing, by the checks of ``winback
doctor`` (:mod:`winback.setup_checks`), with every value shown under the masking rule of
``winback config`` (:func:`winback.config.redacted`): a secret is never shown, only whether
it is set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from winback.config import Settings, redacted
from winback.setup_checks import Finding, configuration_checks

#: Settings shown on the page, by group: (group, setting keys).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Shop", ("shop_name", "shop_url", "currency", "timezone", "sector")),
    ("Email", ("smtp_url", "delivery_sink", "mail_from", "mail_from_name", "unsubscribe_mailto")),
    ("Links", ("base_url", "secret_key", "previous_secret_keys")),
    ("Providers", ("sms_provider", "push_provider", "webhook_provider", "providers")),
    ("Shop webhooks", ("shopify_webhook_secret", "woocommerce_webhook_secret")),
    ("Store", ("database_url",)),
)
#: Settings whose value is never shown, only whether it is set.
PRESENCE_ONLY = frozenset(
    {"secret_key", "previous_secret_keys", "shopify_webhook_secret", "woocommerce_webhook_secret"}
)


@dataclass(frozen=True)
class SettingRow:
    key: str
    shown: str  # the value with secrets masked, or "set" / "not set"
    is_set: bool


@dataclass(frozen=True)
class SetupView:
    groups: list[tuple[str, list[SettingRow]]]
    findings: list[Finding]

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]


def _shown(key: str, value: Any) -> tuple[str, bool]:
    is_set = value not in (None, "", [], {})
    if key in PRESENCE_ONLY:
        count = f" ({len(value)})" if isinstance(value, list) and value else ""
        return ("set" + count if is_set else "not set"), is_set
    if key == "database_url" and not is_set:
        return "the embedded SQLite file winback.db", True
    if key == "providers":
        names = ", ".join(sorted(value)) if value else ""
        return (names or "none"), is_set
    return (str(value) if is_set else "not set"), is_set


def setup_view(settings: Settings) -> SetupView:
    """The grouped settings (masked) and the checks that need no network."""
    values = redacted(settings)
    groups = [
        (title, [SettingRow(k, *_shown(k, values.get(k))) for k in keys]) for title, keys in GROUPS
    ]
    return SetupView(groups, configuration_checks(settings))


def providers(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each provider's settings, masked."""
    masked: dict[str, dict[str, Any]] = redacted(settings).get("providers", {})
    return masked
