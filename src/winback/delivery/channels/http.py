"""SMS, push and webhooks through one generic HTTP adapter (httpx), configured per provider
in ``winback.toml``::

    [providers.sms_gateway]
    channel = "sms"
    url = "https://sms.example.com/v1/messages"
    auth_header = "Authorization"
    auth_value = "Bearer ${SMS_TOKEN}"     # ${NAME}: read from the environment
    body = '{"to": {{ to|tojson }}, "text": {{ body|tojson }}}'
    success_codes = [200, 201, 202]

The ``body`` template is rendered in the Jinja sandbox (variables ``to``, ``body``,
``title``, ``url``, ``message_id``, ``contact``, ``data``) and must produce a JSON object;
``format = "form"`` sends it form-encoded instead. Presets fill in a provider's shape:

* ``preset = "twilio"``: the Messages API (``account_sid``, ``auth_token``, ``from``
  required);
* ``preset = "fcm"``: Firebase Cloud Messaging HTTP v1 (``POST
  https://fcm.googleapis.com/v1/projects/{project_id}/messages:send``, ``Authorization:
  Bearer <access token>`` minted from ``service_account_file`` (a Google service account key;
  needs ``winback[fcm]``), or taken from ``access_token`` or ``access_token_file``, body
  ``{"message": {"token", "notification": {"title", "body"}, "data"}}``); a 404
  ``UNREGISTERED`` answer is a bounce: the device token is suppressed and removed;
* ``preset = "webpush-gateway"``: a plain JSON push gateway (``{"to", "title", "body",
  "url", "data", "message_id"}``), where 404 and 410 (Gone) mean the subscription is dead.

A response whose code is in ``bounce_codes`` (and, when ``bounce_match`` is set, whose body
contains it) is a *bounce*: the address is permanently unreachable.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from winback.delivery.channels import (
    OnResult,
    OutboundMessage,
    SendResult,
    StopSignal,
    gated,
    send_each,
)
from winback.delivery.channels.oauth import ServiceAccountTokens, TokenError
from winback.delivery.channels.ratelimit import TokenBucket, backoff
from winback.errors import InvalidSetting

TWILIO_URL = "https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Messages.json"
TWILIO_BODY = '{"To": {{ to|tojson }}, "From": {{ sender|tojson }}, "Body": {{ body|tojson }}}'
FCM_URL = "https://fcm.googleapis.com/v1/projects/{project_id}/messages:send"
FCM_BODY = (
    '{"message": {"token": {{ to|tojson }}, '
    '"notification": {"title": {{ title|tojson }}, "body": {{ body|tojson }}}, '
    '"data": {{ string_data|tojson }}}}'
)
WEBPUSH_BODY = (
    '{"to": {{ to|tojson }}, "title": {{ title|tojson }}, "body": {{ body|tojson }}, '
    '"url": {{ url|tojson }}, "data": {{ data|tojson }}, "message_id": {{ message_id|tojson }}}'
)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ProviderConfig(BaseModel):
    """One HTTP provider (a ``[providers.NAME]`` table)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    channel: Literal["sms", "push", "webhook"]
    url: str | None = None
    method: Literal["POST", "PUT"] = "POST"
    preset: Literal["twilio", "fcm", "webpush-gateway"] | None = None
    format: Literal["json", "form"] = "json"
    body: str | None = None
    auth_header: str | None = None
    auth_value: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    success_codes: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    retry_codes: list[int] = Field(default_factory=lambda: [408, 425, 429, 500, 502, 503, 504])
    bounce_codes: list[int] = Field(default_factory=list)
    bounce_match: str | None = None
    max_attempts: int = Field(3, ge=1)
    retry_base_seconds: float = Field(0.5, ge=0)
    timeout: float = Field(10.0, gt=0)
    connections: int = Field(4, ge=1, le=64)
    rate_per_second: float = Field(0.0, ge=0)
    id_field: str | None = None
    consent: bool | None = None  # None: sms/push need consent, webhooks do not
    account_sid: str | None = None
    auth_token: str | None = None
    sender: str | None = Field(None, alias="from")
    project_id: str | None = None
    access_token: str | None = None
    access_token_file: str | None = None
    service_account_file: str | None = None

    def resolved(self, environ: Mapping[str, str]) -> ProviderConfig:
        """Environment references expanded and the preset applied."""

        def expand(value: str | None) -> str | None:
            if value is None:
                return None
            return _ENV.sub(lambda m: environ.get(m.group(1), ""), value)

        data = self.model_dump(by_alias=False)
        for key in (
            "url",
            "auth_value",
            "account_sid",
            "auth_token",
            "sender",
            "project_id",
            "access_token",
            "access_token_file",
            "service_account_file",
        ):
            data[key] = expand(data[key])
        data["headers"] = {k: expand(v) or "" for k, v in self.headers.items()}
        if self.preset == "twilio":
            if not (data["account_sid"] and data["auth_token"] and data["sender"]):
                raise InvalidSetting(
                    "providers: the twilio preset needs account_sid, auth_token and from"
                )
            data["url"] = (data["url"] or TWILIO_URL).replace("{account_sid}", data["account_sid"])
            data["format"] = "form"
            data["body"] = data["body"] or TWILIO_BODY
            data["auth_header"] = "Authorization"
            token = base64.b64encode(
                f"{data['account_sid']}:{data['auth_token']}".encode()
            ).decode()
            data["auth_value"] = f"Basic {token}"
            data["success_codes"] = [200, 201]
            data["id_field"] = data["id_field"] or "sid"
        if self.preset == "fcm":
            if not (data["project_id"] or data["url"]):
                raise InvalidSetting("providers: the fcm preset needs project_id (or a url)")
            if not (
                data["service_account_file"]
                or data["access_token"]
                or data["access_token_file"]
                or data["auth_value"]
            ):
                raise InvalidSetting(
                    "providers: the fcm preset needs service_account_file (the service "
                    "account's JSON key), access_token (e.g. '${FCM_ACCESS_TOKEN}') or "
                    "access_token_file (a file an external job keeps fresh)"
                )
            data["url"] = (data["url"] or FCM_URL).replace("{project_id}", data["project_id"] or "")
            data["body"] = data["body"] or FCM_BODY
            data["success_codes"] = [200]
            data["bounce_codes"] = data["bounce_codes"] or [404]
            data["bounce_match"] = data["bounce_match"] or "UNREGISTERED"
            data["id_field"] = data["id_field"] or "name"
        if self.preset == "webpush-gateway":
            data["body"] = data["body"] or WEBPUSH_BODY
            data["bounce_codes"] = data["bounce_codes"] or [404, 410]
        if data["access_token"] and not data["auth_value"]:
            data["auth_header"] = data["auth_header"] or "Authorization"
            data["auth_value"] = f"Bearer {data['access_token']}"
        if not data["url"]:
            raise InvalidSetting("providers: a provider needs a url (or a preset)")
        return ProviderConfig.model_validate(data)

    @property
    def needs_consent(self) -> bool:
        return self.channel != "webhook" if self.consent is None else self.consent


