"""Signing in to the dashboard: ``GET /login`` shows the form, ``POST /login`` checks the
user name and password (:func:`winback.accounts.sign_in`, under the login throttle) and
sets the session cookie, ``POST /logout`` ends the session.

The login form carries its own CSRF token (a signed double-submit cookie, as there is no
session yet), and ``next`` is followed only when it is a path of this site."""

from __future__ import annotations

import asyncio
import hmac
import math
from datetime import timedelta
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from winback.accounts import LoginThrottle, Refused, SignedIn, sign_in
from winback.web.auth import CsrfDep, current_session, signer
from winback.web.deps import get_workspace
from winback.web.sessions import LOGIN_COOKIE, SESSION_COOKIE, SessionRing, SessionSigner

router = APIRouter(tags=["sign-in"], include_in_schema=False)

#: Where a sign-in goes when no (safe) ``next`` is given.
HOME = "/"
#: How long the login form stays valid (its cookie's lifetime), in seconds.
LOGIN_FORM_SECONDS = 3600
#: Most passwords checked at once by one process: an Argon2 check takes 64 MiB and a
#: core for a quarter second, so a flood of sign-ins waits here instead of taking the
#: memory and the thread pool.
PASSWORD_CHECKS = 2


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this site (``/...``, not ``//host`` or ``/\\host``,
    no scheme, host or control character), else :data:`HOME`: never an open redirect."""
    if not target or not target.startswith("/") or len(target) > 2000:
        return HOME
    if target.startswith("//") or "\\" in target:
        return HOME
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return HOME
    return target


def _secure(request: Request) -> bool:
    return get_workspace(request).settings.base_url.lower().startswith("https://")


def _form(
    request: Request,
    *,
    next_url: str,
    status_code: int = 200,
    error: str | None = None,
    username: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    """The login page, with a fresh form token (and its cookie, kept when it is there)."""
    sign = signer(request)
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    fresh = sign is not None and not (10 <= len(nonce) <= 100)
    if sign is not None and fresh:
        nonce = sign.login_nonce()
    workspace = get_workspace(request)
    response: Response = request.app.state.templates.TemplateResponse(
        request,
        "dashboard/login.html",
        {
            "shop": {"name": workspace.settings.shop_name},
            "csrf_token": sign.login_csrf(nonce) if sign is not None else "",
            "next": next_url,
            "error": error,
            "username": username,
            "unavailable": sign is None,
        },
        status_code=status_code,
        headers=headers,
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if fresh:
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=LOGIN_FORM_SECONDS,
            path="/login",
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )
    return response


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The sign-in form (a signed-in browser goes straight on to ``next``)."""
    next_url = safe_next(request.query_params.get("next"))
    if await current_session(request) is not None:
        return RedirectResponse(next_url, status_code=303)
    return _form(request, next_url=next_url)


def _form_ok(sign: SessionSigner, request: Request, sent: str) -> bool:
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    return bool(nonce) and hmac.compare_digest(sent.encode(), sign.login_csrf(nonce).encode())


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the form's ``username`` and ``password``: on success set the session cookie
    and go to ``next`` (303); a wrong name or password is one answer (401), whichever of
    the two was wrong; too many recent failures: 429 with ``Retry-After``."""
    form = await request.form()
    username = str(form.get("username") or "")
    password = str(form.get("password") or "")
    next_url = safe_next(str(form.get("next") or ""))
    sign = signer(request)
    if sign is None:
        return _form(request, next_url=next_url, status_code=503)
    if not _form_ok(sign, request, str(form.get("csrf_token") or "")):
        return _form(
            request,
            next_url=next_url,
            status_code=403,
            error="The sign-in form had expired. Please try again.",
            username=username,
        )
    workspace = get_workspace(request)
    lifetime = timedelta(hours=workspace.settings.session_hours)
    throttle: LoginThrottle = request.app.state.login_throttle
    address = request.client.host if request.client is not None else None
    checks: asyncio.Semaphore = request.app.state.password_checks
    async with checks:
        outcome = await run_in_threadpool(
            sign_in,
            workspace.engine,
            username,
            password,
            address=address,
            at=workspace.clock.now(),
            lifetime=lifetime,
            throttle=throttle,
        )
    if isinstance(outcome, Refused):
        return _form(
            request,
            next_url=next_url,
            status_code=401,
            error="Wrong user name or password.",
            username=username,
        )
    if not isinstance(outcome, SignedIn):
        seconds = max(1, math.ceil(outcome.retry_after.total_seconds()))
        return _form(
            request,
            next_url=next_url,
            status_code=429,
            error=f"Too many failed sign-ins. Please wait {seconds} seconds and try again.",
            username=username,
            headers={"Retry-After": str(seconds)},
        )
    previous: str | None = None
    if await current_session(request) is not None:
        previous = request.state.session_token
    if previous is not None:  # this browser's former session ends with the new one
        ring: SessionRing = request.app.state.sessions
        await run_in_threadpool(ring.end, previous)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        sign.cookie(outcome.token),
        max_age=int(lifetime.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/logout")
async def logout(request: Request, _csrf: CsrfDep) -> Response:
    """End the session (the CSRF token is required) and go back to the sign-in form."""
    await current_session(request)
    token: str | None = getattr(request.state, "session_token", None)
    if token is not None:
        ring: SessionRing = request.app.state.sessions
        await run_in_threadpool(ring.end, token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(request)
    )
    response.headers["Cache-Control"] = "no-store"
    return response
