"""Channels from the settings: SMTP for email, HTTP providers for SMS, push and webhooks, or
the dry-run file channel (``delivery_sink``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from winback.channels import CHANNEL_KINDS
from winback.config import Settings
from winback.delivery.channels import Channel
from winback.errors import InvalidSetting

#: The channels the file channel stands in for (webhooks: one per configured provider).
FILE_CHANNELS = tuple(kind.name for kind in CHANNEL_KINDS if not kind.per_provider)


def providers_configured(settings: Settings) -> bool:
    """Whether any real channel is set up: ``smtp_url``, ``sms_provider``, ``push_provider``
    or a webhook provider."""
    return bool(
        settings.smtp_url
        or settings.sms_provider
        or settings.push_provider
        or any(
            isinstance(table, Mapping) and table.get("channel") == "webhook"
            for table in settings.providers.values()
        )
    )


def sink_of(settings: Settings) -> str:
    """``file`` or ``channels``: what ``delivery_sink`` (``auto``: channels when any provider
    is configured) means for these settings."""
    if settings.delivery_sink == "auto":
        return "channels" if providers_configured(settings) else "file"
    return settings.delivery_sink


def build_channels(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    outbox: Path | None = None,
) -> dict[str, Channel]:
    """``email`` when ``smtp_url`` is set; ``sms`` / ``push`` from ``sms_provider`` /
    ``push_provider``; ``webhook:NAME`` for every webhook provider. When the sink is
    ``file`` (see :func:`sink_of`) every channel is instead the file channel writing into
    ``outbox`` (the workspace's ``outbox/`` folder): the worker applies consent,
    suppression, caps and quiet hours to it exactly as to the real ones."""
    from winback.delivery.channels.http import HttpChannel, load_providers

    providers = load_providers(settings.providers, environ)
    if sink_of(settings) == "file":
        if outbox is None:
            raise InvalidSetting("delivery_sink = file: no outbox folder for the file channel")
        from winback.flows.sinks import FileSink

        sink = FileSink(outbox)
        files: dict[str, Channel] = dict.fromkeys(FILE_CHANNELS, sink)
        for name, config in providers.items():
            if config.channel == "webhook":
                files[f"webhook:{name}"] = FileSink(outbox, config=config)
        return files
    channels: dict[str, Channel] = {}
    if settings.smtp_url:
        from winback.delivery.channels.smtp import SmtpChannel, parse_smtp_url

        channels["email"] = SmtpChannel(
            parse_smtp_url(settings.smtp_url),
            connections=settings.smtp_connections,
            rate_per_second=settings.smtp_rate_per_second,
            idle_seconds=settings.smtp_idle_seconds,
        )
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
