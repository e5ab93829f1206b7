"""Background jobs over HTTP: start a conversation export, poll a job, fetch its file.

Jobs are tenant-scoped through their arguments (``tenant_id``); a session token
sees only jobs of its own user's conversations. Someone else's job is
indistinguishable from a missing one (404).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.jobs import EXPORT_KIND, result_url
from media.jobs import JobRunnerUnavailable, JobStatus, UnknownJobKind
from media.storage import InvalidKey
from memory.records import ConversationRecord
from server.auth import Principal
from server.http_util import HTTPError, require_principal, state_of
from server.state import AppState


async def _own_conversation(
    state: AppState, principal: Principal, conversation_id: str
) -> ConversationRecord | None:
    """The conversation if this caller may act on it: same tenant, and for a session
    token, the token's own user."""
    conv = await state.store.get_conversation(principal.tenant_id, conversation_id)
    if conv is not None and principal.is_session:
        user = await state.store.get_user(principal.tenant_id, conv.user_id)
        if user is None or user.external_id != principal.user_id:
            return None
    return conv


async def _visible_job(request: Request, principal: Principal) -> JobStatus:
    state = state_of(request)
    job_id = request.path_params["job_id"]
    try:
        status = await state.jobs.status(job_id)
    except JobRunnerUnavailable as exc:
        raise HTTPError(503, "jobs_unavailable", str(exc)) from exc
    visible = status is not None and status.args.get("tenant_id") == principal.tenant_id
    if visible and status is not None and principal.is_session:
        cid = status.args.get("conversation_id")
        visible = (
            isinstance(cid, str) and await _own_conversation(state, principal, cid) is not None
        )
    if not visible or status is None:
        raise HTTPError(404, "job_not_found", f"no job {job_id!r}")
    return status


def public_job(status: JobStatus) -> dict[str, Any]:
    """A job as the API shows it (the storage key stays internal)."""
    body: dict[str, Any] = {
        "id": status.id,
        "kind": status.kind,
        "state": status.state,
        "progress": status.progress,
        "conversation_id": status.args.get("conversation_id"),
        "error": status.error,
        "result": None,
    }
    if status.state == "done" and status.result is not None:
        body["result"] = {k: v for k, v in status.result.items() if k != "key"}
        if "key" in status.result:
            body["result_url"] = result_url(status.id)
    return body


async def create_export(request: Request) -> Response:
    """Start exporting a conversation as JSON; 202 with the job id.

    Progress and completion also arrive on the conversation's WebSocket as
    ``media.progress`` / ``media.done`` (url = ``GET /v1/jobs/{id}/result``).
    """
    principal = await require_principal(request)
    state = state_of(request)
    cid = request.path_params["conversation_id"]
    if await _own_conversation(state, principal, cid) is None:
        raise HTTPError(404, "conversation_not_found", f"no conversation {cid!r}")
    args = {"tenant_id": principal.tenant_id, "conversation_id": cid}
    if principal.is_session and principal.user_id is not None:
        args["requested_by"] = principal.user_id
    try:
        job_id = await state.jobs.enqueue(EXPORT_KIND, args)
    except UnknownJobKind as exc:
        raise HTTPError(501, "not_supported", "conversation export is not enabled") from exc
    except JobRunnerUnavailable as exc:
        raise HTTPError(503, "jobs_unavailable", str(exc)) from exc
    url = f"/v1/jobs/{job_id}"
    return JSONResponse(
        {"job_id": job_id, "state": "queued", "status_url": url, "conversation_id": cid},
        202,
        headers={"Location": url},
    )


async def get_job(request: Request) -> Response:
    """A job's state (queued, running, done, failed, cancelled), progress and result."""
    principal = await require_principal(request)
    return JSONResponse(public_job(await _visible_job(request, principal)))


async def get_job_result(request: Request) -> Response:
    """The file a finished job produced, with its media type."""
    principal = await require_principal(request)
    status = await _visible_job(request, principal)
    if status.state == "failed":
        raise HTTPError(409, "job_failed", status.error or "the job failed")
    if status.state != "done":
        raise HTTPError(409, "job_not_done", f"the job is {status.state}; try again when done")
    key = (status.result or {}).get("key")
    if not isinstance(key, str):
        raise HTTPError(404, "no_result_file", "this job produced no file")
    try:
        stored = await state_of(request).storage.open(key)
    except InvalidKey as exc:
        raise HTTPError(404, "no_result_file", "this job produced no file") from exc
    if stored is None:
        raise HTTPError(410, "result_gone", "the job's file is no longer stored")
    data, mime = stored
    filename = key.rsplit("/", 1)[-1]
    return Response(
        data,
        media_type=mime,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


routes = [
    Route("/v1/conversations/{conversation_id}/export", create_export, methods=["POST"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}/result", get_job_result, methods=["GET"]),
]
