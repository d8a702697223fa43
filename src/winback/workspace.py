"""The workspace: a folder with ``winback.toml``, the embedded database, and the files a
data person keeps in git (``segments/``, ``flows/``, ``templates/``).

:func:`open` returns the :class:`Workspace` object that the CLI, the HTTP service and
embedding programs all use.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from sqlalchemy import Engine

from winback.clock import Clock, SystemClock
from winback.config import CONFIG_FILE, Settings, load_settings
from winback.errors import InvalidSetting, NoWorkspace, WorkspaceExists
from winback.store import migrate
from winback.store.engine import make_engine, sqlite_url

if TYPE_CHECKING:
    from winback.analytics.service import Analytics
    from winback.contacts import Contacts
    from winback.delivery import Delivery
    from winback.flows.service import Flows
    from winback.ingest import Imports
    from winback.segments.service import Segments
    from winback.shop_webhooks import ShopWebhooks
    from winback.store.repository import Store
    from winback.tags import Tags

DATABASE_FILE = "winback.db"
FOLDERS = ("segments", "flows", "templates")

CONFIG_TEMPLATE = """\
# winback workspace settings. Every setting is documented in docs/settings.md.
# Environment variables WINBACK_<SETTING> (upper case) override what is written here.

# Store: empty means the embedded SQLite file winback.db in this folder.
# database_url = "postgresql+psycopg://winback:secret@127.0.0.1:5432/winback"

# The shop, as emails and pages show it (`winback doctor` says what sending still needs).
{shop_name}
{shop_url}

# From address of emails (an address of the shop's domain).
{mail_from}

# Time zone for timestamps without an offset, and for contacts with none of their own.
timezone = "{timezone}"

# Currency of orders that name none, and of reports.
currency = "{currency}"

# The shop's sector sets the default inactivity window (docs/settings.md#sectors):
# grocery, pets, beauty, fashion, electronics, travel or furniture.
# sector = "fashion"

# The fixed inactivity window (days) of the default segments; unset: the sector's, else 90.
# dormant_days = 90

# Public URL of `winback serve`, used in tracking, unsubscribe and feedback links.
# `winback run` and `serve` refuse to send through a remote relay while it is loopback.
base_url = "{base_url}"

