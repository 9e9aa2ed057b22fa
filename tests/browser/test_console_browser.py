"""The web console as its users drive it: logins per role, finding an order, releasing a hold, editing
and publishing a rule, what CS may not see, the buyer's tracking page, the English switch."""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from orderhub.domain.access import ROLE_PERMISSIONS, Role
from orderhub.entrypoints.serve import DEMO_USERS

PASSWORDS = {username: password for username, password, _role, _name in DEMO_USERS}

# The console's menu (console/src/nav.tsx): each entry and the permission that shows it.
MENU = [
    ("工作台", "dashboard:read"), ("订单", "orders:read"), ("异常订单", "orders:read"), ("库存", "inventory:read"),
    ("规则", "rules:read"), ("物流", "orders:read"), ("渠道与店铺", "channels:read"), ("通知模板", "templates:read"),
    ("审计日志", "audit_log:read"), ("用户", "users:admin"), ("隔离区", "quarantine:read"),
]


def menu_of(page) -> list[str]:
    items = page.get_by_test_id("main-menu").locator(".ant-menu-item")
    items.first.wait_for()
    return [text.strip() for text in items.all_inner_texts()]


def audited_orders(console) -> list[dict]:
    return [o for o in console.get("admin", "/orders", limit=100)["items"] if o["rule_version"]]


@pytest.mark.parametrize("username", list(PASSWORDS))
def test_each_role_logs_in_and_sees_only_the_pages_it_may_use(visit, console, username):
    seen = visit()
    page = seen.page
    page.goto(f"{console.base_url}/orders")
    page.wait_for_url("**/login")  # not logged in: the login page, which comes back to /orders after
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill("wrong-password")
    page.get_by_test_id("login-submit").click()
    page.get_by_text("用户名或密码错误").wait_for()  # invalid_credentials, under the password field
    page.get_by_test_id("login-password").fill(PASSWORDS[username])
    page.get_by_test_id("login-submit").click()
    page.wait_for_url("**/orders")
    permissions = {p.value for p in ROLE_PERMISSIONS[Role(username)]}
    assert menu_of(page) == [label for label, permission in MENU if permission in permissions]
    page.get_by_test_id("user-menu").click()
    page.get_by_test_id("logout").click()
    page.wait_for_url("**/login")


def test_cs_finds_an_order_by_number_and_by_waybill_and_reads_its_whole_story(visit, console, screenshot):
    shipped = console.wait_for("shipped order", lambda: next(
        (o for o in console.get("admin", "/orders", status="shipped", limit=50)["items"] if o["shipment"] and o["customer"]["phone"]), None))
    page = visit(user="cs").page
    page.goto(f"{console.base_url}/orders")
    page.get_by_placeholder("开始日期").wait_for()  # antd's own strings are Chinese too (zh_CN locale loaded)

    page.get_by_test_id("order-search").fill(shipped["shipment"]["waybill_no"])
    page.get_by_test_id("order-search-submit").click()
    page.get_by_test_id("order-link").filter(has_text=shipped["original_id"]).wait_for()

    page.get_by_test_id("order-search").fill(shipped["original_id"])
    page.get_by_test_id("order-search-submit").click()
    link = page.get_by_test_id("order-link").filter(has_text=shipped["original_id"])
    link.wait_for()
    assert page.get_by_test_id("order-link").count() == 1
    link.click()
    page.wait_for_url(f"**/orders/{shipped['id']}")
    detail = page.get_by_test_id("order-detail")
    detail.wait_for()
    timeline = page.get_by_test_id("order-timeline").get_by_test_id("timeline-event")
    timeline.first.wait_for()
    events = console.get("admin", f"/orders/{shipped['id']}/events")
    assert timeline.count() == len(events) >= 4  # created, paid, audited, at the WMS, shipped …
    assert page.get_by_test_id("rule-version").inner_text() == shipped["rule_version"]
    assert shipped["shipment"]["waybill_no"] in page.get_by_test_id("order-tracking").inner_text()
    assert "*" in page.get_by_test_id("customer-phone").inner_text()
    assert page.get_by_test_id("reveal-buyer").count() == 0  # cs has no pii:read
    screenshot(page, "order-detail")


