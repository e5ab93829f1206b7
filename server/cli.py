"""The ``salon`` command line (typer)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from server.config import Settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Salon: real-time persona chat server."
)
personas_app = typer.Typer(no_args_is_help=True, help="Manage personas.")
tenants_app = typer.Typer(no_args_is_help=True, help="Manage tenants.")
operators_app = typer.Typer(no_args_is_help=True, help="Manage operator console accounts.")
memory_app = typer.Typer(no_args_is_help=True, help="Maintain long-term memory.")
app.add_typer(personas_app, name="personas")
app.add_typer(tenants_app, name="tenants")
app.add_typer(operators_app, name="operators")
app.add_typer(memory_app, name="memory")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Overrides SALON_DATA_DIR.")]


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    data_dir: DataDir = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Server processes on this port (default 1; SALON_WORKERS). More than one "
            "needs SALON_REDIS_URL and SALON_DATABASE_URL: each process is a replica."
        ),
    ] = None,
) -> None:
    """Run the server (migrates the database on start)."""

    import uvicorn

    from server.app import create_app
    from server.logging import configure_logging

    settings = _settings(host=host, port=port, data_dir=data_dir, workers=workers)
    configure_logging(settings.log_level, settings.log_format)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws": "websockets-sansio",
        "ws_max_size": settings.max_frame_bytes,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "timeout_graceful_shutdown": int(settings.graceful_shutdown_seconds),
        "access_log": False,
        "log_config": None,
        "log_level": settings.log_level,
        "proxy_headers": True,
        "server_header": False,
    }
    if settings.workers > 1:
        # One event loop is one core: more processes use more cores. They share
        # nothing in-process, so each must be a full replica on Postgres and Redis.
        if not (settings.redis_url and settings.database_url):
            typer.echo(
                "salon serve: --workers above 1 needs SALON_REDIS_URL and SALON_DATABASE_URL "
                "(the embedded SQLite and in-process state belong to one process)",
                err=True,
            )
            raise typer.Exit(2)
        # Worker processes build the app from the environment: pass the overrides on.
        os.environ.update(
            {
                k: str(v)
                for k, v in {
                    "SALON_HOST": host,
                    "SALON_PORT": port,
                    "SALON_DATA_DIR": data_dir,
                }.items()
                if v is not None
            }
        )
        uvicorn.run("server.app:create_app", factory=True, workers=settings.workers, **options)
        return
    uvicorn.run(create_app(settings), **options)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply database migrations (serve also does this on start)."""
    from memory.db import create_engine, normalize_database_url
    from memory.migrate import current_revision
    from memory.migrate import migrate as run_migrations

    settings = _settings(data_dir=data_dir)

    async def _run() -> str | None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(normalize_database_url(settings.database_url, settings.data_dir))
        try:
            await run_migrations(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(f"database at revision {asyncio.run(_run())}")


@app.command()
def worker() -> None:
    """Run media/background job workers (production: needs SALON_REDIS_URL)."""
    settings = _settings()
    if not settings.redis_url:
        typer.echo(
            "salon worker: the embedded default runs jobs inside `salon serve`; "
            "set SALON_REDIS_URL to run separate workers.",
            err=True,
        )
        raise typer.Exit(2)
    import signal

    from server.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)

    async def _run() -> None:
        from agents.jobs import job_event_hook, register_conversation_jobs
        from media.jobs import create_job_runner
        from memory.db import create_engine, normalize_database_url
        from memory.store import Store
        from server.state import build_event_log, build_storage, redis_for

        assert settings.redis_url is not None
        # The worker does not migrate: `salon serve` (and `salon migrate`, the release
        # step) own the schema; a worker racing them on first start gains nothing.
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = normalize_database_url(settings.database_url, settings.data_dir)
        store = Store(create_engine(url, pool_size=settings.database_pool_size))
        redis = redis_for(settings)
        events = build_event_log(settings, redis)
        runner = create_job_runner(
            settings.redis_url,
            on_event=job_event_hook(events, store),
            concurrency=int(getattr(settings, "job_concurrency", 4)),
            grace_seconds=settings.graceful_shutdown_seconds,
        )
        storage = build_storage(settings)
        register_conversation_jobs(runner, store, events, storage)
        # Media generation: the GPU/CPU-heavy jobs a worker exists for (agents/media_jobs.py).
        from agents.media_jobs import register_media_jobs
        from agents.media_setup import build_media_service
        from agents.moderation.service import ModerationService
        from agents.moderation.settings import ModerationSettings
        from memory.moderation_store import ModerationStore

        moderation = (
            ModerationService(ModerationStore(store), events)
            if ModerationSettings().enabled
            else None
        )
        media = await build_media_service(store, storage, runner, events, moderation=moderation)
        register_media_jobs(runner, media)
        from agents.analysis import register_analysis_jobs

        register_analysis_jobs(runner, store, events)
        from agents.memory import register_memory_jobs
        from server.state import build_memory

        provider = None
        if settings.memory_enabled and (
            settings.llm_base_url or settings.llm_provider not in (None, "local")
        ):
            # Summaries and fact extraction with the configured LLM; the embedded
            # model is not loaded in a worker only for this (summaries are then
            # extractive, facts rule-based).
            from server.state import build_provider

            provider = build_provider(settings)
        memory = build_memory(settings, store, provider)
        if memory is not None:
            from agents.reembed import prepare_embedding_space

            await prepare_embedding_space(memory.memories, memory.embedder)
            register_memory_jobs(runner, memory)
            from agents.summaries import register_summary_jobs
            from server.state import build_summaries

            register_summary_jobs(runner, build_summaries(settings, store, memory, provider))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # Graceful: no new jobs; running ones get SALON_GRACEFUL_SHUTDOWN_SECONDS to
            # finish, then go back to the queue for another worker.
            loop.add_signal_handler(signum, runner.request_stop)
        typer.echo(f"salon worker: running jobs {', '.join(runner.kinds)}", err=True)
        try:
            await runner.run_worker()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await runner.close()
            await media.close()
            await storage.close()
            if provider is not None:
                await provider.close()
            await events.close()
            await redis.aclose()
            await store.close()

    asyncio.run(_run())
    typer.echo("salon worker: stopped", err=True)


