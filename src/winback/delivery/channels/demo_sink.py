"""A local SMTP server for demos: :func:`demo_smtp_sink` runs aiosmtpd on 127.0.0.1 and
writes every message it receives into a folder as an ``.eml`` file (open it with any mail
program, or read it as text)."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winback.errors import WinbackError


@dataclass(frozen=True)
class DemoSink:
    url: str  # the smtp_url setting that delivers here
    folder: Path

    def messages(self) -> list[Path]:
        return sorted(self.folder.glob("*.eml"))


class _WriteEml:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        self.count += 1
        digest = hashlib.sha256(data).hexdigest()[:12]
        rcpt = "_".join(envelope.rcpt_tos).replace("@", "_at_").replace("/", "_")[:80]
        path = self.folder / f"{self.count:05d}-{rcpt}-{digest}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return "250 Message accepted"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def demo_smtp_sink(folder: Path | str) -> Iterator[DemoSink]:
    """Run a local SMTP server while the block runs; messages land in ``folder``."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:  # pragma: no cover - aiosmtpd is in the dev extra
        raise WinbackError(
            "the demo SMTP server needs aiosmtpd: pip install 'winback[dev]'"
        ) from None
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    controller = Controller(
        _WriteEml(target), hostname="127.0.0.1", port=port, enable_SMTPUTF8=True
    )
    controller.start()
    try:
        yield DemoSink(url=f"smtp://127.0.0.1:{port}", folder=target)
    finally:
        controller.stop()
