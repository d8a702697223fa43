"""Reading asynchronous reports from mailbox providers: feedback-loop complaints (ARF,
RFC 5965, ``multipart/report; report-type=feedback-report``) and delivery status
notifications (DSN, RFC 3464, ``report-type=delivery-status``), from ``.eml`` files, mbox
files and folders (streamed, one message at a time) or the HTTP service, plus a small JSON
form. What a report changes is :mod:`winback.delivery.reports.record`'s.

Every report has a stable key (the report's own Message-ID, else a digest of its bytes, with
the recipient and the original Message-ID), so re-importing the same report changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from winback.clock import as_utc
from winback.errors import UnreadableFile, WinbackError
from winback.inputs import Instant, Text

Kind = Literal["complaint", "bounce", "notice"]
_TOKEN = re.compile(rb"/u/([A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})")
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
_MSGID = re.compile(r"<[^<>\s]+>")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MAX_MESSAGE = 50 * 1024 * 1024
BATCH = 200


class InvalidReportFile(WinbackError):
    """A file given to ``feedback-loop import`` is neither an email message nor an mbox."""


class ReportRejected(Exception):
    """One report could not be used; the message says why (it goes to the reject list)."""


@dataclass(slots=True)
class Report:
    """One complaint or bounce, as parsed (one per recipient of a DSN)."""

    kind: Kind
    key: str
    source: str
    format: str  # arf | dsn | json
    recipient: str | None = None
    original_message_id: str | None = None
    severity: Literal["hard", "soft"] | None = None
    status: str | None = None  # DSN status (5.1.1) or feedback type (abuse)
    detail: str | None = None
    occurred_at: datetime | None = None
    tokens: list[str] = field(default_factory=list)
    raw: bytes | None = None
    problem: str | None = None  # set: the report goes to the reject list


class FeedbackIn(BaseModel):
    """The JSON form of a report: what a provider's webhook or a script sends when it has
    already parsed the report."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["complaint", "bounce"]
    email: Text | None = Field(
        None, max_length=320, description="The recipient address (the one to suppress)."
    )
    message_id: Text | None = Field(
        None, max_length=998, description="Message-ID of our original message, if known."
    )
    status: Text | None = Field(
        None,
        max_length=64,
        description="Bounces: the enhanced status code (5.x.x = hard, 4.x.x = soft; default "
        "hard). Complaints: the feedback type (default abuse).",
    )
    occurred_at: Instant | None = Field(None, description="When; default: now.")
    id: Text | None = Field(
        None, max_length=200, description="The sender's id of the report; repeats are ignored."
    )


# -- parsing -------------------------------------------------------------------------------------


def parse_report(raw: bytes, *, source: str) -> list[Report]:
    """The reports in one email (ARF or DSN); raises :class:`ReportRejected` with the reason
    when it is neither."""
    if not raw.strip():
        raise ReportRejected("empty message")
    msg = message_from_bytes(raw, policy=compat32)
    if not msg.keys():
        raise ReportRejected("not an email message (no header lines)")
    report_part = _find(msg, ("message/feedback-report", "message/delivery-status"))
    if report_part is None:
        raise ReportRejected(
            f"not a feedback report (RFC 5965) or delivery status notification (RFC 3464): "
            f"Content-Type {msg.get_content_type()!r} has no message/feedback-report or "
            "message/delivery-status part"
        )
    report_id = _first_msgid(msg.get("Message-ID")) or digest(normalised(raw))
    original = _original(msg)
    orig_id = _first_msgid(original.get("Message-ID")) if original is not None else None
    # Our unsubscribe tokens, wherever they appear (cheap scan of the raw bytes; the decoded
    # returned original only when the raw text has none, e.g. a quoted-printable body).
    found = _TOKEN.findall(raw) or _TOKEN.findall(_original_bytes(msg))
    tokens = sorted({t.decode() for t in found})
    sent_date = _date(msg.get("Date"))
    if report_part.get_content_type() == "message/feedback-report":
        return [_arf(report_part, msg, original, report_id, orig_id, tokens, sent_date, source)]
    return _dsn(report_part, original, report_id, orig_id, tokens, sent_date, source)


