"""Access tokens minted from a Google service account (OAuth 2.0 JWT bearer grant, RFC 7523),
for Firebase Cloud Messaging HTTP v1: a JWT signed with the account's RSA key (RS256) is
exchanged at the account's ``token_uri`` for an access token that lasts an hour; the token is
kept and minted again a minute before it expires.

Signing needs the optional ``cryptography`` package (``pip install 'winback[fcm]'``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from winback.delivery.links.tokens import b64url
from winback.errors import InvalidSetting

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LIFETIME = 3600  # seconds a signed assertion is valid (Google's maximum)
REFRESH_MARGIN = 60  # mint a new token when the current one has less left than this


class TokenError(Exception):
    """The token endpoint refused or could not be reached (the message is retried)."""


class ServiceAccountTokens:
    """Access tokens for one service account key file (thread-safe: the channel's sending
    threads share one token)."""

    def __init__(
        self,
        key_file: str,
        *,
        scope: str = FCM_SCOPE,
        client: httpx.Client,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key_file = key_file
        self.scope = scope
        self.client = client
        self.clock = clock
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None  # (access token, expires at)
        self.minted = 0  # tokens obtained so far
        account = self._read(key_file)
        self.email = str(account["client_email"])
        self.token_uri = str(account.get("token_uri") or GOOGLE_TOKEN_URI)
        self._key = self._private_key(str(account["private_key"]))

    @staticmethod
    def _read(path: str) -> dict[str, Any]:
        where = f"providers: service_account_file {path!r}"
        try:
            account = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidSetting(f"{where}: cannot read: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise InvalidSetting(f"{where}: not JSON: {exc}") from None
        if not isinstance(account, dict):
            raise InvalidSetting(f"{where}: expected a JSON object (a service account key)")
        missing = [k for k in ("client_email", "private_key") if not account.get(k)]
        if missing:
            raise InvalidSetting(
                f"{where}: no {' and no '.join(missing)} (expected a service account key file "
                "downloaded from the Google Cloud console)"
            )
        return account

    def _private_key(self, pem: str) -> Any:
        try:
            from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
            from cryptography.hazmat.primitives.serialization import load_pem_private_key
        except ImportError:
            raise InvalidSetting(
                "providers: service_account_file needs the cryptography package: "
                "pip install 'winback[fcm]'"
            ) from None
        try:
            key = load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidSetting(
                f"providers: service_account_file {self.key_file!r}: private_key is not a "
                f"PEM private key: {exc}"
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise InvalidSetting(
                f"providers: service_account_file {self.key_file!r}: private_key is not RSA"
            )
        return key

    def assertion(self, now: float) -> str:
        """The signed JWT (RS256) that asks for a token."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {"alg": "RS256", "typ": "JWT"}
        claims = {
            "iss": self.email,
            "scope": self.scope,
            "aud": self.token_uri,
            "iat": int(now),
            "exp": int(now) + LIFETIME,
        }
        signing_input = ".".join(
            b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    def forget(self) -> None:
        """Drop the current token (the provider refused it): the next send mints one."""
        with self._lock:
            self._token = None

    def token(self) -> str:
        """A valid access token, minted when there is none or it is about to expire."""
        with self._lock:
            now = self.clock()
            if self._token is not None and self._token[1] - now > REFRESH_MARGIN:
                return self._token[0]
            try:
                response = self.client.post(
                    self.token_uri,
                    data={"grant_type": JWT_GRANT, "assertion": self.assertion(now)},
                )
            except httpx.HTTPError as exc:
                raise TokenError(f"token endpoint: {type(exc).__name__}: {exc}") from None
            if response.status_code != 200:
                raise TokenError(
                    f"token endpoint answered {response.status_code}: {response.text[:200]}"
                )
            try:
                answer = response.json()
                access, lifetime = str(answer["access_token"]), float(answer.get("expires_in", 0))
            except (ValueError, KeyError, TypeError):
                raise TokenError(
                    f"token endpoint: no access_token in its answer: {response.text[:200]}"
                ) from None
            self._token = (access, now + lifetime)
            self.minted += 1
            return access