def test_ops_releases_a_hold_from_the_exception_queue(visit, console):
    # the demo's holds come at random (缺货 often, 风控 rarely): a person puts a held order on hold by hand too
    order = console.wait_for("held order", lambda: next(
        (o for o in console.get("admin", "/exceptions", limit=50)["items"] if o["status"] == "on_hold"), None))
    code = "manual"
    placed = console.api("admin", "POST", f"/orders/{order['id']}/hold", json={"code": code, "reason": "待核实（浏览器测试）"})
    assert placed.status_code == 200, placed.text
    page = visit(user="ops").page
    page.goto(f"{console.base_url}/exceptions")
    page.get_by_test_id(f"exception-tab-{code}").click()
    row = page.locator("tr", has_text=order["original_id"])
    row.get_by_test_id("exception-release").click()
    page.get_by_test_id("reason-ok").click()
    page.get_by_text("请填写原因").wait_for()  # a release needs its reason
    page.get_by_test_id("reason-input").fill("已电话核实，浏览器测试放行")
    page.get_by_test_id("reason-ok").click()
    row.wait_for(state="detached")

    after = console.get("admin", f"/orders/{order['id']}")
    assert code not in {h["code"] for h in after["holds"]}
    assert code in after["audit"]["released_holds"]
    released = [e for e in console.get("admin", f"/orders/{order['id']}/events") if "已电话核实，浏览器测试放行" in (e["reason"] or "")]
    assert released and released[0]["actor"] == "ops"


def test_ops_edits_a_rule_in_the_jdm_editor_dry_runs_and_publishes_it(visit, console, screenshot):
    before = console.get("ops", "/rules/priority")
    live_before = console.get("ops", "/rules")["rule_version"]
    order = console.wait_for("audited order", lambda: next(iter(audited_orders(console)), None))
    seen = visit(user="ops")
    page = seen.page
    page.goto(f"{console.base_url}/rules")
    page.get_by_test_id("ruleset-priority").click()
    page.get_by_text("编辑表格").first.click()  # the editor's own labels, through the console's i18n (console/src/i18n/jdm.ts)
    page.get_by_text("添加行").first.wait_for()
    assert page.get_by_test_id("jdm-editor").get_by_text("Add row", exact=True).count() == 0
    cell = page.locator(".grl-dt__cell__input").filter(has_text=re.compile(r"^20$")).first
    cell.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("30")
    page.get_by_test_id("rules-note").click()  # leave the cell: the editor reports the change
    page.get_by_test_id("rules-dirty").wait_for()
    assert page.evaluate("typeof window.monaco") == "object"  # Monaco is the app's own bundle (loader.config)
    page.get_by_test_id("rules-save").wait_for(state="visible")
    page.wait_for_timeout(300)  # the buttons' colour transition, for the picture
    screenshot(page, "rules-editor")

    page.get_by_test_id("dryrun-order").fill(order["original_id"])
    page.get_by_test_id("dryrun-run").click()
    result = page.get_by_test_id("dryrun-result")
    result.wait_for()
    assert "本草稿" in result.inner_text()

    # the read-only JSON view is a Monaco editor: it must come (with its worker) from the app's assets
    page.get_by_role("tab", name="源码 JSON").click()
    source = page.get_by_test_id("rules-source").locator(".monaco-editor .view-lines")
    # Monaco draws the lines after the element appears (once it showed only "{"): wait for the rule's key
    expect(source).to_contain_text('"priority-input"', timeout=15_000)

    # the back-test is a job on the server: the bar is its real progress, polled until 100 %, then the report
    page.get_by_role("tab", name="回测").click()
    page.get_by_test_id("backtest-run").click()
    bar = page.get_by_test_id("backtest-progress")
    bar.wait_for()
    page.locator("[data-testid=backtest-progress][data-percent='100']").wait_for(timeout=60_000)
    assert bar.locator(".ant-progress-text").inner_text() == "100%"
    report = page.get_by_test_id("backtest-report")
    report.wait_for()
    assert "回放订单" in report.inner_text()
    replayed = int(report.locator(".ant-descriptions-item-content").first.inner_text())
    assert f"已回放 {replayed} / {replayed} 单" in bar.inner_text()
    assert any("/api/v1/rules/priority/backtest-jobs" in url for url in seen.requests)
    assert any(re.search(r"/api/v1/jobs/backtest/\d+$", url) for url in seen.requests)

    page.get_by_test_id("rules-note").fill("VIP5 优先级 30（浏览器测试）")
    page.get_by_test_id("rules-save").click()
    page.get_by_text("草稿已保存").wait_for()
    draft = console.get("ops", "/rules/priority")
    assert draft["state"] == "draft" and draft["version"] == before["version"] + 1
    assert '"30"' in str(draft["content"]) or "'30'" in str(draft["content"])

    page.get_by_test_id("rules-publish").click()
    page.locator(".ant-modal-confirm").get_by_role("button", name="发 布").click()
    page.get_by_text("已发布", exact=True).first.wait_for()
    published = console.get("ops", "/rules")
    assert published["rule_version"] != live_before
    assert page.get_by_test_id("live-rule-version").inner_text() == f"线上 {published['rule_version']}"
    priority = next(s for s in published["sets"] if s["name"] == "priority")
    assert priority["published_version"] == draft["version"] and priority["draft_version"] is None
    # back to the demo's rules for whoever comes next
    assert console.api("ops", "POST", "/rules/priority/rollback", json={"note": "browser test done"}).status_code == 200


