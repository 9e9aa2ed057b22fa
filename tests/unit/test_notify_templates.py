"""The default notification templates in Chinese, rendered without plaintext PII, and what saving a template refuses."""

from __future__ import annotations

import pytest

from orderhub.adapters.notify import templates as tpl
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.services.notifications import validate_template

# An order whose buyer fields hold plaintext, as a careless import might: the templates must still mask them.
ORDER = {**tpl.SAMPLE_ORDER, "buyer": {"name": "张三丰", "phone": "13812345678"}}
PLAIN_PHONE, PLAIN_NAME = "13812345678", "张三丰"

# What each default must say, per event (order no and shop everywhere but the JSON webhooks).
MUST_SAY = {
    "shipped": ["已发货", "顺丰速运", "SF1234567890123"],
    "stalled": ["SF1234567890123"],
    "delivered": ["已签收"],
    "intercept_result": [],
    "freeze_alert": ["冻结指令", "取消订单", "WH-EAST", "停止拣货"],
}


def render(default: tpl.DefaultTemplate, context: dict) -> tuple[str | None, str]:
    variables = {**tpl.order_variables(ORDER, shop_name="测试旗舰店"), **tpl.context_variables(context)}
    subject = tpl.render_text(default.subject, variables, field="subject") if default.subject else None
    return subject, tpl.render_text(default.body, variables)


CASES = [(d, c) for d in tpl.DEFAULT_TEMPLATES for c in tpl.samples(d.name)]


@pytest.mark.parametrize(("default", "context"), CASES, ids=[f"{d.name}-{d.channel}-{c.get('outcome', '')}" for d, c in CASES])
def test_every_default_template_renders_in_chinese_without_plaintext_pii(default, context):
    subject, body = render(default, context)
    text = f"{subject or ''}\n{body}"
    assert "4951234567890123456" in text
    assert PLAIN_PHONE not in text and PLAIN_NAME not in text
    if default.channel == "webhook":
        assert f'"event": "{default.name}"' in text
        return
    assert "测试旗舰店" in text
    for phrase in MUST_SAY[default.name]:
        assert phrase in text
    if "{{ buyer_phone }}" in default.body:
        assert "138****5678" in text and "张*" in text


def test_there_is_a_default_for_each_event_on_the_channels_where_it_makes_sense():
    have = {(d.name, d.channel) for d in tpl.DEFAULT_TEMPLATES}
    assert {("shipped", "sms"), ("stalled", "sms"), ("delivered", "sms"), ("intercept_result", "sms")} <= have  # the buyer
    assert {("stalled", "wecom"), ("stalled", "dingtalk"), ("stalled", "email"), ("intercept_result", "email")} <= have  # CS
    assert {("freeze_alert", "wecom"), ("freeze_alert", "dingtalk")} <= have  # the warehouse
    assert {(e, "webhook") for e in ("shipped", "stalled", "delivered", "intercept_result")} <= have  # integrations
    assert ("freeze_alert", "sms") not in have  # a freeze is the warehouse's business, not the buyer's


def test_a_stalled_parcel_names_the_stall_rule_that_fired_for_cs():
    default = next(d for d in tpl.DEFAULT_TEMPLATES if (d.name, d.channel) == ("stalled", "wecom"))
    _, body = render(default, {"stall": "stall_no_update_48h"})
    assert "物流异常：超过48小时无物流更新" in body and "运输中" in body


def test_the_intercept_result_tells_the_buyer_what_happened_for_each_outcome():
    default = next(d for d in tpl.DEFAULT_TEMPLATES if (d.name, d.channel) == ("intercept_result", "sms"))
    assert "已成功取消" in render(default, {"outcome": "intercepted", "instruction": "cancel"})[1]
    assert "申请快递拦截" in render(default, {"outcome": "too_late", "instruction": "cancel"})[1]
    assert "收货地址已更新为浙江省杭州市西湖区" in render(default, {"outcome": "address_updated", "instruction": "address"})[1]


def test_a_webhook_default_renders_to_the_event_as_json():
    import orjson

    default = next(d for d in tpl.DEFAULT_TEMPLATES if (d.name, d.channel) == ("shipped", "webhook"))
    data = orjson.loads(render(default, {})[1])
    assert data == {"event": "shipped", "order_id": ORDER["id"], "order_no": "4951234567890123456", "channel": "douyin",
                    "shop_id": "88880001", "status": "shipped", "carrier": "SF", "waybill_no": "SF1234567890123",
                    "logistics_status": "in_transit"}


def test_a_mobile_number_a_caller_puts_in_the_context_is_masked_but_order_and_waybill_numbers_are_not():
    variables = {**tpl.order_variables(ORDER), "note": "买家电话 13900001111"}
    text = tpl.render_text("{{ note }} / {{ order_no }} / 13512345678", variables, keep={"13512345678"})
    assert text == "买家电话 139****1111 / 4951234567890123456 / 13512345678"


def refused(name: str, channel: str, body: str, subject: str | None = None) -> OrderHubError:
    with pytest.raises(OrderHubError) as caught:
        validate_template(name, channel, subject, body)
    assert caught.value.code == ErrorCode.TEMPLATE_INVALID
    return caught.value


def test_a_misspelt_variable_is_refused_when_the_template_is_saved():
    error = refused("shipped", "sms", "您的订单{{ order_no }}已发货，运单号{{ waybil_no }}")
    assert "'waybil_no' is undefined" in error.message and error.field == "body"


def test_a_misspelt_variable_in_a_branch_the_sample_does_not_take_is_refused_too():
    error = refused("intercept_result", "sms", "{% if outcome == 'never' %}{{ outcom_label }}{% else %}{{ outcome_label }}{% endif %}")
    assert "'outcom_label' is undefined" in error.message


def test_a_variable_of_another_event_is_refused():
    assert "'stall_label' is undefined" in refused("shipped", "wecom", "{{ stall_label }}").message


def test_a_syntax_error_is_refused_with_jinjas_message_and_line():
    error = refused("shipped", "sms", "第一行\n{% if order_no %}{{ order_no }")
    assert "line 2" in error.message


def test_the_sandbox_keeps_templates_away_from_python_internals_and_huge_output():
    assert "unsafe" in refused("shipped", "sms", "{{ order_no.__class__.__mro__ }}").message
    assert "repetition" in refused("shipped", "sms", "{{ '短信' * 1000000 }}").message


def test_a_webhook_template_must_render_to_a_json_object():
    assert "JSON" in refused("shipped", "webhook", "已发货 {{ order_no }}").message
    validate_template("shipped", "webhook", None, '{"order_no": {{ order_no|tojson }}}')


def test_an_email_template_needs_a_subject_and_every_template_a_known_channel():
    assert refused("stalled", "email", "{{ order_no }}").field == "subject"
    assert refused("stalled", "fax", "{{ order_no }}").field == "channel"
