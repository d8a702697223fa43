"""Channels that do not leave the machine: the file sink (the dry-run channel of the
delivery worker: one JSON file per message in ``<workspace>/outbox/``) and a counting sink
for benchmarks."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from winback.ports import OneAtATime, OutboundMessage

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(dedup_key: str) -> str:
    return _UNSAFE.sub("_", dedup_key) + ".json"


def readable(message: OutboundMessage) -> dict[str, Any]:
    """The message as written: every field of the outbox message, plus what a person reads.
    Email: ``subject``, ``text`` and ``html`` decoded from the rendered RFC 5322 message
    (kept whole in ``content``); SMS, push and webhooks: ``body``, ``title`` and ``url``."""
    data = asdict(message)
    if message.content:
        parsed = email.message_from_string(message.content, policy=email.policy.default)
        data["subject"] = str(parsed.get("Subject", ""))
        for kind in ("plain", "html"):
            part = parsed.get_body((kind,))
            data["text" if kind == "plain" else "html"] = (
                part.get_content() if part is not None else ""
            )
    elif message.fields:
        for key in ("body", "title", "url"):
            data[key] = message.fields.get(key)
    return data


class FileSink(OneAtATime):
    """Writes each message to ``<folder>/<dedup key>.json``, atomically: a temporary file is
    written and then linked to its final name, which fails when the name exists. A message
    whose file exists already (a crash after writing, before the outbox row was marked sent)
    is not written again.

    ``config``: the provider configuration when it stands in for a webhook provider (the
    worker reads its ``needs_consent``)."""

    def __init__(self, folder: Path, *, config: Any = None) -> None:
        self.folder = folder
        self.config = config
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_of(self, dedup_key: str) -> Path:
        return self.folder / file_name(dedup_key)

    def send(self, message: OutboundMessage) -> str | None:
        final = self.path_of(message.dedup_key)
        if final.exists():
            return final.name
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(readable(message), out, ensure_ascii=False, sort_keys=True, indent=1)
            try:
                os.link(tmp, final)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        return final.name


class CountingSink(OneAtATime):
    """Counts messages per (flow, step); sends nothing."""

    def __init__(self) -> None:
        self.count = 0
        self.per_step: dict[str, int] = {}

    def send(self, message: OutboundMessage) -> str | None:
        self.count += 1
        key = f"{message.flow}:{message.step}"
        self.per_step[key] = self.per_step.get(key, 0) + 1
        return None
