"""Who a notification goes to and which rate limit applies, as configured in the settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orderhub.services.notifications import RateLimit, RateLimits, Route, idempotency_key, mask_email


def test_a_route_names_a_channel_and_its_target_and_only_sms_may_go_without_one():
    assert Route.parse("wecom:cs-group") == Route("wecom", "cs-group")
    assert Route.parse("email:cs@shop.example") == Route("email", "cs@shop.example")
    assert Route.parse("sms") == Route("sms", None)
    with pytest.raises(ValueError, match="needs a target"):
        Route.parse("dingtalk")
    with pytest.raises(ValueError, match="channel must be one of"):
        Route.parse("fax:office")


def test_a_templates_limit_wins_over_its_channels_which_wins_over_the_default():
    limits = RateLimits.from_settings({
        "default": {"count": 3, "window_s": 3600},
        "channels": {"sms": {"count": 2, "window_s": 86400}},
        "templates": {"freeze_alert": None, "stalled": {"count": 1}},
    })
    assert limits.limit_for("shipped", "sms") == RateLimit(2, timedelta(days=1))
    assert limits.limit_for("shipped", "email") == RateLimit(3)
    assert limits.limit_for("stalled", "sms") == RateLimit(1)
    assert limits.limit_for("freeze_alert", "wecom") is None
    assert limits.limit_for("shipped", "wecom") == RateLimit(20, timedelta(minutes=1))  # the robot's own limit, kept by default


def test_integrations_are_not_rate_limited_unless_configured():
    assert RateLimits().limit_for("stalled", "webhook") is None
    assert RateLimits(templates={"stalled": RateLimit(1)}).limit_for("stalled", "webhook") is None
    configured = RateLimits.from_settings({"channels": {"webhook": {"count": 100, "window_s": 60}}})
    assert configured.limit_for("stalled", "webhook") == RateLimit(100, timedelta(minutes=1))


def test_the_idempotency_key_changes_with_each_part_and_fits_the_outbox_column():
    base = ("oid", "stalled", "wecom", "wecom:cs-group", "ticket-1")
    key = idempotency_key(*base)
    assert len(key) == 64
    for i in range(len(base)):
        changed = list(base)
        changed[i] += "x"
        assert idempotency_key(*changed) != key


def test_an_email_recipient_is_masked_in_the_event_log():
    assert mask_email("cs-lead@shop.example") == "c***@shop.example"
    assert mask_email("nonsense") == "***"
