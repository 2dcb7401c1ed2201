"""A lean HTTP/1.1 client for the relay: keep-alive connections per origin, responses parsed by llhttp.

aiohttp's ClientSession spends about 220 µs of CPU per request on this machine class (request and response
objects, a read timer rescheduled on every packet, auto headers, trace hooks, the cookie jar); relaying
through this client costs about 40: the request head is formatted once and leaves with the body in one
write, one future waits for the response head, and the body is handed over as it arrives (measured: a bare
pass-through on it serves 1.7x the requests per core of the same pass-through on aiohttp's client).

What relaying to an OpenAI-compatible upstream needs, and no more: http and https origins; names resolved
once per 5 minutes and addresses tried as happy eyeballs does (RFC 8305); keep-alive with a bounded pool per
origin, and a request that met the upstream closing an idle connection sent once more on a new one;
Content-Length, chunked and close-delimited bodies; gzip and deflate
bodies (decoded: we ask for ``identity``, but a server may not listen); interim 1xx answers skipped; a
connect timeout and a read timeout (the longest silence while an answer is awaited); back-pressure on
streamed bodies; a cap on bodies read whole; and cancellation, which closes the connection, so the
upstream sees the client leave and stops generating; and outbound HTTP proxies (``proxy.egress``). Not here:
HTTP/2, redirects, cookies.
Everything else that calls the upstream (pricing, embeddings, generation stats) uses aiohttp's session.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from proxy.egress import EgressProxy, ProxyEndpoint

__all__ = [
    "UpstreamClient",
    "UpstreamConnectError",
    "UpstreamDisconnected",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeout",
]


class UpstreamError(Exception):
    """Talking to the upstream failed."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made: name resolution, refused, TLS handshake."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """No connection, or no data while an answer was awaited, within the configured time."""


class UpstreamDisconnected(UpstreamError):
    """The upstream closed the connection before its answer was complete (``partial``: after its head)."""

    def __init__(self, message: str, *, partial: bool) -> None:
        super().__init__(message)
        self.partial = partial


class UpstreamProtocolError(UpstreamError):
    """The upstream sent something this client will not relay (not HTTP/1.x, too large, undecodable)."""


MAX_HEAD_BYTES = 64 * 1024  # all response header names and values together
# a streamed body held for a slow client: reading pauses above this, and resumes when the client took it
HIGH_WATER = 1024 * 1024
_DNS_SECONDS = 300.0
# a reused connection closed this soon after the request went out, without a byte of answer, was closed
# as idle by the upstream, not while working on the request: the request is sent again (``request``)
STALE_CLOSE_SECONDS = 1.0
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before the next address is tried while one has not answered
# zlib window bits: gzip, or deflate with either header (| 32 detects which)
_DECODED = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS | 32}