def test_admin_creates_a_user_and_sees_the_api_error_under_the_password_field(visit, console):
    page = visit(user="admin").page
    page.goto(f"{console.base_url}/users")
    page.get_by_test_id("users-table").wait_for()
    page.get_by_role("button", name="新建用户").click()
    page.get_by_test_id("user-username").fill("browser-cs2")
    page.get_by_test_id("user-password").fill("short")
    page.get_by_role("button", name="保 存").click()
    error = page.locator(".ant-form-item", has=page.get_by_test_id("user-password")).locator(".ant-form-item-explain-error")
    error.wait_for()
    assert "weak_password" in error.inner_text() and "密码太弱" in error.inner_text()  # the API's code, under its field
    page.get_by_test_id("user-password").fill("long-enough-password")
    page.get_by_role("button", name="保 存").click()
    page.get_by_test_id("users-table").get_by_text("browser-cs2").wait_for()
    created = next(u for u in console.get("admin", "/users")["items"] if u["username"] == "browser-cs2")
    assert created["role"] == "cs" and created["active"]


def test_cs_cannot_open_users_and_reads_phones_masked_only(visit, console):
    page = visit(user="cs").page
    page.goto(f"{console.base_url}/users")
    page.get_by_test_id("no-permission").wait_for()
    assert "没有权限" in page.get_by_test_id("no-permission").inner_text()
    assert "用户" not in menu_of(page)

    order = next(o for o in console.get("cs", "/orders", limit=50)["items"] if o["customer"]["phone"])
    assert "*" in order["customer"]["phone"] and not re.search(r"\d{11}", order["customer"]["phone"])
    refused = console.api("cs", "GET", f"/orders/{order['id']}/buyer")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert console.api("admin", "GET", f"/orders/{order['id']}/buyer").status_code == 200


