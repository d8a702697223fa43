"""``winback users``: the dashboard's users (add, list, remove, passwd)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from winback import accounts
from winback.cli._app import JsonOption, WorkspaceOption, app, console, print_json, workspace_from

users_app = typer.Typer(help="Users who sign in to the dashboard.", no_args_is_help=True)
app.add_typer(users_app, name="users")

NameArgument = Annotated[
    str,
    typer.Argument(
        help="User name: letters, digits and . _ @ + - (an email address fits); compared in "
        "lowercase.",
        show_default=False,
    ),
]
PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input (for scripts). "
        "Without it, the password is asked for twice on the terminal, not echoed.",
    ),
]


def _interactive() -> bool:
    return sys.stdin.isatty()


def _password(stdin: bool) -> str:
    """The new password: the first line of stdin, or asked twice on the terminal."""
    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not _interactive():
        raise accounts.AccountError(
            "no terminal to ask for the password: pass --password-stdin and write it to "
            "standard input"
        )
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("add")
def users_add(
    name: NameArgument,
    password_stdin: PasswordStdinOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Create a user (passwords: at least 12 characters; stored as an Argon2id hash)."""
    password = _password(password_stdin)
    with workspace_from(workspace) as ws:
        user = accounts.add_user(ws.engine, name, password, at=ws.clock.now())
    console.print(f"Added user {user.name}. Sign in at {ws.settings.base_url}/login")


@users_app.command("passwd")
def users_passwd(
    name: NameArgument,
    password_stdin: PasswordStdinOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Set a user's password; every session of the user ends (sign in again)."""
    password = _password(password_stdin)
    with workspace_from(workspace) as ws:
        accounts.set_password(ws.engine, name, password, at=ws.clock.now())
    console.print(f"Changed the password of {accounts.user_name(name)}; their sessions ended.")


@users_app.command("remove")
def users_remove(name: NameArgument, workspace: WorkspaceOption = None) -> None:
    """Remove a user and end their sessions."""
    with workspace_from(workspace) as ws:
        done = accounts.remove_user(ws.engine, name)
    if not done:
        raise accounts.UnknownUser(f"no user named {accounts.user_name(name)!r}")
    console.print(f"Removed user {accounts.user_name(name)}.")


@users_app.command("list")
def users_list(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Users, with when they last signed in and how many sessions they have open."""
    with workspace_from(workspace) as ws:
        rows = accounts.list_users(ws.engine, at=ws.clock.now())
    if as_json:
        print_json(rows)
        return
    table = Table("name", "created", "password changed", "last sign-in", "open sessions")
    for r in rows:
        table.add_row(
            *(
                str(r[k] if r[k] is not None else "")
                for k in ("name", "created_at", "password_changed_at", "last_login_at", "sessions")
            )
        )
    console.print(table)
