"""E-mail notifications delivered over SMTP to a local aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from aiosmtpd.controller import Controller

from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.adapters.notify.mail import SmtpSender, SmtpSettings

KEY = "3f" * 32
SUBJECT = "【物流异常】订单4951234567890123456：发货后长时间未揽收"
BODY = "物流异常：发货后长时间未揽收\n\n订单：4951234567890123456（抖店 · 测试旗舰店）\n买家：张* 138****0000"


class Inbox:
    """An aiosmtpd handler keeping every envelope; refuses recipients at blocked.example."""

    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd's hook name)
        if address.endswith("@blocked.example"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def mail_message(to: str) -> OutboxMessage:
    payload = {"channel": "email", "template": "stalled", "version": 1, "to": to, "subject": SUBJECT, "body": BODY}
    return OutboxMessage(7, "notify.email", "email", "oid", f"email:{to}", payload, KEY, 0, 0, datetime(2025, 3, 18, 2, 12, tzinfo=UTC))


async def test_the_mail_arrives_with_its_chinese_subject_and_utf8_body(smtp):
    inbox, port = smtp
    sender = SmtpSender(SmtpSettings("127.0.0.1", port, sender="OrderHub <noreply@shop.example>"))
    response = await sender.send(mail_message("cs@shop.example"))
    [envelope] = inbox.envelopes
    assert envelope.mail_from == "noreply@shop.example" and envelope.rcpt_tos == ["cs@shop.example"]
    mail = message_from_bytes(envelope.original_content, policy=default_policy)
    assert mail["Subject"] == SUBJECT
    assert mail.get_content_type() == "text/plain" and mail.get_content_charset() == "utf-8"
    assert mail.get_content().replace("\r\n", "\n").strip() == BODY  # CRLF on the wire
    assert mail["Message-ID"] == f"<{KEY}@shop.example>" == response["message_id"]  # the same on a resend


async def test_a_refused_recipient_is_not_retried(smtp):
    _, port = smtp
    with pytest.raises(DeliveryError) as caught:
        await SmtpSender(SmtpSettings("127.0.0.1", port)).send(mail_message("cs@blocked.example"))
    assert not caught.value.retryable


async def test_an_unreachable_mail_server_is_retried():
    with pytest.raises(DeliveryError) as caught:
        await SmtpSender(SmtpSettings("127.0.0.1", _free_port(), timeout_s=2)).send(mail_message("cs@shop.example"))
    assert caught.value.retryable


async def test_a_malformed_address_is_refused_before_connecting():
    with pytest.raises(DeliveryError) as caught:
        await SmtpSender(SmtpSettings("127.0.0.1", 1)).send(mail_message("not an address"))
    assert not caught.value.retryable
