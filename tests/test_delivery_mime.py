"""The HTML part's line breaks are packed: a browser renders the packed HTML exactly as the
original (same tags, same attributes, same text once HTML's whitespace is collapsed), lines
stay within the limit, and where line breaks are content nothing is touched."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_delivery_templates import SHIPPED, _context
from winback.delivery.messages.mime import PACK_LINE_LIMIT, build_email, pack_html_lines
from winback.delivery.messages.templates import TemplateRepository

_WHITESPACE = re.compile(r"[ \t\n\r\f]+")  # HTML's whitespace (not the no-break space)


class _Events(HTMLParser):
    """What a browser builds from HTML, as a list: tags with their attributes exactly, and
    text with each run of whitespace collapsed to one space (CSS ``white-space: normal``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, object]] = []
        self.text: list[str] = []

    def _flush(self) -> None:
        if self.text:
            text = _WHITESPACE.sub(" ", "".join(self.text))
            if text != " " or (self.events and self.events[-1][0] != "text"):
                self.events.append(("text", text))
            self.text = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._flush()
        self.events.append(("start", (tag, attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._flush()
        self.events.append(("start", (tag, attrs)))

    def handle_endtag(self, tag: str) -> None:
        self._flush()
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self._flush()
        self.events.append(("comment", _WHITESPACE.sub(" ", data)))

    def handle_decl(self, decl: str) -> None:
        self._flush()
        self.events.append(("decl", decl))


def _rendering(html: bytes) -> list[tuple[str, object]]:
    parser = _Events()
    parser.feed(html.decode("ascii"))
    parser.close()
    parser._flush()
    return parser.events


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_templates_pack_to_a_few_lines_that_render_the_same(name: str) -> None:
    html = TemplateRepository(None).render(name, _context()).html
    original = html.encode("ascii", "xmlcharrefreplace")
    packed = pack_html_lines(original)
    assert _rendering(packed) == _rendering(original)
    assert len(_lines(original)) > 50 and len(_lines(packed)) <= 12, len(_lines(packed))
    assert max(map(len, _lines(packed))) <= PACK_LINE_LIMIT
    assert not any(line.startswith(b".") for line in _lines(packed))  # no dot-stuffing
    assert len(packed) <= len(original)  # only line breaks became spaces (or went)


def test_the_email_carries_the_packed_html_and_parses_back() -> None:
    html = TemplateRepository(None).render("reactivation-1", _context()).html
    data = build_email(
        from_addr="shop@example.com",
        from_name="Shop",
        to="ada@example.com",
        subject="Hi",
        text="Hi Ada",
        html=html,
        message_id="<m1@example.com>",
        date=datetime(2026, 3, 1, tzinfo=UTC),
    )
    assert data.count(b"\r\n") < 40  # headers, a short text part and a handful of HTML lines
    msg = email.message_from_bytes(data, policy=email.policy.default)
    part = msg.get_body(("html",))
    assert part is not None and part["Content-Transfer-Encoding"] == "7bit"
    received = part.get_content().encode("ascii")
    assert _rendering(received.replace(b"\r\n", b"\n")) == _rendering(
        html.encode("ascii", "xmlcharrefreplace")
    )


@pytest.mark.parametrize(
    "html",
    [
        b"<p>a\n  b</p>\n<pre>keep\n  this</pre>",
        b"<textarea>\nx\n</textarea>\n<p>y\nz</p>",
        b"<script>\nvar a = 1\nvar b = 2\n</script>",
        b'<p style="white-space: pre-line">one\ntwo</p>\n<p>x</p>',
        b"<style>.a { WHITE-SPACE: pre }</style>\n<p class=a>one\ntwo</p>",
        b"no line break at all",
    ],
)
def test_html_whose_line_breaks_are_content_is_left_as_it_is(html: bytes) -> None:
    assert pack_html_lines(html) is html


def test_a_line_break_inside_a_tag_is_kept() -> None:
    html = b'<img alt="first\nsecond"\n     src="x.png">\n<p>a\nb</p>\n<a\nhref="y">c</a>'
    packed = pack_html_lines(html)
    assert packed == b'<img alt="first\nsecond"\n     src="x.png"> <p>a b</p> <a\nhref="y">c</a>'
    assert _rendering(packed) == _rendering(html)


def test_long_documents_break_at_the_limit_and_not_before_a_dot_when_there_is_a_choice() -> None:
    html = b"\n".join([b"<p>" + b"word " * 30 + b"</p>\n.dot-class {}"] * 40)
    packed = pack_html_lines(html, limit=400)
    lines = _lines(packed)
    assert all(len(line) <= 400 for line in lines) and len(lines) < html.count(b"\n") / 2
    assert not any(line.startswith(b".") for line in lines)
    assert _rendering(packed) == _rendering(html)
    only_dots = b"\n".join([b".dot-class { color: red }"] * 40)
    lines = _lines(pack_html_lines(only_dots, limit=100))
    assert all(len(line) <= 100 for line in lines) and len(lines) < 20
    # A single piece over the limit is kept whole, on a line of its own.
    long = b"<p>a</p>\n<p>" + b"x" * 300 + b"</p>\n<p>b</p>"
    assert _lines(pack_html_lines(long, limit=100)) == [
        b"<p>a</p>",
        b"<p>" + b"x" * 300 + b"</p>",
        b"<p>b</p>",
    ]


_WORD = st.sampled_from(
    ["Hello", "world", "&nbsp;", "&amp;", "it's", '"quoted"', ".", "a > b", "<"]
)
_SPACE = st.sampled_from([" ", "\n", "  \n    ", "\n\n", "\t\n", " \r\n"])
_ATTR_VALUE = st.sampled_from(["x", "a b", "line\none", "  two\n  lines ", "", ">"])


@st.composite
def _html(draw: st.DrawFn) -> bytes:
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["open", "close", "text", "space", "comment"]))
        if kind == "open":
            tag = draw(st.sampled_from(["p", "td", "a", "img", "div", "span"]))
            attrs = "".join(
                f'{draw(_SPACE)}{name}="{draw(_ATTR_VALUE)}"'
                for name in draw(st.lists(st.sampled_from(["class", "alt", "title"]), unique=True))
            )
            parts.append(f"<{tag}{attrs}>")
        elif kind == "close":
            parts.append(f"</{draw(st.sampled_from(['p', 'td', 'a', 'div', 'span']))}>")
        elif kind == "text":
            parts.append(draw(_WORD))
        elif kind == "comment":
            parts.append(f"<!--{draw(_WORD)}{draw(_SPACE)}{draw(_WORD)}-->")
        else:
            parts.append(draw(_SPACE))
    return "".join(parts).encode("ascii")


@given(html=_html(), limit=st.integers(20, 120))
def test_packing_never_changes_what_a_browser_renders(html: bytes, limit: int) -> None:
    packed = pack_html_lines(html, limit=limit)
    assert _rendering(packed) == _rendering(html)
    assert len(packed) <= len(html)
    longest = max(map(len, _lines(html)))  # a longer line can only be one original line
    assert all(len(line.lstrip()) <= max(limit, longest) for line in _lines(packed))
    assert len(_lines(packed)) <= len(_lines(html))
