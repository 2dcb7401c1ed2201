"""Turn a streamed answer (SSE chunk objects) back into the non-streamed response object.

The cache stores this object whether the answer was streamed or not, so a hit can be served as JSON or
replayed as SSE either way. An incomplete or failed stream assembles to None and is never stored.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StreamAssembler"]

_META = ("id", "model", "provider", "created", "system_fingerprint", "service_tier")
_TEXT_FIELDS = ("text", "summary", "data", "signature")


class _Choice:
    __slots__ = (
        "content",
        "details",
        "error",
        "extra",
        "finish_reason",
        "logprobs",
        "native_finish_reason",
        "reasoning",
        "refusal",
        "role",
        "text_mode",
        "tools",
    )

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.details: list[dict[str, Any]] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.native_finish_reason: str | None = None
        self.logprobs: list[Any] | None = None
        self.text_mode = False
        self.error = False
        self.extra: dict[str, Any] = {}


class StreamAssembler:
    """Feed every SSE event's JSON object in order; ``result()`` gives the complete response or None."""

    __slots__ = ("_choices", "_failed", "_meta", "_usage")

    def __init__(self) -> None:
        self._meta: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: dict[str, Any] | None = None
        self._failed = False

    def feed(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict):
            return
        if event.get("error") is not None:
            self._failed = True
            return
        for name in _META:
            value = event.get(name)
            if value is not None and name not in self._meta:
                self._meta[name] = value
        usage = event.get("usage")
        if isinstance(usage, dict) and usage:
            self._usage = usage
        for ch in event.get("choices") or ():
            if isinstance(ch, dict):
                self._feed_choice(ch)

    def _feed_choice(self, ch: dict[str, Any]) -> None:
        index = ch.get("index", 0)
        c = self._choices.get(index)
        if c is None:
            c = self._choices[index] = _Choice()
        if ch.get("error") is not None:
            c.error = True
        if ch.get("finish_reason") is not None:
            c.finish_reason = ch["finish_reason"]
        if ch.get("native_finish_reason") is not None:
            c.native_finish_reason = ch["native_finish_reason"]
        logprobs = ch.get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            c.logprobs = (c.logprobs or []) + logprobs["content"]
        if "delta" not in ch and isinstance(ch.get("text"), str):  # legacy /completions stream
            c.text_mode = True
            c.content.append(ch["text"])
            return
        delta = ch.get("delta")
        if not isinstance(delta, dict):
            return
        for name, value in delta.items():
            if value is None:
                continue
            if name == "role":
                c.role = value
            elif name == "content" and isinstance(value, str):
                c.content.append(value)
            elif name == "reasoning" and isinstance(value, str):
                c.reasoning.append(value)
            elif name == "refusal" and isinstance(value, str):
                c.refusal.append(value)
            elif name == "reasoning_details" and isinstance(value, list):
                _merge_details(c.details, value)
            elif name == "tool_calls" and isinstance(value, list):
                _merge_tools(c.tools, value)
            elif name not in ("reasoning_content",):
                c.extra.setdefault(name, value)

    def result(self) -> dict[str, Any] | None:
        """The assembled response, or None if the stream failed or did not finish."""
        if self._failed or not self._choices:
            return None
        choices = []
        text_mode = False
        for index in sorted(self._choices):
            c = self._choices[index]
            if c.error or c.finish_reason is None or c.finish_reason == "error":
                return None
            text_mode = text_mode or c.text_mode
            choices.append(_choice_out(index, c))
        out: dict[str, Any] = {
            "id": self._meta.get("id"),
            "object": "text_completion" if text_mode else "chat.completion",
            "created": self._meta.get("created"),
            "model": self._meta.get("model"),
        }
        for name in ("provider", "system_fingerprint", "service_tier"):
            if name in self._meta:
                out[name] = self._meta[name]
        out["choices"] = choices
        if self._usage is not None:
            out["usage"] = self._usage
        return out


def _choice_out(index: int, c: _Choice) -> dict[str, Any]:
    logprobs = {"content": c.logprobs} if c.logprobs is not None else None
    if c.text_mode:
        return {"index": index, "text": "".join(c.content), "finish_reason": c.finish_reason,
                "logprobs": logprobs}
    tools = [c.tools[i] for i in sorted(c.tools)]
    text = "".join(c.content)
    message: dict[str, Any] = {"role": c.role or "assistant", "content": text if text or not tools else None}
    if c.reasoning:
        message["reasoning"] = "".join(c.reasoning)
    if c.details:
        message["reasoning_details"] = c.details
    if c.refusal:
        message["refusal"] = "".join(c.refusal)
    if tools:
        message["tool_calls"] = tools
    for name, value in c.extra.items():
        message.setdefault(name, value)
    choice: dict[str, Any] = {"index": index, "message": message, "finish_reason": c.finish_reason}
    if c.native_finish_reason is not None:
        choice["native_finish_reason"] = c.native_finish_reason
    choice["logprobs"] = logprobs
    return choice


def _merge_tools(tools: dict[int, dict[str, Any]], deltas: list[Any]) -> None:
    for d in deltas:
        if not isinstance(d, dict):
            continue
        index = d.get("index")
        if not isinstance(index, int):
            # some providers leave the index out: a new id starts a new call, otherwise continue the last
            by_id = {t["id"]: i for i, t in tools.items() if t["id"]}
            if d.get("id") in by_id:
                index = by_id[d["id"]]
            elif d.get("id") or not tools:
                index = max(tools, default=-1) + 1
            else:
                index = max(tools)
        call = tools.get(index)
        if call is None:
            call = tools[index] = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        if d.get("id"):
            call["id"] = call["id"] or d["id"]
        if d.get("type"):
            call["type"] = d["type"]
        fn = d.get("function")
        if isinstance(fn, dict):
            if fn.get("name") and not call["function"]["name"]:
                call["function"]["name"] = fn["name"]
            if isinstance(fn.get("arguments"), str):
                call["function"]["arguments"] += fn["arguments"]


def _merge_details(details: list[dict[str, Any]], deltas: list[Any]) -> None:
    """reasoning_details arrive as pieces carrying an index: concatenate the text of the same index."""
    for d in deltas:
        if not isinstance(d, dict):
            continue
        index = d.get("index")
        same = next((x for x in details if index is not None and x.get("index") == index
                     and x.get("type") == d.get("type")), None)
        if same is None:
            details.append(dict(d))
            continue
        for name, value in d.items():
            if name in _TEXT_FIELDS and isinstance(value, str) and isinstance(same.get(name), str):
                same[name] += value
            elif value is not None and same.get(name) is None:
                same[name] = value
