"""Email bytes, built directly (a multipart/alternative message with 7bit or
quoted-printable text and HTML parts, the HTML's line breaks packed): several times faster
than :class:`email.message.EmailMessage`, and the tests parse every message back with the
standard library's parser."""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from functools import lru_cache

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'\s>]+)\2""", re.I)

#: Longest line :func:`pack_html_lines` makes (RFC 5322 allows 998 characters plus CRLF).
PACK_LINE_LIMIT = 900
#: Where line breaks are content: elements that keep them (and CSS ``white-space``, below).
_KEEPS_BREAKS = re.compile(rb"<(?:pre|textarea|script|listing|xmp|plaintext)\b")
_MARK = b"\x00"  # a line break that may become a space; never in HTML (NUL is a parse error)
_NOT_ANGLE_OR_LF = bytes(c for c in range(256) if c not in b"<>\n")
#: A tag (or comment, or declaration), its quoted attribute values whole.
_TAG = re.compile(rb"""<[a-zA-Z/!?](?:[^>"']++|"[^"]*+"|'[^']*+')*+>""")


def pack_html_lines(html: bytes, limit: int = PACK_LINE_LIMIT) -> bytes:
    """ASCII HTML with its line breaks packed: each line break becomes a space, except one
    wherever a line would pass ``limit`` bytes.

    A browser or mail client renders the result exactly as the original, because HTML
    collapses every run of whitespace, line breaks included, to one space. The exceptions are
    left alone: HTML that has ``pre``, ``textarea`` or ``script`` elements or mentions the CSS
    ``white-space`` property is returned unchanged, and a line break inside a tag (perhaps
    inside an attribute value) is kept. A line is not made to start with a dot (which SMTP
    would escape) when another break is at hand. What changes is the number of lines on the wire: a template written over
    a hundred lines becomes a handful, and every relay and SMTP server handles a message line
    by line (the benchmark's aiosmtpd sink spends about 3 us of CPU per line). Works on
    bytes: the HTML part is ASCII by then (other characters are character references), and
    a few C-level scans of bytes cost less than one pass over the lines in Python."""
    if b"\n" not in html or _MARK in html:
        return html
    low = html.lower()
    if b"white-space" in low or _KEEPS_BREAKS.search(low):
        return html
    # The brackets alone, in order: when they alternate and no line break follows a "<",
    # every line break is between tags (one C-level pass). Otherwise a line break may be in
    # a tag, or a ">" in an attribute value: the tags are parsed, quoted values and all.
    angles = html.translate(None, _NOT_ANGLE_OR_LF)
    flat = angles.replace(b"\n", b"")
    if b"<\n" in angles or b">>" in flat or b"<<" in flat:
        marked = _mark_outside_tags(html)
    else:
        marked = html.replace(b"\n", _MARK)
    if len(marked) > limit:
        marked = _break_lines(marked, limit)
    return marked.replace(_MARK, b" ")


def _mark_outside_tags(html: bytes) -> bytes:
    parts: list[bytes] = []
    at = 0
    for tag in _TAG.finditer(html):
        parts.append(html[at : tag.start()].replace(b"\n", _MARK))
        parts.append(tag.group())
        at = tag.end()
    parts.append(html[at:].replace(b"\n", _MARK))
    return b"".join(parts)


def _break_lines(marked: bytes, limit: int) -> bytes:
    """A line break at the last mark before each ``limit`` bytes (not before a dot when
    there is a choice)."""
    out: list[bytes] = []
    for line in marked.split(b"\n"):  # the line breaks kept end lines anyway
        start = 0
        while len(line) - start > limit:
            cut = last = line.rfind(_MARK, start, start + limit + 1)
            while cut > start and line.startswith(b".", cut + 1):
                cut = line.rfind(_MARK, start, cut)
            if cut <= start:  # only before dots (SMTP escapes them), or nowhere
                cut = last
            if cut <= start:  # one piece longer than the limit: break right after it
                cut = line.find(_MARK, start + limit)
                if cut < 0:
                    break
            out.append(line[start:cut])
            start = cut + 1
            while line.startswith(_MARK, start):  # more breaks of the same run: one is enough
                start += 1
        out.append(line[start:])
    return b"\n".join(out)


