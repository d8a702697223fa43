"""What a workspace needs before it sends real email, checked (``winback doctor``) and
enforced (``winback run`` / ``serve`` refuse to hand email to a relay outside this machine
while the links in it would point at a loopback address, which no recipient can open).

A *local* relay is one on this machine (``localhost``, ``127.0.0.0/8``, ``::1``): a test
sink such as MailHog or aiosmtpd, whose messages nobody outside reads, so it stays allowed.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from winback.config import Settings
from winback.errors import WinbackError

#: ``mail_from`` and ``shop_name`` as ``winback init`` leaves them when not told.
PLACEHOLDER_FROM = "winback@localhost"
PLACEHOLDER_SHOP = "Our shop"


class UnsafeSetup(WinbackError):
    """Email would leave this machine with links nobody can open."""


@dataclass
class Finding:
    """One check: ``ok``, what was found, and what to do when it is not ok."""

    check: str
    ok: bool
    detail: str
    fix: str = ""


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def links_are_loopback(settings: Settings) -> bool:
    return is_loopback_host(urlsplit(settings.base_url).hostname)


def smtp_host(settings: Settings) -> tuple[str, int] | None:
    if not settings.smtp_url:
        return None
    parts = urlsplit(settings.smtp_url)
    default = 465 if parts.scheme == "smtps" else 25
    return (parts.hostname or "", parts.port or default)


def relay_is_remote(settings: Settings) -> bool:
    """Whether email goes to an SMTP relay outside this machine."""
    if settings.delivery_sink == "file":
        return False
    found = smtp_host(settings)
    return found is not None and not is_loopback_host(found[0])


def check_can_send(settings: Settings) -> None:
    """Raise :class:`UnsafeSetup` when email would go to a remote relay with loopback links."""
    if relay_is_remote(settings) and links_are_loopback(settings):
        host = smtp_host(settings)
        raise UnsafeSetup(
            f"email would go to the relay {host[0] if host else ''} with tracking and "
            f"unsubscribe links to {settings.base_url}, which no recipient can open. Set "
            "base_url to the public URL of `winback serve` (winback.toml or "
            "WINBACK_BASE_URL), or send to a local test relay; `winback doctor` lists what "
            "else a send needs."
        )


def doctor(settings: Settings, *, timeout: float = 3.0) -> list[Finding]:
    """Every check, in order; the SMTP relay is contacted (a TCP connection, nothing sent)."""
    return [*configuration_checks(settings), smtp_check(settings, timeout=timeout)]


def configuration_checks(settings: Settings) -> list[Finding]:
    """The checks of :func:`doctor` that only read the settings (no network)."""
    found: list[Finding] = []
    public = not links_are_loopback(settings)
    found.append(
        Finding(
            "base_url",
            public,
            f"links point at {settings.base_url}",
            "" if public else "set base_url to the public https URL of `winback serve`",
        )
    )
    sender = settings.mail_from.strip()
    real_from = bool(sender) and sender != PLACEHOLDER_FROM and "@" in sender
    found.append(
        Finding(
            "mail_from",
            real_from,
            f"email is sent from {sender or '(nothing)'}",
            "" if real_from else "set mail_from to an address of the shop's domain",
        )
    )
    named = settings.shop_name.strip() not in ("", PLACEHOLDER_SHOP)
    found.append(
        Finding(
            "shop_name",
            named,
            f"emails are signed {settings.shop_name!r}",
            "" if named else "set shop_name (winback init --shop-name, or winback.toml)",
        )
    )
    found.append(
        Finding(
            "secret_key",
            bool(settings.secret_key),
            "links are signed" if settings.secret_key else "no secret_key: links cannot be signed",
            "" if settings.secret_key else "set WINBACK_SECRET_KEY (a long random string)",
        )
    )
    return found


def smtp_check(settings: Settings, *, timeout: float = 3.0) -> Finding:
    """Whether the SMTP relay of ``smtp_url`` answers as one (a TCP connection, and TLS for
    ``smtps``; nothing is sent)."""
    host = smtp_host(settings)
    if host is None:
        return Finding(
            "smtp",
            False,
            "no smtp_url: email goes to the file channel (nothing leaves)",
            "set smtp_url, e.g. smtp://user:password@smtp.example.com:587?starttls=true",
        )
    tls = urlsplit(settings.smtp_url or "").scheme == "smtps"
    try:
        with socket.create_connection(host, timeout=timeout) as raw:
            sock = (
                ssl.create_default_context().wrap_socket(raw, server_hostname=host[0])
                if tls
                else raw
            )
            greeting = sock.recv(512).decode("latin-1", "replace").strip()
    except OSError as exc:
        return Finding(
            "smtp",
            False,
            f"cannot reach {host[0]}:{host[1]} ({exc.strerror or exc})",
            "check the host and port of smtp_url and that this machine may connect to it",
        )
    ok = greeting.startswith("220")
    return Finding(
        "smtp",
        ok,
        f"{host[0]}:{host[1]} answers {greeting[:60]!r}",
        "" if ok else "the server did not greet as an SMTP relay (220)",
    )
