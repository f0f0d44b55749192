"""The Stripe webhook: no JWT; the signature of the clinic account in the path is the proof."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from clinic_payments.api.auth import public
from clinic_payments.api.errors import json_response, status_for
from clinic_payments.api.observability import count_webhook_event, logger
from clinic_payments.api.services import webhooks
from clinic_payments.domain.errors import DomainError
from clinic_payments.domain.webhooks import WebhookService


def count_failures(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """An event answered 5xx (Stripe sends it again) counts as outcome `failed`; a 4xx refusal
    (bad signature, stale timestamp) is the sender's, not ours, and is not counted."""
    try:
        return next_middleware(app)
    except Exception as exc:
        if not isinstance(exc, DomainError) or status_for(exc) >= 500:
            count_webhook_event("failed")
        raise


def webhook_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.post(
        "/v1/webhooks/stripe/<clinic_id>/<account_id>",
        middlewares=[count_failures, public],
        tags=["Webhooks"],
        summary="Stripe events for one clinic account (signed)",
    )
    def stripe_webhook(
        clinic_id: str, account_id: str, service: Annotated[WebhookService, Depends(webhooks)]
    ) -> Any:
        event = router.current_event
        raw = event.get("body") or ""
        payload = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode("utf-8")
        signature = event.headers.get("stripe-signature")
        outcome = service.handle(clinic_id, account_id, payload, signature)
        logger.info("stripe webhook", extra={"clinic_id": clinic_id, "outcome": outcome.value})
        count_webhook_event(outcome.value)
        return json_response(200, {"received": True})

    return router
