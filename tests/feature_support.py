"""Helpers shared by the fallback, quota, preset and breakpoint tests (real servers, no mocks)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}


async def new_token(client: Any, admin_headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    resp = await client.post("/admin/tokens", json={"name": "t", **fields}, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


def bearer(token: dict[str, Any], **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['token']}", **extra}


async def fake_requests(fake_upstream: Any) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(fake_upstream.url + "/_fake/requests") as r:
        return await r.json()


async def sent_upstream(fake_upstream: Any, marker: str) -> list[dict[str, Any]]:
    """The requests the fake upstream received whose last message contains ``marker``, oldest first."""
    out = []
    for r in await fake_requests(fake_upstream):
        body = r.get("json")
        if isinstance(body, dict) and marker in str(body.get("messages") or body.get("input") or ""):
            out.append(r)
    return out


async def log_row(client: Any, admin_headers: dict[str, str], request_id: str, timeout: float = 10.0
                  ) -> dict[str, Any]:
    """The request's log row once the background writer has stored it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"/admin/logs/{request_id}", headers=admin_headers)
        if resp.status == 200:
            return await resp.json()
        assert asyncio.get_running_loop().time() < deadline, f"no log row for {request_id}"
        await asyncio.sleep(0.05)


def chat(text: str, model: str = "openai/gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}