def test_buyer_tracks_an_order_with_the_right_digits_and_not_with_wrong_ones(visit, console, screenshot):
    def shipped_with_phone() -> tuple[dict, str] | None:
        for o in console.get("admin", "/orders", status="shipped", limit=50)["items"]:
            phone = (console.get("admin", f"/orders/{o['id']}/buyer").get("phone") or "")
            if re.fullmatch(r"1\d{10}", phone):
                return o, phone
        return None

    order, phone = console.wait_for("shipped order with a phone", shipped_with_phone)
    page = visit().page
    page.goto(f"{console.base_url}/track")
    page.get_by_test_id("track-order-no").fill(order["original_id"])
    page.get_by_test_id("track-last4").fill(phone[-4:])
    page.get_by_test_id("track-submit").click()
    result = page.get_by_test_id("track-result")
    result.wait_for()
    text = result.inner_text()
    assert order["original_id"] in text and order["shipment"]["waybill_no"] in text
    assert phone not in text and phone[-4:] not in text.replace(order["original_id"], "")  # no PII on the buyer's page
    screenshot(page, "track")

    wrong = f"{(int(phone[-4:]) + 1) % 10000:04d}"
    page.get_by_test_id("track-last4").fill(wrong)
    page.get_by_test_id("track-submit").click()
    page.get_by_test_id("track-problem").wait_for()
    assert "没有找到订单" in page.get_by_test_id("track-problem").inner_text()
    assert page.get_by_test_id("track-result").count() == 0


def test_a_role_with_pii_read_reveals_the_buyer_and_the_reveal_is_audited(visit, console):
    def decryptable() -> dict | None:
        """A shipped order whose platform decrypts the phone (淘宝's OAID orders, or one whose decryption is still
        pending, reveal null: the page then keeps the mask)."""
        for o in console.get("admin", "/orders", status="shipped", limit=50)["items"]:
            if o["customer"]["phone"] and re.fullmatch(r"1\d{10}", console.get("admin", f"/orders/{o['id']}/buyer").get("phone") or ""):
                return o
        return None

    order = console.wait_for("order with a phone its platform decrypts", decryptable)
    page = visit(user="warehouse").page
    page.goto(f"{console.base_url}/orders/{order['id']}")
    masked = console.get("warehouse", f"/orders/{order['id']}")["customer"]["phone"]
    assert page.get_by_test_id("customer-phone").inner_text() == masked, console.get("warehouse", f"/orders/{order['id']}")
    page.get_by_test_id("reveal-buyer").click()
    page.get_by_test_id("customer-phone").filter(has_text=re.compile(r"^1\d{10}$")).wait_for()
    reveals = console.get("admin", "/audit-log", entity_id=order["id"])["items"]
    assert any(e["actor"] == "warehouse" and "pii" in e["action"] for e in reveals), reveals


def test_english_switch_changes_the_labels_and_is_remembered(visit, console, screenshot):
    console.wait_for("orders on the dashboard", lambda: console.get("admin", "/dashboard")["totals"]["orders"] > 0)
    page = visit(user="admin").page
    page.goto(f"{console.base_url}/")
    page.get_by_test_id("heatmap").wait_for()
    page.wait_for_timeout(500)  # the charts' first animation
    screenshot(page, "dashboard", full_page=True)
    assert "订单" in menu_of(page)
    page.get_by_test_id("lang-toggle").get_by_text("EN").click()
    assert menu_of(page) == ["Dashboard", "Orders", "Exceptions", "Inventory", "Rules", "Logistics", "Channels & shops", "Templates",
                             "Audit log", "Users", "Quarantine"]
    page.goto(f"{console.base_url}/orders")
    page.get_by_placeholder("Start date").wait_for()  # antd's strings follow (en_US)
    page.goto(f"{console.base_url}/rules")
    page.get_by_text("Edit Table").first.wait_for()  # and the rule editor's (console/src/i18n/jdm.ts)
    page.reload()
    assert "Orders" in menu_of(page)
    page.get_by_test_id("lang-toggle").get_by_text("中文").click()
    assert "订单" in menu_of(page)


def test_ops_tests_a_shop_connection_and_sees_credentials_masked(visit, console):
    shops = console.get("ops", "/shops")["items"]
    page = visit(user="ops").page
    page.goto(f"{console.base_url}/channels")
    masked = page.get_by_test_id("app-key-masked")
    masked.first.wait_for()
    assert sorted(masked.all_inner_texts()) == sorted(s["app_key_masked"] for s in shops)
    row = page.locator("tr", has_text="京东")
    row.get_by_role("button", name="测试连接").click()
    row.get_by_text(re.compile(r"连接正常（\d+ ms）")).wait_for()