class UpstreamResponse:
    """One answer: ``status`` and ``headers`` at once, the body by ``read()`` or ``iter_chunks()``.
    ``release()`` (or leaving ``async with``) gives the connection back, or closes it when the body was
    not read to its end."""

    __slots__ = ("status", "headers", "_conn", "_chunks", "_buffered", "_done", "_error", "_waiter",
                 "_decoder", "_until_close", "_whole", "_limit", "_released")

    def __init__(self, conn: _Connection, status: int, headers: CIMultiDict[str], limit: int) -> None:
        self.status = status
        self.headers = headers
        self._conn = conn
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: Any = None
        self._until_close = False  # neither Content-Length nor chunked: the body ends with the connection
        self._whole = False  # read() is collecting the body (so it is not paused, but capped)
        self._limit = limit
        self._released = False

    # -- fed by the connection ---------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._conn.fail(UpstreamProtocolError(f"the upstream's compressed body is corrupt ({exc})"))
                return
            if not data:
                return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._whole:
            if self._buffered > self._limit:
                self._conn.fail(UpstreamProtocolError(f"the upstream's answer is over {self._limit} bytes"))
        elif self._buffered > HIGH_WATER:
            self._conn.pause()

    def _finish(self) -> None:
        if self._done:
            return
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                self._fail(UpstreamProtocolError(f"the upstream's compressed body is corrupt ({exc})"))
                return
            self._decoder = None
            if tail:
                self._chunks.append(tail)
                self._buffered += len(tail)
        self._done = True
        self._wake()

    def _fail(self, exc: UpstreamError) -> None:
        if self._done:
            return
        self._error = exc
        self._done = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._waiter = self._conn.loop.create_future()
        await waiter

    # -- for the caller ----------------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._done and self._error is None

    @property
    def buffered(self) -> bool:
        """Some of the body has arrived and not been taken yet."""
        return bool(self._chunks)

    async def read(self) -> bytes:
        """The whole body (at most the client's ``max_body_bytes``)."""
        self._whole = True
        if self._buffered > self._limit:  # arrived before anyone asked for it whole
            self._error = UpstreamProtocolError(f"the upstream's answer is over {self._limit} bytes")
            self._done = True
            self._conn.fail(self._error)
            raise self._error
        self._conn.resume()
        while not self._done:
            await self._wait()
        if self._error is not None:
            raise self._error
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: what came in since the last step, joined."""
        chunks = self._chunks
        while True:
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                self._conn.resume()
                yield data
                continue
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            await self._wait()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._conn.finished(self, reusable=self._done and self._error is None)

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.requests_sent = 0
        self.sent_at = 0.0
        self.received = False  # any byte of the current request's answer
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[UpstreamResponse] | None = None  # the answer's head, awaited
        self._response: UpstreamResponse | None = None  # the answer whose body is arriving
        self._pairs: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._interim = False
        self._head_request = False
        self._keep_alive = False
        self._error: UpstreamError | None = None
        self._paused = False
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:  # the request head and body leave at once, never held back for an ACK
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamProtocolError("the upstream switched protocols"))
            return
        except httptools.HttpParserError as exc:
            self.fail(self._error or UpstreamProtocolError(f"the upstream's answer is not valid HTTP/1.1 ({exc})"))
            return
        if self._error is not None:
            self.fail(self._error)
            return
        response = self._response
        if response is not None:
            response._wake()  # once per packet, not once per body piece in it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(UpstreamDisconnected("the upstream closed the connection without answering",
                                                    partial=False))
        response = self._response
        if response is not None and not response._done:
            if response._until_close and self._error is None:
                response._finish()
            else:
                response._fail(self._error or UpstreamDisconnected(
                    "the upstream closed the connection before its answer was complete", partial=True))
        self.pool.forget(self)

    # -- httptools callbacks -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._pairs = []
        self._head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._error = UpstreamProtocolError(f"the upstream's headers are over {MAX_HEAD_BYTES} bytes")
            return
        # as aiohttp decodes them: bytes that are not UTF-8 survive the round trip to the client
        self._pairs.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        if self._error is not None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._interim = True
            return
        head = self._head
        if head is None or head.done():
            self._error = UpstreamProtocolError("the upstream answered a request that was not made")
            return
        headers = CIMultiDict(self._pairs)
        response = UpstreamResponse(self, status, headers, self.pool.client.max_body_bytes)
        encoding = headers.get("Content-Encoding")
        if encoding is not None:
            encoding = encoding.strip().lower()
            if encoding in _DECODED:
                response._decoder = zlib.decompressobj(wbits=_DECODED[encoding])
            elif encoding != "identity":
                self._error = UpstreamProtocolError(f"the upstream sent a body encoded as {encoding!r}")
                return  # fail(), after the parser returns, gives this to the head's waiter
        self._head = None
        self._response = response
        if self._head_request:  # a head without a body, whatever its Content-Length says: not reused
            response._finish()
        else:
            response._until_close = "Content-Length" not in headers and "chunked" not in headers.get(
                "Transfer-Encoding", "").lower()
        head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is not None and not response._done:
            response._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        response = self._response
        if response is not None and not response._done:
            self._keep_alive = self._parser.should_keep_alive()
            response._finish()
        if not self._keep_alive:
            self._stop_timer()

    # -- for the pool and the response --------------------------------------------------------------------

    async def send(self, method: str, head: bytes, body: bytes, read_timeout: float | None) -> UpstreamResponse:
        loop = self.loop
        future: asyncio.Future[UpstreamResponse] = loop.create_future()
        self._head = future
        self._head_request = method == "HEAD"
        self._keep_alive = False
        self.received = False
        self.requests_sent += 1
        self._last_read = self.sent_at = loop.time()
        if read_timeout and self._timer is None:
            self._timer = loop.call_at(self._last_read + read_timeout, self._check_read, read_timeout)
        transport = self.transport
        assert transport is not None
        if not body:
            transport.write(head)
        elif len(body) <= 16384:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        return await future

    def _check_read(self, read_timeout: float) -> None:
        """The read timeout: one timer per connection, moved on by the time of the last packet (a timer per
        read, as aiohttp keeps, costs more than the reads). Silence only counts while an answer is awaited."""
        self._timer = None
        if self.closed:
            return
        response = self._response
        awaiting = self._head is not None or (response is not None and not response._done)
        if not awaiting:
            return
        now = self.loop.time()
        due = self._last_read + read_timeout
        if self._paused:  # our client is slow, not the upstream
            due = now + read_timeout
        elif now >= due:
            self.fail(UpstreamTimeout(f"the upstream sent nothing for {read_timeout:g} s"))
            return
        self._timer = self.loop.call_at(due, self._check_read, read_timeout)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._last_read = self.loop.time()
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def fail(self, exc: UpstreamError) -> None:
        """Give up on this connection: what is awaited on it fails with ``exc``."""
        self._error = self._error or exc
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(exc)
        response = self._response
        if response is not None:
            response._fail(exc)
        self.close()

    def finished(self, response: UpstreamResponse, *, reusable: bool) -> None:
        if self._response is response:
            self._response = None
        if reusable and self._keep_alive and not self.closed and self._error is None:
            self.resume()
            self.pool.put_back(self)
        else:
            self.close()

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stop_timer()
            if self.transport is not None:
                self.transport.close()
        self.pool.forget(self)


class _Pool:
    """The connections to one origin: idle ones reused newest first, at most ``limit`` open at once."""

    def __init__(self, client: UpstreamClient, scheme: str, host: str, port: int,
                 via: ProxyEndpoint | None = None) -> None:
        self.client = client
        self.loop = client.loop
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        self.via = via  # an outbound proxy: a CONNECT tunnel for https, absolute-form requests for http
        self.idle: deque[_Connection] = deque()
        self.open: set[_Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, *, fresh: bool = False) -> _Connection:
        """An idle connection, else a new one once the limit allows; ``fresh``: a new one in any case (an idle
        one is closed to make room)."""
        while True:
            idle = self.idle
            if fresh:
                if idle and len(self.open) + self._connecting >= self.client.limit:
                    idle[0].close()
            elif idle:
                keep = self.client.keepalive_seconds
                now = self.loop.time()
                while idle:
                    conn = idle.pop()
                    if not conn.usable():
                        self.forget(conn)
                    elif now - conn.idle_since > keep:
                        conn.close()
                    else:
                        return conn
            if len(self.open) + self._connecting < self.client.limit:
                return await self._connect()
            await self._wait_for_turn()

    async def _wait_for_turn(self) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.client.connect_timeout):
                await waiter
        except TimeoutError:
            raise UpstreamTimeout(f"all {self.client.limit} connections to the upstream stayed busy for "
                                  f"{self.client.connect_timeout:g} s") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # our turn came as we were cancelled: pass it on
            else:
                waiter.cancel()
            raise

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self) -> _Connection:
        self._connecting += 1
        try:
            conn = await self.client.connect(self)
        except BaseException:
            self._wake_one()
            raise
        finally:
            self._connecting -= 1
        self.open.add(conn)
        return conn

    def put_back(self, conn: _Connection) -> None:
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        if self._waiters:
            self._wake_one()

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed, or closing: it no longer counts against the limit."""
        if conn in self.open:
            self.open.discard(conn)
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
            if self._waiters:
                self._wake_one()

    def close(self) -> None:
        for conn in list(self.open):
            conn.close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()


