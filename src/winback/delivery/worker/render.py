"""Rendering a decided message into what its channel sends: the MIME email with its signed
tracking, unsubscribe and feedback links, or the fields of an SMS, push or webhook."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from winback.config import Settings
from winback.delivery.links.tokens import TokenSigner
from winback.delivery.messages.context import ContactData, render_context
from winback.delivery.messages.mime import build_email, domain_of, message_id_for, rewrite_links
from winback.delivery.messages.templates import Rendered, TemplateRepository
from winback.delivery.worker.decide import Decision
from winback.errors import WinbackError

#: The contact fields an SMS, push or webhook provider receives.
PROVIDER_CONTACT_FIELDS = ("id", "customer_id", "first_name", "last_name", "email", "phone")


class Renderer:
    """Renders decided messages with the workspace's templates, signing their links."""

    def __init__(
        self, settings: Settings, templates: TemplateRepository, signer: TokenSigner
    ) -> None:
        self.settings = settings
        self.templates = templates
        self.signer = signer
        self.base = settings.base_url.rstrip("/")
        self.domain = domain_of(settings.mail_from)

    def render(self, d: Decision, now: datetime) -> bool:
        """Render a decided message into its outgoing form; False (and ``failed``) when the
        template cannot be rendered for this contact."""
        try:
            self._render_one(d, now)
            return True
        except Exception as exc:  # a template error (or a bug) fails this message alone
            detail = (
                str(exc)
                if isinstance(exc, (WinbackError, ValueError))
                else f"{type(exc).__name__}: {exc}"
            )
            d.status, d.reason, d.outgoing = "failed", f"render: {detail}", None
            return False

    def _render_one(self, d: Decision, now: datetime) -> None:
        assert d.outgoing is not None and d.data is not None
        row = d.row
        oid, cid = int(row["id"]), int(row["contact_id"])
        unsub = f"{self.base}/u/{self.signer.sign('u', oid, cid)}"
        template = self.templates.get(str(row["template"])) if row.get("template") else None
        feedback = (
            f"{self.base}/f/{self.signer.sign('f', oid, cid)}"
            if template is not None and template.uses("feedback_url")
            else ""
        )
        context = render_context(
            d.data,
            settings=self.settings,
            message=row,
            now=now,
            coupon=d.coupon,
            unsubscribe_url=unsub,
            feedback_url=feedback,
        )
        if row.get("template"):
            rendered = self.templates.render(str(row["template"]), context)
        else:
            payload = row.get("payload") or {}
            rendered = Rendered(channel=row["channel"], body=str(payload.get("body", "")))
        if row["channel"] == "email":
            d.outgoing = replace(d.outgoing, content=self._email(d, rendered, unsub, now))
        else:
            d.outgoing = replace(d.outgoing, fields=_provider_fields(row, d.data, rendered))

    def _email(self, d: Decision, rendered: Rendered, unsub: str, now: datetime) -> str:
        """The RFC 5322 message: links rewritten through the click redirect, the open pixel
        before ``</body>``, List-Unsubscribe headers."""
        assert d.outgoing is not None
        row = d.row
        if rendered.channel != "email":
            raise ValueError(f"template {row['template']!r} is for {rendered.channel}")
        oid, cid = int(row["id"]), int(row["contact_id"])

        def track(index: int, url: str) -> str:
            return f"{self.base}/c/{self.signer.sign('c', oid, cid, index=index, url=url)}"

        html, text = rewrite_links(rendered.html, rendered.text, track, self.base)
        pixel = (
            f'<img src="{self.base}/o/{self.signer.sign("o", oid, cid)}.gif" width="1" '
            'height="1" alt="" style="display:block;border:0;width:1px;height:1px">'
        )
        at = html.rfind("</body>")
        html = html[:at] + pixel + html[at:] if at >= 0 else html + pixel
        message = build_email(
            from_addr=self.settings.mail_from,
            from_name=self.settings.mail_from_name,
            to=d.outgoing.to or "",
            subject=rendered.subject,
            text=text,
            html=html,
            message_id=d.outgoing.message_id or message_id_for(row["dedup_key"], self.domain),
            date=now,
            list_unsubscribe=unsub,
            unsubscribe_mailto=self.settings.unsubscribe_mailto,
            headers={"X-Winback-Flow": f"{row.get('flow') or ''}/{row.get('step') or ''}"},
        )
        return message.decode("utf-8")


def _provider_fields(row: dict[str, Any], data: ContactData, rendered: Rendered) -> dict[str, Any]:
    payload = row.get("payload") or {}
    return {
        "body": rendered.body,
        "title": rendered.title,
        "url": rendered.url,
        "data": payload.get("data") or {},
        "contact": {k: data.contact.get(k) for k in PROVIDER_CONTACT_FIELDS},
        "message": {"flow": row.get("flow"), "step": row.get("step")},
    }