@app.command()
def chat(
    persona: Annotated[str, typer.Argument(help="Persona id or slug.")],
    url: Annotated[str, typer.Option(help="Server base URL.")] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None, typer.Option(help="API key (default: $SALON_API_KEY or $SALON_BOOTSTRAP_KEY).")
    ] = None,
    user: Annotated[str, typer.Option(help="Who you are to the persona.")] = os.environ.get(
        "USER", "me"
    ),
    conversation: Annotated[str | None, typer.Option(help="Continue this conversation id.")] = None,
) -> None:
    """Chat with a persona in the terminal (streams tokens, reconnects and resumes by itself)."""
    from server.chat_client import run_chat

    api_key = key or os.environ.get("SALON_API_KEY") or os.environ.get("SALON_BOOTSTRAP_KEY")
    if not api_key:
        typer.echo("salon chat: give --key or set SALON_API_KEY", err=True)
        raise typer.Exit(2)
    code = asyncio.run(run_chat(url, api_key, persona, user, conversation))
    raise typer.Exit(code)


async def _with_store(settings: Settings, fn: Any) -> Any:
    from memory.db import create_engine, normalize_database_url
    from memory.migrate import migrate as run_migrations
    from memory.store import Store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(create_engine(normalize_database_url(settings.database_url, settings.data_dir)))
    try:
        await run_migrations(store.engine)
        return await fn(store)
    finally:
        await store.close()


async def _resolve_tenant(store: Any, settings: Settings, tenant: str | None) -> str:
    """``--tenant`` checked, or the first tenant (bootstrapped on an empty database)."""
    from server.state import bootstrap_tenant

    await bootstrap_tenant(store, settings)
    tenants = [t.id for t in await store.list_tenants()]
    if tenant is not None and tenant not in tenants:
        raise LookupError(f"no tenant {tenant!r} (known: {', '.join(sorted(tenants))})")
    return tenant or tenants[0]


