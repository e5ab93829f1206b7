"""Media on demand: requests for images, videos and avatars become jobs; results become files.

:class:`MediaService` is what the socket (``media.create``), the HTTP API
(``POST /v1/media``) and the persona itself (agents/media_intent.py: "show
me ...") call. A request is checked (kind, prompt length, the tenant's
moderation policy on the prompt, the tenant's byte quota), stored as a
``queued`` media item (memory/media_store.py) and queued as a
``media.generate`` job whose id is the item's id. The job
(agents/media_jobs.py) runs the generator with real progress, checks images
for nudity per the tenant's policy, stores the file content-addressed and
finishes the item; its progress and end reach the conversation as
``media.progress`` / ``media.done`` events (agents/jobs.py), with a signed,
expiring URL the app serves (server/media_api.py). docs/media.md has it all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from media.content_store import ContentRef, put_content
from media.generation import KINDS, MediaGenerator
from media.jobs.base import JobRunner
from media.media_config import MediaConfig
from media.signed_urls import sign_url
from media.storage import MediaStorage
from memory.eventlog import EventLog
from memory.media_store import MediaRecord, MediaStore
from memory.store import Store

log = structlog.get_logger(__name__)

JOB_KIND = "media.generate"
FILES_PATH = "/v1/media/files"


class MediaError(Exception):
    """A media request that cannot be taken; ``code`` is what the client sees.

    ``invalid_request``, ``unknown_persona``, ``media_not_found``,
    ``quota_exceeded``, ``moderation_blocked``, ``jobs_unavailable``,
    ``generator_unavailable``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PromptVerdict:
    """What moderation decided about a prompt: the text to use, or a refusal."""

    text: str
    blocked: bool = False
    code: str = ""
    message: str = ""


# check_prompt(tenant_id, text, persona_id, user_id, conversation_id) -> verdict
PromptCheck = Callable[[str, str, str | None, str | None, str | None], Awaitable[PromptVerdict]]
# image_policy(tenant_id) -> "allow" | "flag" | "block": what an image judged NSFW gets
ImagePolicy = Callable[[str], Awaitable[str]]
# nsfw_score(png) -> 0..1, how likely the image is not safe for work
NsfwScore = Callable[[bytes], Awaitable[float]]
GeneratorFactory = Callable[[MediaConfig], MediaGenerator]


def _default_factory(kind: str) -> GeneratorFactory:
    # Imported on first use: a server that never makes a video never loads ffmpeg.
    def build(config: MediaConfig) -> MediaGenerator:
        if kind == "image":
            from media.images.registry import create_image_generator

            return create_image_generator(config)
        if kind == "video":
            from media.video.registry import create_video_generator

            return create_video_generator(config)
        from media.avatar.registry import create_avatar_builder

        return create_avatar_builder(config)

    return build


class Generators:
    """One generator per kind, built from the configuration on first use and kept."""

    def __init__(
        self, config: MediaConfig, factories: dict[str, GeneratorFactory] | None = None
    ) -> None:
        self.config = config
        self.factories: dict[str, GeneratorFactory] = {k: _default_factory(k) for k in KINDS}
        self.factories.update(factories or {})
        self._built: dict[str, MediaGenerator] = {}

    def get(self, kind: str) -> MediaGenerator:
        generator = self._built.get(kind)
        if generator is None:
            generator = self._built[kind] = self.factories[kind](self.config)
        return generator

    async def close(self) -> None:
        for generator in self._built.values():
            try:
                await generator.close()
            except Exception as exc:
                log.warning("media_generator_close_failed", error=repr(exc))
        self._built.clear()


