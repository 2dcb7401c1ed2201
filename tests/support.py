"""Test plumbing: real servers on their own threads, so sync clients (openai SDK, browsers) can use them."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["ThreadedServer", "free_port"]


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
