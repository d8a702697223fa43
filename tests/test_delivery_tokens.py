"""Signed link tokens: round trip, and any change to a token is refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from winback.delivery.links.tokens import TokenSigner

SIGNER = TokenSigner("test-secret")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@given(
    message=st.integers(0, 2**53),
    contact=st.integers(0, 2**53),
    url=st.from_regex(r"https://[a-z]{1,12}\.example/[a-zA-Z0-9/?=&%-]{0,40}", fullmatch=True),
    position=st.integers(0, 10_000),
    replacement=st.sampled_from(ALPHABET),
)
def test_any_single_character_change_is_refused(
    message: int, contact: int, url: str, position: int, replacement: str
) -> None:
    token = SIGNER.sign("c", message, contact, index=3, url=url)
    link = SIGNER.verify("c", token)
    assert link is not None and (link.message, link.contact, link.url, link.index) == (
        message,
        contact,
        url,
        3,
    )
    i = position % len(token)
    changed = token[:i] + replacement + token[i + 1 :]
    if changed != token:
        assert SIGNER.verify("c", changed) is None


def test_kind_and_key_are_bound() -> None:
    token = SIGNER.sign("u", 1, 2)
    assert SIGNER.verify("u", token) is not None
    assert SIGNER.verify("f", token) is None  # an unsubscribe token is not a feedback token
    assert TokenSigner("other-secret").verify("u", token) is None
    assert SIGNER.verify("u", token + "A") is None and SIGNER.verify("u", "") is None


@given(
    secret=st.text(min_size=1, max_size=200),
    kind=st.sampled_from(["o", "c", "u", "f"]),
    message=st.integers(0, 2**53),
    contact=st.integers(0, 2**53),
)
def test_signature_is_standard_hmac_sha256(
    secret: str, kind: str, message: int, contact: int
) -> None:
    """The precomputed-pad HMAC gives the bytes of :func:`hmac.digest`: tokens issued before
    (and by any other HMAC implementation) keep verifying."""
    import base64
    import hashlib
    import hmac

    signer = TokenSigner(secret)
    token = signer.sign(kind, message, contact)  # type: ignore[arg-type]
    body, sig = (base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split("."))
    key = hashlib.sha256(b"winback-links\x00" + secret.encode()).digest()
    assert sig == hmac.digest(key, f"{kind}|".encode() + body, "sha256")[:16]
    assert signer.verify(kind, token) is not None  # type: ignore[arg-type]


def test_tokens_already_sent_keep_their_bytes() -> None:
    """Links in messages already delivered must keep verifying: the signature of a known
    token is pinned byte for byte."""
    signer = TokenSigner("pinned-secret")
    unsubscribe = "eyJtIjo0MiwiYyI6N30.6p99VfPMvRANwBbIuJkgHw"
    click = (
        "eyJtIjo0MiwiYyI6NywiaSI6MywidSI6Imh0dHBzOi8vc2hvcC5leGFtcGxlL8OpP2E9MSZiPTIifQ"
        ".xHfHkmPqSNP7_SYzSgYETw"
    )
    assert signer.sign("u", 42, 7) == unsubscribe
    assert signer.sign("c", 42, 7, index=3, url="https://shop.example/é?a=1&b=2") == click
    assert signer.sign("o", 1, 2) == "eyJtIjoxLCJjIjoyfQ.7QqS6HpYpSO6uaVnnmFoTA"
    assert signer.sign("f", 1, 2) == "eyJtIjoxLCJjIjoyfQ.4mXofUs80dprxZAyRGJZOw"
    link = signer.verify("c", click)
    assert link is not None and (link.message, link.contact, link.index) == (42, 7, 3)
    assert signer.verify("u", unsubscribe) is not None
