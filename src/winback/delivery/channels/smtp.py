"""Email over SMTP (standard library ``smtplib``): one URL setting, N reused connections
driven by a thread pool, a shared token-bucket rate limit, and in-line retries with
exponential backoff and jitter on 4xx replies and dropped connections.

URL forms: ``smtp://user:password@host:587?starttls=true``, ``smtps://user:pw@host:465``,
``smtp://127.0.0.1:1025``. Query options: ``starttls`` (true/false), ``timeout`` (seconds),
``helo`` (name to greet with). User and password are percent-decoded.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from winback.delivery.channels import (
    Durable,
    NotRecorded,
    OnResult,
    OutboundMessage,
    SendResult,
    StopSignal,
    send_each,
)
from winback.delivery.channels.ratelimit import TokenBucket, backoff
from winback.errors import InvalidSetting

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    implicit_tls: bool = False
    starttls: bool = False
    timeout: float = 30.0
    helo: str | None = None

    def __repr__(self) -> str:  # never show the password
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.user}:***@" if self.user else ""
        return f"SmtpTarget({scheme}://{user}{self.host}:{self.port})"


def parse_smtp_url(url: str) -> SmtpTarget:
    """Parse the ``smtp_url`` setting; errors name the part that is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise InvalidSetting(
            f"smtp_url: scheme {parts.scheme!r} is not smtp or smtps "
            "(expected smtp://user:password@host:port?starttls=true)"
        )
    if not parts.hostname:
        raise InvalidSetting("smtp_url: no host (expected smtp://user:password@host:port)")
    implicit = parts.scheme == "smtps"
    try:
        port = parts.port or (465 if implicit else 25)
    except ValueError:
        raise InvalidSetting("smtp_url: the port is not a number") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls", "timeout", "helo"}
    if unknown:
        raise InvalidSetting(
            f"smtp_url: unknown option(s) {', '.join(sorted(unknown))} "
            "(known: starttls, timeout, helo)"
        )
    try:
        timeout = float(query.get("timeout", 30))
    except ValueError:
        raise InvalidSetting(f"smtp_url: timeout={query['timeout']!r} is not a number") from None
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=implicit,
        starttls=query.get("starttls", "false").lower() in _TRUE,
        timeout=timeout,
        helo=query.get("helo"),
    )


def _lean_data(
    conn: smtplib.SMTP, msg: Any, general: Callable[[Any], tuple[int, bytes]]
) -> tuple[int, bytes]:
    """``smtplib``'s DATA without its dot-stuffing pass when there is nothing to stuff.

    :meth:`smtplib.SMTP.data` runs a multi-line regular expression over every message to
    double the dots that start a line (RFC 5321, 4.5.2): about 50 microseconds for an 8 KB
    email, a sixth of what smtplib spends per message. A message with no line starting
    with a dot (the usual case: the quoted-printable and 7bit parts we build rarely have
    one) is sent byte for byte as smtplib would send it; any other goes through smtplib.

    The connection's gate (if any) is passed before the message's content goes out, so the
    server cannot accept the message before it: the outcome of the connection's previous
    message is made durable by then (the later, the more outcomes of other connections are
    waiting by then, to share the commit)."""
    gate = conn.gate if isinstance(conn, _SMTP | _SMTPS) else None
    if not isinstance(msg, bytes) or msg.startswith(b".") or b"\n." in msg:
        if gate is not None:
            gate()
        return general(msg)
    conn.putcmd("data")
    code, reply = conn.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    if gate is not None:
        gate()
    conn.send(msg + b".\r\n" if msg.endswith(b"\r\n") else msg + b"\r\n.\r\n")
    return conn.getreply()


#: An address smtplib's ``quoteaddr`` leaves as it is (RFC 5321 dot-atom local part, plain
#: domain): quoted as ``<address>`` without parsing it with :mod:`email.utils` (about 30
#: microseconds per command, twice per message).
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z"
)


def _lean_command(
    conn: smtplib.SMTP,
    verb: str,
    address: str,
    options: Sequence[str],
    general: Callable[[str, Sequence[str]], tuple[int, bytes]],
) -> tuple[int, bytes]:
    """MAIL FROM / RCPT TO as smtplib writes them, for a plain address and no SMTPUTF8."""
    if not _PLAIN_ADDRESS.match(address) or any(o.lower() == "smtputf8" for o in options):
        return general(address, options)
    extra = " " + " ".join(options) if options and conn.does_esmtp else ""
    conn.putcmd(verb, f"{'from' if verb == 'mail' else 'to'}:<{address}>{extra}")
    return conn.getreply()