#: The longest Retry-After slept in line; a longer one ends the attempts and the message
#: waits in the outbox (``not_before``) until the time the provider asked for.
RETRY_AFTER_CAP = 30.0


def _retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds of a ``Retry-After`` header (429 / 503): a number of seconds or an HTTP date
    (RFC 9110, 10.2.3); None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if seconds >= 0 else None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def load_providers(
    raw: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str] | None = None
) -> dict[str, ProviderConfig]:
    env = os.environ if environ is None else environ
    out: dict[str, ProviderConfig] = {}
    for name, table in raw.items():
        try:
            out[name] = ProviderConfig.model_validate(dict(table)).resolved(env)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])} = {e.get('input')!r}: {e['msg']}"
                for e in exc.errors()
            )
            raise InvalidSetting(f"providers.{name}: {problems}") from None
        except InvalidSetting as exc:
            raise InvalidSetting(str(exc).replace("providers:", f"providers.{name}:")) from None
    return out


class HttpChannel:
    """Sends through one HTTP provider, ``connections`` requests at a time."""

    def __init__(
        self, name: str, config: ProviderConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        from winback.delivery.messages.templates import make_environment

        self.name, self.config = name, config
        self.bucket = TokenBucket(config.rate_per_second)
        self.client = httpx.Client(timeout=config.timeout, transport=transport)
        self._body = make_environment().from_string(config.body) if config.body else None
        self._pool = ThreadPoolExecutor(config.connections, thread_name_prefix=f"winback-{name}")
        self._token_cache: tuple[float, str] | None = None
        self.tokens = (
            ServiceAccountTokens(config.service_account_file, client=self.client)
            if config.service_account_file
            else None
        )

    def request_for(self, msg: OutboundMessage) -> dict[str, Any]:
        """The httpx request arguments for one message."""
        values: dict[str, Any] = {
            "to": msg.to,
            "message_id": msg.message_id,
            "sender": self.config.sender or "",
        }
        values.update(msg.fields)
        values.setdefault("data", {})
        values.setdefault("contact", {})
        for key in ("body", "title", "url"):
            values.setdefault(key, "")
        # FCM (and others) want string values only in "data".
        string_data = {str(k): _as_text(v) for k, v in (values["data"] or {}).items()}
        if values["url"]:
            string_data.setdefault("url", str(values["url"]))
        if msg.message_id:
            string_data.setdefault("message_id", msg.message_id)
        values["string_data"] = string_data
        if self._body is not None:
            try:
                document = json.loads(self._body.render(values))
            except ValueError as exc:
                raise ValueError(
                    f"providers.{self.name}.body is not JSON once rendered: {exc}"
                ) from None
        else:
            document = {k: v for k, v in values.items() if k != "sender"}
        headers = {"Idempotency-Key": msg.message_id or msg.dedup_key, **self.config.headers}
        if self.config.auth_header and self.config.auth_value:
            headers[self.config.auth_header] = self.config.auth_value
        if self.config.access_token_file:
            headers[self.config.auth_header or "Authorization"] = f"Bearer {self._file_token()}"
        if self.tokens is not None:
            headers[self.config.auth_header or "Authorization"] = f"Bearer {self.tokens.token()}"
        request: dict[str, Any] = {
            "method": self.config.method,
            "url": self.config.url,
            "headers": headers,
        }
        if self.config.format == "form":
            request["data"] = {k: str(v) for k, v in document.items()}
        else:
            request["json"] = document
        return request

    def send(self, message: OutboundMessage) -> str | None:
        """:class:`~winback.ports.Channel`: send now; raises DeliveryFailed when refused."""
        return self.send_one(message).raise_or_id()

    def submit(self, msg: OutboundMessage) -> Future[SendResult]:
        return self._pool.submit(self.send_one, msg)

    def send_many(
        self,
        messages: Sequence[OutboundMessage | None],
        on_result: OnResult | None = None,
        stop: StopSignal | None = None,
    ) -> list[SendResult | None]:
        """Send a batch ``connections`` requests at a time, reporting each outcome to
        ``on_result`` before that thread makes another request (see
        :func:`~winback.delivery.channels.send_each`); None for a message not sent."""
        return send_each(
            self._pool, self.config.connections, messages, gated(self.send_one), on_result, stop
        )

    def send_one(self, msg: OutboundMessage) -> SendResult:
        try:
            request = self.request_for(msg)
        except TokenError as exc:  # no access token for now: the outbox tries again later
            return SendResult("retry", str(exc))
        except ValueError as exc:
            return SendResult("failed", str(exc))
        last = SendResult("retry", "not tried")
        waited = False  # slept the provider's Retry-After already: no backoff on top
        for attempt in range(1, self.config.max_attempts + 1):
            if attempt > 1 and not waited:
                time.sleep(backoff(attempt - 1, self.config.retry_base_seconds, cap=30.0))
            waited = False
            self.bucket.acquire()
            try:
                response = self.client.request(**request)
            except httpx.HTTPError as exc:
                last = SendResult("retry", f"{type(exc).__name__}: {exc}")
                continue
            code = response.status_code
            if code in self.config.success_codes:
                return SendResult("sent", str(code), self._provider_id(response), code)
            detail = f"{code} {response.text[:200]}"
            if code == 401 and self.tokens is not None:  # revoked early: mint anew next time
                self.tokens.forget()
                return SendResult("retry", detail, code=code)
            if code in self.config.bounce_codes and (
                not self.config.bounce_match or self.config.bounce_match in response.text
            ):
                return SendResult("bounced", detail, code=code)
            if code in self.config.retry_codes:
                wait = _retry_after(response)
                last = SendResult("retry", detail, code=code, retry_after=wait)
                if wait is not None and wait > RETRY_AFTER_CAP:
                    return last  # the outbox holds it until then
                if wait is not None and attempt < self.config.max_attempts:
                    time.sleep(wait)
                    waited = True
                continue
            return SendResult("failed", detail, code=code)
        return last

    def _file_token(self) -> str:
        """The access token in ``access_token_file``, re-read when the file changes (an
        external job refreshes it; FCM tokens last an hour)."""
        path = self.config.access_token_file or ""
        try:
            mtime = os.stat(path).st_mtime
            if self._token_cache is None or self._token_cache[0] != mtime:
                with open(path, encoding="utf-8") as fh:
                    self._token_cache = (mtime, fh.read().strip())
        except OSError as exc:
            raise ValueError(
                f"providers.{self.name}.access_token_file {path!r}: cannot read: "
                f"{exc.strerror or exc}"
            ) from None
        return self._token_cache[1]

    def _provider_id(self, response: httpx.Response) -> str | None:
        if not self.config.id_field:
            return None
        try:
            value = response.json().get(self.config.id_field)
        except (ValueError, AttributeError):
            return None
        return None if value is None else str(value)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
