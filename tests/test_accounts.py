"""Dashboard users in the store (winback.accounts) and `winback users`: names, password
rules, Argon2 hashes, sessions that end with a password change or removal, and the login
throttle shared through the store."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from typer.testing import CliRunner

from tests.login_support import PASSWORD, add_user
from winback import accounts
from winback.accounts import LoginThrottle, Refused, SignedIn, Throttled, sign_in
from winback.cli import app
from winback.clock import FixedClock
from winback.store.engine import make_engine
from winback.store.schema import users
from winback.workspace import Workspace

runner = CliRunner()
HOUR = timedelta(hours=1)

pytestmark = pytest.mark.usefixtures("cheap_passwords")


def _run(
    *args: str, input: str | None = None, code: int = 0, env: dict[str, str] | None = None
) -> str:
    result = runner.invoke(app, list(args), input=input, env=env)
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def test_users_cli_add_list_passwd_remove(workspace: Workspace) -> None:
    w = ["-w", str(workspace.path)]
    env = {"WINBACK_DATABASE_URL": workspace.database_url}
    assert "Added user alice" in _run(
        "users", "add", "Alice", "--password-stdin", *w, input=PASSWORD + "\n", env=env
    )
    listed = json.loads(_run("users", "list", "--json", *w, env=env))
    assert [u["name"] for u in listed] == ["alice"] and listed[0]["sessions"] == 0
    with workspace.engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.authenticate(workspace.engine, "ALICE", PASSWORD, at=workspace.clock.now())

    new = "a much longer passphrase now"
    _run("users", "passwd", "alice", "--password-stdin", *w, input=new + "\n", env=env)
    assert (
        accounts.authenticate(workspace.engine, "alice", PASSWORD, at=workspace.clock.now()) is None
    )
    assert accounts.authenticate(workspace.engine, "alice", new, at=workspace.clock.now())

    again = runner.invoke(
        app, ["users", "add", "alice", "--password-stdin", *w], input=PASSWORD, env=env
    )
    assert isinstance(again.exception, accounts.UserExists)
    assert "Removed user alice" in _run("users", "remove", "alice", *w, env=env)
    assert json.loads(_run("users", "list", "--json", *w, env=env)) == []


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("bad name", PASSWORD, "user name 'bad name' is not valid"),
        ("-dash", PASSWORD, "is not valid"),
        ("x" * 65, PASSWORD, "is not valid"),
        ("bob", "short", "the password has 5 characters; at least 12"),
        ("bob", "x" * 1025, "longer than 1024"),
        ("bob.builder@example.com", "Bob.Builder@example.com", "must not be the user name"),
    ],
)
def test_bad_names_and_passwords_are_refused(
    sqlite_workspace: Workspace, name: str, password: str, message: str
) -> None:
    with pytest.raises(accounts.AccountError, match=message):
        add_user(sqlite_workspace, name, password)
    assert accounts.list_users(sqlite_workspace.engine, at=sqlite_workspace.clock.now()) == []


def test_a_terminal_is_asked_twice_and_no_terminal_needs_password_stdin(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import winback.cli.users as cli_users

    w = ["-w", str(sqlite_workspace.path)]
    result = runner.invoke(app, ["users", "add", "bob", *w], input="")
    assert result.exit_code != 0 and "--password-stdin" in str(result.exception)
    monkeypatch.setattr(cli_users, "_interactive", lambda: True)
    out = _run("users", "add", "bob", *w, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert "Repeat for confirmation" in out and PASSWORD not in out
    assert accounts.authenticate(
        sqlite_workspace.engine, "bob", PASSWORD, at=sqlite_workspace.clock.now()
    )


def test_password_change_and_removal_end_the_users_sessions(
    workspace: Workspace, clock: FixedClock
) -> None:
    engine = workspace.engine
    alice, bob = add_user(workspace, "alice"), add_user(workspace, "bob")
    a1 = accounts.start_session(engine, alice, at=clock.now(), lifetime=HOUR)
    a2 = accounts.start_session(engine, alice, at=clock.now(), lifetime=HOUR)
    b1 = accounts.start_session(engine, bob, at=clock.now(), lifetime=HOUR)
    assert accounts.find_session(engine, a1, at=clock.now()) is not None
    assert accounts.list_users(engine, at=clock.now())[0]["sessions"] == 2
    accounts.set_password(engine, "alice", "another good password", at=clock.now())
    assert accounts.find_session(engine, a1, at=clock.now()) is None
    assert accounts.find_session(engine, a2, at=clock.now()) is None
    assert accounts.find_session(engine, b1, at=clock.now()) is not None
    assert accounts.remove_user(engine, "bob")
    assert accounts.find_session(engine, b1, at=clock.now()) is None
    assert not accounts.remove_user(engine, "bob")


def test_a_session_expires_and_only_its_hash_is_stored(
    workspace: Workspace, clock: FixedClock
) -> None:
    alice = add_user(workspace)
    token = accounts.start_session(workspace.engine, alice, at=clock.now(), lifetime=HOUR)
    found = accounts.find_session(workspace.engine, token, at=clock.now() + HOUR / 2)
    assert found is not None and found.user == "alice"
    assert accounts.find_session(workspace.engine, token, at=clock.now() + HOUR) is None
    assert accounts.find_session(workspace.engine, token + "x", at=clock.now()) is None
    from winback.store.schema import user_sessions

    with workspace.engine.connect() as conn:
        kept = conn.execute(select(user_sessions.c.token_hash)).scalars().all()
    assert kept == [accounts.token_hash(token)] and token not in kept


def test_the_throttle_counts_per_name_and_per_address_in_the_store(
    workspace: Workspace, clock: FixedClock
) -> None:
    add_user(workspace)
    throttle = LoginThrottle()

    def attempt(name: str, password: str, address: str) -> object:
        return sign_in(
            workspace.engine,
            name,
            password,
            address=address,
            at=clock.now(),
            lifetime=HOUR,
            throttle=throttle,
        )

    # Guesses at one name from many addresses: the name slows down, for any address.
    for n in range(5):
        assert isinstance(attempt("alice", f"guess {n}", f"10.0.0.{n}"), Refused)
    refused = attempt("alice", PASSWORD, "192.0.2.1")
    assert isinstance(refused, Throttled) and refused.retry_after == timedelta(seconds=2)
    # Another process on the same store sees the same failures.
    other = make_engine(workspace.database_url)
    try:
        later = accounts.throttled_for(
            other, accounts.throttle_keys("alice", None), at=clock.now(), throttle=throttle
        )
    finally:
        other.dispose()
    assert later == timedelta(seconds=2)
    clock.advance(timedelta(seconds=2))
    assert isinstance(attempt("alice", PASSWORD, "192.0.2.1"), SignedIn)  # and clears the name

    # Many names from one address: the address slows down, even for a right password.
    for n in range(5):
        assert isinstance(attempt(f"nobody{n}", PASSWORD, "198.51.100.7"), Refused)
    assert isinstance(attempt("alice", PASSWORD, "198.51.100.7"), Throttled)
    assert isinstance(attempt("alice", PASSWORD, "198.51.100.8"), SignedIn)


def test_the_delay_doubles_up_to_a_ceiling_and_failures_leave_the_window(
    workspace: Workspace, clock: FixedClock
) -> None:
    throttle = LoginThrottle()
    assert [throttle.delay(n).total_seconds() for n in (4, 5, 6, 7, 12, 13, 500)] == [
        0,
        2,
        4,
        8,
        256,
        300,
        300,
    ]
    keys = accounts.throttle_keys("alice", "203.0.113.5")
    for _ in range(40):  # an attacker hammering: at worst the ceiling
        accounts.record_failure(workspace.engine, keys, at=clock.now(), throttle=throttle)
    wait = accounts.throttled_for(workspace.engine, keys, at=clock.now(), throttle=throttle)
    assert wait == throttle.max_delay
    clock.advance(throttle.window)
    assert accounts.throttled_for(
        workspace.engine, keys, at=clock.now(), throttle=throttle
    ) == timedelta(0)


def test_simultaneous_guesses_cannot_all_pass_before_they_are_counted(
    workspace: Workspace, clock: FixedClock
) -> None:
    add_user(workspace)
    throttle = LoginThrottle()

    def guess(n: int) -> object:
        return sign_in(
            workspace.engine,
            "alice",
            f"guess {n}",
            address=f"10.1.0.{n}",
            at=clock.now(),
            lifetime=HOUR,
            throttle=throttle,
        )

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(guess, range(12)))
    # Each attempt is counted before its password is checked: only the first five run.
    assert sum(isinstance(o, Refused) for o in outcomes) == throttle.free_failures
    assert sum(isinstance(o, Throttled) for o in outcomes) == 12 - throttle.free_failures


def test_a_hash_made_with_weaker_parameters_is_replaced_at_sign_in(
    workspace: Workspace, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_user(workspace)  # with the cheap test hasher
    with workspace.engine.connect() as conn:
        weak = conn.execute(select(users.c.password_hash)).scalar_one()
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher())  # today's parameters
    assert (
        accounts.authenticate(workspace.engine, "alice", "wrong password", at=clock.now()) is None
    )
    with workspace.engine.connect() as conn:
        assert conn.execute(select(users.c.password_hash)).scalar_one() == weak
    assert accounts.authenticate(workspace.engine, "alice", PASSWORD, at=clock.now())
    with workspace.engine.connect() as conn:
        strong = conn.execute(select(users.c.password_hash)).scalar_one()
    assert strong != weak and strong.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert accounts.authenticate(workspace.engine, "alice", PASSWORD, at=clock.now())
