"""`salon serve` with no LLM configuration answers with the bundled local model, for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerProcess, connect, server_env
from tests.fakes.openai_server import FakeOpenAI


@pytest.mark.slow
async def test_embedded_model_streams_a_real_reply(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    env = server_env(tmp_path, fake_llm, SALON_LLM_MAX_TOKENS="12", SALON_LLM_TEMPERATURE="0")
    for name in ("SALON_LLM_BASE_URL", "SALON_LLM_API_KEY", "SALON_LLM_MODEL"):
        env.pop(name)
    env["SALON_LLM_TIMEOUT_SECONDS"] = "60"
    srv = ServerProcess(tmp_path, env).start(timeout=180)  # first start dequantizes the GGUF
    try:
        before = len(fake_llm.requests)
        p = srv.create_persona(name="Captain Ada", description="A cheerful pirate captain.")
        c = await connect(srv)
        await c.start(p["id"])
        await c.send({"type": "message.create", "id": "1", "text": "Hello! Who are you?"})
        done = await c.until(("response.done", "error"), timeout=120)
        assert done["type"] == "response.done", done
        deltas = [e for e in c.events if e["type"] == "response.text.delta"]
        assert deltas and done["text"].strip()
        assert len(fake_llm.requests) == before  # nothing went to an HTTP endpoint
        assert (tmp_path / "models").is_dir()  # the dequantized weights were cached
        await c.close()
    finally:
        srv.stop()