def _find(msg: Message, types: tuple[str, ...]) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() in types:
            return part
    return None


def _arf(
    part: Message,
    msg: Message,
    original: Message | None,
    report_id: str,
    orig_id: str | None,
    tokens: list[str],
    sent_date: datetime | None,
    source: str,
) -> Report:
    fields = _blocks(part)
    if not fields:
        raise ReportRejected("message/feedback-report part has no fields")
    head = fields[0]
    feedback_type = (head.get("Feedback-Type") or "").strip().lower()
    if not feedback_type:
        raise ReportRejected("feedback report without the required Feedback-Type field")
    recipient = _address(head.get("Original-Rcpt-To") or head.get("Removal-Recipient"))
    if recipient is None and original is not None:
        recipient = _address(original.get("To"))
    kind: Kind = "notice" if feedback_type == "not-spam" else "complaint"
    agent = (head.get("User-Agent") or "").strip() or None
    return Report(
        kind=kind,
        key=digest(f"arf|{report_id}|{recipient}|{orig_id}".encode()),
        source=source,
        format="arf",
        recipient=recipient,
        original_message_id=orig_id,
        status=feedback_type,
        detail=agent,
        occurred_at=_date(head.get("Arrival-Date") or head.get("Received-Date")) or sent_date,
        tokens=tokens,
    )


def _dsn(
    part: Message,
    original: Message | None,
    report_id: str,
    orig_id: str | None,
    tokens: list[str],
    sent_date: datetime | None,
    source: str,
) -> list[Report]:
    blocks = _blocks(part)
    if len(blocks) < 2:
        raise ReportRejected(
            "message/delivery-status part has no per-recipient fields (expected a block with "
            "Final-Recipient, Action and Status after the per-message block)"
        )
    arrival = _date(blocks[0].get("Arrival-Date")) or sent_date
    # Gmail names the original in the per-message block even when it returns no headers.
    orig_id = orig_id or _first_msgid(blocks[0].get("X-Original-Message-ID"))
    out: list[Report] = []
    for block in blocks[1:]:
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        action = (block.get("Action") or "").strip().lower()
        status_text = block.get("Status") or ""
        m = _STATUS.search(status_text)
        status = ".".join(m.groups()) if m else None
        diagnostic = " ".join((block.get("Diagnostic-Code") or "").split()) or None
        if not action:
            raise ReportRejected(f"DSN recipient block for {recipient} has no Action field")
        severity: Literal["hard", "soft"] | None = None
        kind: Kind = "notice"
        if action == "failed":
            kind = "bounce"
            severity = "soft" if status is not None and status.startswith("4") else "hard"
        out.append(
            Report(
                kind=kind,
                key=digest(f"dsn|{report_id}|{recipient}|{orig_id}".encode()),
                source=source,
                format="dsn",
                recipient=recipient,
                original_message_id=orig_id,
                severity=severity,
                status=status or action,
                detail=diagnostic,
                occurred_at=_date(block.get("Last-Attempt-Date")) or arrival,
                tokens=tokens,
            )
        )
    return out


