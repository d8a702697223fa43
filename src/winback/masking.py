"""Secrets masked by one rule wherever settings, URLs or messages are shown.

The rule: a value is secret when its key names a secret (:data:`SECRET_KEYS`: the secret
key, passwords, tokens, credentials; for HTTP headers :data:`SECRET_HEADERS`), and inside
any URL the password of its user information and the values of query parameters with a
secret name are secret. An environment reference such as ``${SMS_TOKEN}`` is shown as
written: it is where the secret lives, not the secret.

:func:`redact` applies the rule to settings (``winback config``); :func:`mask_text` applies
it to free text (error messages, log lines, tracebacks), also hiding every secret value it
was told about (:data:`KNOWN_SECRETS`, filled when settings are loaded); and
:class:`MaskingFilter`, set on a logging handler, passes each record through
:func:`mask_text`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

#: Key words naming secret values (a key ending in ``_file`` names a file and is shown).
SECRET_KEYS = ("password", "passwd", "secret", "token", "auth_value", "credential", "api_key")
#: HTTP header names whose values are secrets.
SECRET_HEADERS = ("auth", "token", "key", "cookie")
HIDDEN = "********"
#: Secrets shorter than this are not searched for in free text (they would mask ordinary
#: words); they are still hidden wherever their key says they are secret.
MIN_KNOWN_LENGTH = 6

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:'\"]*:)[^\s/@'\"]+@")
_SECRET_PARAM = re.compile(
    r"(?P<head>(?:^|[?&;\s])(?:[A-Za-z0-9_.-]*(?:"
    + "|".join((*SECRET_KEYS, "apikey"))
    + r")[A-Za-z0-9_.-]*|key)=)[^&#\s'\"]+",
    re.IGNORECASE,
)


def is_secret_key(key: str, *, header: bool = False) -> bool:
    """Whether a setting, provider or header key names a secret."""
    name = key.lower()
    if name.endswith("_file"):
        return False
    return any(word in name for word in (SECRET_HEADERS if header else SECRET_KEYS))


def redact(key: str, value: Any, *, header: bool = False) -> Any:
    """``value`` (found under ``key``) as plain data with every secret hidden."""
    if isinstance(value, dict):
        headers = key.lower() == "headers"
        return {str(k): redact(str(k), v, header=headers) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(key, v) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if is_secret_key(key, header=header):
        return value if env_reference(value) else HIDDEN
    return mask_url(value)


def secret_values(key: str, value: Any, *, header: bool = False) -> set[str]:
    """The secret strings :func:`redact` hides in ``value``, for searching free text."""
    found: set[str] = set()
    if isinstance(value, dict):
        headers = key.lower() == "headers"
        for k, v in value.items():
            found |= secret_values(str(k), v, header=headers)
    elif isinstance(value, list | tuple):
        for v in value:
            found |= secret_values(key, v)
    elif isinstance(value, str) and value:
        if is_secret_key(key, header=header) and not env_reference(value):
            found.add(value.removeprefix("Bearer ").strip())
        else:
            password = _url_password(value)
            if password:
                found.add(password)
    return {v for v in found if len(v) >= MIN_KNOWN_LENGTH}


def env_reference(value: str) -> bool:
    inner = value.removeprefix("Bearer ").strip()
    return inner.startswith("${") and inner.endswith("}")


def _url_password(value: str) -> str | None:
    """The password of a URL's user information (``user:password@host``, with or without
    a scheme), if any."""
    if "@" not in value or any(c.isspace() for c in value):
        return None
    try:
        return urlsplit(value if "://" in value else "//" + value).password
    except ValueError:
        return None


def mask_url(value: str) -> str:
    """``value`` with the password of a URL's user information and secret query
    parameters hidden; any other text unchanged."""
    password = _url_password(value)
    if password:
        head, _, tail = value.rpartition("@")
        value = head[: len(head) - len(password)] + HIDDEN + "@" + tail
    if "://" not in value:
        return value
    return _SECRET_PARAM.sub(lambda m: m["head"] + HIDDEN, value)


class KnownSecrets:
    """The secret values of the settings loaded in this process (thread-safe, additive)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            merged = set(self._values) | {v for v in values if len(v) >= MIN_KNOWN_LENGTH}
            # Longest first: a secret containing another is hidden whole.
            self._values = tuple(sorted(merged, key=len, reverse=True))

    def __iter__(self) -> Any:
        return iter(self._values)


KNOWN_SECRETS = KnownSecrets()


def mask_text(text: str, known: Iterable[str] | None = None) -> str:
    """``text`` with URL passwords, secret query parameters and every known secret value
    (``known``, else :data:`KNOWN_SECRETS`) hidden."""
    for secret in KNOWN_SECRETS if known is None else known:
        if secret in text:
            text = text.replace(secret, HIDDEN)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + HIDDEN + "@", text)
    if "=" in text:
        text = _SECRET_PARAM.sub(lambda m: m["head"] + HIDDEN, text)
    return text


class MaskingFilter(logging.Filter):
    """A handler filter that masks secrets in a record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


def mask_handlers(handlers: Iterable[logging.Handler]) -> None:
    """Set a :class:`MaskingFilter` on each handler (once)."""
    for handler in handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
