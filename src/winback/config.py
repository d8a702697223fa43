"""Settings: read once at startup into one typed object and passed down.

Sources, later ones winning: the defaults below, the workspace's ``winback.toml``, then
environment variables named ``WINBACK_<SETTING>`` (upper case). :func:`load_settings` takes
the environment as a mapping so that tests pass one in instead of patching ``os.environ``.

Every setting's name, default and meaning is in ``docs/settings.md``, generated from this
module by ``python -m winback.config`` and checked by the test suite.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from winback.errors import InvalidSetting

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
    timezone: str = Field(
        "UTC",
        description="Time zone in which timestamps without an offset are read on import, and "
        "the default for contacts with no time zone of their own.",
    )
    currency: str = Field("USD", description="Currency of orders that name none.")
    dormant_days: int = Field(
        90,
        ge=1,
        description="The fixed inactivity window in days (the seed's 90-day rule) used by the "
        "default segments and the base summary.",
    )
    import_batch_size: int = Field(
        50_000,
        ge=1,
        description="Rows written to the store per transaction during an import (memory "
        "use grows with it; fewer, larger transactions are much faster on SQLite).",
    )
    secret_key: str | None = Field(
        None,
        description="Key that signs tracking, unsubscribe and feedback links. `winback init` "
        "writes a random one into the workspace; set `WINBACK_SECRET_KEY` in production.",
    )
    base_url: str = Field(
        "http://127.0.0.1:8000",
        description="Public URL of `winback serve`, used in tracking, unsubscribe and "
        "feedback links.",
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
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "?"
            problem = err["msg"]
            if err["type"] == "extra_forbidden":
                problem = f"unknown setting (known: {', '.join(Settings.model_fields)})"
            problems.append(f"{loc} = {err.get('input')!r}: {problem}")
        raise InvalidSetting(f"{source}: " + "; ".join(problems)) from None


def settings_table_markdown() -> str:
    """The reference table of docs/settings.md."""
    lines = [
        "| setting | environment variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f"`{field.default}`"
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {default} | {desc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(settings_table_markdown(), end="")
