"""Channels from the settings: SMTP for email, HTTP providers for SMS, push and webhooks."""

from __future__ import annotations

from collections.abc import Mapping

from winback.config import Settings
from winback.delivery.channels import Channel
from winback.errors import InvalidSetting


def build_channels(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, Channel]:
    """``email`` when ``smtp_url`` is set; ``sms`` / ``push`` from ``sms_provider`` /
    ``push_provider``; ``webhook:NAME`` for every webhook provider."""
    from winback.delivery.channels.http import HttpChannel, load_providers

    channels: dict[str, Channel] = {}
    if settings.smtp_url:
        from winback.delivery.channels.smtp import SmtpChannel, parse_smtp_url

        channels["email"] = SmtpChannel(
            parse_smtp_url(settings.smtp_url),
            connections=settings.smtp_connections,
            rate_per_second=settings.smtp_rate_per_second,
            idle_seconds=settings.smtp_idle_seconds,
        )
    providers = load_providers(settings.providers, environ)
    for setting, channel in (("sms_provider", "sms"), ("push_provider", "push")):
        name = getattr(settings, setting)
        if not name:
            continue
        if name not in providers:
            raise InvalidSetting(
                f"{setting} = {name!r}: no [providers.{name}] table "
                f"(providers: {', '.join(providers) or 'none'})"
            )
        if providers[name].channel != channel:
            raise InvalidSetting(
                f"{setting} = {name!r}: that provider is for {providers[name].channel}"
            )
        channels[channel] = HttpChannel(name, providers[name])
    for name, config in providers.items():
        if config.channel == "webhook":
            channels[f"webhook:{name}"] = HttpChannel(name, config)
    return channels
