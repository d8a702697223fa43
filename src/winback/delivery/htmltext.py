"""A plain-text part from an HTML email: fast (regular expressions, no DOM), readable
(links as ``label (url)``, paragraphs and rows on their own lines)."""

from __future__ import annotations

import html
import re

_DROP = re.compile(
    r"<(head|style|script|title)\b.*?</\1\s*>|<!--.*?-->|"
    r"<[^>]+\bdata-text-skip\b[^>]*>.*?</(div|span|td|table)\s*>",
    re.S | re.I,
)
_LINK = re.compile(r"<a\b[^>]*?\bhref\s*=\s*([\"'])(.*?)\1[^>]*>(.*?)</a\s*>", re.S | re.I)
_BREAK = re.compile(r"<br\s*/?>", re.I)
_BLOCK_END = re.compile(r"</(p|div|h[1-6]|tr|table|ul|ol|blockquote)\s*>", re.I)
_LI_END = re.compile(r"</li\s*>", re.I)
_LI = re.compile(r"<li\b[^>]*>", re.I)
_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANKS = re.compile(r"\n\s*\n\s*(\n\s*)+")


def _link(match: re.Match[str]) -> str:
    url = html.unescape(match.group(2)).strip()
    label = " ".join(_TAG.sub("", match.group(3)).split())
    if not label or html.unescape(label) == url:
        return url
    if url.startswith(("#", "mailto:")):
        return label
    return f"{label} ({url})"


def html_to_text(source: str) -> str:
    text = _DROP.sub("", source)
    text = _LINK.sub(_link, text)
    text = _BREAK.sub("\n", text)
    text = _LI_END.sub("\n", text)
    text = _BLOCK_END.sub("\n\n", text)
    text = _LI.sub("- ", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = _BLANKS.sub("\n\n", text)
    return text.strip() + "\n"
