"""The upstream, as the proxy sees it: the relay's lean client and the session for the proxy's own calls,
header relay rules, and upstream failures mapped to client errors."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping

from proxy.errors import ProxyError
from proxy.keys import SETTINGS, UPSTREAM, UPSTREAM_CLIENT
from proxy.upstream_client import (
    UpstreamClient,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamProtocolError,
)

__all__ = ["upstream_ctx", "upstream_client_ctx", "request_headers", "response_headers", "map_upstream_error",
           "UPSTREAM_FAILURES"]

# what a call to the upstream can fail with, on either client
UPSTREAM_FAILURES = (TimeoutError, UpstreamError, aiohttp.ClientError)

# hop-by-hop (RFC 9110 7.6.1) plus what the proxy itself owns or must not forward
_DROP_REQUEST = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length", "authorization", "x-api-key", "cookie",
    "accept-encoding", "expect", "x-cache-threshold", "cache-control", "x-request-id", "forwarded",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip",
})
_DROP_REQUEST_PREFIXES = ("x-orcache-",)
_DROP_RESPONSE = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "content-length", "content-encoding", "server", "date", "set-cookie",
    "x-request-id", "alt-svc", "cf-ray", "via",
})


def request_headers(incoming: CIMultiDictProxy[str], api_key: str | None, referer: str | None,
                    title: str | None) -> list[tuple[str, str]]:
    """The client's end-to-end headers as pairs (the upstream client writes them as they are), with the
    upstream key and OpenRouter's attribution headers."""
    out: list[tuple[str, str]] = []
    has_referer = has_title = False
    for name, value in incoming.items():
        low = name.lower()
        if low in _DROP_REQUEST or low.startswith(_DROP_REQUEST_PREFIXES):
            continue
        if low == "http-referer":
            has_referer = True
        elif low == "x-title":
            has_title = True
        out.append((name, value))
    if api_key:
        out.append(("Authorization", f"Bearer {api_key}"))
    # OpenRouter attribution: the client's own headers win over the configured defaults
    if referer and not has_referer:
        out.append(("HTTP-Referer", referer))
    if title and not has_title:
        out.append(("X-Title", title))
    return out


def response_headers(upstream: MultiMapping[str]) -> list[tuple[str, str]]:
    """The upstream's headers the client may see, as pairs (``web.Response`` copies them into its own
    multidict anyway, so building one here would be a second copy)."""
    out: list[tuple[str, str]] = []
    for name, value in upstream.items():
        low = name.lower()
        if low in _DROP_RESPONSE:
            if low == "x-request-id":
                out.append(("X-Upstream-Request-Id", value))
            continue
        out.append((name, value))
    return out


def map_upstream_error(exc: BaseException) -> ProxyError:
    """One place that turns client-side failures talking to the upstream into what our client sees."""
    if isinstance(exc, UpstreamError):
        return _map_relay_error(exc)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return ProxyError(504, "The upstream did not answer in time.", "upstream_timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProxyError(502, "Could not connect to the upstream.", "upstream_unreachable")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ProxyError(502, "The upstream closed the response before it was complete.", "upstream_incomplete")
    return ProxyError(502, f"Upstream connection failed ({type(exc).__name__}).", "upstream_connection_error")


def _map_relay_error(exc: UpstreamError) -> ProxyError:
    if isinstance(exc, TimeoutError):
        return ProxyError(504, "The upstream did not answer in time.", "upstream_timeout")
    if isinstance(exc, UpstreamConnectError):
        return ProxyError(502, "Could not connect to the upstream.", "upstream_unreachable")
    if isinstance(exc, UpstreamDisconnected) and exc.partial:
        return ProxyError(502, "The upstream closed the response before it was complete.", "upstream_incomplete")
    if isinstance(exc, UpstreamProtocolError):
        return ProxyError(502, f"The upstream's answer could not be relayed: {exc}.", "upstream_bad_response")
    return ProxyError(502, f"Upstream connection failed: {exc}.", "upstream_connection_error")


async def upstream_client_ctx(app: web.Application):
    """The relay's client: keep-alive connections to the upstream (and to tokens' own upstreams)."""
    s = app[SETTINGS]
    client = UpstreamClient(limit=s.upstream_pool_size, connect_timeout=s.upstream_connect_timeout,
                            read_timeout=s.upstream_read_timeout, keepalive_seconds=s.upstream_keepalive_seconds,
                            max_body_bytes=s.upstream_max_response_bytes, egress=s.egress())
    app[UPSTREAM_CLIENT] = client
    yield
    await client.close()


async def upstream_ctx(app: web.Application):
    """The session for the proxy's own calls to the upstream (pricing, embeddings, generation stats)."""
    s = app[SETTINGS]
    connector = aiohttp.TCPConnector(limit=s.upstream_pool_size, limit_per_host=s.upstream_pool_size,
                                     ttl_dns_cache=300, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.upstream_connect_timeout,
                                    sock_read=s.upstream_read_timeout)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False,
                                    json_serialize=lambda o: orjson.dumps(o).decode(),
                                    skip_auto_headers=("User-Agent",), auto_decompress=True)
    app[UPSTREAM] = session
    yield
    await session.close()