# Signs tracking, unsubscribe and feedback links. Keep it secret; do not commit it.
# In production prefer the WINBACK_SECRET_KEY environment variable.
secret_key = "{secret_key}"
"""


class Workspace:
    """One shop's winback: its folder, settings, store and clock, and the services built on
    them.

    The workspace only wires: each service takes what it uses (engine, settings, clock, other
    services) in its constructor and is built on first use. The CLI and the HTTP service
    share one code path through these attributes. Settings and clock are fixed for the
    workspace's life; :meth:`replace` gives a workspace on the same store with others.
    """

    def __init__(
        self,
        path: Path,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.path = path.resolve()
        self.settings = settings if settings is not None else load_settings(self.path)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._engine = engine
        self._replacements: list[Workspace] = []

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    def replace(self, *, settings: Settings | None = None, clock: Clock | None = None) -> Workspace:
        """The same folder and store with other settings or another clock; its services are
        built afresh from them. The engine is shared unless the new settings change how the
        store is opened (its URL or its busy timeout). Closing this workspace closes it too."""
        settings = settings if settings is not None else self.settings
        same_store = (settings.database_url, settings.store_busy_timeout) == (
            self.settings.database_url,
            self.settings.store_busy_timeout,
        )
        replacement = Workspace(
            self.path,
            settings,
            clock=clock if clock is not None else self.clock,
            engine=self.engine if same_store else None,
        )
        self._replacements.append(replacement)
        return replacement

    @property
    def database_url(self) -> str:
        return self.settings.database_url or sqlite_url(self.path / DATABASE_FILE)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(
                self.database_url, busy_timeout=self.settings.store_busy_timeout
            )
        return self._engine

    def upgrade(self) -> None:
        """Apply every pending migration to the store."""
        migrate.upgrade(self.engine)

    def close(self) -> None:
        """Stop the delivery threads and close the store's connections. The engine stays
        usable (a later use opens new connections), as do the services holding it."""
        replacements, self._replacements = self._replacements, []
        for replacement in replacements:
            replacement.close()
        if "delivery" in self.__dict__:
            self.delivery.close()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- services (built on first use; imported here so that opening a workspace stays cheap)
    @cached_property
    def store(self) -> Store:
        from winback.store.repository import Store

        return Store(self.engine)

    @cached_property
    def imports(self) -> Imports:
        """Load contacts, orders and events files (:mod:`winback.ingest`)."""
        from winback.ingest import Imports

        return Imports(self.engine, self.settings, self.clock, self.path)

    @cached_property
    def segments(self) -> Segments:
        """Segment definitions and materialised membership (:mod:`winback.segments`)."""
        from winback.segments.service import Segments

        return Segments(self.engine, self.settings, self.clock, self.path)

    @cached_property
    def tags(self) -> Tags:
        """Tags on contacts, with history (:mod:`winback.tags`)."""
        from winback.tags import Tags

        return Tags(self.engine, self.store, self.segments, self.clock)

    @cached_property
    def shop_webhooks(self) -> ShopWebhooks:
        """Shopify and WooCommerce webhooks applied to the store (:mod:`winback.shop_webhooks`)."""
        from winback.shop_webhooks import ShopWebhooks

        return ShopWebhooks(self.engine, self.settings, self.clock)

    @cached_property
    def contacts(self) -> Contacts:
        """One contact seen whole, and its erasure (:mod:`winback.contacts`)."""
        from winback.contacts import Contacts
        from winback.flows.inspect import contact_flows

        return Contacts(
            self.engine,
            self.segments,
            self.clock,
            lambda contact: contact_flows(self.engine, contact),
        )

    @cached_property
    def analytics(self) -> Analytics:
        """RFM, purchase and spend models, clusters and base health (:mod:`winback.analytics`)."""
        from winback.analytics.service import Analytics

        return Analytics(self.engine, self.settings, self.clock)

    @cached_property
    def flows(self) -> Flows:
        """Flow files, their state in the store, ticks and inspection."""
        from winback.flows.service import Flows

        return Flows(self.engine, self.settings, self.clock, self.path, segments=self.segments)

    @cached_property
    def delivery(self) -> Delivery:
        """Message templates, channels, tracking and delivery policies (:mod:`winback.delivery`)."""
        from winback.delivery import Delivery

        return Delivery(self.engine, self.settings, self.clock, self.store, self.path)


def find(explicit: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The workspace folder: ``explicit`` (``--workspace``), else ``WINBACK_HOME``, else the
    current directory. Raises :class:`NoWorkspace` when the chosen folder is not one."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        path, how = Path(explicit), "--workspace"
    elif env.get("WINBACK_HOME"):
        path, how = Path(env["WINBACK_HOME"]), "WINBACK_HOME"
    else:
        path, how = Path.cwd(), "the current directory"
    if not (path / CONFIG_FILE).is_file():
        raise NoWorkspace(
            f"no winback workspace at {path} (from {how}): it has no {CONFIG_FILE}. "
            f"Create one with `winback init {path}`, or point --workspace or WINBACK_HOME "
            "at an existing one."
        )
    return path


def open(
    path: Path | str | None = None,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
) -> Workspace:
    """Open the workspace at ``path`` (or the one found as :func:`find` says)."""
    folder = find(path, environ)
    return Workspace(folder, load_settings(folder, environ), clock=clock)


#: Settings that ``winback init`` writes only when given: their defaults are placeholders,
#: left as a commented line to fill in.
PLACEHOLDERS = {
    "shop_name": "Our shop",
    "shop_url": "https://example.com",
    "mail_from": "winback@localhost",
}


def _line(name: str, value: str) -> str:
    line = f'{name} = "{_toml_text(value)}"'
    return f"# {line}" if value == PLACEHOLDERS[name] else line


def _toml_text(value: str) -> str:
    """``value`` escaped for a TOML basic string (between double quotes)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def _check_init(given: Mapping[str, str]) -> None:
    """The values ``winback init`` writes, checked as settings and for their form."""
    problems = []
    if not (len(given["currency"]) == 3 and given["currency"].isalpha()):
        problems.append(f"currency {given['currency']!r}: expected three letters such as EUR")
    for name in ("shop_url", "base_url"):
        if not given[name].startswith(("http://", "https://")):
            problems.append(f"{name} {given[name]!r}: expected an http:// or https:// URL")
    if "@" not in given["mail_from"]:
        problems.append(f"mail_from {given['mail_from']!r}: expected an email address")
    try:
        Settings(**given)
    except ValidationError as exc:
        problems.extend(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    if problems:
        raise InvalidSetting("winback init: " + "; ".join(problems))


def init(
    path: Path | str = ".",
    *,
    timezone: str = "UTC",
    currency: str = "USD",
    shop_name: str = "Our shop",
    shop_url: str = "https://example.com",
    mail_from: str = "winback@localhost",
    base_url: str = "http://127.0.0.1:8000",
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> Workspace:
    """Create a workspace: commented winback.toml with the shop's details and a fresh
    secret, folders, and the migrated database. Refuses to overwrite an existing workspace;
    a bad value (time zone, currency, URL) fails before anything is written."""
    folder = Path(path)
    if (folder / CONFIG_FILE).exists():
        raise WorkspaceExists(f"{folder} is already a winback workspace ({CONFIG_FILE} exists)")
    given = {
        "timezone": timezone,
        "currency": currency.strip().upper(),
        "shop_name": shop_name,
        "shop_url": shop_url,
        "mail_from": mail_from,
        "base_url": base_url.rstrip("/"),
    }
    _check_init(given)
    folder.mkdir(parents=True, exist_ok=True)
    for name in FOLDERS:
        (folder / name).mkdir(exist_ok=True)
    config = folder / CONFIG_FILE
    config.write_text(
        CONFIG_TEMPLATE.format(
            **{k: _toml_text(v) for k, v in given.items()}
            | {k: _line(k, given[k]) for k in PLACEHOLDERS},
            secret_key=secrets.token_urlsafe(32),
        ),
        encoding="utf-8",
    )
    config.chmod(0o600)
    workspace = Workspace(folder, load_settings(folder, environ), clock=clock)
    workspace.upgrade()
    return workspace
