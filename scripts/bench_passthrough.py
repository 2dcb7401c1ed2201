"""The floor for the benchmark: a bare aiohttp pass-through (no auth, no cache, no logging).

``python -m scripts.bench_passthrough --port 9200 --upstream http://127.0.0.1:9911``: every request is
forwarded to the upstream at the same path, with the same method, body and headers (minus hop-by-hop
ones); SSE responses are relayed chunk by chunk. Same stack as the proxy: aiohttp on uvloop, one
ClientSession with a keep-alive pool.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

DROP = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive", "accept-encoding"})
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in DROP}
    url = request.app[UPSTREAM] + request.path_qs
    async with request.app[SESSION].request(request.method, url, data=body or None, headers=headers) as up:
        out = {k: v for k, v in up.headers.items() if k.lower() not in DROP | {"content-encoding", "date", "server"}}
        if up.content_type != "text/event-stream":
            return web.Response(status=up.status, body=await up.read(), headers=out)
        resp = web.StreamResponse(status=up.status, headers=out)
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def session_ctx(app: web.Application):
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), skip_auto_headers=("User-Agent",))
    yield
    await app[SESSION].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", required=True, help="upstream origin, e.g. http://127.0.0.1:9911")
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    import uvloop

    uvloop.install()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
