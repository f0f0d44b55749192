"""The emails moto's SES accepted, read back through moto's own API (`/moto-api/data.json`),
as the local stack shows them (make run prints the URL)."""

from __future__ import annotations

import email
import email.policy
import json
import urllib.request
from email.message import EmailMessage
from typing import Any, cast


def sent_emails(moto_url: str, to: str | None = None) -> list[EmailMessage]:
    """Every message sent so far (oldest first), or those addressed to `to`."""
    request = urllib.request.Request(f"{moto_url}/moto-api/data.json")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        data: dict[str, Any] = json.loads(response.read())
    messages = []
    for raw in data.get("ses", {}).get("RawMessage", []):
        message = cast(
            EmailMessage, email.message_from_string(raw["raw_data"], policy=email.policy.default)
        )
        if to is None or to in str(message["To"]):
            messages.append(message)
    return messages


def attachments(message: EmailMessage) -> list[tuple[str, str, bytes]]:
    """(filename, content type, bytes) of each attachment."""
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append((str(part.get_filename()), part.get_content_type(), payload))
    return found


def body_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(cast(EmailMessage, body).get_content())
