"""The HTTP API over a real `salon serve` process: health, docs, personas, sessions, history."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.cards import read_png_card
from tests.conftest import SALON_BIN, ServerProcess, connect

CONTRACT_PATHS = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/sessions",
    "/v1/personas",
    "/v1/personas/{persona_id}",
    "/v1/personas/{persona_id}/card",
    "/v1/conversations/{conversation_id}/messages",
    "/v1/chat/completions",
    "/v1/models",
)

UNKNOWN_EXTENSIONS = {
    "talkativeness": "0.5",
    "fav": False,
    "depth_prompt": {"prompt": "Stay in character.", "depth": 4, "role": "system"},
    "some_tool": {"nested": {"deep": [1, 2.5, {"k": None, "list": ["a", {"b": True}]}]}},
}
CHARACTER_BOOK = {
    "name": "Forest lore",
    "description": "What the forest knows",
    "scan_depth": 3,
    "token_budget": 512,
    "recursive_scanning": False,
    "extensions": {"tool_x": {"weights": [0.1, 0.2]}},
    "entries": [
        {
            "keys": ["forest", "glade"],
            "content": "The glade is enchanted.",
            "extensions": {"position": 1, "unknown_entry_key": {"x": [None]}},
            "enabled": True,
            "insertion_order": 10,
            "case_sensitive": None,
            "name": "glade",
            "priority": 5,
            "id": 1,
            "comment": "",
            "selective": False,
            "secondary_keys": [],
            "constant": False,
            "position": "before_char",
        }
    ],
}


def _v2_card(name: str) -> dict[str, Any]:
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": name,
            "description": "A guardian of the forest.",
            "personality": "kind, protective",
            "scenario": "{{user}} wakes up in a glade.",
            "first_mes": "You're awake!",
            "mes_example": "<START>\n{{char}}: Hello.",
            "creator_notes": "notes",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": ["Hi there.", "Welcome back."],
            "tags": ["fantasy", "guardian"],
            "creator": "someone",
            "character_version": "1.2",
            "extensions": copy.deepcopy(UNKNOWN_EXTENSIONS),
            "character_book": copy.deepcopy(CHARACTER_BOOK),
        },
    }


def _get(server: ServerProcess, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", server.auth)
    return httpx.get(server.url + path, timeout=10, **kwargs)


def _post(server: ServerProcess, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", server.auth)
    return httpx.post(server.url + path, timeout=10, **kwargs)


def _error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    return dict(body["error"])


def _unique(prefix: str = "P") -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


# -- health, metrics, docs ----------------------------------------------------------------


def test_healthz(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/healthz", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz_reports_each_store(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/readyz", timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "event_log": "ok", "hot_state": "ok", "jobs": "ok"}


async def test_metrics_is_prometheus_text(server: ServerProcess, persona: dict[str, Any]) -> None:
    # one reply first, so the token counter has a sample and not only its HELP line
    c = await connect(server)
    await c.start(persona["id"], user="metrics-user")
    await c.send({"type": "message.create", "id": "m", "text": "hi"})
    await c.until("response.done")
    r = httpx.get(server.url + "/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE salon_ws_connections gauge" in text
    assert "# TYPE salon_tokens_total counter" in text
    samples = {
        line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["salon_ws_connections"] >= 1  # our socket is still open
    tokens = [v for k, v in samples.items() if k.startswith("salon_tokens_total{")]
    assert tokens and sum(tokens) >= 1
    await c.close()


def test_openapi_lists_the_contract_paths(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/openapi.json", timeout=5)
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    missing = [p for p in CONTRACT_PATHS if p not in spec["paths"]]
    assert not missing, missing
    assert set(spec["paths"]["/v1/personas/{persona_id}"]) >= {"get", "patch", "delete"}
    assert set(spec["paths"]["/v1/personas"]) >= {"get", "post"}


def test_docs_is_html(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/docs", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<table" in r.text and "/v1/chat/completions" in r.text and "/openapi.json" in r.text


# -- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic abc"}],
    ids=["none", "wrong-key", "not-bearer"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/personas"),
        ("POST", "/v1/personas"),
        ("GET", "/v1/personas/anything"),
        ("POST", "/v1/sessions"),
        ("GET", "/v1/conversations/conv_x/messages"),
    ],
)
def test_requests_without_a_valid_key_get_401(
    server: ServerProcess, headers: dict[str, str], method: str, path: str
) -> None:
    r = httpx.request(method, server.url + path, headers=headers, json={"name": "Nope"}, timeout=10)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    assert _error(r)["code"] == "unauthorized"


def test_nothing_was_created_by_unauthenticated_posts(server: ServerProcess) -> None:
    name = _unique("Ghost")
    httpx.post(server.url + "/v1/personas", json={"name": name}, timeout=10)
    listed = _get(server, "/v1/personas").json()["data"]
    assert name not in [p["name"] for p in listed]


# -- personas -----------------------------------------------------------------------------


def test_create_salon_persona_and_get_by_id_and_slug(server: ServerProcess) -> None:
    name = _unique("Ada")
    r = _post(
        server,
        "/v1/personas",
        json={"name": name, "description": "a mathematician", "voice": {"id": "alloy"}},
    )
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["id"] and p["slug"] == name.lower().replace(" ", "-")
    assert p["name"] == name and p["description"] == "a mathematician"
    assert p["voice"] == {"id": "alloy"}
    by_id = _get(server, f"/v1/personas/{p['id']}")
    by_slug = _get(server, f"/v1/personas/{p['slug']}")
    assert by_id.status_code == by_slug.status_code == 200
    assert by_id.json() == by_slug.json() == p
    listed = _get(server, "/v1/personas").json()["data"]
    assert [q for q in listed if q["id"] == p["id"]] == [p]


def test_v2_card_survives_import_and_export(server: ServerProcess) -> None:
    card = _v2_card(_unique("Seraphina"))
    r = _post(server, "/v1/personas", json=card)
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["id"] and p["slug"]
    assert p["name"] == card["data"]["name"] and p["tags"] == ["fantasy", "guardian"]

    v2 = _get(server, f"/v1/personas/{p['id']}/card")
    assert v2.status_code == 200
    exported = v2.json()
    assert exported["spec"] == "chara_card_v2" and exported["spec_version"] == "2.0"
    data = exported["data"]
    for key, value in card["data"].items():
        if key != "extensions":
            assert data[key] == value, key
    ext = data["extensions"]
    for key, value in UNKNOWN_EXTENSIONS.items():
        assert ext[key] == value, key
    assert ext["salon"]["slug"] == p["slug"]  # Salon's own settings ride along
    assert data["character_book"] == CHARACTER_BOOK

    v3 = _get(server, f"/v1/personas/{p['slug']}/card", params={"format": "v3"})
    assert v3.status_code == 200
    v3_card = v3.json()
    assert v3_card["spec"] == "chara_card_v3" and v3_card["spec_version"] == "3.0"
    assert v3_card["data"]["character_book"] == CHARACTER_BOOK
    assert v3_card["data"]["extensions"]["some_tool"] == UNKNOWN_EXTENSIONS["some_tool"]
    assert v3_card["data"]["assets"]

    png = _get(server, f"/v1/personas/{p['id']}/card", params={"format": "png"})
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    embedded = read_png_card(png.content)
    assert embedded["data"]["name"] == card["data"]["name"]
    assert embedded["data"]["character_book"] == CHARACTER_BOOK

    bad = _get(server, f"/v1/personas/{p['id']}/card", params={"format": "gif"})
    assert bad.status_code == 400 and _error(bad)["code"] == "invalid_request"


def test_exported_card_can_be_imported_again(server: ServerProcess) -> None:
    original = server.create_persona(name=_unique("Roundtrip"), personality="dry wit")
    card = _get(server, f"/v1/personas/{original['id']}/card").json()
    card["data"]["extensions"]["salon"] = {}  # a fresh slug for the copy
    r = _post(server, "/v1/personas", json=card)
    assert r.status_code == 201, r.text
    copy_ = r.json()
    assert copy_["id"] != original["id"] and copy_["slug"] == original["slug"] + "-2"
    assert copy_["personality"] == "dry wit"


def test_patch_changes_one_field_and_keeps_the_others(server: ServerProcess) -> None:
    p = server.create_persona(
        name=_unique("Patchy"), description="before", personality="calm", tags=["a"]
    )
    r = httpx.patch(
        f"{server.url}/v1/personas/{p['id']}",
        json={"description": "after"},
        headers=server.auth,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["description"] == "after"
    assert patched["personality"] == "calm" and patched["tags"] == ["a"]
    assert patched["name"] == p["name"] and patched["slug"] == p["slug"]
    assert patched["id"] == p["id"] and patched["created_at"] == p["created_at"]
    again = _get(server, f"/v1/personas/{p['slug']}").json()
    assert again["description"] == "after" and again["personality"] == "calm"


def test_patch_with_an_unknown_field_is_422_naming_it(server: ServerProcess) -> None:
    p = server.create_persona(name=_unique("Strict"), personality="calm")
    r = httpx.patch(
        f"{server.url}/v1/personas/{p['id']}",
        json={"personalty": "wild"},
        headers=server.auth,
        timeout=10,
    )
    assert r.status_code == 422
    err = _error(r)
    assert err["code"] == "invalid_persona"
    assert "personalty" in err["message"] and "personality" in err["message"]
    assert _get(server, f"/v1/personas/{p['id']}").json()["personality"] == "calm"


def test_patch_with_a_bad_type_is_422(server: ServerProcess) -> None:
    p = server.create_persona(name=_unique("Typed"))
    r = httpx.patch(
        f"{server.url}/v1/personas/{p['id']}",
        json={"tags": "not-a-list"},
        headers=server.auth,
        timeout=10,
    )
    assert r.status_code == 422 and "tags" in _error(r)["message"]


def test_patch_to_a_taken_slug_is_409(server: ServerProcess) -> None:
    a = server.create_persona(name=_unique("Taken"))
    b = server.create_persona(name=_unique("Mover"))
    r = httpx.patch(
        f"{server.url}/v1/personas/{b['id']}",
        json={"slug": a["slug"]},
        headers=server.auth,
        timeout=10,
    )
    assert r.status_code == 409 and _error(r)["code"] == "conflict"
    assert _get(server, f"/v1/personas/{b['id']}").json()["slug"] == b["slug"]


def test_explicit_duplicate_slug_is_409(server: ServerProcess) -> None:
    slug = "dup-" + uuid.uuid4().hex[:8]
    first = _post(server, "/v1/personas", json={"name": "One", "slug": slug})
    assert first.status_code == 201 and first.json()["slug"] == slug
    second = _post(server, "/v1/personas", json={"name": "Two", "slug": slug})
    assert second.status_code == 409
    assert _error(second)["code"] == "conflict"
    assert _get(server, f"/v1/personas/{slug}").json()["name"] == "One"


def test_derived_duplicate_name_gets_a_numbered_slug(server: ServerProcess) -> None:
    name = _unique("Twin")
    a = server.create_persona(name=name)
    b = server.create_persona(name=name)
    c = server.create_persona(name=name)
    base = name.lower().replace(" ", "-")
    assert (a["slug"], b["slug"], c["slug"]) == (base, base + "-2", base + "-3")
    assert len({a["id"], b["id"], c["id"]}) == 3


def test_delete_then_404(server: ServerProcess) -> None:
    p = server.create_persona(name=_unique("Doomed"))
    r = httpx.delete(f"{server.url}/v1/personas/{p['id']}", headers=server.auth, timeout=10)
    assert r.status_code == 204 and r.content == b""
    for ref in (p["id"], p["slug"]):
        gone = _get(server, f"/v1/personas/{ref}")
        assert gone.status_code == 404 and _error(gone)["code"] == "unknown_persona"
    again = httpx.delete(f"{server.url}/v1/personas/{p['id']}", headers=server.auth, timeout=10)
    assert again.status_code == 404
    assert p["id"] not in [q["id"] for q in _get(server, "/v1/personas").json()["data"]]


def test_unknown_persona_is_404(server: ServerProcess) -> None:
    r = _get(server, "/v1/personas/no-such-persona")
    assert r.status_code == 404 and _error(r)["code"] == "unknown_persona"
    r = httpx.patch(
        f"{server.url}/v1/personas/no-such-persona",
        json={"description": "x"},
        headers=server.auth,
        timeout=10,
    )
    assert r.status_code == 404


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b'{"name": "x"', b"\xff\xfe garbage"],
    ids=["broken", "empty", "truncated", "not-utf8"],
)
def test_invalid_json_body_is_400(server: ServerProcess, body: bytes) -> None:
    r = _post(
        server,
        "/v1/personas",
        content=body,
        headers={**server.auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert _error(r)["code"] == "invalid_json"


@pytest.mark.parametrize("body", ["[1, 2]", '"Ada"', "42", "null"])
def test_non_object_json_is_400(server: ServerProcess, body: str) -> None:
    r = _post(
        server,
        "/v1/personas",
        content=body.encode(),
        headers={**server.auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert "object" in _error(r)["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Typed", "description": 5}, "description"),
        ({"name": "Typed", "tags": "fantasy"}, "tags"),
        ({"name": ""}, "name"),
        ({"description": "no name"}, "name"),
        ({"name": "Typed", "slug": "Not A Slug!"}, "slug"),
        ({"name": "Typed", "descripton": "typo"}, "descripton"),
        ({"spec": "chara_card_v2", "data": {"name": "C", "tags": "x"}}, "data.tags"),
        ({"spec": "chara_card_v2", "data": {"name": 7}}, "data.name"),
        ({"spec": "chara_card_v2", "data": "not an object"}, "data"),
        ({"spec": "chara_card_v9", "data": {"name": "C"}}, "chara_card_v9"),
    ],
)
def test_bad_persona_payloads_are_422(
    server: ServerProcess, body: dict[str, Any], field: str
) -> None:
    r = _post(server, "/v1/personas", json=body)
    assert r.status_code == 422, r.text
    err = _error(r)
    assert err["code"] == "invalid_persona"
    assert field in err["message"]


def test_body_over_2_mib_is_413(server: ServerProcess) -> None:
    big = json.dumps({"name": "Big", "description": "x" * (2 * 1024 * 1024)}).encode()
    assert len(big) > 2 * 1024 * 1024
    r = _post(
        server,
        "/v1/personas",
        content=big,
        headers={**server.auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert _error(r)["code"] == "body_too_large"
    # just under the limit is fine
    ok = json.dumps({"name": _unique("Large"), "description": "x" * (2 * 1024 * 1024 - 100)})
    r = _post(
        server,
        "/v1/personas",
        content=ok.encode(),
        headers={**server.auth, "Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text[:200]


# -- sessions -----------------------------------------------------------------------------


def test_session_token_is_minted_for_a_user(server: ServerProcess, persona: dict[str, Any]) -> None:
    before = time.time()
    r = _post(
        server,
        "/v1/sessions",
        json={
            "user": {"id": "alice", "name": "Alice"},
            "persona": persona["slug"],
            "ttl_seconds": 60,
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert isinstance(body["token"], str) and body["token"].startswith("st1.")
    assert before + 59 <= body["expires_at"] <= time.time() + 61
    assert body["user"] == {"id": "alice", "name": "Alice"}
    assert body["persona"] == persona["id"]  # a slug is resolved to the id
    # the token authenticates reads, but is not an API key
    token_auth = {"Authorization": f"Bearer {body['token']}"}
    assert _get(server, "/v1/personas", headers=token_auth).status_code == 200
    r = _post(server, "/v1/personas", json={"name": "No"}, headers=token_auth)
    assert r.status_code == 403


def test_session_user_as_plain_string_and_default_ttl(server: ServerProcess) -> None:
    r = _post(server, "/v1/sessions", json={"user": "bob"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["user"] == {"id": "bob", "name": None} and body["persona"] is None
    assert 0 < body["expires_at"] - time.time() <= 86_400


def test_sessions_need_an_api_key(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/v1/sessions", json={"user": "u"}, timeout=10)
    assert r.status_code == 401 and "www-authenticate" in r.headers


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user": 5},
        {"user": ""},
        {"user": {"id": ""}},
        {"user": {"id": "   "}},
        {"user": {"name": "no id"}},
        {"user": {"id": "u", "name": 5}},
        {"user": "u", "persona": 5},
    ],
)
def test_session_with_a_bad_user_is_400(server: ServerProcess, body: dict[str, Any]) -> None:
    r = _post(server, "/v1/sessions", json=body)
    assert r.status_code == 400, r.text
    assert _error(r)["code"] == "invalid_request"


def test_session_for_an_unknown_persona_is_404(server: ServerProcess) -> None:
    r = _post(server, "/v1/sessions", json={"user": "u", "persona": "no-such-persona"})
    assert r.status_code == 404 and _error(r)["code"] == "unknown_persona"


@pytest.mark.parametrize(
    "ttl",
    [
        0,
        -5,
        86_401,
        "60",
        1.5,
        None,
        True,
    ],
)
def test_session_ttl_out_of_range_is_400(server: ServerProcess, ttl: Any) -> None:
    r = _post(server, "/v1/sessions", json={"user": "u", "ttl_seconds": ttl})
    assert r.status_code == 400, (ttl, r.text)
    assert "ttl_seconds" in _error(r)["message"]


@pytest.mark.parametrize("ttl", [1, 86_400])
def test_session_ttl_bounds_are_inclusive(server: ServerProcess, ttl: int) -> None:
    r = _post(server, "/v1/sessions", json={"user": "u", "ttl_seconds": ttl})
    assert r.status_code == 201, r.text


# -- tenant isolation ---------------------------------------------------------------------


def cli_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALON_")}
    env["SALON_DATA_DIR"] = str(data_dir)
    return env


def create_tenant(data_dir: Path, name: str) -> str:
    """`salon tenants create NAME` on that data dir; returns the printed admin key."""
    r = subprocess.run(
        [SALON_BIN, "tenants", "create", name, "--data-dir", str(data_dir)],
        env=cli_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1].strip()
    assert key.startswith("sk_salon_"), r.stdout
    return key


async def test_tenants_cannot_see_each_others_personas_or_conversations(
    make_server: Any,
) -> None:
    srv: ServerProcess = make_server()
    mine = srv.create_persona(name="Private Ada", personality="secret")
    c = await connect(srv)
    conv = (await c.start(mine["id"], user="owner"))["conversation_id"]
    await c.send({"type": "message.create", "id": "m", "text": "my secret"})
    await c.until("response.done")
    await c.close()

    other_key = create_tenant(srv.data_dir, "other")
    other = {"Authorization": f"Bearer {other_key}"}
    base = srv.url

    listed = httpx.get(base + "/v1/personas", headers=other, timeout=10)
    assert listed.status_code == 200 and listed.json() == {"data": []}
    for ref in (mine["id"], mine["slug"]):
        assert httpx.get(f"{base}/v1/personas/{ref}", headers=other, timeout=10).status_code == 404
        card = httpx.get(f"{base}/v1/personas/{ref}/card", headers=other, timeout=10)
        assert card.status_code == 404
    r = httpx.patch(
        f"{base}/v1/personas/{mine['id']}",
        json={"personality": "stolen"},
        headers=other,
        timeout=10,
    )
    assert r.status_code == 404
    r = httpx.delete(f"{base}/v1/personas/{mine['id']}", headers=other, timeout=10)
    assert r.status_code == 404
    history = httpx.get(f"{base}/v1/conversations/{conv}/messages", headers=other, timeout=10)
    assert history.status_code == 404 and "secret" not in history.text
    r = httpx.post(
        base + "/v1/sessions",
        json={"user": "owner", "persona": mine["id"]},
        headers=other,
        timeout=10,
    )
    assert r.status_code == 404
    r = httpx.post(
        base + "/v1/chat/completions",
        json={"model": mine["slug"], "messages": [{"role": "user", "content": "hi"}]},
        headers=other,
        timeout=10,
    )
    assert r.status_code == 404
    models = httpx.get(base + "/v1/models", headers=other, timeout=10)
    assert models.status_code == 200 and models.json()["data"] == []

    # the other tenant's socket cannot open the persona nor the conversation
    c2 = await connect(srv, key=other_key)
    err = await c2.start(mine["id"], user="owner")
    assert err["type"] == "error" and err["code"] == "unknown_persona"
    await c2.close()

    # same slug in another tenant is a different persona; the first is untouched
    theirs = httpx.post(
        base + "/v1/personas", json={"name": "Private Ada"}, headers=other, timeout=10
    )
    assert theirs.status_code == 201 and theirs.json()["slug"] == mine["slug"]
    assert theirs.json()["id"] != mine["id"]
    still = httpx.get(f"{base}/v1/personas/{mine['slug']}", headers=srv.auth, timeout=10).json()
    assert still["id"] == mine["id"] and still["personality"] == "secret"
    assert [p["id"] for p in httpx.get(base + "/v1/personas", headers=srv.auth).json()["data"]] == [
        mine["id"]
    ]
    owner_history = httpx.get(
        f"{base}/v1/conversations/{conv}/messages", headers=srv.auth, timeout=10
    ).json()["data"]
    assert owner_history[0]["content"] == "my secret"


# -- history ------------------------------------------------------------------------------


@pytest.fixture
async def conversation(server: ServerProcess, persona: dict[str, Any]) -> dict[str, Any]:
    """A conversation of four exchanges (eight messages) made over the WebSocket."""
    c = await connect(server)
    conv = (await c.start(persona["id"], user="pager-" + uuid.uuid4().hex[:6]))["conversation_id"]
    for i in range(4):
        await c.send({"type": "message.create", "id": f"m{i}", "text": f"message {i}"})
        await c.until("response.done")
    await c.close()
    return {"id": conv, "persona": persona}


def _history(server: ServerProcess, conv: str, **params: Any) -> httpx.Response:
    return _get(server, f"/v1/conversations/{conv}/messages", params=params)


def test_history_is_oldest_first(server: ServerProcess, conversation: dict[str, Any]) -> None:
    r = _history(server, conversation["id"])
    assert r.status_code == 200
    body = r.json()
    assert body["conversation_id"] == conversation["id"]
    assert body["persona_id"] == conversation["persona"]["id"]
    assert body["last_seq"] > 0
    pairs = [(m["role"], m["content"]) for m in body["data"]]
    expected = []
    for i in range(4):
        expected += [("user", f"message {i}"), ("assistant", "Hello from the fake model.")]
    assert pairs == expected


def test_history_pages_backwards_with_before(
    server: ServerProcess, conversation: dict[str, Any]
) -> None:
    everything = _history(server, conversation["id"]).json()["data"]
    assert len(everything) == 8
    pages: list[list[dict[str, Any]]] = []
    before: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if before:
            params["before"] = before
        r = _history(server, conversation["id"], **params)
        assert r.status_code == 200, r.text
        page = r.json()["data"]
        if not page:
            break
        assert len(page) <= 3
        pages.append(page)
        before = page[0]["id"]
        assert len(pages) < 10, "paging does not end"
    assert [len(p) for p in pages] == [3, 3, 2]
    stitched = [m for page in reversed(pages) for m in page]
    assert [m["id"] for m in stitched] == [m["id"] for m in everything]
    assert pages[0][-1]["content"] == "Hello from the fake model."
    assert pages[-1][0]["content"] == "message 0"


def test_history_limit_takes_the_newest(
    server: ServerProcess, conversation: dict[str, Any]
) -> None:
    r = _history(server, conversation["id"], limit=1)
    assert [m["role"] for m in r.json()["data"]] == ["assistant"]
    r = _history(server, conversation["id"], limit=500)
    assert r.status_code == 200 and len(r.json()["data"]) == 8


@pytest.mark.parametrize("limit", ["0", "501", "-1", "ten", "1.5", ""])
def test_history_limit_out_of_range_is_400(
    server: ServerProcess, conversation: dict[str, Any], limit: str
) -> None:
    r = _history(server, conversation["id"], limit=limit)
    assert r.status_code == 400, r.text
    err = _error(r)
    assert err["code"] == "invalid_request" and "limit" in err["message"]


def test_history_of_an_unknown_conversation_is_404(server: ServerProcess) -> None:
    r = _history(server, "conv_does_not_exist")
    assert r.status_code == 404 and _error(r)["code"] == "conversation_not_found"


def test_session_token_reads_only_its_own_users_history(
    server: ServerProcess, persona: dict[str, Any]
) -> None:
    owner = "reader-" + uuid.uuid4().hex[:6]
    r = _post(
        server,
        "/v1/chat/completions",
        json={
            "model": persona["id"],
            "user": owner,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert r.status_code == 200, r.text
    conv = r.json()["salon"]["conversation_id"]

    def token_for(user: str) -> dict[str, str]:
        t = _post(server, "/v1/sessions", json={"user": user}).json()["token"]
        return {"Authorization": f"Bearer {t}"}

    mine = _get(server, f"/v1/conversations/{conv}/messages", headers=token_for(owner))
    assert mine.status_code == 200
    assert [m["role"] for m in mine.json()["data"]] == ["user", "assistant"]
    theirs = _get(server, f"/v1/conversations/{conv}/messages", headers=token_for("someone"))
    assert theirs.status_code == 404 and "hi" not in theirs.text


def test_every_http_route_is_in_the_openapi_document() -> None:
    """No route without a description: new parts (analytics, flags, feeds, audio) too."""
    from starlette.routing import Route

    from server.app import create_app
    from server.docs_api import OPENAPI

    paths = {
        route.path
        for route in create_app().routes
        if isinstance(route, Route) and route.path.startswith("/v1/")
    }
    assert paths, "no routes found"
    assert sorted(paths - set(OPENAPI["paths"])) == []
