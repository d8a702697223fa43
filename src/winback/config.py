"""Settings: read once at startup into one typed object and passed down.

Sources, later ones winning: the defaults below, the workspace's ``winback.toml``, then
environment variables named ``WINBACK_<SETTING>`` (upper case). :func:`load_settings` takes
the environment as a mapping so that tests pass one in instead of patching ``os.environ``.

Every setting's name, default and meaning is in ``docs/settings.md``, generated from this
module by ``python -m winback.config`` and checked by the test suite.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from winback.errors import InvalidSetting
from winback.masking import (
    HIDDEN,
    KNOWN_SECRETS,
    is_secret_key,
    mask_text,
    redact,
    secret_values,
)
from winback.sectors import DEFAULT_DORMANT_DAYS, SECTORS

CONFIG_FILE = "winback.toml"
ENV_PREFIX = "WINBACK_"


class Settings(BaseModel):
    """All settings of a workspace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store. Empty: the embedded SQLite file `winback.db` "
        "in the workspace. For PostgreSQL: `postgresql+psycopg://user:pass@host/db`.",
    )
    store_busy_timeout: float = Field(
        10.0,
        ge=0,
        description="Seconds a write waits for the store's lock (SQLite busy timeout, "
        "PostgreSQL `lock_timeout`) before giving up: an HTTP write then answers 503 with "
        "`Retry-After`, and a one-click unsubscribe is recorded in the workspace's "
        "`inbox/unsubscribes.db` and applied as soon as the store is free.",
    )
    timezone: str = Field(
        "UTC",
        description="Time zone in which timestamps without an offset are read on import, and "
        "the default for contacts with no time zone of their own.",
    )
    currency: str = Field("USD", description="Currency of orders that name none.")
    phone_region: str | None = Field(
        None,
        description="Region (ISO 3166 code such as `IT`) of imported phone numbers written "
        "without a country code; numbers are stored in E.164 (`+39...`).",
    )
    sector: Literal[tuple(SECTORS)] | None = Field(  # type: ignore[valid-type]
        None,
        description="The shop's sector (" + ", ".join(SECTORS) + "). When `dormant_days` "
        "is not set, it is the sector's inactivity window (about twice its typical "
        "repurchase interval), and a customer with one order counts as `overdue` once "
        "that interval has passed (table and sources in docs/settings.md#sectors).",
    )
    dormant_days: int = Field(
        DEFAULT_DORMANT_DAYS,
        ge=1,
        description="The fixed inactivity window in days used by the default segments, the "
        "base summary and the base-health fixed rule: when not set, the `sector`'s window, "
        "else the seed's 90 days.",
    )
    import_batch_size: int = Field(
        50_000,
        ge=1,
        description="Rows parsed and written per step of an import (memory use grows with "
        "it). Each batch is one transaction on SQLite (fewer, larger transactions are much "
        "faster there), and for contacts and events; PostgreSQL orders imports group "
        "batches into units of `import_commit_rows`.",
    )
    import_commit_rows: int = Field(
        5_000_000,
        ge=1,
        description="PostgreSQL: rows of an orders import committed together. The batches "
        "of a unit are streamed into the store one by one (client memory does not grow "
        "with it) and their contacts updated once per unit instead of once per batch; a "
        "failed unit is rolled back whole. Smaller: contacts locked for less time at the end "
        "of each unit, more contact updates.",
    )
    import_cache_mb: int = Field(
        512,
        ge=2,
        description="SQLite page cache (MiB) of the connection while it imports. Each batch "
        "changes a page of every index ordered otherwise than the file for most of its rows; "
        "with a cache smaller than those pages, SQLite spills and re-reads them. Memory is "
        "only taken as pages are used, and given back after the import.",
    )
    flow_batch_size: int = Field(
        50_000,
        ge=1,
        description="Most flow entries the engine advances in one transaction (one "
        "set-based slice); `write_slice_ms` usually keeps slices smaller.",
    )
    write_slice_ms: int = Field(
        200,
        ge=10,
        description="Write lock a slice of a long pass (segment refresh, enrolment, flow "
        "steps) aims to hold, in milliseconds. Each slice is timed and the next one's row "
        "count scaled toward this budget; other writers (HTTP requests, other workers) get "
        "the store between slices. Larger: a little faster passes, longer waits for them.",
    )
    segments_cache_mb: int = Field(
        512,
        ge=2,
        description="SQLite page cache (MiB) of the connection while it refreshes segments. "
        "A first refresh writes a stint per contact and segment (millions); with a cache "
        "smaller than the pages it changes, SQLite spills and re-reads them. Memory is only "
        "taken as pages are used, and given back after the refresh.",
    )
    secret_key: str | None = Field(
        None,
        description="Key that signs tracking, unsubscribe and feedback links. `winback init` "
        "writes a random one into the workspace; set `WINBACK_SECRET_KEY` in production.",
    )
    previous_secret_keys: list[str] = Field(
        [],
        description="Former values of `secret_key`, still accepted when verifying links "
        "(never used to sign): after a rotation, links in messages already sent keep working "
        "while their key is listed here. Environment: a JSON array or comma-separated. See "
        "docs/security.md.",
    )
    base_url: str = Field(
        "http://127.0.0.1:8000",
        description="Public URL of `winback serve`, used in tracking, unsubscribe and "
        "feedback links.",
    )
    session_hours: int = Field(
        12,
        ge=1,
        le=24 * 90,
        description="How long a dashboard sign-in lasts, in hours, from the moment of signing "
        "in (not renewed by use); then the browser is asked to sign in again. The session "
        "cookie is signed with `secret_key`, HttpOnly, SameSite=Lax, and Secure when "
        "`base_url` is https.",
    )

    # -- analytics ---------------------------------------------------------------------------
    rfm_monetary: Literal["total", "average"] = Field(
        "total",
        description="RFM monetary value: `total` revenue per customer or `average` order value.",
    )
    rfm_table: dict[str, str] = Field(
        {},
        description="Overrides of the RFM segment table (docs/analytics.md): keys are R, F, M "
        'scores such as `"555"` or `"5*1"` (`*` = any score), values segment names; later '
        "keys win. Written as a `[rfm_table]` section in winback.toml.",
    )
    analytics_model: Literal["mbgnbd", "bgnbd", "pareto-nbd"] = Field(
        "mbgnbd",
        description="Purchase model behind P(alive), expected purchases and CLV: `mbgnbd` "
        "(default: one-order customers' P(alive) falls with time, so the P(alive) dormancy "
        "rule can count them), `bgnbd` (one-order customers are always alive) or `pareto-nbd`.",
    )
    alive_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="A customer whose P(alive) is below this counts as dormant under the "
        "cadence / P(alive) rule of the base-health report.",
    )
    clv_horizon_days: int = Field(
        365, ge=30, description="Horizon of the customer lifetime value, in days."
    )
    clv_discount_rate: float = Field(
        0.10, ge=0, lt=1, description="Annual discount rate applied to future revenue in CLV."
    )
    control_group_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of contacts withheld from every marketing flow as the workspace-wide "
        "control group (0: none). Membership is a stable hash of the contact id and "
        "`control_group_salt` (docs/results.md); raising the share keeps current members.",
    )
    control_group_salt: str = Field(
        "winback-control",
        min_length=1,
        description="Salt of the control group's hash: changing it draws a new control group.",
    )
    attribution_window_days: int = Field(
        5,
        ge=1,
        le=90,
        description="An order counts for a flow's message when the message was delivered at "
        "most this many days before it: the last such message of the flow gets it (last "
        "touch, per flow). 5 days, as Klaviyo's and Mailchimp's email defaults: a "
        "reminder's pull fades within days, and a longer window credits orders the "
        "contact would have placed anyway (docs/results.md).",
    )
    conversion_window_days: int = Field(
        30,
        ge=1,
        le=365,
        description="A contact converted when they placed an order within this many days of "
        "entering the flow; the same window for treatment, holdout, variants and the control "
        "group, so their rates compare (lift). 30 days: the horizon of the generator's "
        "response model, and a win-back flow's messages span about a week.",
    )
    results_snapshot_minutes: int = Field(
        10,
        ge=0,
        le=1440,
        description="The engine loop (`winback run`, `serve`) computes each flow's results at "
        "most this often and keeps them; the dashboard and the management API show the kept "
        "results with their age (0: none kept, every request counts them, which takes "
        "seconds at a million contacts). `winback flows results` always counts them.",
    )
    lift_max_relative_mde: float = Field(
        0.25,
        gt=0,
        description="Declared threshold of the lift figures: while the minimum detectable "
        "effect (80 % power, 5 % two-sided) exceeds this share of the control's value and the "
        'interval spans zero, the result reads "not enough data yet".',
    )
    winner_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Largest chance of declaring a false A/B winner, however often results are "
        "looked at (always-valid mSPRT, docs/results.md).",
    )
    winner_mixture_sd: float = Field(
        0.02,
        gt=0,
        description="Spread τ of the normal mixture over the difference of conversion rates in "
        "the winner rule: about the size of difference worth detecting (0.02 = 2 points).",
    )
    winner_min_contacts: int = Field(
        100, ge=1, description="Contacts every variant needs before a winner can be declared."
    )
    cluster_seed: int = Field(0, description="Random seed of K-Means (results are repeatable).")
    cluster_max_k: int = Field(
        8, ge=2, le=12, description="Largest number of clusters tried (k from 2 by silhouette)."
    )

    @model_validator(mode="before")
    @classmethod
    def _sector_window(cls, data: Any) -> Any:
        """Without an explicit ``dormant_days``, the sector's window."""
        if isinstance(data, dict) and data.get("dormant_days") is None:
            sector = SECTORS.get(str(data.get("sector")))
            if sector is not None:
                data = {**data, "dormant_days": sector.dormant_days}
        return data

    @field_validator("rfm_table")
    @classmethod
    def _rfm_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key, name in value.items():
            if len(key) != 3 or any(ch not in "12345*" for ch in key):
                raise ValueError(
                    f"key {key!r}: expected three characters, each 1-5 or * (R, F, M), "
                    "e.g. '555' or '5*1'"
                )
            if not isinstance(name, str) or not 1 <= len(name) <= 32:
                raise ValueError(f"{key!r} = {name!r}: expected a segment name of 1-32 chars")
        return value

    # -- delivery ------------------------------------------------------------------------
    smtp_url: str | None = Field(
        None,
        description="Where email goes: `smtp://user:password@host:port?starttls=true` or "
        "`smtps://user:password@host:465`. Empty: email goes to the file channel when no "
        "channel at all is configured (see `delivery_sink`), else it stays pending.",
    )
    delivery_sink: Literal["auto", "file", "channels"] = Field(
        "auto",
        description="Where the delivery worker sends: `channels` (the configured SMTP and HTTP "
        "providers), `file` (the dry-run file channel: one JSON file per message in "
        "`<workspace>/outbox/`, every send-time policy applied, nothing leaves the machine), "
        "`auto` (channels when any provider is configured, else file).",
    )
    mail_from: str = Field("winback@localhost", description="From address of emails.")
    mail_from_name: str = Field("", description="Display name of the From address.")
    smtp_connections: int = Field(
        4, ge=1, le=64, description="Parallel SMTP connections (each one reused for many emails)."
    )
    smtp_rate_per_second: float = Field(
        0.0,
        ge=0,
        description="Most emails per second handed to the SMTP relay (token bucket); 0: no limit.",
    )
    delivery_max_attempts: int = Field(
        5, ge=1, description="Tries per message before it is marked failed (4xx, dropped link)."
    )
    delivery_retry_seconds: float = Field(
        60.0,
        ge=0,
        description="First retry delay after a temporary failure; doubles per attempt, with "
        "jitter.",
    )
    delivery_lease_seconds: int = Field(
        300,
        ge=1,
        description="A message claimed (`sending`) longer than this is reconciled as the "
        "outcome of a crashed worker (see docs/delivery.md).",
    )
    delivery_copy_window_hours: int = Field(
        168,
        ge=0,
        description="Outside flows, a message like one sent to another contact with the same "
        "address within this many hours is a copy and skipped (flow messages: while the two "
        "entries overlap). One action makes its messages at once; a week covers quiet hours, "
        "weekly frequency caps and retries.",
    )
    delivery_stale_policy: Literal["resend", "fail"] = Field(
        "resend",
        description="What to do with a message whose worker died after claiming it: `resend` "
        "(at-least-once, same Message-ID so receivers can drop the copy) or `fail` "
        "(at-most-once).",
    )
    delivery_batch_size: int = Field(
        500, ge=1, description="Messages claimed from the outbox per transaction."
    )
    delivery_processes: int = Field(
        1,
        ge=1,
        le=32,
        description="Worker processes that deliver a backlog in parallel (each claims its own "
        "batches; claims stay exclusive). Extra processes are started only when more than one "
        "batch is due.",
    )
    smtp_idle_seconds: float = Field(
        60.0,
        ge=0,
        description="An SMTP connection kept open between passes (`winback run`, `winback "
        "serve`) is checked with NOOP before reuse when idle this long, and closed when idle "
        "four times as long.",
    )
    frequency_caps: dict[str, str] = Field(
        default_factory=lambda: {"email": "2/7d", "sms": "1/7d", "push": "3/7d"},
        description="Most marketing messages per contact and channel across all flows, as "
        "`COUNT/WINDOW` (window in `d` or `h`). A message over the cap is deferred, not dropped.",
    )
    quiet_hours: str = Field(
        "21:00-08:00",
        description="Local time span (contact's time zone) in which marketing messages wait; "
        "empty: none.",
    )
    machine_open_seconds: int = Field(
        10,
        ge=0,
        description="Opens this soon after delivery are flagged as machine opens (privacy "
        "proxies, scanners).",
    )
    count_machine_opens: bool = Field(
        False, description="Whether machine opens update `last_email_opened`."
    )
    unsubscribe_mailto: str | None = Field(
        None, description="Optional mailto address added to the List-Unsubscribe header."
    )
    coupon_pattern: str = Field(
        "WB-{RANDOM8}",
        description="Pattern of generated coupon codes; `{RANDOMn}` is n random letters and "
        "digits.",
    )
    shopify_webhook_secret: str | None = Field(
        None,
        description="The secret Shopify signs webhooks with (`X-Shopify-Hmac-Sha256`); "
        "empty: `POST /webhooks/shopify` answers 404.",
    )
    woocommerce_webhook_secret: str | None = Field(
        None,
        description="The secret of the WooCommerce webhooks (`X-WC-Webhook-Signature`); "
        "empty: `POST /webhooks/woocommerce` answers 404.",
    )
    shop_name: str = Field("Our shop", description="Shop name shown in emails and pages.")
    shop_url: str = Field("https://example.com", description="Shop home page linked in emails.")
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="HTTP providers for SMS, push and webhooks, by name (`[providers.NAME]` "
        "tables; see docs/delivery.md).",
    )
    sms_provider: str | None = Field(None, description="Provider (name) that sends SMS.")
    push_provider: str | None = Field(None, description="Provider (name) that sends push.")
    webhook_provider: str | None = Field(
        None, description="Default provider (name) of webhook messages."
    )
    soft_bounce_limit: int = Field(
        3,
        ge=1,
        description="Soft bounces (DSN status 4.x.x on a failed delivery) of one contact within "
        "`soft_bounce_window_days` after which the address is suppressed like a hard bounce.",
    )
    soft_bounce_window_days: int = Field(
        30, ge=1, description="Window, in days, in which soft bounces are counted."
    )
    http_max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest request body `winback serve` reads (event API, feedback "
        "reports, link forms): a larger one is answered 413 before it is parsed, whether "
        "it declares its length or streams it.",
    )
    http_max_report_bytes: int = Field(
        10_485_760,
        ge=1024,
        description="Largest body of `POST /api/v1/feedback-reports/raw` (a report email "
        "with the original message attached); larger: 413.",
    )
    render_max_output_chars: int = Field(
        1_000_000,
        ge=1000,
        description="Longest text of one rendered template field (an email's HTML); all "
        "the outputs of one render together may be four times this. Larger: the message "
        "fails with the reason (docs/security.md).",
    )
    render_max_value_size: int = Field(
        100_000,
        ge=100,
        description="Largest string, list or range (characters or items) a template may "
        "build with an operator, filter or method (`'a' * n`, `range(n)`, `center(n)`, "
        "`join`, ...); checked before it is built when the size is known in advance.",
    )
    render_max_loop_iterations: int = Field(
        100_000,
        ge=100,
        description="Most `{% for %}` iterations in one render, nested loops included.",
    )
    render_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="Wall-clock time after which a render is stopped (checked at every "
        "loop iteration, operator, call, filter and output) and its message failed.",
    )
    engine_stale_seconds: int = Field(
        900,
        ge=1,
        description="`GET /healthz` answers 503 when the engine loop of `winback serve` has "
        "had no successful pass for this long (at least three pass intervals), even if no "
        "pass failed yet (a stuck pass).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r} (expected an IANA name such as "
                "'Europe/Rome' or 'UTC')"
            ) from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _coerce_env(name: str, raw: str) -> Any:
    field = Settings.model_fields[name]
    if field.annotation in (int, int | None):
        try:
            return int(raw)
        except ValueError:
            raise InvalidSetting(
                f"{ENV_PREFIX}{name.upper()}={raw!r}: expected a whole number"
            ) from None
    if raw == "" and field.default is None:
        return None
    if getattr(field.annotation, "__origin__", None) is list:
        if raw.lstrip().startswith("["):
            try:
                return json.loads(raw)
            except ValueError:
                raise InvalidSetting(
                    f"{ENV_PREFIX}{name.upper()}: setting {name} expects a JSON array or "
                    "comma-separated values"
                ) from None
        return [item.strip() for item in raw.split(",") if item.strip()]
    if field.annotation is not None and getattr(field.annotation, "__origin__", None) is dict:
        try:
            return json.loads(raw)
        except ValueError:
            raise InvalidSetting(
                f"{ENV_PREFIX}{name.upper()}={raw!r}: setting {name} expects a JSON object"
            ) from None
    return raw


