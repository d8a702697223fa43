"""Exceptions raised by the core. Adapters (CLI, HTTP) translate them; the core never
prints and never returns web-framework errors."""

from __future__ import annotations


class WinbackError(Exception):
    """Base class of every error the core raises on purpose."""


class NoWorkspace(WinbackError):
    """No workspace where one was looked for."""


class WorkspaceExists(WinbackError):
    """``init`` was asked to create a workspace where one already is."""


class InvalidSetting(WinbackError):
    """A setting in winback.toml or the environment has a value of the wrong kind."""


class UnreadableFile(WinbackError):
    """An input file could not be opened or decoded at all."""


class NothingImported(WinbackError):
    """An import read a file and found not one good row."""


class DefinitionError(WinbackError):
    """A segment, flow or template definition is invalid. The message names the file and
    the place in it."""

    def __init__(self, message: str, *, path: str | None = None, location: str | None = None):
        self.path = path
        self.location = location
        where = ":".join(p for p in (path, location) if p)
        super().__init__(f"{where}: {message}" if where else message)


class NotFound(WinbackError):
    """A named contact, segment, flow or template does not exist."""


class MissingColumns(WinbackError):
    """An import file lacks a column the import needs (and no ``--map`` supplies it)."""


class InvalidMapping(WinbackError):
    """A ``--map canonical=their_header`` names an unknown column on either side."""
