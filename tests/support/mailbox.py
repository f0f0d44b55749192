"""The emails moto's SES accepted, read back through the local moto server's mailbox route
(`/_local/ses/messages?to=...`, local/aws.py), one recipient's at a time."""

from __future__ import annotations

import email
import email.policy
import json
import urllib.parse
import urllib.request
from email.message import EmailMessage
from typing import Any, cast

from local.aws import MAILBOX_PATH


def sent_emails(moto_url: str, to: str | None = None) -> list[EmailMessage]:
    """Every message sent so far (oldest first), or those addressed to `to`."""
    query = "?" + urllib.parse.urlencode({"to": to}) if to is not None else ""
    request = urllib.request.Request(f"{moto_url}{MAILBOX_PATH}{query}")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        raw_messages: list[dict[str, Any]] = json.loads(response.read())
    messages = []
    for raw in raw_messages:
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
