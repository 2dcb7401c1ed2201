"""The canonical cache key: what must change it, what must not, and what is semantically cacheable."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cache.canonical import fingerprint

PATH = "/api/v1/chat/completions"


def base_body() -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0.2,
        "max_tokens": 100,
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}}}}}],
    }


def key(body: dict[str, Any], path: str = PATH) -> str:
    fp = fingerprint(path, body)
    assert fp is not None
    return fp.exact_key


def _reverse(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _reverse(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reverse(x) for x in obj]
    return obj


def test_key_ignores_key_order_at_every_level() -> None:
    body = base_body()
    assert list(_reverse(body)) != list(body)
    assert key(_reverse(body)) == key(body)


@pytest.mark.parametrize("field,value", [
    ("stream", True),
    ("stream_options", {"include_usage": True}),
    ("user", "someone@example.com"),
    ("metadata", {"run": "42"}),
    ("store", True),
    ("session_id", "s-1"),
    ("usage", {"include": True}),
    ("seed", None),  # null is the same as absent
])
def test_fields_that_cannot_change_the_answer_keep_the_key(field: str, value: Any) -> None:
    body = base_body()
    changed = {**body, field: value}
    assert key(changed) == key(body)


def test_equivalent_spellings_give_the_same_key() -> None:
    body = base_body()
    assert key({**body, "temperature": 1}) == key({**body, "temperature": 1.0})
    assert key({**body, "stop": "\n"}) == key({**body, "stop": ["\n"]})
    parts = copy.deepcopy(body)
    parts["messages"][1]["content"] = [{"type": "text", "text": "What is the capital of France?"}]
    assert key(parts) == key(body)
    hinted = copy.deepcopy(body)
    hinted["messages"][0]["content"] = [{"type": "text", "text": "You are terse.",
                                         "cache_control": {"type": "ephemeral"}}]
    assert key(hinted) == key(body)


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    body = base_body()
    target: Any = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


CHANGES = {
    "model": (["model"], "anthropic/claude-3.5-haiku"),
    "temperature": (["temperature"], 0.3),
    "top_p": (["top_p"], 0.9),
    "top_k": (["top_k"], 40),
    "max_tokens": (["max_tokens"], 101),
    "stop": (["stop"], ["END"]),
    "seed": (["seed"], 7),
    "n": (["n"], 2),
    "frequency_penalty": (["frequency_penalty"], 0.5),
    "presence_penalty": (["presence_penalty"], 0.5),
    "logprobs": (["logprobs"], True),
    "tool_choice": (["tool_choice"], "required"),
    "tools": (["tools", 0, "function", "name"], "lookup_city"),
    "parallel_tool_calls": (["parallel_tool_calls"], False),
    "response_format": (["response_format"], {"type": "json_object"}),
    "provider": (["provider"], {"order": ["openai"], "allow_fallbacks": False}),
    "models": (["models"], ["openai/gpt-4o-mini", "openai/gpt-4o"]),
    "route": (["route"], "fallback"),
    "transforms": (["transforms"], ["middle-out"]),
    "reasoning": (["reasoning"], {"effort": "high"}),
    "unknown_field": (["some_new_param"], 1),
    "question": (["messages", 1, "content"], "What is the capital of Germany?"),
    "system_prompt": (["messages", 0, "content"], "You are verbose."),
    "role": (["messages", 0, "role"], "developer"),
    "name": (["messages", 1, "name"], "alice"),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_every_parameter_that_can_change_the_answer_changes_the_key(name: str) -> None:
    path, value = CHANGES[name]
    assert key(_with(path, value)) != key(base_body())


def test_tool_calls_and_tool_results_are_part_of_the_key() -> None:
    body = base_body()
    call = {"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": '{"city":"Paris"}'}}
    body["messages"] += [{"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    other_args = copy.deepcopy(body)
    other_args["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"city":"Lyon"}'
    other_id = copy.deepcopy(body)
    other_id["messages"][3]["tool_call_id"] = "call_2"
    other_result = copy.deepcopy(body)
    other_result["messages"][3]["content"] = "rainy"
    keys = {key(body), key(other_args), key(other_id), key(other_result), key(base_body())}
    assert len(keys) == 5
    fp = fingerprint(PATH, body)
    assert fp is not None and fp.query_text is None  # the question is no longer the last message


def test_endpoint_is_part_of_the_key_and_prefixes_are_ignored() -> None:
    body = base_body()
    assert key(body, "/v1/chat/completions") == key(body, "/api/v1/chat/completions")
    assert key(body, "chat/completions") == key(body)
    completion = {"model": "openai/gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 5}
    assert key(completion, "/v1/completions") != key({**completion, "messages": [{"role": "user",
                                                                                  "content": "Say hi"}]})


@pytest.mark.parametrize("path,body", [
    ("/api/v1/models", {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    (PATH, {"model": "m"}),
    (PATH, {"model": "m", "messages": []}),
    (PATH, {"messages": [{"role": "user", "content": "x"}]}),
    ("/v1/completions", {"model": "m"}),
])
def test_requests_that_are_not_cacheable(path: str, body: dict[str, Any]) -> None:
    assert fingerprint(path, body) is None


def test_models_list_stands_in_for_a_missing_model() -> None:
    fp = fingerprint(PATH, {"models": ["a/b", "c/d"], "messages": [{"role": "user", "content": "x"}]})
    assert fp is not None and fp.model == "a/b"


def test_semantic_fields() -> None:
    fp = fingerprint(PATH, base_body())
    assert fp is not None
    assert fp.query_text == "What is the capital of France?"
    assert fp.semantic_ok and not fp.stream

    other_q = fingerprint(PATH, _with(["messages", 1, "content"], "Tell me the capital of France."))
    other_sys = fingerprint(PATH, _with(["messages", 0, "content"], "You are verbose."))
    other_temp = fingerprint(PATH, _with(["temperature"], 0.9))
    assert other_q and other_sys and other_temp
    # same context and parameters for a rephrased question: a semantic candidate
    assert (other_q.context_hash, other_q.params_hash) == (fp.context_hash, fp.params_hash)
    assert other_sys.context_hash != fp.context_hash and other_sys.params_hash == fp.params_hash
    assert other_temp.params_hash != fp.params_hash and other_temp.context_hash == fp.context_hash

    parts = _with(["messages", 1, "content"], [{"type": "text", "text": "Line one"},
                                               {"type": "text", "text": "line two"}])
    fp_parts = fingerprint(PATH, parts)
    assert fp_parts is not None and fp_parts.query_text == "Line one\nline two"

    image = _with(["messages", 1, "content"], [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    fp_image = fingerprint(PATH, image)
    assert fp_image is not None and fp_image.query_text is None  # exact only

    streamed = fingerprint(PATH, {**base_body(), "stream": True, "stream_options": {"include_usage": True}})
    assert streamed is not None and streamed.stream and streamed.include_usage
    assert streamed.exact_key == fp.exact_key


def test_completions_and_embeddings() -> None:
    fp = fingerprint("/v1/completions", {"model": "m", "prompt": "Once upon a time"})
    assert fp is not None and fp.path == "completions" and fp.query_text == "Once upon a time"
    batch = fingerprint("/v1/completions", {"model": "m", "prompt": ["a", "b"]})
    assert batch is not None and batch.query_text is None
    emb = fingerprint("/api/v1/embeddings", {"model": "e", "input": "hello"})
    assert emb is not None and emb.path == "embeddings" and emb.query_text is None
    other = fingerprint("/api/v1/embeddings", {"model": "e", "input": "hello!"})
    assert other is not None and emb.exact_key != other.exact_key
