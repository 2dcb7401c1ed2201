"""Test plumbing: real servers on their own threads, so sync clients (openai SDK, browsers) can use them, and
scripted upstreams that answer byte by byte."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["Handler", "Scripted", "ThreadedServer", "answer", "free_port", "read_request", "serving", "start"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """An aiohttp app served by an AppRunner on a loop in a background thread, on a real loopback port."""

    def __init__(self, make_app: Callable[[], web.Application | Awaitable[web.Application]], port: int = 0,
                 **runner_kwargs: Any) -> None:
        self._make_app = make_app
        self.port = port or free_port()
        self._runner_kwargs = {"handler_cancellation": True, "access_log": None, **runner_kwargs}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        app = self._make_app()
        if asyncio.iscoroutine(app):
            app = await app
        self.app = app
        self._runner = web.AppRunner(app, **self._runner_kwargs)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def call(self, coro: Awaitable[Any], timeout: float = 60.0) -> Any:
        """Run a coroutine on the server's loop (e.g. to read its app state) and wait for the result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
            self._runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class HttpResult:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.content)


def http(method: str, url: str, *, json: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> HttpResult:
    """A small synchronous HTTP client for tests that drive real processes (no extra dependency)."""
    import urllib.error
    import urllib.request

    import orjson

    data = orjson.dumps(json) if json is not None else None
    req = urllib.request.Request(url, data=data, method=method.upper(), headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, err.headers, err.read())


# --- scripted upstreams: servers that answer byte by byte, as real (and broken) upstreams do ----------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request: (head, body); None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length) if length else b""


class Scripted:
    """A loopback HTTP server running ``handler`` on every connection; it keeps what it saw."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.closed_by_client = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._run, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else '127.0.0.1'}:{port}/api/v1"

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def next_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        got = await read_request(reader)
        if got is None:
            self.closed_by_client.set()
        else:
            self.requests.append(got)
        return got


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


def serving(responses: Callable[[int], bytes]) -> Callable[[Scripted], Handler]:
    """A keep-alive server answering its n-th request (over all connections) with ``responses(n)``."""
    def make(server: Scripted) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await server.next_request(reader) is not None:
                writer.write(responses(len(server.requests)))
                await writer.drain()
        return handler
    return make


async def start(make: Callable[[Scripted], Handler], tls: ssl.SSLContext | None = None) -> Scripted:
    server = Scripted(lambda r, w: asyncio.sleep(0), tls)
    server.handler = make(server)
    return await server.__aenter__()
