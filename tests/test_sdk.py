"""The real openai SDK (sync, async, streaming) pointed at a running proxy works unchanged."""

from __future__ import annotations

import socket
import time

import openai
import pytest

from proxy.app import create_app
from tests.conftest import ADMIN_TOKEN
from tests.support import ThreadedServer, http


@pytest.fixture
def live_proxy(make_settings):
    server = ThreadedServer(lambda: create_app(make_settings())).start()
    yield server
    server.stop()


@pytest.fixture
def token(live_proxy) -> str:
    resp = http("POST", live_proxy.url + "/admin/tokens", json={"name": "sdk"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status_code == 201
    return resp.json()["token"]


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is SSE?"}]


def test_sync_sdk_chat_embeddings_models(live_proxy, token):
    client = openai.OpenAI(base_url=live_proxy.url + "/v1", api_key=token, max_retries=0)
    chat = client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES)
    assert chat.choices[0].message.content == "Echo from openai/gpt-4o-mini: What is SSE?"
    assert chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0
    emb = client.embeddings.create(model="openai/text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    assert any(m.id == "openai/gpt-4o-mini" for m in client.models.list())


def test_sync_sdk_streaming(live_proxy, token):
    client = openai.OpenAI(base_url=live_proxy.url + "/v1", api_key=token, max_retries=0)
    stream = client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo from openai/gpt-4o-mini: What is SSE?"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_async_sdk_plain_and_streaming(live_proxy, token):
    client = openai.AsyncOpenAI(base_url=live_proxy.url + "/api/v1", api_key=token, max_retries=0)
    chat = await client.chat.completions.create(model="anthropic/claude-3.5-sonnet", messages=MESSAGES)
    assert chat.choices[0].message.content.endswith("What is SSE?")
    stream = await client.chat.completions.create(model="anthropic/claude-3.5-sonnet", messages=MESSAGES,
                                                  stream=True)
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == chat.choices[0].message.content
    await client.close()


def test_sdk_sees_openai_errors(live_proxy, token):
    bad = openai.OpenAI(base_url=live_proxy.url + "/v1", api_key="sk-orc-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES)
    client = openai.OpenAI(base_url=live_proxy.url + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES,
                                       extra_headers={"X-Fake-Status": "429"})


def test_client_disconnect_mid_stream_cancels_upstream(live_proxy, token, fake_upstream):
    before = http("GET", fake_upstream.url + "/_fake/stats").json()["client_disconnects"]
    body = (b'{"model":"openai/gpt-4o-mini","stream":true,'
            b'"messages":[{"role":"user","content":"one two three four five six seven eight nine ten"}]}')
    with socket.create_connection(("127.0.0.1", live_proxy.port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + token.encode() + b"\r\nX-Fake-Chunk-Delay-Ms: 300\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        first = s.recv(65536)
        assert b"200 OK" in first
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if http("GET", fake_upstream.url + "/_fake/stats").json()["client_disconnects"] > before:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the upstream request was not cancelled when the client left")
