"""``/v1/voices``: cloned voices with consent records, their audit trail, revocation.

All endpoints need a tenant API key (a cloned voice is tenant configuration
with legal weight, not something a person's session manages) and see that
tenant's voices only: another tenant's voice id is 404 ``voice_not_found``.
The workflow itself is :class:`agents.voice_catalog.VoiceCatalog`; these
handlers parse, authorize and map its errors to HTTP. docs/voice-cloning.md
has the fields, the error codes and examples.

- ``POST /v1/voices`` (multipart): ``name``, one or more ``file`` parts
  (reference audio), ``consent`` (a JSON object: ``speaker_name``,
  ``statement``, ``scope``, ``obtained_at``), optional ``description`` and
  ``consent_recording`` (a recording of the speaker giving consent);
  201 with the voice, or the provider's failure (502/504, the voice kept as
  ``failed`` with its consent record).
- ``GET /v1/voices`` (``?status=``, ``?limit=``), ``GET /v1/voices/{id}``
  (with the consent record), ``GET /v1/voices/{id}/audit``.
- ``DELETE /v1/voices/{id}`` (``reason`` in a JSON body or the query):
  revokes; 200 with the voice every time (idempotent), and ``warnings`` when
  the provider or the storage could not delete its copy yet (calling again
  retries).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.voice_catalog import CloneRequestError, VoiceCatalog, is_cloned_voice_id
from media.tts.cloning import CloningError, unavailable_message
from memory.voices_store import STATUSES, ConsentRecord, VoiceRecord
from server.audio_api import voice_services
from server.auth import bearer_token
from server.http_util import (
    HTTPError,
    json_body,
    parse_multipart,
    query_int,
    read_limited,
    require_principal,
    state_of,
)

FORM_SLACK = 64 * 1024  # room for the text fields and multipart framing beyond the audio
MAX_FILES = 26  # 25 samples (ElevenLabs' limit) + the consent recording
# Where a failed clone's provider error sends the client.
PROVIDER_STATUS = {
    "cloning_timeout": 504,
    "cloning_rate_limited": 429,
    "cloning_bad_request": 422,
}


def voice_catalog(app: Any) -> VoiceCatalog:
    """The app's :class:`VoiceCatalog` (created on first call from its state and voice config).

    The same object resolves cloned voice ids for speaking
    (:meth:`VoiceCatalog.resolve`); tests put their own on
    ``app.state.salon_voice_catalog`` first.
    """
    catalog = getattr(app.state, "salon_voice_catalog", None)
    if catalog is None:
        state = app.state.salon
        catalog = VoiceCatalog(state.store, state.storage, voice_services(app).config)
        app.state.salon_voice_catalog = catalog
    return catalog


async def _actor(request: Request) -> str:
    """Who acts, for the audit trail: the API key's id (never the key itself)."""
    credential = bearer_token(request.headers.get("authorization"))
    record = await state_of(request).store.find_api_key(credential) if credential else None
    return f"api_key:{record.id}" if record is not None else "api_key"


def _text_field(form: Any, name: str, *, limit: int = 1000) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise HTTPError(400, "invalid_request", f"'{name}' must be a text field of at most {limit}")
    return value


def _voice_body(voice: VoiceRecord, consent: ConsentRecord | None) -> dict[str, Any]:
    return voice.to_public(consent)


async def create_voice(request: Request) -> Response:
    """Multipart ``name``, ``file`` (1+), ``consent`` (JSON) -> the voice (201)."""
    principal = await require_principal(request, api_key_only=True)
    state = state_of(request)
    catalog = voice_catalog(request.app)
    config = catalog.config
    if not await state.hot.hit(
        f"voice-clone-rate:{principal.tenant_id}", config.voice_requests_per_minute, 60
    ):
        raise HTTPError(429, "rate_limited", "too many voice requests; try again later")
    try:
        provider = catalog.provider
    except CloningError as exc:  # an unknown SALON_VOICE_CLONING_PROVIDER
        raise HTTPError(503, exc.code, exc.message) from exc
    if provider is None:
        raise HTTPError(503, "cloning_unavailable", unavailable_message(config))
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPError(
            400, "invalid_request", "send multipart/form-data: name, file (1+), consent (JSON)"
        )
    limit = config.voice_clone_max_bytes
    raw_body = await read_limited(request, limit + FORM_SLACK)
    form = await parse_multipart(request, raw_body, max_files=MAX_FILES, max_part_size=FORM_SLACK)
    try:
        uploads = [f for f in (*form.getlist("file"), *form.getlist("files")) if f != ""]
        if not all(isinstance(f, UploadFile) for f in uploads):
            raise HTTPError(400, "invalid_request", "'file' parts must be audio files")
        files = [await f.read() for f in uploads]
        recording_part = form.get("consent_recording")
        recording: bytes | None = None
        recording_mime = "application/octet-stream"
        if isinstance(recording_part, UploadFile):
            recording = await recording_part.read()
            if recording_part.content_type and recording_part.content_type.startswith("audio/"):
                recording_mime = recording_part.content_type.split(";")[0].strip()
        elif recording_part not in (None, ""):
            raise HTTPError(400, "invalid_request", "'consent_recording' must be an audio file")
        consent_part = form.get("consent")
        if isinstance(consent_part, UploadFile):  # curl -F consent=@consent.json
            raw = (await consent_part.read(20_001)).decode("utf-8", "replace")
            if len(raw) > 20_000:
                raise HTTPError(400, "consent_required", "'consent' is over 20000 characters")
            consent_text: str | None = raw
        else:
            consent_text = _text_field(form, "consent", limit=20_000)
    finally:
        await form.close()
    if sum(len(f) for f in files) + len(recording or b"") > limit:
        raise HTTPError(413, "file_too_large", f"the audio exceeds {limit} bytes")
    if not files or any(not f for f in files):
        raise HTTPError(400, "invalid_request", "one or more non-empty 'file' parts are needed")
    try:
        consent = json.loads(consent_text) if consent_text else None
    except ValueError as exc:
        raise HTTPError(400, "consent_required", "'consent' must be a JSON object") from exc
    try:
        outcome = await catalog.create(
            principal.tenant_id,
            name=_text_field(form, "name", limit=100) or "",
            description=_text_field(form, "description", limit=1000),
            files=files,
            consent=consent,
            actor=await _actor(request),
            consent_recording=recording,
            consent_recording_mime=recording_mime,
        )
    except CloneRequestError as exc:
        raise HTTPError(400, exc.code, exc.message) from exc
    except CloningError as exc:
        raise HTTPError(503, exc.code, exc.message) from exc
    body = _voice_body(outcome.voice, outcome.consent)
    if outcome.error is not None:
        status = PROVIDER_STATUS.get(outcome.error.code, 502)
        error = {"code": outcome.error.code, "message": outcome.error.message}
        return JSONResponse({"error": error, "voice": body}, status)
    return JSONResponse(body, 201, headers={"Location": f"/v1/voices/{outcome.voice.id}"})