def message_id_for(dedup_key: str, domain: str) -> str:
    """Deterministic Message-ID of an outbox row: a resend after a crash carries the same id,
    so that a relay or mailbox that deduplicates on Message-ID drops the copy."""
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:32]
    return f"<{digest}.wb@{domain}>"


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].strip(">").strip() or "localhost"


def rewrite_links(
    html: str, text: str, track: Callable[[int, str], str], skip_prefix: str
) -> tuple[str, str]:
    """Replace each http(s) link of the HTML by ``track(index, url)`` (links to our own
    service, such as unsubscribe and feedback, are signed already and kept), and the same URLs
    in the text part."""
    mapping: dict[str, str] = {}

    def sub(match: re.Match[str]) -> str:
        url = match.group(3).replace("&amp;", "&")
        if url.startswith(skip_prefix) or "data-notrack" in match.group(1):
            return match.group(0)
        if url not in mapping:
            mapping[url] = track(len(mapping), url)
        quote = match.group(2)
        return f"{match.group(1)}{quote}{mapping[url]}{quote}"

    html = _HREF.sub(sub, html)
    for url in sorted(mapping, key=len, reverse=True):
        text = text.replace(url, mapping[url])
    return html, text


def _header(value: str) -> str:
    value = " ".join(value.split())
    if value.isascii():
        if len(value) < 900:
            return value
        return Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")
    return _encoded_words(value)


def _encoded_words(value: str) -> str:
    """RFC 2047 ``=?utf-8?b?...?=`` words of at most 60 characters (36 bytes of whole
    characters each), folded with CRLF SP: what :class:`email.header.Header` makes of a
    non-ASCII subject or name (a first name such as "Chloé"), several times faster."""
    words: list[str] = []
    data = value.encode("utf-8")
    start = 0
    while start < len(data):
        end = min(start + 36, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        words.append(f"=?utf-8?b?{binascii.b2a_base64(data[start:end], newline=False).decode()}?=")
        start = end
    return "\r\n ".join(words)


def _body(text: str, *, html: bool) -> tuple[str, bytes]:
    """Transfer encoding and bytes of a part: 7bit when the part is ASCII with short lines
    (HTML is made ASCII by writing other characters as character references, and its line
    breaks are packed), else quoted-printable."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if text.isascii():
        data = text.encode("ascii")
    else:
        data = text.encode("ascii", "xmlcharrefreplace") if html else text.encode("utf-8")
    if html:
        data = pack_html_lines(data)
    if data.isascii() and max(map(len, data.split(b"\n"))) <= 990:
        return "7bit", data.replace(b"\n", b"\r\n")
    return "quoted-printable", binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


@lru_cache(maxsize=64)
def _date_header(date: datetime) -> str:
    return format_datetime(date)  # a batch shares one send time


@lru_cache(maxsize=64)
def _from_header(name: str, address: str) -> str:
    return formataddr((name, address)) if name else address


def build_email(
    *,
    from_addr: str,
    from_name: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    list_unsubscribe: str | None = None,
    unsubscribe_mailto: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """RFC 5322 bytes with CRLF line ends."""
    for value in (from_addr, to, message_id):
        if "\r" in value or "\n" in value:
            raise ValueError(f"line break in an address header: {value!r}")
    boundary = "=_wb_" + hashlib.sha1(message_id.encode()).hexdigest()[:24]
    lines = [
        f"From: {_from_header(from_name, from_addr)}",
        f"To: {to}",
        f"Subject: {_header(subject)}",
        f"Date: {_date_header(date)}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
    ]
    if list_unsubscribe:
        targets = [f"<{list_unsubscribe}>"]
        if unsubscribe_mailto:
            targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
        lines.append(f"List-Unsubscribe: {', '.join(targets)}")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {_header(value)}")
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    head = "\r\n".join(lines).encode("utf-8")
    part_head = (
        "Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    )
    sep = f"\r\n--{boundary}\r\n".encode()
    text_cte, text_bytes = _body(text, html=False)
    html_cte, html_bytes = _body(html, html=True)
    return b"".join(
        (
            head,
            b"\r\n\r\nThis is a multipart message in MIME format.",
            sep,
            part_head.format(kind="plain", cte=text_cte).encode(),
            text_bytes,
            sep,
            part_head.format(kind="html", cte=html_cte).encode(),
            html_bytes,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
