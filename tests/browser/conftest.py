"""The console in a real browser: `orderhub serve --demo` (SQLite, the simulator sending orders, the
simulated WMS packing them) on a free port, and Debian's chromium driven by Playwright.

One server for the test module: the demo needs ~30 s before its first parcels ship, and every
test reads a different part of the same living shop; it stops when the module is done, so it
does not slow the rest of the suite down. Each test gets a fresh browser context
(no cookies, no localStorage) and fails if the page asked any host but 127.0.0.1 for anything.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from orderhub.entrypoints.api.console import DIST
from orderhub.entrypoints.serve import DEMO_USERS

CHROMIUM = os.environ.get("ORDERHUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--lang=zh-CN"]
PASSWORDS = {username: password for username, password, _role, _name in DEMO_USERS}
STARTUP_TIMEOUT_S = 30.0
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1"}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a test that cannot reach its tool fails the run)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Console:
    """The running demo: its address, and API calls as any demo user (tokens cached per user)."""

    base_url: str
    data_dir: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, username: str) -> str:
        if username not in self.tokens:
            reply = httpx.post(f"{self.base_url}/api/v1/auth/login", json={"username": username, "password": PASSWORDS[username]}, timeout=10)
            assert reply.status_code == 200, reply.text
            self.tokens[username] = reply.json()["token"]
        return self.tokens[username]

    def api(self, username: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(username)}"}
        return httpx.request(method, f"{self.base_url}/api/v1{path}", headers=headers, timeout=30, **kwargs)

    def get(self, username: str, path: str, **params: Any) -> Any:
        reply = self.api(username, "GET", path, params=params)
        assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text}"
        return reply.json()

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float = 90.0) -> Any:
        """Poll `probe` until it returns something truthy (the demo produces orders as it goes)."""
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"the demo produced no {what} within {timeout:.0f} s")
            time.sleep(0.5)


# module scope: the demo (simulator, workers) must not keep running beside the rest of the suite
@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    if not (DIST / "index.html").is_file():
        pytest.fail(f"the console is not built ({DIST}): run `make console`")
    orderhub = shutil.which("orderhub", path=str(Path(sys.executable).parent)) or "orderhub"
    data = tmp_path_factory.mktemp("console-demo")
    port = _free_port()
    env = {**os.environ, "ORDERHUB_DATA_DIR": str(data)}
    env.pop("ORDERHUB_DATABASE_URL", None)  # the embedded default: a SQLite file in the data directory
    log = (data / "serve.log").open("wb")
    # 5 orders/s: holds, shipments and tracks appear within the suite's first minute
    process = subprocess.Popen([orderhub, "serve", "--demo", "--host", "127.0.0.1", "--port", str(port), "--demo-rate", "5"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"orderhub serve exited with {process.returncode}: {(data / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"orderhub serve did not answer within {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        yield Console(base_url, data)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# module scope, not session: Playwright's sync API keeps an event loop running in this thread while
# it is open, and the async tests collected after this module need the thread's loop for themselves
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no chromium at {CHROMIUM} (make browser installs Debian's)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        # Playwright gives each launch a fresh temporary profile (user-data-dir) and removes it after
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@dataclass
class Visit:
    page: Any
    requests: list[str]
    errors: list[str]


@pytest.fixture
def visit(browser: Any, console: Console) -> Iterator[Callable[..., Visit]]:
    """`visit(user=None, lang=None)`: a page in a new context, logged in as `user` (token put where the
    console keeps it) or anonymous; after the test, every request must have gone to 127.0.0.1."""
    contexts: list[tuple[Any, Visit]] = []

    def open_page(user: str | None = None, lang: str | None = None) -> Visit:
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN", timezone_id="Asia/Shanghai")
        context.set_default_timeout(30_000)  # the demo shares 2 cores with the browser: be patient, not flaky
        init = []
        if user is not None:
            init.append(f"window.localStorage.setItem('orderhub.token', {console.token(user)!r});")
        if lang is not None:
            init.append(f"window.localStorage.setItem('orderhub.lang', {lang!r});")
        if init:
            # once, before the console's own scripts: a later logout must not be undone on reload
            context.add_init_script("if (!sessionStorage.getItem('seeded')) { sessionStorage.setItem('seeded', '1'); " + " ".join(init) + " }")
        page = context.new_page()
        seen = Visit(page, [], [])
        page.on("request", lambda request: seen.requests.append(request.url))
        page.on("pageerror", lambda error: seen.errors.append(str(error)))
        contexts.append((context, seen))
        return seen

    yield open_page

    for context, seen in contexts:
        context.close()
        foreign = [url for url in seen.requests if urlsplit(url).scheme in ("http", "https", "ws", "wss")
                   and urlsplit(url).hostname not in LOCAL_HOSTS]
        assert not foreign, f"the console asked other hosts: {foreign[:5]}"
        assert not seen.errors, f"uncaught errors in the page: {seen.errors[:3]}"


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """Saves a page's screenshot; into docs/screenshots/ when ORDERHUB_SCREENSHOTS=1 (README's pictures)."""

    def take(page: Any, name: str, full_page: bool = False) -> Path:
        target = SCREENSHOTS if os.environ.get("ORDERHUB_SCREENSHOTS") == "1" else Path(os.environ.get("TMPDIR", "/tmp"))
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take
