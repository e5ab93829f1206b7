"""Processes a benchmark run starts and stops by pid: Postgres, Redis, helpers, `salon serve`.

Postgres comes from PyPI ``pgserver`` (16 + pgvector), set up the way
tests/services_pg.py does it: the app connects as the ordinary role
``salon_app`` (no superuser, no BYPASSRLS, so row-level security applies)
to a database it owns, in which the superuser created ``vector``. The cluster
lives on disk (not tmpfs) with ``fsync`` on and ``synchronous_commit=off``,
the Postgres counterpart of SQLite's WAL + ``synchronous=NORMAL`` that the
embedded mode uses: durable across a crash of the app, not of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SALON_BIN = str(Path(sys.executable).parent / "salon")
APP_ROLE = "salon_app"
APP_PASSWORD = "salon-app-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def stop_pid(pid: int | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal one process we started and wait for it to go (SIGKILL after ``timeout``)."""
    if pid is None:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Helper:
    """A Python helper of ours (fake LLM, baseline server) that prints ``ready``."""

    def __init__(self, script: str, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / script), "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            preexec_fn=_raise_nofile,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"ready" not in line:
            self.stop()
            raise RuntimeError(f"{script} did not start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_pid(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class Redis:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.workdir = workdir
        self.port = free_port()
        self.pidfile = workdir / "redis.pid"
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--maxclients",
                "10000",
                "--pidfile",
                str(self.pidfile),
                "--dir",
                str(workdir),
                "--logfile",
                str(workdir / "redis.log"),
            ],
            check=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG") and self.pid is not None:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        return [p for p in [self.pid] if p is not None]

    def stop(self) -> None:
        stop_pid(self.pid, signal.SIGTERM)


class Postgres:
    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            import pgserver
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.handle: Any = pgserver.get_server(root / "data", cleanup_mode="stop")
        self.socket_dir = self.handle.get_uri().split("?host=", 1)[1]
        self.database = "salon_bench"
        self._script(
            "ALTER SYSTEM SET synchronous_commit = off",
            "SELECT pg_reload_conf()",
            f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'"
            " NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
            f"CREATE DATABASE {self.database} OWNER {APP_ROLE}",
        )
        self._script("CREATE EXTENSION IF NOT EXISTS vector", database=self.database)

    def _url(self, database: str, user: str, password: str | None) -> str:
        auth = user + (f":{password}" if password else "")
        return f"postgresql://{auth}@/{database}?host={self.socket_dir}"

    @property
    def url(self) -> str:
        return self._url(self.database, APP_ROLE, APP_PASSWORD)

    def _script(self, *statements: str, database: str = "postgres") -> None:
        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(self._url(database, "postgres", None))
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(go())

    @property
    def postmaster_pid(self) -> int | None:
        try:
            return int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, WAL writer, ...)."""
        main = self.postmaster_pid
        if main is None:
            return []
        found = [main]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == main:
                        found.append(int(entry))
        return found

    def stop(self) -> None:
        main = self.postmaster_pid
        with contextlib.suppress(Exception):
            self.handle.cleanup()
        stop_pid(main, signal.SIGINT)  # fast shutdown, if cleanup left it running
        shutil.rmtree(self.root, ignore_errors=True)


class Salon:
    """A real ``salon serve`` process on a free loopback port."""

    KEY = "sk_bench_" + "k" * 32

    def __init__(self, data_dir: Path, llm_url: str, extra_env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALON_")}
        env.update(
            SALON_DATA_DIR=str(data_dir),
            SALON_BOOTSTRAP_KEY=self.KEY,
            SALON_LLM_BASE_URL=llm_url,
            SALON_LLM_API_KEY="bench",
            SALON_LLM_MODEL="bench",
            SALON_LOG_FORMAT="json",
            SALON_MESSAGES_PER_MINUTE="10000000",
            SALON_USER_MESSAGES_PER_MINUTE="10000000",
            SALON_MAX_CONNECTIONS="100000",
        )
        env.update(extra_env)
        self.log_path = data_dir / "server.log"
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [SALON_BIN, "serve", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_raise_nofile,
            )
        deadline = started + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"salon serve exited early:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"salon serve did not become ready:\n{self.log_tail()}")
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - started

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_persona(self, name: str) -> str:
        r = httpx.post(
            self.url + "/v1/personas",
            json={"name": name, "description": "A benchmark persona."},
            headers={"Authorization": f"Bearer {self.KEY}"},
            timeout=30,
        )
        r.raise_for_status()
        return str(r.json()["slug"])

    def wait_for_log(self, pattern: str, timeout: float) -> float | None:
        """Seconds until ``pattern`` (a regex) matched the log (None: not within ``timeout``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if re.search(pattern, self.log_path.read_text(errors="replace")):
                return time.monotonic() - started
            time.sleep(0.2)
        return None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> float:
        """SIGTERM (graceful) and wait; returns the seconds it took."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                stop_pid(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return time.monotonic() - started


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of one process so far (0 if it is gone).

    ``reaped_children`` adds the time of its children that have exited (the
    postmaster: Postgres backends come and go with the app's pool).
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
