"""``POST /webhooks/shopify`` and ``POST /webhooks/woocommerce``: the shop platforms'
webhooks, verified by their signature and applied once per delivery id
(:mod:`winback.shop_webhooks`)."""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from winback.shop_webhooks import BadWebhook, signature_ok
from winback.web.deps import ErrorPublic, WorkspaceDep

router = APIRouter(prefix="/webhooks", tags=["shop webhooks"])
#: Shopify's own limit for a webhook body is far below this.
MAX_BODY = 2 * 1024 * 1024

HEADERS = {
    "shopify": ("X-Shopify-Hmac-Sha256", "X-Shopify-Webhook-Id", "X-Shopify-Topic"),
    "woocommerce": ("X-WC-Webhook-Signature", "X-WC-Webhook-Delivery-ID", "X-WC-Webhook-Topic"),
}


class WebhookResult(BaseModel):
    outcome: str  # applied | ignored | duplicate


_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorPublic, "description": "No delivery id or topic, or a body not JSON."},
    401: {"model": ErrorPublic, "description": "Missing or wrong signature."},
    404: {"model": ErrorPublic, "description": "This platform's webhook secret is not set."},
    413: {"model": ErrorPublic, "description": "The body is larger than 2 MB."},
    422: {"model": ErrorPublic, "description": "A signed payload winback cannot use."},
}


@router.post("/shopify", response_model=WebhookResult, responses=_RESPONSES)
async def shopify(request: Request, workspace: WorkspaceDep) -> WebhookResult:
    """A Shopify webhook (orders create / updated / paid / cancelled, refunds create,
    customers create / update), signed with the shop's webhook secret
    (``shopify_webhook_secret``). 401: bad signature; 404: no secret configured."""
    return await _receive("shopify", request, workspace)


@router.post("/woocommerce", response_model=WebhookResult, responses=_RESPONSES)
async def woocommerce(request: Request, workspace: WorkspaceDep) -> WebhookResult:
    """A WooCommerce webhook (order created / updated, customer created / updated), signed
    with the webhook's secret (``woocommerce_webhook_secret``). WooCommerce's ping when a
    webhook is saved (no signature, ``webhook_id=...``) is answered 200."""
    return await _receive("woocommerce", request, workspace)


async def _receive(platform: str, request: Request, workspace: WorkspaceDep) -> WebhookResult:
    hooks = workspace.shop_webhooks
    secret = hooks.secret(platform)
    if secret is None:
        raise HTTPException(404, detail=f"{platform} webhooks are not configured")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, detail="the webhook body is larger than 2 MB")
    sign_header, id_header, topic_header = HEADERS[platform]
    given = request.headers.get(sign_header)
    if platform == "woocommerce" and given is None and body.startswith(b"webhook_id="):
        return WebhookResult(outcome="ignored")  # the ping sent when the webhook is saved
    if not signature_ok(secret, body, given):
        raise HTTPException(401, detail=f"missing or wrong {sign_header}")
    webhook_id = request.headers.get(id_header)
    topic = request.headers.get(topic_header)
    if not webhook_id or not topic:
        raise HTTPException(400, detail=f"{id_header} and {topic_header} are required")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, detail="the body is not JSON") from None
    try:
        outcome = await run_in_threadpool(hooks.receive, platform, webhook_id, topic, payload)
    except BadWebhook as exc:
        raise HTTPException(422, detail=str(exc)) from None
    return WebhookResult(outcome=outcome)