@personas_app.command("import")
def personas_import(
    file: Annotated[
        Path, typer.Argument(help="Character Card (.json or .png) or Salon persona JSON.")
    ],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant id (default: the first tenant).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Import a Character Card (V1/V2/V3 JSON or PNG)."""
    from agents.cards import CardError, load_card_file
    from agents.personas import create_persona
    from memory.store import Conflict, Store

    settings = _settings(data_dir=data_dir)
    try:
        spec = load_card_file(file)
    except (CardError, OSError) as exc:
        typer.echo(f"salon: cannot import {file}: {exc}", err=True)
        raise typer.Exit(1) from exc

    async def _import(store: Store) -> Any:
        tenant_id = await _resolve_tenant(store, settings, tenant)
        return await create_persona(
            store, tenant_id, spec.model_dump(mode="json", exclude_none=True)
        )

    try:
        record = asyncio.run(_with_store(settings, _import))
    except (Conflict, LookupError) as exc:
        typer.echo(f"salon: {exc.args[0] if exc.args else exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"imported persona {record.name!r}: id={record.id} slug={record.slug}")


@tenants_app.command("create")
def tenants_create(name: Annotated[str, typer.Argument()], data_dir: DataDir = None) -> None:
    """Create a tenant and print its admin API key once."""
    from memory.store import Store

    settings = _settings(data_dir=data_dir)

    async def _create(store: Store) -> tuple[str, str]:
        tenant = await store.create_tenant(name)
        _, key = await store.create_api_key(tenant.id, "admin")
        return tenant.id, key

    tenant_id, key = asyncio.run(_with_store(settings, _create))
    typer.echo(f"tenant {name!r} created: id={tenant_id}")
    typer.echo("admin API key (shown once, store it now):", err=True)
    print(key, file=sys.stdout)


@operators_app.command("create")
def operators_create(
    email: Annotated[str, typer.Argument(help="Sign-in email (unique across tenants).")],
    name: Annotated[
        str | None, typer.Option(help="Display name (default: from the email).")
    ] = None,
    role: Annotated[str, typer.Option(help="viewer, moderator or admin.")] = "admin",
    tenant: Annotated[
        str | None, typer.Option(help="Tenant id (default: the first tenant).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Create an operator account for the console (the first admin, say)."""
    from memory.console_store import ROLES, ConsoleStore
    from memory.store import Conflict, Store
    from server.console_auth import MAX_PASSWORD, MIN_PASSWORD, hash_password

    if role not in ROLES:
        typer.echo(f"salon: role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        typer.echo(
            f"salon: the password must be {MIN_PASSWORD}..{MAX_PASSWORD} characters", err=True
        )
        raise typer.Exit(2)
    settings = _settings(data_dir=data_dir)

    async def _create(store: Store) -> Any:
        return await ConsoleStore(store).create_operator(
            await _resolve_tenant(store, settings, tenant),
            email=email,
            name=name or email.split("@")[0],
            role=role,
            password_hash=hash_password(password),
        )

    try:
        record = asyncio.run(_with_store(settings, _create))
    except (Conflict, LookupError) as exc:
        typer.echo(f"salon: {exc.args[0] if exc.args else exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"operator {record.email} ({record.role}) created in tenant {record.tenant_id}")


@memory_app.command("reembed")
def memory_reembed(
    batch_size: Annotated[int, typer.Option(help="Items per embedding batch.")] = 64,
    data_dir: DataDir = None,
) -> None:
    """Give every memory item a vector of the configured embedder (after a change of model)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from agents.reembed import prepare_embedding_space, reembed
    from memory.memories import MemoryStore
    from memory.store import Store
    from server.state import configured_embedder

    settings = _settings(data_dir=data_dir)
    embedder = configured_embedder(settings)
    if embedder is None:
        typer.echo("salon: no embedder is configured (SALON_EMBEDDINGS_PROVIDER=none)", err=True)
        raise typer.Exit(2)

    async def _run(store: Store) -> dict[str, Any]:
        memories = MemoryStore(store)
        await prepare_embedding_space(memories, embedder)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=False,
        ) as bar:
            task = bar.add_task(f"embedding with {embedder.model}", total=None)

            async def report(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            try:
                return await reembed(memories, embedder, batch_size=batch_size, progress=report)
            finally:
                await embedder.close()

    result = asyncio.run(_with_store(settings, _run))
    typer.echo(
        f"{result['embedded']} items embedded with {result['model']} "
        f"({result['dimensions']}-d) in {result['seconds']} s; {result['skipped']} changed meanwhile"
    )


@app.command()
def backup(
    out: Annotated[Path, typer.Option("--out", help="Folder for backups (one subfolder each).")],
    keep: Annotated[
        int | None, typer.Option(min=1, help="Keep only the newest N backups in --out.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Back up the embedded store (SQLite, safe while serving) and the media folder."""
    from server.backup import BackupError, create_backup, embedded_location, rich_progress

    settings = _settings(data_dir=data_dir)
    try:
        location = embedded_location(settings)
        with rich_progress() as progress:
            result = create_backup(location, out, keep=keep, progress=progress)
    except BackupError as exc:
        typer.echo(f"salon backup: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from exc
    rows = sum(result.manifest["row_counts"].values())
    media = result.manifest["media"]
    typer.echo(
        f"backup {result.path}: revision {result.manifest['migration_revision']}, {rows} rows, "
        + (f"{media['files']} media files" if media["archive"] else "media in S3 (not copied)"),
        err=True,
    )
    for path in result.pruned:
        typer.echo(f"removed old backup {path} (--keep {keep})", err=True)
    print(result.path)


@app.command()
def restore(
    backup_dir: Annotated[Path, typer.Argument(help="A folder made by `salon backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing database and media folder.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Restore an embedded backup (checksums verified first; the server must be stopped)."""
    from server.backup import BackupError, embedded_location, restore_backup, rich_progress

    settings = _settings(data_dir=data_dir)
    try:
        location = embedded_location(settings)
        with rich_progress() as progress:
            result = restore_backup(backup_dir, location, force=force, progress=progress)
    except BackupError as exc:
        typer.echo(f"salon restore: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from exc
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    media = f", {result.media_files} media files in {result.media_dir}" if result.media_dir else ""
    typer.echo(
        f"restored {result.database} (revision {result.manifest['migration_revision']}, "
        f"{len(result.row_counts)} tables, {sum(result.row_counts.values())} rows: row counts "
        f"match the manifest){media}"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