def load_settings(
    workspace: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings for ``workspace`` (its winback.toml, if any) overridden by ``environ``."""
    values: dict[str, Any] = {}
    source = "defaults"
    if workspace is not None:
        path = workspace / CONFIG_FILE
        if path.exists():
            source = str(path)
            try:
                values.update(tomllib.loads(path.read_text(encoding="utf-8")))
            except tomllib.TOMLDecodeError as exc:
                raise InvalidSetting(f"{path}: not valid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    for name in Settings.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = _coerce_env(name, env[key])
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise InvalidSetting(f"{source}: " + "; ".join(_problems(exc))) from None
    KNOWN_SECRETS.add(settings_secrets(settings))
    return settings


def _problems(exc: ValidationError) -> list[str]:
    """Each refused value, named and explained, with secrets hidden."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "?"
        problem = err["msg"]
        if err["type"] == "extra_forbidden":
            problem = f"unknown setting (known: {', '.join(Settings.model_fields)})"
        shown = redact(str(err["loc"][-1]) if err["loc"] else "", err.get("input"))
        if any(isinstance(p, str) and "header" in p.lower() for p in err["loc"][:-1]):
            shown = redact(str(err["loc"][-1]), err.get("input"), header=True)
        if any(is_secret_key(str(p)) for p in err["loc"]):
            shown = HIDDEN
        problems.append(mask_text(f"{loc} = {shown!r}: {problem}"))
    return problems


def settings_table_markdown() -> str:
    """The reference table of docs/settings.md."""
    lines = [
        "| setting | environment variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        value = field.get_default(call_default_factory=True)
        default = "" if value is None or value in ({}, []) else f"`{value}`"
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {default} | {desc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(settings_table_markdown(), end="")


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret hidden, for showing them (the rule of
    :mod:`winback.masking`): the secret keys, passwords inside URLs (``smtp_url``,
    ``database_url``, provider URLs), provider tokens and credentials, and secret-looking
    HTTP headers. An environment reference such as ``${SMS_TOKEN}`` is shown as written."""
    return {k: redact(k, v) for k, v in settings.model_dump().items()}


def settings_secrets(settings: Settings) -> set[str]:
    """The secret values of ``settings`` (what :func:`redacted` hides)."""
    found: set[str] = set()
    for key, value in settings.model_dump().items():
        found |= secret_values(key, value)
    return found