class _Route:
    """A base URL, resolved once: its pool, the path the targets are appended to (absolute through an http
    proxy) and the Host header (followed by the proxy's credentials line through an http proxy)."""

    __slots__ = ("pool", "prefix", "host_header")

    def __init__(self, pool: _Pool, prefix: str, host_header: str) -> None:
        self.pool = pool
        self.prefix = prefix
        self.host_header = host_header


def _checked(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"a line break in the request's {what}")
    return value


def _interleaved(addresses: list[Any]) -> list[Any]:
    """getaddrinfo's answers with the address families taking turns, the first family first (RFC 8305)."""
    families: dict[int, list[Any]] = {}
    for info in addresses:
        families.setdefault(info[0], []).append(info)
    groups = list(families.values())
    return [group[i] for i in range(max(map(len, groups), default=0)) for group in groups if i < len(group)]


def _close_if_connected(task: asyncio.Task[socket.socket]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


class UpstreamClient:
    """Requests to any number of base URLs (``https://openrouter.ai/api/v1``, a token's own upstream)."""

    def __init__(self, *, limit: int = 256, connect_timeout: float = 10.0, read_timeout: float | None = 300.0,
                 keepalive_seconds: float = 60.0, max_body_bytes: int = 64 * 1024 * 1024,
                 ssl_context: ssl.SSLContext | None = None, egress: EgressProxy | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = max(limit, 1)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_seconds = keepalive_seconds
        self.max_body_bytes = max_body_bytes
        self._ssl = ssl_context
        self._egress = egress or EgressProxy()
        self._routes: dict[str, _Route] = {}
        self._pools: dict[tuple[str, str, int, str], _Pool] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._closed = False

    def _route(self, base_url: str) -> _Route:
        route = self._routes.get(base_url)
        if route is not None:
            return route
        parts = urlsplit(base_url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        host = parts.hostname
        default = 443 if scheme == "https" else 80
        port = parts.port or default
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        proxy = self._egress.for_url(base_url)
        key = (scheme, host, port, proxy or "")
        pool = self._pools.get(key)
        if pool is None:
            via = ProxyEndpoint.parse(proxy) if proxy else None
            pool = self._pools[key] = _Pool(self, scheme, host, port, via)
        prefix = parts.path.rstrip("/") + "/"
        if pool.via is not None and not pool.tls:
            prefix = f"http://{host_header}{prefix}"
            if pool.via.authorization:
                host_header += f"\r\nProxy-Authorization: {pool.via.authorization}"
        route = _Route(pool, prefix, host_header)
        if len(self._routes) > 1024:  # base URLs come from tokens: keep the memo bounded
            self._routes.clear()
        self._routes[base_url] = route
        return route

    async def request(self, method: str, base_url: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes = b"") -> UpstreamResponse:
        """``target``: the path under ``base_url`` with its query, percent-encoded as it goes on the wire
        (``chat/completions``); ``headers``: end-to-end headers only (the caller drops hop-by-hop ones,
        Host and Content-Length). Returns once the answer's head is in; the caller releases it."""
        if self._closed:
            raise UpstreamConnectError("the upstream client is closed")
        route = self._route(base_url)
        lines = [f"{method} {_checked(route.prefix + target, 'target')} HTTP/1.1\r\nHost: {route.host_header}\r\n"]
        append = lines.append
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"a line break in the request header {name!r}")
            append(f"{name}: {value}\r\n")
        if body or method in ("POST", "PUT", "PATCH"):
            append(f"Content-Length: {len(body)}\r\nAccept-Encoding: identity\r\n\r\n")
        else:
            append("Accept-Encoding: identity\r\n\r\n")
        head = "".join(lines).encode("utf-8", "surrogateescape")
        conn = await route.pool.acquire()
        try:
            return await conn.send(method, head, body, self.read_timeout)
        except UpstreamDisconnected:
            conn.close()
            if conn.requests_sent == 1 or conn.received or self.loop.time() - conn.sent_at > STALE_CLOSE_SECONDS:
                raise
        except BaseException:
            conn.close()  # cancelled or failed mid-request: this connection is out of step
            raise
        # A kept-alive connection closed at once with not a byte of answer: the upstream ended it as idle while
        # the request was on its way (its keep-alive timeout, at the moment we reused it), so nothing was done
        # with the request. It goes once more, on a new connection, as curl does; a second failure stands.
        conn = await route.pool.acquire(fresh=True)
        try:
            return await conn.send(method, head, body, self.read_timeout)
        except BaseException:
            conn.close()
            raise

    async def connect(self, pool: _Pool) -> _Connection:
        tls = None
        if pool.tls:
            if self._ssl is None:  # built on first use (it loads the system's CAs), then shared
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        via = pool.via
        host, port = (via.host, via.port) if via is not None else (pool.host, pool.port)
        try:
            async with asyncio.timeout(self.connect_timeout):
                sock = await self._tcp(host, port, await self._resolve(host, port))
                if via is not None and tls is not None:
                    try:
                        await self._tunnel(sock, pool, via)
                    except BaseException:
                        sock.close()
                        raise
                try:
                    _, conn = await self.loop.create_connection(
                        lambda: _Connection(pool), sock=sock, ssl=tls,
                        server_hostname=pool.host if tls is not None else None,
                        ssl_handshake_timeout=self.connect_timeout if tls is not None else None)
                except (OSError, ssl.SSLError) as exc:  # the TLS handshake (a certificate not trusted, ...)
                    sock.close()
                    raise UpstreamConnectError(f"TLS with {pool.host}:{pool.port} failed ({exc!r})") from None
                return conn
        except TimeoutError:
            raise UpstreamTimeout(f"no connection to {pool.host}:{pool.port} within "
                                  f"{self.connect_timeout:g} s") from None

    async def _tunnel(self, sock: socket.socket, pool: _Pool, via: ProxyEndpoint) -> None:
        """``CONNECT`` through the proxy on ``sock``; TLS with the upstream then goes through the tunnel."""
        authority = f"[{pool.host}]:{pool.port}" if ":" in pool.host else f"{pool.host}:{pool.port}"
        auth = f"Proxy-Authorization: {via.authorization}\r\n" if via.authorization else ""
        await self.loop.sock_sendall(sock, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n"
                                     .encode("utf-8", "surrogateescape"))
        head = b""
        while b"\r\n\r\n" not in head:  # the upstream says nothing before our TLS hello: no body to overread
            data = await self.loop.sock_recv(sock, 4096)
            if not data or len(head) > MAX_HEAD_BYTES:
                raise UpstreamConnectError(f"the proxy {via.host}:{via.port} gave no answer to CONNECT")
            head += data
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest.startswith("2") or not head.endswith(b"\r\n\r\n"):
            raise UpstreamConnectError(f"the proxy {via.host}:{via.port} refused the tunnel to {authority} "
                                       f"({status_line.strip()[:200]})")

    async def _tcp(self, host: str, port: int, addresses: list[Any]) -> socket.socket:
        """A socket connected to the first of ``addresses`` that answers. The next address is tried every
        ``HAPPY_EYEBALLS_DELAY`` seconds meanwhile (RFC 8305), address families taking turns, so an address
        that never answers (IPv6 resolved but not routed) does not use up the whole connect timeout."""
        loop = self.loop

        async def attempt(info: Any) -> socket.socket:
            family, kind, proto, _, address = info
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
            except BaseException:
                sock.close()
                raise
            return sock

        queue = _interleaved(addresses)
        pending: set[asyncio.Task[socket.socket]] = set()
        last: BaseException | None = None
        try:
            while queue or pending:
                if queue:
                    pending.add(loop.create_task(attempt(queue.pop(0))))
                done, pending = await asyncio.wait(pending, timeout=HAPPY_EYEBALLS_DELAY if queue else None,
                                                   return_when=asyncio.FIRST_COMPLETED)
                winner = None
                for task in done:
                    if task.exception() is None:
                        if winner is None:
                            winner = task.result()
                        else:
                            task.result().close()  # two answered at once: keep one
                    else:
                        last = task.exception()
                if winner is not None:
                    return winner
            raise UpstreamConnectError(f"could not connect to {host}:{port} ({last!r})")
        finally:
            for task in pending:
                task.cancel()
                task.add_done_callback(_close_if_connected)

    async def _resolve(self, host: str, port: int) -> list[Any]:
        now = time.monotonic()
        known = self._addresses.get((host, port))
        if known is not None and known[0] > now:
            return known[1]
        try:
            addresses = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UpstreamConnectError(f"could not resolve {host} ({exc})") from None
        if not addresses:
            raise UpstreamConnectError(f"could not resolve {host}")
        self._addresses[(host, port)] = (now + _DNS_SECONDS, addresses)
        return addresses

    def idle_connections(self) -> int:
        return sum(len(pool.idle) for pool in self._pools.values())

    def open_connections(self) -> int:
        return sum(len(pool.open) for pool in self._pools.values())

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        await asyncio.sleep(0)  # let the transports run their connection_lost
