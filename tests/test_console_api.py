"""The console's HTTP side through a real server: sign-in, roles, branding, conversations."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from agents.cards import write_png_card
from tests.conftest import ServerProcess, connect

PASSWORD = "correct horse battery"


def _email() -> str:
    return f"op-{uuid.uuid4().hex[:10]}@example.com"


def _operator(server: ServerProcess, role: str, **extra: Any) -> dict[str, Any]:
    body = {"email": _email(), "name": f"{role.title()} Op", "role": role, "password": PASSWORD}
    r = httpx.post(f"{server.url}/v1/operators", headers=server.auth, json={**body, **extra})
    assert r.status_code == 201, r.text
    return {**r.json(), "password": body["password"]}


def _login(server: ServerProcess, **body: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/console/login", json=body, timeout=10)


def _token(server: ServerProcess, role: str) -> tuple[dict[str, Any], dict[str, str]]:
    op = _operator(server, role)
    r = _login(server, email=op["email"], password=PASSWORD)
    assert r.status_code == 200, r.text
    return op, {"Authorization": f"Bearer {r.json()['token']}"}


def test_operator_signs_in_and_acts_within_their_role(server: ServerProcess) -> None:
    op = _operator(server, "viewer")
    assert "password" not in httpx.get(f"{server.url}/v1/operators", headers=server.auth).text
    r = _login(server, email=op["email"].upper(), password=PASSWORD)  # emails ignore case
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"].startswith("ot1.") and body["role"] == "viewer"
    assert body["kind"] == "operator" and body["operator"]["email"] == op["email"]
    assert body["tenant"]["id"]
    viewer = {"Authorization": f"Bearer {body['token']}"}
    me = httpx.get(f"{server.url}/v1/console/me", headers=viewer).json()
    assert me["role"] == "viewer" and me["name"] == "Viewer Op" and me["branding"]["name"]

    # A viewer reads, and changes nothing.
    assert httpx.get(f"{server.url}/v1/personas", headers=viewer).status_code == 200
    refused = httpx.post(f"{server.url}/v1/personas", headers=viewer, json={"name": "X"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "admin" in refused.json()["error"]["message"]
    assert httpx.get(f"{server.url}/v1/operators", headers=viewer).status_code == 403

    # Promoted: the same token now carries the new role (re-read on every use).
    r = httpx.patch(
        f"{server.url}/v1/operators/{op['id']}", headers=server.auth, json={"role": "admin"}
    )
    assert r.status_code == 200 and r.json()["role"] == "admin"
    created = httpx.post(f"{server.url}/v1/personas", headers=viewer, json={"name": "By Op"})
    assert created.status_code == 201, created.text

    # Disabled: the token stops working at once, and so does signing in.
    r = httpx.patch(
        f"{server.url}/v1/operators/{op['id']}", headers=server.auth, json={"disabled": True}
    )
    assert r.json()["disabled"] is True
    assert httpx.get(f"{server.url}/v1/personas", headers=viewer).status_code == 401
    assert _login(server, email=op["email"], password=PASSWORD).status_code == 401


def test_moderator_takes_over_but_does_not_edit_personas(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    _, moderator = _token(server, "moderator")

    async def run() -> None:
        person = await connect(server)
        ready = await person.start(persona["id"], user=f"mod-{uuid.uuid4().hex[:6]}")
        conv = ready["conversation_id"]
        url = f"{server.url}/v1/conversations/{conv}/takeover"
        # An operator is recorded and shown under their own name, whatever they send.
        r = httpx.post(url, headers=moderator, json={"mode": "operator", "name": "The CEO"})
        assert r.status_code == 201, r.text
        assert r.json()["operator"] == "Moderator Op"
        said = httpx.post(url + "/messages", headers=moderator, json={"text": "Hi, I'm staff."})
        assert said.status_code == 201, said.text
        done = await person.until("response.done")
        assert done["text"] == "Hi, I'm staff."
        assert done["speaker"] == {"type": "operator", "name": "Moderator Op"}
        assert httpx.delete(url, headers=moderator).status_code == 200
        await person.close()

    asyncio.run(run())
    r = httpx.patch(
        f"{server.url}/v1/personas/{persona['id']}", headers=moderator, json={"name": "Nope"}
    )
    assert r.status_code == 403
    assert httpx.get(f"{server.url}/v1/flags", headers=moderator).status_code == 200
    _, viewer = _token(server, "viewer")
    assert httpx.get(f"{server.url}/v1/flags", headers=viewer).status_code == 403


def test_a_new_password_ends_the_old_tokens(server: ServerProcess) -> None:
    op, headers = _token(server, "viewer")
    assert httpx.get(f"{server.url}/v1/console/me", headers=headers).status_code == 200
    r = httpx.patch(
        f"{server.url}/v1/operators/{op['id']}",
        headers=server.auth,
        json={"password": "a brand new passphrase"},
    )
    assert r.status_code == 200
    assert httpx.get(f"{server.url}/v1/console/me", headers=headers).status_code == 401
    assert _login(server, email=op["email"], password=PASSWORD).status_code == 401
    again = _login(server, email=op["email"], password="a brand new passphrase")
    assert again.status_code == 200


def test_api_key_sign_in_and_bad_credentials(server: ServerProcess) -> None:
    r = _login(server, api_key=server.key)
    assert r.status_code == 200 and r.json()["kind"] == "api_key" and r.json()["role"] == "admin"
    token = r.json()["token"]
    assert server.key not in token  # the key itself never travels again
    ok = httpx.get(f"{server.url}/v1/operators", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200

    op = _operator(server, "moderator")
    for body in (
        {"email": op["email"], "password": "wrong password!"},
        {"email": "nobody-" + op["email"], "password": PASSWORD},
        {"api_key": "sk_not_a_key"},
    ):
        r = _login(server, **body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    assert _login(server, email=op["email"]).status_code == 400
    bad = httpx.post(f"{server.url}/v1/console/login", content=b"{nope", timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"

    # A forged or tampered token is refused like none.
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert (
        httpx.get(
            f"{server.url}/v1/console/me", headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )


def test_failed_sign_ins_are_limited_per_account(make_server: Any) -> None:
    srv = make_server(SALON_CONSOLE_LOGIN_ATTEMPTS="3")
    op = _operator(srv, "viewer")
    codes = [_login(srv, email=op["email"], password="not it at all").status_code for _ in range(4)]
    assert codes[:3] == [401, 401, 401] and codes[3] == 429
    # Now even the right password waits: guessing stops paying.
    r = _login(srv, email=op["email"], password=PASSWORD)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    # Another account is not locked by it.
    other = _operator(srv, "viewer")
    assert _login(srv, email=other["email"], password=PASSWORD).status_code == 200


def test_operator_accounts_are_validated(server: ServerProcess) -> None:
    url = f"{server.url}/v1/operators"
    op = _operator(server, "viewer")
    cases = [
        ({"email": op["email"], "password": PASSWORD}, 409),
        ({"email": "not-an-email", "password": PASSWORD}, 422),
        ({"email": _email(), "password": "short"}, 422),
        ({"email": _email(), "password": PASSWORD, "role": "owner"}, 422),
        ({"email": _email(), "password": PASSWORD, "extra": 1}, 422),
    ]
    for body, status in cases:
        assert httpx.post(url, headers=server.auth, json=body).status_code == status, body
    assert httpx.patch(f"{url}/opr_missing", headers=server.auth, json={}).status_code == 404
    assert httpx.delete(f"{url}/{op['id']}", headers=server.auth).status_code == 204
    assert httpx.delete(f"{url}/{op['id']}", headers=server.auth).status_code == 404

    # An admin cannot lock themselves out.
    admin, headers = _token(server, "admin")
    r = httpx.patch(f"{url}/{admin['id']}", headers=headers, json={"role": "viewer"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "cannot_demote_self"
    assert httpx.delete(f"{url}/{admin['id']}", headers=headers).status_code == 409


def test_branding_defaults_validation_and_readers(make_server: Any) -> None:
    srv = make_server()
    url = f"{srv.url}/v1/branding"
    default = httpx.get(url, headers=srv.auth).json()
    assert default["name"] == "Salon" and default["logo"] is None
    assert set(default["colors"]) == {"primary", "accent", "background", "surface", "text"}
    logo = "data:image/png;base64,iVBORw0KGgo="
    r = httpx.put(
        url,
        headers=srv.auth,
        json={"name": "Acme Care", "logo": logo, "colors": {"primary": "#AA0011"}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["colors"]["primary"] == "#aa0011" and r.json()["logo"] == logo
    for bad in (
        {"colors": {"primary": "red"}},
        {"colors": {"sparkle": "#000000"}},
        {"logo": "javascript:alert(1)"},
        {"logo": "data:text/html;base64,PHNjcmlwdD4="},
        {"logo": "data:image/png;base64," + "A" * 400_000},
        {"name": ""},
        {"motto": "x"},
    ):
        r = httpx.put(url, headers=srv.auth, json=bad)
        assert r.status_code in (413, 422), (bad, r.text)
    assert httpx.get(url, headers=srv.auth).json()["name"] == "Acme Care"  # nothing lost

    # The chat widget reads it with a person's session token; a viewer cannot change it.
    token = httpx.post(f"{srv.url}/v1/sessions", headers=srv.auth, json={"user": "w1"}).json()
    r = httpx.get(url, headers={"Authorization": f"Bearer {token['token']}"})
    assert r.status_code == 200 and r.json()["name"] == "Acme Care"
    assert (
        httpx.put(
            url, headers={"Authorization": f"Bearer {token['token']}"}, json={"name": "x"}
        ).status_code
        == 403
    )
    _, viewer = _token(srv, "viewer")
    assert httpx.put(url, headers=viewer, json={"name": "x"}).status_code == 403


def test_cors_only_for_allowlisted_origins(make_server: Any) -> None:
    srv = make_server(SALON_ALLOWED_ORIGINS="https://shop.example")
    pre = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    ok = httpx.options(f"{srv.url}/v1/branding", headers={"Origin": "https://shop.example", **pre})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    no = httpx.options(f"{srv.url}/v1/branding", headers={"Origin": "https://evil.example", **pre})
    assert no.status_code == 400 and "access-control-allow-origin" not in no.headers


def test_conversations_list_shows_latest_activity(server: ServerProcess) -> None:
    persona = server.create_persona(name="Lister")
    user = f"lister-{uuid.uuid4().hex[:6]}"

    async def chat() -> str:
        client = await connect(server)
        ready = await client.start(persona["id"], user=user)
        await client.send({"type": "message.create", "id": "c1", "text": "hello lister"})
        await client.until("response.done", timeout=20)
        await client.close()
        return str(ready["conversation_id"])

    conv = asyncio.run(chat())
    _, viewer = _token(server, "viewer")
    r = httpx.get(f"{server.url}/v1/conversations", headers=viewer, params={"active": "true"})
    assert r.status_code == 200, r.text
    found = next(c for c in r.json()["data"] if c["id"] == conv)
    assert found["persona"] == {"id": persona["id"], "slug": persona["slug"], "name": "Lister"}
    assert found["user"]["id"] == user and found["takeover"] is None
    assert found["last_message"]["role"] == "assistant" and found["last_seq"] > 0
    assert r.json()["data"][0]["updated_at"] >= r.json()["data"][-1]["updated_at"]
    for bad in ({"limit": "0"}, {"limit": "x"}, {"active": "maybe"}):
        assert (
            httpx.get(f"{server.url}/v1/conversations", headers=viewer, params=bad).status_code
            == 400
        )
    token = httpx.post(f"{server.url}/v1/sessions", headers=server.auth, json={"user": user}).json()
    person = {"Authorization": f"Bearer {token['token']}"}
    assert httpx.get(f"{server.url}/v1/conversations", headers=person).status_code == 403


def test_persona_imported_from_a_png_card(server: ServerProcess) -> None:
    png = write_png_card(
        {
            "spec": "chara_card_v2",
            "spec_version": "2.0",
            "data": {"name": "Pngy", "description": "from a PNG"},
        }
    )
    r = httpx.post(
        f"{server.url}/v1/personas",
        headers={**server.auth, "Content-Type": "image/png"},
        content=png,
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Pngy" and r.json()["description"] == "from a PNG"
    bad = httpx.post(
        f"{server.url}/v1/personas",
        headers={**server.auth, "Content-Type": "image/png"},
        content=b"\x89PNG\r\n\x1a\nnot really",
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_persona"


@pytest.mark.parametrize("path", ["/console/assets/missing-abc.js", "/console/../pyproject.toml"])
def test_console_never_serves_files_outside_its_build(server: ServerProcess, path: str) -> None:
    r = httpx.get(server.url + path)
    assert "[project]" not in r.text
    assert r.status_code in (200, 404, 503)


def test_analytics_volume_and_topics(make_server: Any) -> None:
    srv = make_server()
    persona = srv.create_persona(name="Topical")
    texts = [
        "My espresso machine leaks water again",
        "The espresso machine makes a grinding noise",
        "Can you recommend a good espresso machine?",
        "What a lovely day",
    ]

    async def chat() -> None:
        client = await connect(srv)
        await client.start(persona["id"], user="topics-user")
        for i, text in enumerate(texts):
            await client.send({"type": "message.create", "id": f"t{i}", "text": text})
            await client.until("response.done", timeout=20)
        await client.close()

    asyncio.run(chat())
    _, viewer = _token(srv, "viewer")

    def counted() -> tuple[int, int]:
        r = httpx.get(f"{srv.url}/v1/analytics/volume", headers=viewer, params={"bucket": "hour"})
        assert r.status_code == 200, r.text
        rows = r.json()["data"]
        return sum(x["user"] for x in rows), sum(x["assistant"] for x in rows)

    deadline = time.monotonic() + 30  # analysis runs in the background
    while counted() != (4, 4) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert counted() == (4, 4)
    topics = httpx.get(f"{srv.url}/v1/analytics/topics", headers=viewer, params={"limit": "5"})
    assert topics.status_code == 200, topics.text
    body = topics.json()
    assert body["messages"] == 4
    assert body["data"][0] == {"topic": "espresso machine", "count": 3}
    assert all(t["count"] >= 2 for t in body["data"])  # one-off phrases are not topics
    other = httpx.get(
        f"{srv.url}/v1/analytics/topics", headers=viewer, params={"persona": "nobody-here"}
    )
    assert other.status_code == 404
    assert (
        httpx.get(
            f"{srv.url}/v1/analytics/topics", headers=viewer, params={"limit": "99"}
        ).status_code
        == 400
    )


def test_first_admin_account_from_the_command_line(make_server: Any) -> None:
    import subprocess

    from tests.conftest import SALON_BIN
    from tests.test_cli import cli_env

    srv = make_server()
    email = _email()

    def create(*args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SALON_BIN, "operators", "create", *args, "--password-stdin"],
            env=cli_env(srv.data_dir),
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = create(email, "--name", "Root Op")
    assert done.returncode == 0, done.stderr
    assert "admin" in done.stdout
    r = _login(srv, email=email, password=PASSWORD)
    assert r.status_code == 200 and r.json()["role"] == "admin" and r.json()["name"] == "Root Op"
    assert create(email).returncode == 1  # taken
    assert create(_email(), "--role", "owner").returncode == 2
    assert create(_email(), password="short").returncode == 2
    assert create(_email(), "--tenant", "ten_nope").returncode == 1


def test_console_page_is_served_with_a_strict_policy(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/console", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/console/"
    page = httpx.get(server.url + "/console/live")  # a client-side route: the page
    assert page.status_code == 200, page.text[:200]
    assert "<div id=" in page.text and "script" in page.text
    by_name = httpx.get(server.url + "/console/index.html")  # the same page, the same policy
    assert by_name.headers["content-security-policy"] == page.headers["content-security-policy"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-cache"
    widget = httpx.get(server.url + "/console/widget.js")
    assert widget.status_code == 200 and widget.headers["content-type"].startswith(
        "text/javascript"
    )
