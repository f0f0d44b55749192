"""The EmailSender port on Amazon SES (SendRawEmail: a MIME message, so a PDF can ride along)."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from clinic_payments.domain.errors import EmailNotSentError
from clinic_payments.domain.ports import OutgoingEmail

if TYPE_CHECKING:
    from mypy_boto3_ses.client import SESClient


class SesEmailSender:
    """EmailSender port. The client is built on first use: most functions never send."""

    def __init__(self, client_factory: Callable[[], SESClient], from_address: str) -> None:
        self._client_factory = client_factory
        self._client: SESClient | None = None
        self._from = from_address

    def message(self, email: OutgoingEmail) -> EmailMessage:
        message = EmailMessage()
        # The clinic's name shown, our verified address sending (SES checks the address only).
        message["From"] = (
            formataddr((email.sender_name, self._from)) if email.sender_name else (self._from)
        )
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Message-ID"] = make_msgid(domain=self._from.rpartition("@")[2] or None)
        message.set_content(email.text)
        for attachment in email.attachments:
            maintype, _, subtype = attachment.content_type.partition("/")
            message.add_attachment(
                attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
            )
        return message

    def send(self, email: OutgoingEmail) -> None:
        if not self._from:
            raise EmailNotSentError("No sender address is configured (RECEIPTS_FROM_ADDRESS).")
        raw = self.message(email).as_bytes()
        if self._client is None:
            self._client = self._client_factory()
        try:
            # No Destinations: SES takes them from the To header, as it does for every raw send.
            self._client.send_raw_email(Source=self._from, RawMessage={"Data": raw})
        except (ClientError, BotoCoreError) as exc:
            raise EmailNotSentError("The email service did not accept the message.") from exc