async def _found(request: Request, tenant_id: str) -> tuple[VoiceRecord, ConsentRecord | None]:
    voice_id = request.path_params["voice_id"]
    found = await voice_catalog(request.app).get(tenant_id, voice_id)
    if found is None:
        raise HTTPError(404, "voice_not_found", f"no voice {voice_id!r}")
    return found


async def list_voices(request: Request) -> Response:
    """The tenant's voices, newest first; ``?status=`` narrows, ``?limit=`` (1..500)."""
    principal = await require_principal(request, api_key_only=True)
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise HTTPError(400, "invalid_request", f"status must be one of {', '.join(STATUSES)}")
    limit = query_int(request, "limit", 100, 1, 500)
    catalog = voice_catalog(request.app)
    voices = await catalog.voices.list_voices(principal.tenant_id, status=status, limit=limit)
    return JSONResponse({"data": [v.to_public() for v in voices]})


async def get_voice(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True)
    voice, consent = await _found(request, principal.tenant_id)
    return JSONResponse(_voice_body(voice, consent))


async def voice_audit(request: Request) -> Response:
    """The voice's audit trail, oldest first."""
    principal = await require_principal(request, api_key_only=True)
    voice, _ = await _found(request, principal.tenant_id)
    rows = await voice_catalog(request.app).voices.list_audit(principal.tenant_id, voice.id)
    return JSONResponse({"voice_id": voice.id, "data": [r.to_public() for r in rows]})


async def revoke_voice(request: Request) -> Response:
    """Revoke (``reason`` optional); 200 with the voice, the first time and every time after."""
    principal = await require_principal(request, api_key_only=True)
    voice_id = request.path_params["voice_id"]
    reason = request.query_params.get("reason")
    if request.headers.get("content-length", "0") not in ("", "0"):
        body = await json_body(request, 16 * 1024)
        given = body.get("reason")
        if given is not None and not isinstance(given, str):
            raise HTTPError(400, "invalid_request", "'reason' must be a string")
        reason = given or reason
    if reason is not None and len(reason) > 2000:
        raise HTTPError(400, "invalid_request", "'reason' is over 2000 characters")
    catalog = voice_catalog(request.app)
    outcome = (
        await catalog.revoke(
            principal.tenant_id, voice_id, actor=await _actor(request), reason=reason
        )
        if is_cloned_voice_id(voice_id)
        else None
    )
    if outcome is None:
        raise HTTPError(404, "voice_not_found", f"no voice {voice_id!r}")
    body = _voice_body(
        outcome.voice, await catalog.voices.get_consent(principal.tenant_id, voice_id)
    )
    warnings = []
    if outcome.provider_error is not None:
        warnings.append(
            {
                "code": "delete_failed",
                "message": f"the voice is revoked here, but {outcome.voice.provider} did not "
                f"delete its copy ({outcome.provider_error.code}: "
                f"{outcome.provider_error.message}); revoke again to retry",
            }
        )
    if outcome.audio_error is not None:
        warnings.append({"code": "audio_delete_failed", "message": outcome.audio_error})
    body["warnings"] = warnings
    return JSONResponse(body)


routes = [
    Route("/v1/voices", list_voices, methods=["GET"]),
    Route("/v1/voices", create_voice, methods=["POST"]),
    Route("/v1/voices/{voice_id}", get_voice, methods=["GET"]),
    Route("/v1/voices/{voice_id}", revoke_voice, methods=["DELETE"]),
    Route("/v1/voices/{voice_id}/audit", voice_audit, methods=["GET"]),
]