def _blocks(part: Message) -> list[Message]:
    """Header blocks of a message/feedback-report or message/delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):  # e.g. base64 or quoted-printable encoded report fields
        text = part.get_payload(decode=True)
        body = text.decode("utf-8", "replace") if isinstance(text, bytes) else payload
        return [
            HeaderParser(policy=compat32).parsestr(chunk.strip() + "\n")
            for chunk in re.split(r"\r?\n\s*\r?\n", body)
            if chunk.strip()
        ]
    return []


def _original(msg: Message) -> Message | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        if ctype == "text/rfc822-headers":
            data = part.get_payload(decode=True)
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
            return HeaderParser(policy=compat32).parsestr(text)
    return None


def _original_bytes(msg: Message) -> bytes:
    """The returned original (headers and body), where our tokens may be found."""
    chunks: list[bytes] = []
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            chunks.append(part.as_bytes())
    return b"\n".join(chunks)


def _address(value: str | None) -> str | None:
    if not value:
        return None
    text = value.split(";", 1)[1] if ";" in value and "@" in value.split(";", 1)[1] else value
    for _, addr in getaddresses([text.strip()]):
        if "@" in addr:
            return addr.strip().strip("<>").lower()
    return None


def _first_msgid(value: str | None) -> str | None:
    if not value:
        return None
    m = _MSGID.search(value)
    if m:
        return m.group(0)
    value = value.strip()
    return f"<{value}>" if value and " " not in value else None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = as_utc(parsedate_to_datetime(value.strip()))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if 1900 <= when.year <= 9000 else None


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def normalised(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").strip()


def from_json(item: FeedbackIn) -> Report:
    if item.type == "bounce":
        m = _STATUS.search(item.status or "")
        status = ".".join(m.groups()) if m else None
        severity: Literal["hard", "soft"] | None = (
            "soft" if status is not None and status.startswith("4") else "hard"
        )
    else:
        status, severity = (item.status or "abuse").strip().lower(), None
    when, problem = None, None
    if item.occurred_at is not None:
        try:
            when = as_utc(item.occurred_at)
        except OverflowError:
            when = None
        if when is None or not 1900 <= when.year <= 9000:
            when, problem = None, f"occurred_at {item.occurred_at}: expected a year 1900-9000"
    ident = item.id or "|".join(
        str(v)
        for v in (
            item.email,
            item.message_id,
            item.status,
            item.occurred_at.isoformat() if item.occurred_at else None,
        )
    )
    return Report(
        kind=item.type,
        key=digest(f"json|{item.type}|{ident}".encode()),
        source="api",
        format="json",
        recipient=(item.email or "").strip().lower() or None,
        original_message_id=_first_msgid(item.message_id),
        severity=severity,
        status=status,
        occurred_at=when,
        problem=problem,
    )


# -- files ---------------------------------------------------------------------------------------


def report_files(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Every file to read, with its kind (``eml`` or ``mbox``); raises
    :class:`InvalidReportFile` before anything is read when one is not usable."""
    out: list[tuple[Path, str]] = []
    for path in paths:
        if not path.exists():
            raise UnreadableFile(f"{path}: no such file or folder")
        files = (
            sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if path.is_dir()
            else [path]
        )
        for f in files:
            out.append((f, _sniff(f)))
    return out


def _sniff(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc.strerror or exc}") from None
    first = next((line for line in head.splitlines() if line.strip()), b"")
    if first.startswith(b"From "):
        return "mbox"
    if _HEADER_LINE.match(first):
        return "eml"
    shown = first[:60].decode("utf-8", "replace") if first else "an empty file"
    raise InvalidReportFile(
        f"{path}: expected an email message (.eml: header lines such as 'From: ...' or "
        f"'Content-Type: multipart/report; ...') or an mbox file (first line 'From ...'); "
        f"found {shown!r}"
    )


def read_messages(path: Path, kind: str) -> Iterator[tuple[str, bytes]]:
    """(source, raw message) of each message in the file, one at a time."""
    if kind == "eml":
        if path.stat().st_size > _MAX_MESSAGE:
            raise InvalidReportFile(
                f"{path}: {path.stat().st_size} bytes is too large for one report "
                f"(at most {_MAX_MESSAGE}); is it an mbox without 'From ' separator lines?"
            )
        yield str(path), path.read_bytes()
        return
    n = 0
    lines: list[bytes] = []
    previous_blank = True
    with path.open("rb") as fh:
        for line in fh:
            if line.startswith(b"From ") and previous_blank:
                if lines:
                    n += 1
                    yield f"{path}#{n}", b"".join(lines)
                lines = []
            else:
                if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
                    line = line[1:]  # mboxrd quoting
                lines.append(line)
            previous_blank = not line.strip()
    if lines:
        n += 1
        yield f"{path}#{n}", b"".join(lines)