class _SMTP(smtplib.SMTP):
    #: Called before the server can accept the message being sent (see _lean_data).
    gate: Callable[[], None] | None = None

    # smtplib.SMTP's own methods, not super(): _SMTPS borrows these (SMTP_SSL keeps them).
    def data(self, msg: Any) -> tuple[int, bytes]:
        return _lean_data(self, msg, lambda m: smtplib.SMTP.data(self, m))

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        return _lean_command(
            self, "mail", sender, options, lambda a, o: smtplib.SMTP.mail(self, a, o)
        )

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        return _lean_command(
            self, "rcpt", recip, options, lambda a, o: smtplib.SMTP.rcpt(self, a, o)
        )


class _SMTPS(smtplib.SMTP_SSL):
    gate: Callable[[], None] | None = None
    data = _SMTP.data
    mail = _SMTP.mail
    rcpt = _SMTP.rcpt


@dataclass(slots=True)
class _Pooled:
    smtp: _SMTP | _SMTPS
    last_used: float


class SmtpChannel:
    """Sends emails over ``connections`` parallel, reused SMTP connections.

    Connections live in a pool and survive between batches, so a long-running loop (``winback
    run``, ``winback serve``) keeps them open across passes: one idle longer than
    ``idle_seconds`` is checked with NOOP before reuse (and replaced when the server dropped
    it), one idle longer than ``4 * idle_seconds`` is closed and reopened."""

    def __init__(
        self,
        target: SmtpTarget,
        *,
        connections: int = 4,
        rate_per_second: float = 0.0,
        inline_attempts: int = 3,
        retry_base: float = 0.2,
        ssl_context: ssl.SSLContext | None = None,
        idle_seconds: float = 60.0,
    ) -> None:
        self.target = target
        self.connections = connections
        self.bucket = TokenBucket(rate_per_second)
        self.inline_attempts = inline_attempts
        self.retry_base = retry_base
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.idle_seconds = idle_seconds
        self.opened = 0  # connections opened so far (a reconnect counts)
        self._idle: list[_Pooled] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(connections, thread_name_prefix="winback-smtp")

    # -- connections ---------------------------------------------------------------------------
    def _connect(self) -> _SMTP | _SMTPS:
        t = self.target
        conn: _SMTP | _SMTPS
        if t.implicit_tls:
            conn = _SMTPS(
                t.host,
                t.port,
                local_hostname=t.helo,
                timeout=t.timeout,
                context=self.ssl_context,
            )
        else:
            conn = _SMTP(t.host, t.port, local_hostname=t.helo, timeout=t.timeout)
        try:
            conn.ehlo_or_helo_if_needed()
            if t.starttls and not t.implicit_tls:
                conn.starttls(context=self.ssl_context)
                conn.ehlo()
            if t.user:
                conn.login(t.user, t.password or "")
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self.opened += 1
        return conn

    def _checkout(self) -> _Pooled:
        """The most recently used idle connection (NOOP-checked when idle a while), or a new
        one."""
        while True:
            with self._lock:
                pooled = self._idle.pop() if self._idle else None
            if pooled is None:
                return _Pooled(self._connect(), time.monotonic())
            idle = time.monotonic() - pooled.last_used
            if self.idle_seconds and idle > 4 * self.idle_seconds:
                self._discard(pooled, quit=True)
                continue
            if self.idle_seconds and idle > self.idle_seconds:
                try:
                    alive = pooled.smtp.noop()[0] == 250
                except (smtplib.SMTPException, OSError):
                    alive = False
                if not alive:
                    self._discard(pooled)
                    continue
            return pooled

    def _checkin(self, pooled: _Pooled) -> None:
        pooled.last_used = time.monotonic()
        with self._lock:
            self._idle.append(pooled)

    @staticmethod
    def _discard(pooled: _Pooled, *, quit: bool = False) -> None:
        try:
            if quit:
                pooled.smtp.quit()
            else:
                pooled.smtp.close()
        except (smtplib.SMTPException, OSError):
            try:
                pooled.smtp.close()
            except OSError:
                pass

    @staticmethod
    def _rset(pooled: _Pooled) -> bool:
        """Reset the transaction after a refusal; False when the connection is unusable."""
        try:
            pooled.smtp.rset()
            return True
        except (smtplib.SMTPException, OSError):
            return False

    def idle_connections(self) -> int:
        with self._lock:
            return len(self._idle)

    # -- sending -------------------------------------------------------------------------------
    def send(self, message: OutboundMessage) -> str | None:
        """:class:`~winback.ports.Channel`: send now; raises DeliveryFailed when refused."""
        return self.send_one(message).raise_or_id()

    def send_one(self, msg: OutboundMessage, durable: Durable | None = None) -> SendResult:
        """Send one message (retrying in line). ``durable`` (the previous message's outcome
        being recorded) is called before the server can accept this one: after DATA, before
        the content. When it raises, the connection is dropped mid-transaction (the server
        discards the message) and :class:`~winback.delivery.channels.NotRecorded` is raised.
        """
        last = SendResult("retry", "not tried")
        data = msg.content.encode("utf-8")
        gate = _guard(durable) if durable is not None else None
        for attempt in range(1, self.inline_attempts + 1):
            if attempt > 1:
                time.sleep(backoff(attempt - 1, self.retry_base, cap=5.0))
            last = self._attempt(msg, data, gate)
            if last.outcome != "retry":
                return last
        return last

    def _attempt(self, msg: OutboundMessage, data: bytes, gate: Durable | None) -> SendResult:
        """One try on a pooled connection, kept for the next message unless it may be in a
        bad state."""
        self.bucket.acquire()
        pooled: _Pooled | None = None
        keep = True
        try:
            pooled = self._checkout()
            return _transmit(pooled.smtp, msg, data, gate)
        except NotRecorded:
            keep = False
            raise
        except OSError as exc:  # smtplib's errors included
            result, keep = self._failure(exc, pooled)
            return result
        finally:
            if pooled is not None:
                if keep:
                    self._checkin(pooled)
                else:
                    self._discard(pooled)

    def _failure(self, exc: OSError, pooled: _Pooled | None) -> tuple[SendResult, bool]:
        """What an error means for the message, and whether the connection can be kept
        (after a 5xx it is reset first)."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(exc.recipients.values()))
            keep = self._rset(pooled) if code >= 500 and pooled is not None else True
            return _classify(code, text, recipient=True), keep
        if isinstance(exc, smtplib.SMTPResponseException):
            result = _classify(exc.smtp_code, exc.smtp_error, recipient=False)
            if exc.smtp_code == 421:
                return result, False
            if exc.smtp_code >= 500 and pooled is not None:
                return result, self._rset(pooled)
            return result, True
        return SendResult("retry", f"connection: {exc}"), False

    def send_many(
        self,
        messages: Sequence[OutboundMessage | None],
        on_result: OnResult | None = None,
        stop: StopSignal | None = None,
    ) -> list[SendResult | None]:
        """Send a batch over the pooled connections, each connection's thread taking the next
        message and reporting each outcome to ``on_result`` before it sends another (see
        :func:`~winback.delivery.channels.send_each`); None for a message not sent."""
        return send_each(self._pool, self.connections, messages, self.send_one, on_result, stop)

    def submit(self, msg: OutboundMessage) -> Future[SendResult]:
        """Send on one of the pooled connections, in the background."""
        return self._pool.submit(self.send_one, msg)

    def close(self) -> None:
        """Wait for the sends in flight, then QUIT every connection."""
        self._pool.shutdown(wait=True)
        with self._lock:
            idle, self._idle = self._idle, []
        for pooled in idle:
            self._discard(pooled, quit=True)


def _guard(durable: Durable) -> Callable[[], None]:
    def gate() -> None:
        try:
            durable()
        except Exception as exc:
            raise NotRecorded(str(exc)) from exc

    return gate


def _classify(code: int, text: bytes | str, *, recipient: bool) -> SendResult:
    detail = f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
    if 400 <= code < 500:
        return SendResult("retry", detail, code=code)
    if code >= 500 and recipient:
        return SendResult("bounced", detail, code=code)
    return SendResult("failed", detail, code=code)


def _transmit(
    conn: _SMTP | _SMTPS, msg: OutboundMessage, data: bytes, gate: Durable | None
) -> SendResult:
    """MAIL, RCPT and DATA for one message; ``gate`` is called after DATA, before the
    content."""
    options: list[str] = []
    if not (msg.sender or "").isascii() or not (msg.to or "").isascii():
        # An internationalised address (RFC 6531) needs the server's SMTPUTF8.
        if not conn.has_extn("smtputf8"):
            return SendResult(
                "failed",
                f"address {msg.to!r} is internationalised and the SMTP server "
                "does not offer SMTPUTF8",
            )
        options = ["SMTPUTF8"]
    conn.gate = gate
    try:
        conn.sendmail(msg.sender or "", [msg.to or ""], data, options)
    finally:
        conn.gate = None
    return SendResult("sent", "250 accepted")