class MediaService:
    """Requests, cancellation, deletion, quotas and URLs of media items."""

    def __init__(
        self,
        store: Store,
        media: MediaStore,
        storage: MediaStorage,
        jobs: JobRunner,
        events: EventLog,
        config: MediaConfig,
        *,
        secret: bytes,
        generators: Generators | None = None,
        check_prompt: PromptCheck | None = None,
        image_policy: ImagePolicy | None = None,
        nsfw_score: NsfwScore | None = None,
    ) -> None:
        self.store = store
        self.media = media
        self.storage = storage
        self.jobs = jobs
        self.events = events
        self.config = config
        self.secret = secret
        self.generators = generators or Generators(config)
        self.check_prompt = check_prompt
        self.image_policy = image_policy
        self.nsfw_score = nsfw_score
        # Generations at once in this process (agents/media_jobs.py).
        self.slots = asyncio.Semaphore(max(1, config.media_concurrency))

    # -- requests ----------------------------------------------------------------

    async def request(
        self,
        tenant_id: str,
        *,
        kind: Any,
        prompt: Any,
        persona_id: str,
        user_id: str | None = None,
        conversation_id: str | None = None,
        options: dict[str, Any] | None = None,
        client_id: str | None = None,
        requested_by: str | None = None,
    ) -> tuple[MediaRecord, bool]:
        """Queue one generation; returns the item and whether it is new.

        A repeated ``client_id`` in one conversation returns the first item
        (a resent ``media.create`` is processed once). Raises
        :class:`MediaError` for what cannot be taken; nothing is stored then.
        """
        if kind not in KINDS:
            raise MediaError("invalid_request", f"'kind' must be one of {', '.join(KINDS)}")
        if not isinstance(prompt, str) or not prompt.strip():
            if kind != "avatar":  # an avatar is built from the persona; a prompt is optional
                raise MediaError("invalid_request", "'prompt' must be a non-empty string")
            prompt = prompt if isinstance(prompt, str) else ""
        if len(prompt) > self.config.media_max_prompt_chars:
            raise MediaError(
                "invalid_request",
                f"'prompt' is longer than {self.config.media_max_prompt_chars} characters",
            )
        if client_id is not None and conversation_id is not None:
            seen = await self.media.by_client_id(tenant_id, conversation_id, client_id)
            if seen is not None:
                return seen, False
        await self.check_quota(tenant_id)
        if self.check_prompt is not None and prompt.strip():
            verdict = await self.check_prompt(
                tenant_id, prompt, persona_id, user_id, conversation_id
            )
            if verdict.blocked:
                raise MediaError(verdict.code or "moderation_blocked", verdict.message)
            prompt = verdict.text
        record = await self.media.create(
            tenant_id,
            kind=kind,
            prompt=prompt,
            persona_id=persona_id,
            user_id=user_id,
            conversation_id=conversation_id,
            options=options,
            client_id=client_id,
            requested_by=requested_by,
        )
        args: dict[str, Any] = {"tenant_id": tenant_id, "media_id": record.id, "media_kind": kind}
        if conversation_id is not None:
            args["conversation_id"] = conversation_id  # progress events go to it
        try:
            await self.jobs.enqueue(JOB_KIND, args, job_id=record.id)
        except Exception as exc:
            await self.media.fail(tenant_id, record.id, "jobs_unavailable", str(exc))
            raise MediaError("jobs_unavailable", f"media jobs are unavailable: {exc}") from exc
        if conversation_id is not None:
            # Tells the client at once which job its request became (by its own id).
            event: dict[str, Any] = {
                "type": "media.progress",
                "job_id": record.id,
                "kind": kind,
                "progress": 0.0,
                "state": "queued",
            }
            if client_id is not None:
                event["id"] = client_id
            await self.events.append(conversation_id, event)
        log.info("media_requested", media_id=record.id, kind=kind, tenant_id=tenant_id)
        return record, True

    async def cancel(self, tenant_id: str, media_id: str) -> MediaRecord | None:
        """Stop a queued or running generation (the job notices within half a second)."""
        record = await self.media.get(tenant_id, media_id)
        if record is None:
            return None
        if await self.media.fail(
            tenant_id, media_id, "cancelled", "cancelled by the client", state="cancelled"
        ):
            if record.conversation_id is not None:
                await self.events.append(
                    record.conversation_id,
                    {"type": "media.cancelled", "job_id": media_id, "kind": record.kind},
                )
            record = await self.media.get(tenant_id, media_id)
        return record

    async def delete(self, tenant_id: str, media_id: str) -> bool:
        """Cancel if unfinished, delete the item, and its file when no other item uses it."""
        await self.cancel(tenant_id, media_id)
        record = await self.media.delete(tenant_id, media_id)
        if record is None:
            return False
        await self._delete_unreferenced([record])
        return True

    async def forget_user(self, tenant_id: str, user_id: str) -> int:
        """Delete every media item of a person (and the files only they used)."""
        records = await self.media.delete_for_user(tenant_id, user_id)
        await self._delete_unreferenced(records)
        return len(records)

    async def _delete_unreferenced(self, records: list[MediaRecord]) -> None:
        await self.delete_files_if_unused(
            {r.sha256: r.storage_key for r in records if r.sha256 and r.storage_key}
        )

    async def delete_files_if_unused(self, keys: dict[str, str]) -> None:
        """Delete the files (``{sha256: key}``) that no media item of any tenant uses."""
        for sha in await self.media.unreferenced(list(keys)):
            key = keys[sha]
            try:
                await self.storage.delete(key)
            except Exception as exc:  # the row is gone; a stray file is only disk space
                log.warning("media_file_delete_failed", key=key, error=repr(exc))

    # -- avatars -----------------------------------------------------------------

    async def import_avatar(
        self,
        tenant_id: str,
        persona_id: str,
        data: bytes,
        *,
        source_url: str | None = None,
        filename: str | None = None,
        requested_by: str | None = None,
    ) -> MediaRecord:
        """Store an uploaded or fetched GLB/VRM (Ready Player Me, VRoid) as the persona's avatar.

        Validated first (media/avatar/importer.py): a bad file raises
        :class:`MediaError` ``invalid_request`` and nothing is stored.
        """
        from media.avatar.importer import import_avatar
        from media.generation import MediaGenerationError

        try:
            result = await asyncio.to_thread(
                import_avatar, data, max_bytes=self.config.avatar_import_max_bytes
            )
        except MediaGenerationError as exc:
            raise MediaError(exc.code, str(exc)) from exc
        ref = await self.store_file(tenant_id, result.data, result.mime)
        options = {k: v for k, v in (("url", source_url), ("filename", filename)) if v}
        record = await self.media.create(
            tenant_id,
            kind="avatar",
            prompt="",
            persona_id=persona_id,
            options=options,
            requested_by=requested_by,
            source="import",
        )
        await self.media.start(tenant_id, record.id, "import")
        done = await self.media.finish(
            tenant_id,
            record.id,
            sha256=ref.sha256,
            storage_key=ref.key,
            mime=ref.mime,
            size=ref.size,
            meta=result.meta,
        )
        assert done is not None  # nothing else knows this item yet
        log.info("avatar_imported", media_id=record.id, persona_id=persona_id, bytes=ref.size)
        return done

    async def persona_avatar(self, tenant_id: str, persona_id: str) -> MediaRecord | None:
        """The persona's avatar: the latest imported one, else the latest generated."""
        for source in ("import", "generated"):
            found = await self.media.list_items(
                tenant_id,
                persona_id=persona_id,
                kind="avatar",
                source=source,
                states=("done",),
                limit=1,
            )
            if found:
                return found[0]
        return None

    # -- quotas ------------------------------------------------------------------

    async def quota(self, tenant_id: str) -> dict[str, int]:
        own = await self.media.get_quota(tenant_id)
        limit = own if own is not None else self.config.media_quota_bytes
        return {"used_bytes": await self.media.usage_bytes(tenant_id), "quota_bytes": limit}

    async def check_quota(self, tenant_id: str, adding: int = 0) -> None:
        usage = await self.quota(tenant_id)
        if usage["used_bytes"] + adding >= usage["quota_bytes"]:
            raise MediaError(
                "quota_exceeded",
                f"the tenant's media quota is used up ({usage['used_bytes']} of "
                f"{usage['quota_bytes']} bytes); delete media or raise the quota",
            )

    # -- files and URLs ------------------------------------------------------------

    def file_path(self, record: MediaRecord) -> str:
        return f"{FILES_PATH}/{record.tenant_id}/{record.id}"

    def url(self, record: MediaRecord) -> str | None:
        """A signed URL of the item's file, valid for ``SALON_MEDIA_URL_TTL_SECONDS``."""
        if record.state != "done" or record.storage_key is None:
            return None
        return sign_url(self.file_path(record), self.secret, self.config.media_url_ttl_seconds)

    async def store_file(self, tenant_id: str, data: bytes, mime: str) -> ContentRef:
        """Put a result into content-addressed storage, within the tenant's quota."""
        await self.check_quota(tenant_id, adding=len(data))
        return await put_content(self.storage, data, mime)

    def public(self, record: MediaRecord) -> dict[str, Any]:
        """An item as the API shows it (the storage key stays inside)."""
        return {
            "id": record.id,
            "object": "media",
            "kind": record.kind,
            "source": record.source,
            "state": record.state,
            "progress": record.progress,
            "prompt": record.prompt,
            "persona": record.persona_id,
            "user": record.user_id,
            "conversation_id": record.conversation_id,
            "generator": record.generator,
            "mime": record.mime,
            "bytes": record.bytes,
            "width": record.width,
            "height": record.height,
            "seconds": record.seconds,
            "meta": record.meta,
            "url": self.url(record),
            "error": {"code": record.error_code, "message": record.error}
            if record.error_code
            else None,
            "created_at": record.created_at.isoformat() if record.created_at else None,
            "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        }

    async def close(self) -> None:
        await self.generators.close()
