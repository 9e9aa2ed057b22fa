"""E-mail to CS and the warehouse over SMTP (aiosmtplib): a UTF-8 text/plain message per outbox row.

The Message-ID derives from the outbox idempotency key, so a resend after a crash carries the same
id and a mail system (or a person's client) can recognise the duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any

import aiosmtplib

from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage

KIND = "notify.email"


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int = 25
    sender: str = "OrderHub <orderhub@localhost>"
    username: str | None = None
    password: str | None = None
    use_tls: bool = False  # implicit TLS (port 465)
    start_tls: bool | None = None  # None: STARTTLS when the server offers it
    timeout_s: float = 20.0


def build_message(settings: SmtpSettings, message: OutboxMessage) -> EmailMessage:
    payload = message.payload
    mail = EmailMessage()
    mail["From"] = settings.sender
    mail["To"] = payload["to"]
    mail["Subject"] = " ".join((payload.get("subject") or "OrderHub 通知").split())  # one line: a header cannot hold a newline
    mail["Date"] = formatdate(message.created_at.timestamp(), localtime=False)
    domain = parseaddr(settings.sender)[1].rpartition("@")[2] or "orderhub"
    mail["Message-ID"] = f"<{message.idempotency_key}@{domain}>"
    mail["X-OrderHub-Idempotency-Key"] = message.idempotency_key
    mail.set_content(payload["body"], charset="utf-8")
    return mail


class SmtpSender:
    """The outbox sender of kind `notify.email`."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        to = message.payload.get("to")
        if not isinstance(to, str) or not _valid(to):
            raise DeliveryError(f"not an e-mail address: {to!r}", retryable=False)
        mail = build_message(self.settings, message)
        s = self.settings
        try:
            refused, reply = await aiosmtplib.send(
                mail, hostname=s.host, port=s.port, username=s.username, password=s.password,
                use_tls=s.use_tls, start_tls=s.start_tls, timeout=s.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"smtp refused the recipient: {exc}", retryable=False) from None
        except aiosmtplib.SMTPResponseException as exc:  # 5xx: permanent; 4xx: the server asks to come back later
            raise DeliveryError(f"smtp {exc.code}: {exc.message}", retryable=exc.code < 500) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:  # connect, disconnect, timeout
            raise DeliveryError(f"smtp {type(exc).__name__}: {exc}") from None
        if refused:
            raise DeliveryError(f"smtp refused: {', '.join(f'{k} {v.code}' for k, v in refused.items())}", retryable=False)
        return {"message_id": mail["Message-ID"], "reply": reply}


def _valid(address: str) -> bool:
    try:
        return "@" in Address(addr_spec=address).addr_spec
    except Exception:  # the parser's defects are ValueError, HeaderParseError, IndexError …
        return False
