"""The proxy core against the real embedded Redis and Postgres and the fake OpenRouter on a real port."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import aiohttp
import orjson
import pytest

from proxy.app import create_app
from tests.conftest import ADMIN_TOKEN
from tests.support import answer, free_port, serving, start

CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}


@pytest.fixture
async def proxy(aiohttp_client, make_settings):
    return await aiohttp_client(create_app(make_settings()))


async def new_token(client, admin_headers, **fields) -> dict:
    resp = await client.post("/admin/tokens", json={"name": "t", **fields}, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


def bearer(token: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['token']}"}


@pytest.fixture
def proxy_before(aiohttp_client, make_settings, admin_headers):
    """``async with proxy_before(make) as (client, upstream, token)``: a proxy in front of a scripted upstream
    (``tests.support.start(make)``), with a token of its own."""
    @asynccontextmanager
    async def run(make):
        upstream = await start(make)
        try:
            client = await aiohttp_client(create_app(make_settings(upstream_url=upstream.url)))
            yield client, upstream, await new_token(client, admin_headers)
        finally:
            await upstream.__aexit__()
    return run


async def fake_requests(fake_upstream) -> list[dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(fake_upstream.url + "/_fake/requests") as r:
            return await r.json()


async def test_chat_completion_passes_through_with_upstream_key(proxy, admin_headers, fake_upstream):
    token = await new_token(proxy, admin_headers)
    body = {**CHAT, "unknown_field": {"kept": True}}
    resp = await proxy.post("/v1/chat/completions", json=body, headers={**bearer(token), "Connection": "keep-alive"})
    assert resp.status == 200
    data = await resp.json()
    assert data["choices"][0]["message"]["content"] == "Echo from openai/gpt-4o-mini: Hello there"
    assert data["usage"]["total_tokens"] > 0 and data["provider"]
    assert resp.headers["X-Request-Id"].startswith("req_")
    assert "X-RateLimit-Limit" in resp.headers  # upstream rate-limit headers come back
    forwarded = [r for r in await fake_requests(fake_upstream) if r["json"] == body]
    assert forwarded, "the body reached the upstream unchanged, unknown fields included"
    headers = forwarded[-1]["headers"]
    assert headers["authorization"] == "Bearer sk-or-upstream-secret"  # never the client's proxy token
    assert token["token"] not in orjson.dumps(headers).decode()
    assert headers["x-title"] == "orcache"


async def test_api_v1_prefix_and_models_and_other_paths(proxy, admin_headers):
    token = await new_token(proxy, admin_headers)
    resp = await proxy.post("/api/v1/chat/completions", json=CHAT, headers=bearer(token))
    assert resp.status == 200
    models = await proxy.get("/v1/models", headers=bearer(token))
    assert models.status == 200
    ids = {m["id"] for m in (await models.json())["data"]}
    assert "openai/gpt-4o-mini" in ids
    # any other path passes through unchanged: the fake's 404 comes back as it is
    other = await proxy.get("/v1/no/such/thing", headers=bearer(token))
    assert other.status == 404
    assert "error" in await other.json()


async def test_client_request_id_is_kept_when_well_formed(proxy, admin_headers):
    token = await new_token(proxy, admin_headers)
    ok = await proxy.post("/v1/chat/completions", json=CHAT, headers={**bearer(token), "X-Request-Id": "my-id.42"})
    assert ok.headers["X-Request-Id"] == "my-id.42"
    # the same client id again is still its own call: the log row is keyed by the proxy's id
    again = await proxy.post("/v1/chat/completions", json=CHAT, headers={**bearer(token), "X-Request-Id": "my-id.42"})
    assert again.headers["X-Request-Id"] == "my-id.42"
    assert ok.headers["X-Orcache-Request-Id"] != again.headers["X-Orcache-Request-Id"]
    assert again.headers["X-Orcache-Request-Id"].startswith("req_")
    bad = await proxy.post("/v1/chat/completions", json=CHAT, headers={**bearer(token), "X-Request-Id": "a b<c>"})
    assert bad.headers["X-Request-Id"].startswith("req_")


async def test_streaming_relays_chunks_as_they_arrive_and_hides_injected_usage(proxy, admin_headers,
                                                                                fake_upstream):
    token = await new_token(proxy, admin_headers)
    body = {**CHAT, "stream": True}
    resp = await proxy.post("/v1/chat/completions", json=body,
                            headers={**bearer(token), "X-Fake-Chunk-Delay-Ms": "150"})
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    arrivals, raw = [], b""
    async for chunk in resp.content.iter_any():
        arrivals.append(time.perf_counter())
        raw += chunk
    assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] > 0.25, "chunks arrived over time, not at once"
    events = [e for e in raw.decode().split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    payloads = [orjson.loads(e[6:]) for e in events[:-1]]
    assert all(p["choices"] for p in payloads), "no usage-only chunk the client did not ask for"
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads)
    assert text == "Echo from openai/gpt-4o-mini: Hello there"
    sent = [r for r in await fake_requests(fake_upstream) if (r["json"] or {}).get("stream")][-1]["json"]
    assert sent["stream_options"] == {"include_usage": True}


async def test_streaming_keeps_usage_chunk_when_client_asks(proxy, admin_headers):
    token = await new_token(proxy, admin_headers)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    resp = await proxy.post("/v1/chat/completions", json=body, headers=bearer(token))
    raw = (await resp.read()).decode()
    payloads = [orjson.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("case", ["malformed", "not_object", "empty"])
async def test_bad_json_is_400(proxy, admin_headers, case):
    token = await new_token(proxy, admin_headers)
    data = {"malformed": b"{not json", "not_object": b"[1, 2]", "empty": b""}[case]
    resp = await proxy.post("/v1/chat/completions", data=data,
                            headers={**bearer(token), "Content-Type": "application/json"})
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json" and err["message"]


async def test_body_over_limit_is_413(aiohttp_client, make_settings, admin_headers):
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=4096)))
    token = await new_token(client, admin_headers)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 10_000}]}
    resp = await client.post("/v1/chat/completions", json=big, headers=bearer(token))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_too_large"


async def test_wrong_method_is_405(proxy, admin_headers):
    token = await new_token(proxy, admin_headers)
    resp = await proxy.get("/v1/chat/completions", headers=bearer(token))
    assert resp.status == 405 and "POST" in resp.headers["Allow"]
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    admin = await proxy.put("/admin/tokens", headers=admin_headers)
    assert admin.status == 405 and (await admin.json())["error"]["code"] == "method_not_allowed"


async def test_missing_unknown_and_revoked_tokens_are_401(proxy, admin_headers):
    missing = await proxy.post("/v1/chat/completions", json=CHAT)
    assert missing.status == 401 and (await missing.json())["error"]["code"] == "missing_api_key"
    unknown = await proxy.post("/v1/chat/completions", json=CHAT,
                               headers={"Authorization": "Bearer sk-orc-0123456789abcdef-nope"})
    assert unknown.status == 401 and (await unknown.json())["error"]["type"] == "authentication_error"
    foreign = await proxy.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-or-v1-x"})
    assert foreign.status == 401
    token = await new_token(proxy, admin_headers)
    assert (await proxy.post("/v1/chat/completions", json=CHAT, headers=bearer(token))).status == 200
    revoked = await proxy.delete(f"/admin/tokens/{token['id']}", headers=admin_headers)
    assert revoked.status == 200 and (await revoked.json())["revoked"] is True
    after = await proxy.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
    assert after.status == 401 and (await after.json())["error"]["code"] == "revoked_api_key"


async def test_upstream_timeout_is_504(aiohttp_client, make_settings, admin_headers):
    client = await aiohttp_client(create_app(make_settings(upstream_read_timeout=0.5)))
    token = await new_token(client, admin_headers)
    resp = await client.post("/v1/chat/completions", json=CHAT, headers={**bearer(token), "X-Fake-Timeout": "1"})
    assert resp.status == 504
    assert (await resp.json())["error"] == {"message": "The upstream did not answer in time.",
                                            "type": "timeout_error", "code": "upstream_timeout"}


async def test_upstream_unreachable_is_502(aiohttp_client, make_settings, admin_headers):
    dead = f"http://127.0.0.1:{free_port()}/api/v1"
    client = await aiohttp_client(create_app(make_settings(upstream_url=dead)))
    token = await new_token(client, admin_headers)
    resp = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "upstream_unreachable"


async def test_paths_queries_and_headers_reach_the_upstream_as_the_client_sent_them(proxy_before):
    reply = answer(b'{"object":"model","id":"openai/gpt-4o"}', extra="X-Upstream-Only: yes\r\nServer: upstream\r\n")
    async with proxy_before(serving(lambda n: reply)) as (client, upstream, token):
        resp = await client.get("/v1/models/openai%2Fgpt-4o?q=a%20b&next=x%26y",
                                headers={**bearer(token), "X-Custom": "kept", "Cookie": "secret=1",
                                         "HTTP-Referer": "https://app.example"})
        assert resp.status == 200
        assert (await resp.json())["id"] == "openai/gpt-4o"
        assert resp.headers["X-Upstream-Only"] == "yes" and resp.headers.get("Server") != "upstream"
        head = upstream.requests[-1][0].decode()
        assert head.startswith("GET /api/v1/models/openai%2Fgpt-4o?q=a%20b&next=x%26y HTTP/1.1\r\n")
        lines = head.lower().split("\r\n")
        assert "x-custom: kept" in lines and "http-referer: https://app.example" in lines
        assert "authorization: bearer sk-or-upstream-secret" in lines
        assert not any(line.startswith(("cookie:", "x-forwarded")) for line in lines)
        assert token["token"] not in head


async def test_a_stream_the_upstream_cuts_is_ended_in_band_and_an_unknown_encoding_is_a_502(proxy_before):
    def reply(head: bytes, body: bytes) -> bytes:
        if not head.startswith(b"POST"):  # the pricing table's GET models
            return answer(b'{"data":[]}')
        if b'"stream":true' in body:  # a stream that stops half way
            return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 500\r\n\r\n"
                    b'data: {"id":"g","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n')
        return answer(b"\x00\x01", extra="Content-Encoding: br\r\n")

    def make(server):
        async def handler(reader, writer):
            got = await server.next_request(reader)
            writer.write(reply(*got))
            await writer.drain()
        return handler

    async with proxy_before(make) as (client, _, token):
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(token))
        assert resp.status == 200
        text = await resp.text()
        assert '"content":"Hel"' in text and "closed the response before it was complete" in text
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "upstream_bad_response"


async def test_an_upstream_redirect_is_a_502_not_passed_on(proxy_before):
    def reply(n: int) -> bytes:
        return (b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://elsewhere.example/api/v1/chat/completions"
                b"\r\nContent-Length: 0\r\n\r\n")

    async with proxy_before(serving(reply)) as (client, _, token):
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(token), allow_redirects=False)
        assert resp.status == 502 and "Location" not in resp.headers
        assert (await resp.json())["error"]["code"] == "upstream_redirect"


@pytest.mark.parametrize("together", [True, False], ids=["head-and-event-together", "head-alone-first"])
async def test_a_relayed_stream_sends_its_head_with_an_event_at_hand_but_never_waits_for_one(proxy_before,
                                                                                             together):
    event = b'data: {"id":"g","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

    def make(server):
        async def handler(reader, writer):
            while (got := await server.next_request(reader)) is not None:
                if not got[0].startswith(b"POST"):
                    writer.write(answer(b'{"data":[]}'))
                    continue
                if together:
                    writer.write(head + chunk)
                else:
                    writer.write(head)
                    await writer.drain()
                    await asyncio.sleep(1.0)  # a model thinking: the client must have its head meanwhile
                    writer.write(chunk)
                await writer.drain()
        return handler

    async with proxy_before(make) as (client, _, token):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        body = orjson.dumps({**CHAT, "stream": True})
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (token["token"].encode(), len(body),
                                                                                     body))
        first = await asyncio.wait_for(reader.read(65536), 0.8 if not together else 5)
        assert first.startswith(b"HTTP/1.1 200")
        # at hand: one write, head and event; not yet: the head at once, the event when it comes
        assert (b'"content":"Hi"' in first) is together
        writer.close()


async def test_upstream_errors_and_malformed_bodies(proxy, admin_headers):
    token = await new_token(proxy, admin_headers)
    for status in (429, 500, 502):
        resp = await proxy.post("/v1/chat/completions", json=CHAT,
                                headers={**bearer(token), "X-Fake-Status": str(status)})
        assert resp.status == status
        assert "message" in (await resp.json())["error"]
    malformed = await proxy.post("/v1/chat/completions", json=CHAT,
                                 headers={**bearer(token), "X-Fake-Malformed": "1"})
    assert malformed.status == 502
    assert (await malformed.json())["error"]["code"] == "upstream_malformed_response"


async def test_token_api_round_trip_visible_in_redis(proxy, admin_headers, redis_server, key_prefix):
    create = await proxy.post("/admin/tokens", json={"name": "team-a", "cache_mode": "semantic",
                                                     "similarity_threshold": 0.7, "cache_ttl_seconds": 600},
                              headers=admin_headers)
    assert create.status == 201
    token = await create.json()
    assert token["token"].startswith("sk-orc-") and "70%" in token["cache_help"]
    cli = await asyncio.create_subprocess_exec("redis-cli", "-s", str(redis_server.socket_path), "HGETALL",
                                               f"{key_prefix}:token:{token['id']}", stdout=asyncio.subprocess.PIPE)
    stdout = (await cli.communicate())[0].decode()
    assert await cli.wait() == 0
    fields = dict(zip(stdout.split("\n")[0::2], stdout.split("\n")[1::2]))
    assert fields["name"] == "team-a" and fields["cache_mode"] == "semantic"
    assert float(fields["similarity_threshold"]) == 0.7 and fields["cache_ttl_seconds"] == "600"
    assert fields["revoked"] == "0" and fields["created_at"]
    assert token["token"] not in stdout and len(fields["secret_sha256"]) == 64

    listed = await (await proxy.get("/admin/tokens", headers=admin_headers)).json()
    assert [t["id"] for t in listed["items"]] == [token["id"]] and "token" not in listed["items"][0]
    patch = await proxy.patch(f"/admin/tokens/{token['id']}", json={"cache_mode": "exact", "name": "team-b"},
                              headers=admin_headers)
    assert patch.status == 200 and (await patch.json())["cache_mode"] == "exact"
    shown = await (await proxy.get(f"/admin/tokens/{token['id']}", headers=admin_headers)).json()
    assert shown["name"] == "team-b" and shown["similarity_threshold"] == 0.7
    assert (await proxy.get("/admin/tokens/0000000000000000", headers=admin_headers)).status == 404


@pytest.mark.parametrize("body, param", [
    ({"name": "x", "similarity_threshold": 1.5}, "similarity_threshold"),
    ({"name": "x", "similarity_threshold": -0.1}, "similarity_threshold"),
    ({"name": "x", "cache_mode": "fuzzy"}, "cache_mode"),
    ({"cache_mode": "exact"}, "name"),
    ({"name": "x", "cache_ttl_seconds": 0}, "cache_ttl_seconds"),
    ({"name": "x", "colour": "red"}, "colour"),
])
async def test_token_validation_is_400_naming_the_field(proxy, admin_headers, body, param):
    resp = await proxy.post("/admin/tokens", json=body, headers=admin_headers)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"


async def test_admin_endpoints_need_the_admin_token(proxy, admin_headers):
    token = await new_token(proxy, admin_headers)
    assert (await proxy.get("/admin/tokens")).status == 401
    assert (await proxy.get("/admin/tokens", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await proxy.get("/admin/tokens", headers=bearer(token))).status == 401


async def test_health_ready_metrics_openapi(proxy, admin_headers):
    assert (await (await proxy.get("/healthz")).json()) == {"status": "ok"}
    ready = await proxy.get("/readyz")
    checks = await ready.json()
    assert ready.status == 200, checks
    assert checks["redis"]["ok"] and checks["postgres"]["ok"] and checks["upstream"]["ok"]
    token = await new_token(proxy, admin_headers)
    await proxy.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
    metrics = await (await proxy.get("/metrics")).text()
    assert 'orcache_requests_total{route="chat/completions",status="200"}' in metrics
    assert "orcache_request_duration_seconds_bucket" in metrics
    doc = await (await proxy.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and "/admin/tokens" in doc["paths"]


async def test_secrets_never_reach_the_logs(proxy, admin_headers, capsys):
    from structlog.testing import capture_logs

    token = await new_token(proxy, admin_headers)
    with capture_logs() as logs:
        await proxy.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
        await proxy.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-orc-zzz"})
        await proxy.post("/v1/chat/completions", json=CHAT, headers={**bearer(token), "X-Fake-Status": "500"})
    text = orjson.dumps(logs, default=str).decode() + capsys.readouterr().err
    assert logs, "requests were logged"
    for secret in (token["token"], "sk-or-upstream-secret", ADMIN_TOKEN):
        assert secret not in text


def test_request_ids_sort_by_time_and_never_repeat():
    from proxy.middleware import new_request_id

    first = new_request_id()
    ids = [new_request_id() for _ in range(20_000)]
    time.sleep(0.002)
    later = new_request_id()
    assert len(set(ids)) == len(ids)
    assert first[:16] <= ids[0][:16] <= ids[-1][:16] < later[:16]  # the time prefix orders them
    assert all(len(i) == 32 and i.startswith("req_") for i in ids)
    assert len({i[16:] for i in ids}) == len(ids)  # and the random part alone tells them apart


async def test_the_relay_reaches_the_upstream_through_the_outbound_proxy(aiohttp_client, make_settings, admin_headers):
    heads: list[bytes] = []

    def make(server):
        async def handler(reader, writer):
            while (got := await server.next_request(reader)) is not None:
                heads.append(got[0])
                writer.write(answer(orjson.dumps({"id": "gen-1", "model": CHAT["model"], "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "via the proxy"},
                     "finish_reason": "stop"}]})))
                await writer.drain()
        return handler

    proxy = await start(make)  # an http proxy answering itself: upstream.test is never resolved
    try:
        client = await aiohttp_client(create_app(make_settings(
            upstream_url="http://upstream.test/api/v1", http_proxy=proxy.url.removesuffix("/api/v1"))))
        token = await new_token(client, admin_headers)
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["choices"][0]["message"]["content"] == "via the proxy"
        def lines() -> list[bytes]:
            return [head.split(b"\r\n", 1)[0] for head in heads]
        assert b"POST http://upstream.test/api/v1/chat/completions HTTP/1.1" in lines()
        deadline = time.monotonic() + 5
        while b"GET http://upstream.test/api/v1/models HTTP/1.1" not in lines():  # pricing: aiohttp's session
            assert time.monotonic() < deadline, lines()
            await asyncio.sleep(0.02)
    finally:
        await proxy.__aexit__()
