"""StreamAssembler (SSE -> complete response) and replay (entry -> JSON or SSE), round trips included."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cache.assemble import StreamAssembler
from cache.entry import CachedEntry
from cache.replay import DONE, render_json, render_sse

MODEL = "openai/gpt-4o-mini"
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.0001}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0,
          **extra: Any) -> dict[str, Any]:
    return {"id": "gen-abc", "provider": "OpenAI", "model": MODEL, "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish,
                         "native_finish_reason": finish, "logprobs": None}], **extra}


def usage_chunk() -> dict[str, Any]:
    return {"id": "gen-abc", "provider": "OpenAI", "model": MODEL, "object": "chat.completion.chunk",
            "created": 1_700_000_000, "choices": [], "usage": USAGE}


def assemble(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    asm = StreamAssembler()
    for event in events:
        asm.feed(event)
    return asm.result()


def parse_sse(chunks: list[bytes]) -> list[dict[str, Any]]:
    assert chunks[-1] == DONE
    events = []
    for c in chunks[:-1]:
        assert c.startswith(b"data: ") and c.endswith(b"\n\n")
        events.append(orjson.loads(c[len(b"data: "):]))
    return events


CONTENT_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "The capital "}),
    chunk({"content": "of France is "}),
    chunk({"content": "Paris."}),
    chunk({}, "stop"),
    usage_chunk(),
]

REASONING_STREAM = [
    chunk({"role": "assistant", "content": "", "reasoning": "Think about "}),
    chunk({"content": "", "reasoning": "geography.",
           "reasoning_details": [{"type": "reasoning.text", "text": "Think about ", "index": 0}]}),
    chunk({"content": "",
           "reasoning_details": [{"type": "reasoning.text", "text": "geography.", "index": 0}]}),
    chunk({"content": "Paris."}),
    chunk({}, "stop", usage=USAGE),
]

TOOL_STREAM = [
    chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "time", "arguments": '{"tz":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": '"CET"}'}}]}),
    chunk({}, "tool_calls"),
    usage_chunk(),
]


def test_assembles_content_and_usage() -> None:
    out = assemble(CONTENT_STREAM)
    assert out is not None
    assert out["object"] == "chat.completion"
    assert (out["id"], out["model"], out["provider"]) == ("gen-abc", MODEL, "OpenAI")
    assert out["created"] == 1_700_000_000
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "The capital of France is Paris."}
    assert choice["finish_reason"] == "stop"
    assert out["usage"] == USAGE


def test_assembles_reasoning() -> None:
    out = assemble(REASONING_STREAM)
    assert out is not None
    message = out["choices"][0]["message"]
    assert message["content"] == "Paris."
    assert message["reasoning"] == "Think about geography."
    assert message["reasoning_details"] == [
        {"type": "reasoning.text", "text": "Think about geography.", "index": 0}]
    assert out["usage"] == USAGE


def test_assembles_tool_calls_by_index() -> None:
    out = assemble(TOOL_STREAM)
    assert out is not None
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_a", "type": "function",
         "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": '{"tz":"CET"}'}},
    ]


@pytest.mark.parametrize("events", [
    CONTENT_STREAM[:4],  # cut before the finish chunk
    [*CONTENT_STREAM[:3], {"error": {"message": "upstream died", "code": 502}}, *CONTENT_STREAM[3:]],
    [*CONTENT_STREAM[:4], chunk({}, "error")],
    [],
], ids=["no-finish", "error-event", "finish-error", "empty"])
def test_incomplete_or_failed_streams_assemble_to_none(events: list[dict[str, Any]]) -> None:
    assert assemble(events) is None


def test_assembles_legacy_completions_stream() -> None:
    events = [{"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "text": t, "finish_reason": f, "logprobs": None}]}
              for t, f in (("Once ", None), ("upon", None), ("", "length"))]
    out = assemble(events)
    assert out is not None and out["object"] == "text_completion"
    assert out["choices"][0]["text"] == "Once upon" and out["choices"][0]["finish_reason"] == "length"
    replayed = assemble(parse_sse(render_sse(out, "r1", include_usage=False)))
    assert replayed is not None and replayed["choices"][0]["text"] == "Once upon"


def entry_of(response: dict[str, Any]) -> CachedEntry:
    return CachedEntry(id="e" * 32, response=response, usage=response.get("usage"), cost=None, stored_at=0.0,
                       scope="token:x", model=MODEL)


def test_render_json_gives_a_fresh_id_and_keeps_the_rest() -> None:
    original = assemble(REASONING_STREAM)
    assert original is not None
    body = orjson.loads(render_json(entry_of(original), "req123"))
    assert body["id"] == "gen-cache-req123"
    assert body["created"] > original["created"]
    assert {k: v for k, v in body.items() if k not in ("id", "created")} == \
           {k: v for k, v in original.items() if k not in ("id", "created")}


@pytest.mark.parametrize("stream", [CONTENT_STREAM, REASONING_STREAM, TOOL_STREAM],
                         ids=["content", "reasoning", "tools"])
def test_replayed_sse_assembles_back_to_the_same_answer(stream: list[dict[str, Any]]) -> None:
    original = assemble(stream)
    assert original is not None
    chunks = render_sse(entry_of(original), "req9", include_usage=True)
    events = parse_sse(chunks)
    assert all((e["id"], e["model"], e["provider"]) == ("gen-cache-req9", MODEL, "OpenAI") for e in events)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    last = events[-1]
    assert last["choices"] == [] and last["usage"] == USAGE  # the usage chunk, as OpenAI sends it
    replayed = assemble(events)
    assert replayed is not None
    assert replayed["choices"] == original["choices"]
    assert replayed["usage"] == original["usage"]


def test_sse_without_include_usage_has_no_usage_chunk() -> None:
    original = assemble(CONTENT_STREAM)
    assert original is not None
    events = parse_sse(render_sse(entry_of(original), "r", include_usage=False))
    assert all("usage" not in e for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_long_content_is_split_into_a_few_chunks() -> None:
    text = "word " * 200
    response = {"id": "x", "object": "chat.completion", "created": 1, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}]}
    events = parse_sse(render_sse(response, "r", include_usage=True))  # no usage stored: no usage chunk
    deltas = [e["choices"][0]["delta"] for e in events]
    pieces = [d["content"] for d in deltas if d.get("content")]
    assert 2 <= len(pieces) <= 5 and "".join(pieces) == text


def test_non_streamed_answer_with_tool_calls_replays_as_sse() -> None:
    response = {
        "id": "gen-1", "object": "chat.completion", "created": 1, "model": MODEL, "provider": "Azure",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "native_finish_reason": "tool_calls",
                     "message": {"role": "assistant", "content": None, "reasoning": "Need the weather.",
                                 "tool_calls": [{"id": "call_1", "type": "function", "function": {
                                     "name": "weather", "arguments": '{"city":"Oslo"}'}}]}}],
        "usage": USAGE,
    }
    replayed = assemble(parse_sse(render_sse(entry_of(response), "r", include_usage=True)))
    assert replayed is not None
    assert replayed["choices"][0]["message"] == response["choices"][0]["message"]
    assert replayed["provider"] == "Azure" and replayed["usage"] == USAGE