def test_a_template_that_does_not_render_shows_jinjas_error_under_its_body(visit, console):
    page = visit(user="ops").page
    page.goto(f"{console.base_url}/templates")
    page.locator("tr", has_text="发货通知").filter(has_text="短信").first.click()
    body = page.get_by_test_id("template-body")
    body.fill("您的订单{{ order_no }}已发货 {{ no_such_variable }}")
    page.get_by_test_id("template-save").click()
    error = page.locator(".ant-form-item", has=body).locator(".ant-form-item-explain-error")
    error.wait_for()
    assert "template_invalid" in error.inner_text() and "no_such_variable" in error.inner_text()
    stored = next(t for t in console.get("ops", "/notification-templates")["items"] if t["name"] == "shipped" and t["channel"] == "sms")
    assert "no_such_variable" not in stored["body"]


def test_ops_imports_a_store_export_and_sees_the_report(visit, console, tmp_path):
    from datetime import UTC, datetime

    from orderhub.demo.pos import pos_csv

    export = tmp_path / "门店导出.csv"
    export.write_bytes(pos_csv(12, datetime.now(UTC), seed=4242))
    page = visit(user="ops").page
    page.goto(f"{console.base_url}/orders")
    page.get_by_role("button", name="导入订单").click()
    dialog = page.get_by_role("dialog")
    chosen = dialog.locator(".ant-select-selection-item", has_text="pos-default")
    for _ in range(3):  # the mappings load while the dialog opens: a click on the list as it redraws can miss
        dialog.locator(".ant-select").first.click()
        page.get_by_title("pos-default").click()
        try:
            chosen.wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    dialog.locator("input[type=file]").set_input_files(str(export))
    dialog.get_by_role("button", name="开始导入").click()
    done = dialog.get_by_text(re.compile(r"已读取 \d+ 行，12 个订单"))
    try:
        done.wait_for()
    except PlaywrightTimeout:
        raise AssertionError(f"no import report; the dialog says: {dialog.inner_text()[:500]}") from None
    # then the pipeline's processing of those orders (the import job), to its report
    dialog.locator("[data-testid=import-progress][data-percent='100']").wait_for(timeout=60_000)
    assert "处理完成：12 单，入库 12，隔离 0" in dialog.get_by_test_id("import-progress").inner_text()
    first_no = next(csv.DictReader(io.StringIO(export.read_text(encoding="utf-8"))))["单号"]
    console.wait_for("imported order", lambda: console.get("ops", "/orders", q=first_no, channel="pos")["items"], timeout=30)


def test_cs_sees_a_stalled_parcels_ticket_with_its_waybill_and_reason_on_the_logistics_page(visit, console):
    from datetime import UTC, datetime

    from orderhub.adapters.db.engine import create_engine
    from orderhub.adapters.db.tables import tickets

    order = console.wait_for("shipped order", lambda: next(
        (o for o in console.get("admin", "/orders", status="shipped", limit=20)["items"] if (o.get("shipment") or {}).get("waybill_no")), None))
    waybill = order["shipment"]["waybill_no"]
    # what the stall check writes (services/tracking.py): the demo's parcels take hours to stall
    engine = create_engine(f"sqlite:///{console.data_dir / 'orderhub.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(tickets.insert().values(order_id=order["id"], kind="stall_no_first_scan", status="open", created_at=datetime.now(UTC),
                                                 detail={"severity": "warn", "reason": "发货后24小时无揽收（浏览器测试）", "waybills": [waybill]}))
    finally:
        engine.dispose()
    page = visit(user="cs").page
    page.goto(f"{console.base_url}/logistics")
    row = page.get_by_test_id("tickets-table").locator("tr", has_text="发货后24小时无揽收（浏览器测试）")
    row.wait_for()
    assert waybill in row.inner_text() and "发货后无揽收" in row.inner_text()
