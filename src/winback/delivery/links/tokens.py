"""Signed tokens for the links in messages: open pixel, click redirect, unsubscribe, feedback.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(secret_key, kind|payload)[:16])``.
The payload is compact JSON: ``m`` the outbox row (message) id, ``c`` the contact id and, for
clicks, ``i`` the link's index and ``u`` the destination URL, so that a click can only ever
redirect to the URL that was signed. Verification is constant-time (:func:`hmac.compare_digest`)
and any malformed or tampered token yields ``None``: callers answer 404 and reveal nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from winback.errors import InvalidSetting

Kind = Literal["o", "c", "u", "f"]
_SIG_BYTES = 16
_MAX_TOKEN = 8192


@dataclass(frozen=True, slots=True)
class LinkToken:
    """What a verified token says."""

    kind: Kind
    message: int
    contact: int
    index: int | None = None
    url: str | None = None


class TokenSigner:
    """Signs tokens with the workspace's ``secret_key`` and verifies them with it or with
    one of the ``previous`` keys (``previous_secret_keys``: links signed before a rotation
    keep working while their key is listed)."""

    def __init__(self, secret_key: str | None, previous: Sequence[str] = ()) -> None:
        if not secret_key:
            raise InvalidSetting(
                "secret_key is empty: tracking, unsubscribe and feedback links need it. "
                "Set WINBACK_SECRET_KEY or secret_key in winback.toml."
            )
        key = hashlib.sha256(b"winback-links\x00" + secret_key.encode()).digest()
        # Keyed once, one per kind having taken in its ``kind|``: a signature copies it
        # (the inner and outer hashes after the padded key) instead of keying HMAC again.
        keyed = hmac.new(key, digestmod="sha256")
        self._keyed: dict[str, hmac.HMAC] = {}
        for kind, prefix in _KIND_PREFIX.items():
            self._keyed[kind] = keyed.copy()
            self._keyed[kind].update(prefix)
        self._previous = tuple(TokenSigner(key) for key in previous if key and key != secret_key)

    def sign(
        self,
        kind: Kind,
        message: int,
        contact: int,
        *,
        index: int | None = None,
        url: str | None = None,
    ) -> str:
        text = f'{{"m":{int(message)},"c":{int(contact)}'
        if index is not None:
            text += f',"i":{int(index)}'
        if url is not None:
            text += ',"u":' + _json_string(url)
        body = (text + "}").encode()
        return f"{b64url(body)}.{b64url(_mac(self._keyed[kind], body))}"

    def verify(self, kind: Kind, token: str) -> LinkToken | None:
        """The token's content, or ``None`` when it is forged, tampered with or malformed."""
        keyed = self._keyed.get(kind)
        if keyed is None or len(token) > _MAX_TOKEN or token.count(".") != 1:
            return None
        body_part, sig_part = token.split(".")
        try:
            body = _unb64(body_part)
            sig = _unb64(sig_part)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(sig, _mac(keyed, body)) and not any(
            hmac.compare_digest(sig, _mac(former._keyed[kind], body)) for former in self._previous
        ):
            return None
        try:
            data = json.loads(body)
            message, contact = int(data["m"]), int(data["c"])
            index = data.get("i")
            url = data.get("u")
        except (ValueError, KeyError, TypeError):
            return None
        return LinkToken(
            kind,
            message,
            contact,
            int(index) if index is not None else None,
            str(url) if url is not None else None,
        )


_KIND_PREFIX = {kind: f"{kind}|".encode() for kind in ("o", "c", "u", "f")}
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _mac(keyed: hmac.HMAC, body: bytes) -> bytes:
    """The truncated HMAC of ``body`` after what ``keyed`` has taken in (left unchanged)."""
    mac = keyed.copy()
    mac.update(body)
    return mac.digest()[:_SIG_BYTES]


@lru_cache(maxsize=4096)
def _json_string(url: str) -> str:
    """A URL as a JSON string (the same links recur in every message of a campaign)."""
    return json.dumps(url, ensure_ascii=False)


def b64url(raw: bytes) -> str:
    """Unpadded base64url."""
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not text.replace("-", "").replace("_", "").isalnum():
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(raw) != text:  # non-canonical spellings (spare low bits) are tampering too
        raise ValueError("not canonical base64url")
    return raw
