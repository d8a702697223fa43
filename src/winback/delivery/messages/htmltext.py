"""A plain-text part from an HTML email: fast (string scans and a few regular expressions, no
DOM), readable (links as ``label (url)``, paragraphs and rows on their own lines)."""

from __future__ import annotations

import html
import re

_DROP = re.compile(r"<(style|script|title)\b.*?</\1\s*>|<!--.*?-->", re.S | re.I)
_SKIP = re.compile(r"<(div|span|td|p)\b[^>]*\bdata-text-skip\b[^>]*>.*?</\1\s*>", re.S | re.I)
_LINK = re.compile(r"<a\b[^>]*?\bhref\s*=\s*([\"'])(.*?)\1[^>]*>(.*?)</a\s*>", re.S | re.I)
_BREAK = re.compile(r"<br\s*/?>", re.I)
_LI_END = re.compile(r"</li\s*>", re.I)
_BLOCK_END = re.compile(r"</(?:p|div|h[1-6]|tr|table|ul|ol|blockquote)\s*>", re.I)
_LI = re.compile(r"<li\b[^>]*>", re.I)
_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")
_BLANKS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


def _link(match: re.Match[str]) -> str:
    url = html.unescape(match.group(2)).strip()
    label = " ".join(_TAG.sub("", match.group(3)).split())
    if not label or html.unescape(label) == url:
        return url
    if url.startswith(("#", "mailto:")):
        return label
    return f"{label} ({url})"


def html_to_text(source: str) -> str:
    lower = source[:4096].lower()
    start = lower.find("<body")
    text = source[source.index(">", start) + 1 :] if start >= 0 else source
    head_end = text.lower().find("</head>") if start < 0 else -1
    if head_end >= 0:
        text = text[head_end + 7 :]
    if "data-text-skip" in text:
        text = _SKIP.sub("", text)
    if "<style" in text or "<script" in text or "<!--" in text or "<title" in text:
        text = _DROP.sub("", text)
    text = _LINK.sub(_link, text)
    text = _BREAK.sub("\n", text)
    text = _LI_END.sub("\n", text)
    text = _BLOCK_END.sub("\n\n", text)
    text = _LI.sub("- ", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANKS.sub("\n\n", text)
    return text.strip() + "\n"
