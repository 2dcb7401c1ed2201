"""End to end: calls through the real proxy (create_app) become rows, visible through the logs APIs."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from proxy.app import create_app
from proxy.keys import PRICING

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": "Hello there, logger"}]}


async def logs(client, headers, **params) -> dict[str, Any]:
    resp = await client.get("/admin/logs", params={"page_size": 200, **params}, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def wait_rows(client, headers, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = await logs(client, headers)
        if body["total"] >= n or asyncio.get_running_loop().time() > deadline:
            return body["items"]
        await asyncio.sleep(0.05)


async def test_calls_through_the_proxy_are_logged_with_usage_cost_and_tags(aiohttp_client, make_settings,
                                                                           admin_headers) -> None:
    client = await aiohttp_client(create_app(make_settings(log_flush_interval=0.05)))
    app = client.server.app
    for _ in range(200):  # pricing loads in the background from the fake upstream's /models
        if len(app[PRICING]):
            break
        await asyncio.sleep(0.02)
    resp = await client.post("/admin/tokens", json={"name": "logger"}, headers=admin_headers)
    token = await resp.json()
    auth = {"Authorization": f"Bearer {token['token']}"}
    tags = {"X-Orcache-Project-Id": "proj-9", "X-Orcache-Run-Id": "run-9", "X-Orcache-Iteration": "2",
            "X-Orcache-Agent-Type": "tester", "X-Orcache-Metadata": '{"ticket": 42}'}

    calls = [
        ({**auth, **tags}, CHAT),
        ({**auth, "X-Fake-No-Cost": "1"}, CHAT),  # cost must come from the /models pricing
        ({**auth, "X-Fake-Usage-Format": "anthropic"}, CHAT),
        (auth, {**CHAT, "stream": True, "stream_options": {"include_usage": True}}),
        ({**auth, "X-Fake-Status": "500"}, CHAT),
        ({}, CHAT),  # rejected: no token
    ]
    for headers, body in calls:
        resp = await client.post("/v1/chat/completions", json=body, headers=headers)
        await resp.read()
    items = await wait_rows(client, admin_headers, len(calls))
    assert len(items) == len(calls)
    by_order = list(reversed(items))  # oldest first = the order sent
    tagged, no_cost, anthropic, streamed, failed, rejected = by_order

    assert tagged["token_id"] == token["id"] and tagged["token_name"] == "logger"
    assert (tagged["project_id"], tagged["run_id"], tagged["iteration"], tagged["agent_type"]) == \
        ("proj-9", "run-9", 2, "tester")
    assert tagged["metadata"] == {"ticket": 42}
    assert tagged["prompt_tokens"] > 0 and tagged["completion_tokens"] > 0 and tagged["cost"] > 0
    assert tagged["system_prompt_hash"] and tagged["user_prompt_hash"] and tagged["model_permaslug"]
    assert no_cost["cost"] == pytest.approx(tagged["cost"])
    assert anthropic["prompt_tokens"] > 0 and anthropic["total_tokens"] == \
        anthropic["prompt_tokens"] + anthropic["completion_tokens"]
    assert streamed["streamed"] is True and streamed["completion_tokens"] > 0 and streamed["ttfb_ms"] is not None
    assert failed["success"] is False and failed["status_code"] >= 500 and failed["error"]
    assert rejected["status_code"] == 401 and rejected["token_id"] is None

    # the same rows through the filters and the token-scoped usage view
    assert (await logs(client, admin_headers, project_id="proj-9"))["total"] == 1
    assert (await logs(client, admin_headers, status="error"))["total"] == 2
    mine = await client.get("/api/tokens/usage-logs", headers=auth)
    body = await mine.json()
    assert mine.status == 200 and sum(d["requests"] for d in body["data"]) == 5
    detail = await client.get(f"/admin/logs/{tagged['request_id']}", headers=admin_headers)
    assert (await detail.json())["request_id"] == tagged["request_id"]


async def test_a_reused_client_request_id_still_logs_every_call(aiohttp_client, make_settings, admin_headers):
    client = await aiohttp_client(create_app(make_settings(log_flush_interval=0.05)))
    token = await (await client.post("/admin/tokens", json={"name": "reuser"}, headers=admin_headers)).json()
    headers = {"Authorization": f"Bearer {token['token']}", "X-Request-Id": "client-fixed-id"}
    log_ids = []
    for _ in range(3):
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert resp.headers["X-Request-Id"] == "client-fixed-id"
        log_ids.append(resp.headers["X-Orcache-Request-Id"])
    deadline = asyncio.get_running_loop().time() + 10
    while len(items := (await logs(client, admin_headers, api_key_id=token["id"]))["items"]) < 3:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert sorted(i["request_id"] for i in items) == sorted(log_ids)
    assert {i["metadata"]["client_request_id"] for i in items} == {"client-fixed-id"}


@pytest.mark.parametrize("cancel", [True, False], ids=["handler-cancelled", "read-fails"])
async def test_a_client_gone_while_sending_its_body_is_logged_as_499(make_settings, admin_headers, cancel):
    # orcache serve cancels the handler of a client gone; either way its read of the body fails, whichever first
    runner = web.AppRunner(create_app(make_settings(log_flush_interval=0.05)), handler_cancellation=cancel)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
            token = await (await client.post("/admin/tokens", json={"name": "leaver"}, headers=admin_headers)).json()
            auth = {"Authorization": f"Bearer {token['token']}"}
            assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth)).status == 200  # token known
            with capture_logs() as events:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Authorization: " + auth["Authorization"].encode() + b"\r\nContent-Length: 1000\r\n\r\n"
                             b'{"model": "openai/gpt-4o-mini", "mess')  # and gone, 962 bytes short
                await writer.drain()
                writer.close()
                deadline = asyncio.get_running_loop().time() + 10
                while not (items := (await logs(client, admin_headers, api_key_id=token["id"],
                                                status_code=499))["items"]):
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    assert len(items) == 1 and items[0]["error"] == "client closed the connection"
    assert not [e for e in events if e["event"] == "unhandled_error"]
