"""The operator console and the chat widget in a real browser (Playwright + Debian's Chromium).

A real ``salon serve`` (fake LLM and Meta Graph API on loopback) is driven
through the console as an operator would: sign in, watch a reply stream, take
over and speak (a separate WebSocket client, the person, receives it),
approve a queued comment reply, edit a persona, forget a memory, look at the
analytics, rebrand; at phone width too. The chat widget is embedded in a page
of another origin. Every page must log no console errors. Screenshots of each
panel go to ``build/console-screenshots/`` (``SALON_SCREENSHOTS`` to change);
docs/console.md shows the best of them.

Chromium comes from Debian (``scripts/test`` installs it) and is driven through
``executable_path``: Playwright never downloads a browser here.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright_sync  # the dev extra; never a skip in CI
from websockets.sync.client import connect as ws_connect

from tests.conftest import ServerProcess, free_port, server_env
from tests.fakes import meta_server
from tests.fakes.meta_server import FakeGraph
from tests.fakes.openai_server import FakeOpenAI

expect = playwright_sync.expect

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SHOTS = Path(os.environ.get("SALON_SCREENSHOTS", "build/console-screenshots"))
APP_SECRET = "meta-app-secret-for-console"
IG_ACCOUNT = "17841400000000777"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    server = FakeGraph().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def host_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def srv(
    fake_llm: FakeOpenAI,
    graph: FakeGraph,
    host_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("salon-console")
    env = server_env(
        data_dir,
        fake_llm,
        SALON_META_APP_SECRET=APP_SECRET,
        SALON_META_VERIFY_TOKEN="verify",
        SALON_META_GRAPH_URL=graph.base_url,
        SALON_YOUTUBE_POLL="false",
        SALON_SOCIAL_SWEEP_SECONDS="0.2",
        # The widget's host page lives on another origin.
        SALON_ALLOWED_ORIGINS=f"http://127.0.0.1:{host_port}",
    )
    proc = ServerProcess(data_dir, env).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def persona(srv: ServerProcess) -> dict[str, Any]:
    return srv.create_persona(
        name="Ada", description="a friendly shop assistant", first_mes="Hello! I'm Ada."
    )


@pytest.fixture(scope="module")
def operator(srv: ServerProcess) -> dict[str, Any]:
    body = {"email": "olive@example.com", "name": "Olive", "role": "admin", "password": PASSWORD}
    r = httpx.post(f"{srv.url}/v1/operators", headers=srv.auth, json=body)
    assert r.status_code == 201, r.text
    return body


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    with playwright_sync.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


class Console:
    """A browser page on the console, with its console errors collected."""

    def __init__(self, page: Any, srv: ServerProcess) -> None:
        self.page = page
        self.srv = srv
        self.errors: list[str] = []
        page.on(
            "console",
            lambda m: (
                self.errors.append(f"{m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def sign_in(self, email: str, password: str) -> None:
        page = self.page
        page.goto(f"{self.srv.url}/console/")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=10_000)

    def go(self, panel: str) -> None:
        link = self.page.get_by_role("navigation", name="Main").get_by_role("link", name=panel)
        if not link.is_visible():  # phone width: the navigation is behind the menu button
            self.page.get_by_role("button", name="Menu").click()
        link.click()

    def shot(self, name: str, *, full_page: bool = False) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_timeout(150)  # let transitions settle
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


@pytest.fixture
def console(browser: Any, srv: ServerProcess) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    c = Console(page, srv)
    yield c
    context.close()
    assert c.errors == [], c.errors


def wait_for(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


class Person:
    """The end user's own client: a plain WebSocket, no browser."""

    def __init__(self, srv: ServerProcess, persona: str, user: str) -> None:
        self._connection = ws_connect(srv.ws_url, additional_headers=srv.auth, open_timeout=10)
        self.ws = self._connection.__enter__()
        self.events: list[dict[str, Any]] = []
        self.send({"type": "session.start", "persona": persona, "user": {"id": user, "name": user}})
        self.ready = self.until("session.ready")

    def send(self, event: dict[str, Any]) -> None:
        self.ws.send(json.dumps(event))

    def until(self, kind: str, timeout: float = 20, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            self.events.append(event)
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return dict(event)

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


# -- the tests ------------------------------------------------------------------


def test_sign_in_watch_a_reply_stream_and_take_over(
    console: Console, srv: ServerProcess, persona: dict[str, Any], operator: dict[str, Any]
) -> None:
    page = console.page
    page.goto(f"{srv.url}/console/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    console.shot("sign-in")
    # A wrong password is said, not swallowed.
    page.get_by_label("Email").fill(operator["email"])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text(re.compile("wrong", re.I))
    console.errors.clear()  # the browser logs the 401 itself
    console.sign_in(operator["email"], operator["password"])

    person = Person(srv, persona["id"], f"watcher-{uuid.uuid4().hex[:4]}")
    person.send({"type": "message.create", "id": "m1", "text": "Hi Ada, I love this shop!"})
    person.until("response.done")
    conv = person.ready["conversation_id"]

    console.go("Live")
    item = page.locator(f"[data-conversation-id='{conv}']")
    expect(item).to_be_visible()
    item.click()
    transcript = page.get_by_role("region", name="Transcript")
    expect(transcript.locator("[data-role='user']").first).to_contain_text("I love this shop")
    # Sentiment per message, from the analysis.
    expect(transcript.locator("[data-sentiment='positive']").first).to_be_visible(timeout=15_000)

    # A slow reply: its tokens show up while it is still being written.
    person.send({"type": "message.create", "id": "m2", "text": "[slow] tell me everything"})
    streaming = transcript.locator("[data-response-id]")
    expect(streaming.first).to_contain_text("w3", timeout=15_000)
    console.shot("live")
    done = person.until("response.done", timeout=30)
    expect(transcript).to_contain_text("w199", timeout=15_000)
    assert done["text"].startswith("w0 ")

    # Take over, as a visible operator: the person's client gets it as a reply.
    page.get_by_label("Speak as").select_option("operator")
    page.get_by_role("button", name="Take over").click()
    person.until("takeover.started")
    page.get_by_label("Message").fill("Hi, Olive from the shop here.")
    page.get_by_role("button", name="Send").click()
    said = person.until("response.done")
    assert said["text"] == "Hi, Olive from the shop here."
    assert said["speaker"] == {"type": "operator", "name": "Olive"}
    expect(transcript).to_contain_text("Olive from the shop")
    console.shot("takeover")
    page.get_by_role("button", name="Hand back").click()
    ended = person.until("takeover.ended")
    assert ended["takeover"]["messages"] == 1 and ended["takeover"]["operator"] == "Olive"
    person.close()


def test_approve_a_queued_comment_reply(
    console: Console,
    srv: ServerProcess,
    persona: dict[str, Any],
    operator: dict[str, Any],
    graph: FakeGraph,
) -> None:
    account = {
        "persona": persona["id"],
        "platform": "instagram",
        "account_id": IG_ACCOUNT,
        "credentials": {"access_token": "EAAB-console"},
        "policy": {"mode": "approval"},
    }
    assert httpx.post(f"{srv.url}/v1/social/accounts", headers=srv.auth, json=account).is_success
    console.sign_in(operator["email"], operator["password"])
    console.go("Queues")
    page = console.page
    page.get_by_role("tab", name=re.compile("Pending replies")).click()

    # The comment arrives while the operator looks: the card appears live.
    raw, headers = meta_server.signed_delivery(
        meta_server.delivery(
            "instagram", IG_ACCOUNT, meta_server.ig_comment("c-console-1", "Do you ship to Lyon?")
        ),
        APP_SECRET,
    )
    assert httpx.post(f"{srv.url}/v1/webhooks/meta", content=raw, headers=headers).is_success
    card = page.locator("[data-reply-id]").filter(has_text="Do you ship to Lyon?")
    expect(card).to_be_visible(timeout=20_000)
    card.get_by_label("Reply text").fill("Yes, we ship to Lyon!")
    card.get_by_role("button", name="Save edit").click()
    console.shot("queues")
    card.get_by_role("button", name="Approve").click()
    expect(card).to_have_count(0, timeout=20_000)
    call = wait_for(
        lambda: next((c for c in graph.calls if c.get("object_id") == "c-console-1"), None)
    )
    assert call["message"] == "Yes, we ship to Lyon!"


def test_edit_a_persona(
    console: Console, srv: ServerProcess, persona: dict[str, Any], operator: dict[str, Any]
) -> None:
    console.sign_in(operator["email"], operator["password"])
    console.go("Personas")
    page = console.page
    page.get_by_role("button", name=re.compile("^Ada")).first.click()
    description = page.get_by_label("Description")
    expect(description).to_have_value("a friendly shop assistant")
    description.fill("a patient, funny shop assistant")
    page.get_by_role("button", name="Save", exact=True).click()
    wait_for(
        lambda: (
            httpx.get(f"{srv.url}/v1/personas/{persona['id']}", headers=srv.auth).json()[
                "description"
            ]
            == "a patient, funny shop assistant"
        )
    )
    console.shot("personas")


def test_forget_a_memory(
    console: Console, srv: ServerProcess, persona: dict[str, Any], operator: dict[str, Any]
) -> None:
    user = f"rememberer-{uuid.uuid4().hex[:4]}"
    Person(srv, persona["id"], user).close()  # the person exists
    made = []
    for text in ("Sam's dog is called Biscuit", "Sam prefers tea to coffee"):
        r = httpx.post(
            f"{srv.url}/v1/memories",
            headers=srv.auth,
            json={"persona": persona["id"], "user": user, "text": text},
        )
        assert r.status_code == 201, r.text
        made.append(r.json())
    console.sign_in(operator["email"], operator["password"])
    console.go("Memories")
    page = console.page
    page.get_by_label("Persona").select_option(persona["id"])
    page.get_by_label("User id").fill(user)
    page.get_by_role("button", name="Load").click()
    row = page.locator(f"[data-memory-id='{made[0]['id']}']")
    expect(row).to_contain_text("Biscuit")
    console.shot("memories")
    row.get_by_role("button", name="Forget").click()
    expect(row).to_have_count(0)
    gone = httpx.get(f"{srv.url}/v1/memories/{made[0]['id']}", headers=srv.auth)
    assert gone.status_code == 404
    kept = httpx.get(f"{srv.url}/v1/memories/{made[1]['id']}", headers=srv.auth)
    assert kept.status_code == 200

    # Forgetting the whole person asks for their id first.
    page.get_by_role("button", name="Forget this user").click()
    dialog = page.get_by_role("dialog")
    confirm = dialog.get_by_role("button", name="Forget user")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Type the user id to confirm").fill(user)
    confirm.click()
    expect(page.get_by_test_id("forget-result")).to_be_visible()
    console.shot("forget-user")
    assert httpx.get(f"{srv.url}/v1/memories/{made[1]['id']}", headers=srv.auth).status_code == 404
    assert httpx.get(f"{srv.url}/v1/users/{user}/export", headers=srv.auth).status_code == 404


def test_analytics_and_branding(
    console: Console, srv: ServerProcess, persona: dict[str, Any], operator: dict[str, Any]
) -> None:
    person = Person(srv, persona["id"], f"charts-{uuid.uuid4().hex[:4]}")
    lines = [
        "My espresso machine leaks water again, I am upset",
        "The espresso machine you sold me is wonderful",
        "Can you recommend a good espresso machine?",
    ]
    for i, text in enumerate(lines):
        person.send({"type": "message.create", "id": f"a{i}", "text": text})
        person.until("response.done")
    person.close()

    def topics() -> list[dict[str, Any]]:
        r = httpx.get(f"{srv.url}/v1/analytics/topics", headers=srv.auth)
        return list(r.json()["data"])

    wait_for(topics)  # analysed in the background
    console.sign_in(operator["email"], operator["password"])
    console.go("Analytics")
    page = console.page
    for heading in ("Message volume", "Sentiment", "Emotions", "Top topics"):
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    for chart in ("volume", "sentiment", "emotions", "topics"):
        expect(page.get_by_test_id(f"chart-{chart}")).to_be_visible(timeout=15_000)
    console.shot("analytics", full_page=True)

    console.go("Settings")
    page.get_by_label("Console name").fill("Acme Care")
    page.get_by_label("Primary color").fill("#b4235a")
    page.get_by_role("button", name="Save branding").click()
    expect(page.get_by_test_id("brand-name")).to_have_text("Acme Care")
    wait_for(
        lambda: httpx.get(f"{srv.url}/v1/branding", headers=srv.auth).json()["name"] == "Acme Care"
    )
    assert (
        httpx.get(f"{srv.url}/v1/branding", headers=srv.auth).json()["colors"]["primary"]
        == "#b4235a"
    )
    console.shot("settings")


def test_phone_width_and_labels(browser: Any, srv: ServerProcess, operator: dict[str, Any]) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    c = Console(page, srv)
    c.sign_in(operator["email"], operator["password"])
    page.get_by_role("button", name="Menu").click()
    expect(page.get_by_role("link", name="Queues")).to_be_visible()
    c.shot("phone")
    # Keyboard: the first Tab reaches "Skip to content", which moves focus to the main area.
    page.reload()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement && document.activeElement.id") == "main"
    # No horizontal scrolling at phone width, and every control has a name.
    for panel in ("Live", "Queues", "Personas", "Memories", "Analytics", "Settings"):
        c.go(panel)
        page.wait_for_timeout(300)
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea, button')]
                .filter(el => el.offsetParent !== null)
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                              && !el.getAttribute('aria-labelledby') && !(el.textContent || '').trim()
                              && el.type !== 'hidden')
                .map(el => el.outerHTML.slice(0, 120))"""
        )
        assert unnamed == [], (panel, unnamed)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 362, (panel, width)
    context.close()
    assert c.errors == [], c.errors


def test_chat_widget_on_another_site(
    browser: Any, srv: ServerProcess, persona: dict[str, Any], host_port: int
) -> None:
    branding = {"name": "Acme Care", "colors": {"primary": "#b4235a"}}
    assert httpx.put(f"{srv.url}/v1/branding", headers=srv.auth, json=branding).is_success
    token = httpx.post(
        f"{srv.url}/v1/sessions",
        headers=srv.auth,
        json={"user": {"id": "widget-user", "name": "Wendy"}, "persona": persona["id"]},
    ).json()["token"]
    page_html = (
        '<!doctype html><html><head><title>Shop</title><link rel="icon" href="data:,">'
        "</head><body><h1>Our shop</h1>"
        f'<script src="{srv.url}/console/widget.js" data-token="{token}" '
        f'data-persona="{persona["slug"]}" async></script></body></html>'
    ).encode()

    class Host(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page_html if self.path == "/" else b"")

        def log_message(self, *args: Any) -> None:
            pass

    host = http.server.ThreadingHTTPServer(("127.0.0.1", host_port), Host)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    context = browser.new_context(viewport={"width": 1024, "height": 720})
    page = context.new_page()
    c = Console(page, srv)
    try:
        page.goto(f"http://127.0.0.1:{host_port}/")
        page.get_by_role("button", name="Open chat").click()
        dialog = page.get_by_role("dialog", name="Acme Care chat")  # branded
        expect(dialog).to_be_visible()
        dialog.get_by_role("textbox", name="Message").fill("Hello from the widget")
        dialog.get_by_role("button", name="Send").click()
        expect(dialog.locator("[data-role='assistant']").last).to_contain_text(
            "Hello from the fake model", timeout=15_000
        )
        c.shot("widget")
    finally:
        context.close()
        host.shutdown()
    assert c.errors == [], c.errors
