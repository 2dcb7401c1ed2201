"""The pure parts of the benchmark harness: wrk scripts and output, a tiny HTTP/1.1 client, statistics, and
the Markdown report. ``scripts.bench`` and ``scripts.bench_logs`` drive them; ``tests/test_bench.py`` checks
them without starting anything.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "HttpResult",
    "RawClient",
    "Target",
    "WrkResult",
    "evaluate",
    "lua_fixed",
    "lua_many_tokens",
    "lua_unique_bodies",
    "parse_duration_ms",
    "parse_wrk",
    "percentile",
    "render_markdown",
    "summarise",
]

# --- wrk output ------------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_duration_ms(text: str) -> float:
    """wrk's '291.00us', '1.14ms', '2.01s', '1.00m' -> milliseconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", text)
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


@dataclass(slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    avg_ms: float
    max_ms: float
    non_2xx: int = 0
    socket_errors: int = 0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def parse_wrk(output: str) -> WrkResult:
    """The figures of one ``wrk --latency`` run (raises ValueError when the output is not one)."""
    dist: dict[str, float] = {}
    for pct, value in re.findall(r"^\s*(50|75|90|99)%\s+(\S+)\s*$", output, re.M):
        dist[pct] = parse_duration_ms(value)
    if len(dist) != 4:
        raise ValueError("no latency distribution in the wrk output (run it with --latency)")
    lat = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", output, re.M)
    done = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m)", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    if lat is None or done is None or rps is None:
        raise ValueError("incomplete wrk output")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests=int(done.group(1)),
        seconds=parse_duration_ms(done.group(2) + done.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=dist["50"], p75_ms=dist["75"], p90_ms=dist["90"], p99_ms=dist["99"],
        avg_ms=parse_duration_ms(lat.group(1)), max_ms=parse_duration_ms(lat.group(3)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )


# --- wrk Lua scripts -------------------------------------------------------------------------------------

def _lua_str(text: str) -> str:
    """A Lua string literal (long brackets need no escaping; pick a level the text does not contain)."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def _lua_headers(headers: Mapping[str, str]) -> str:
    # spaces inside the brackets: "[[[" would open a long string
    return "{" + ", ".join(f"[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in headers.items()) + "}"


def lua_fixed(path: str, body: str, headers: Mapping[str, str]) -> str:
    """Every request the same: wrk formats it once (the cheapest load generator path)."""
    lines = ['wrk.method = "POST"', f"wrk.path = {_lua_str(path)}", f"wrk.body = {_lua_str(body)}"]
    lines += [f"wrk.headers[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def lua_unique_bodies(path: str, body_template: str, headers: Mapping[str, str], run_id: str) -> str:
    """A different body for every request: ``%s`` in the template becomes run id, thread and counter, so
    no two requests (in this run or an earlier one) share a cache key."""
    if body_template.count("%s") != 1:
        raise ValueError("the body template needs exactly one %s")
    return f"""
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
local path = {_lua_str(path)}
local headers = {_lua_headers(headers)}
local template = {_lua_str(body_template)}
function request()
  counter = counter + 1
  local body = string.format(template, {_lua_str(run_id)} .. "-" .. tostring(tid) .. "-" .. tostring(counter))
  return wrk.format("POST", path, headers, body)
end
"""


def lua_many_tokens(path: str, body: str, headers: Mapping[str, str], tokens_file: Path) -> str:
    """The same body, the ``Authorization`` of each request taken in turn from a file of secrets (one a
    line); requests are pre-formatted in ``init`` so the load generator does no work per request."""
    return f"""
local reqs = {{}}
local n = 0
local i = 0
function init(args)
  local headers = {_lua_headers(headers)}
  for secret in io.lines({_lua_str(str(tokens_file))}) do
    headers["Authorization"] = "Bearer " .. secret
    n = n + 1
    reqs[n] = wrk.format("POST", {_lua_str(path)}, headers, {_lua_str(body)})
  end
  i = math.random(n)
end
function request()
  i = i % n + 1
  return reqs[i]
end
"""


# --- a tiny HTTP/1.1 client for time-to-first-byte ----------------------------------------------------------

@dataclass(slots=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes
    headers_ms: float  # request written -> end of the response headers
    first_byte_ms: float | None  # -> first byte of the body
    first_data_ms: float | None  # -> first SSE "data:" event
    total_ms: float  # -> last byte


class RawClient:
    """One keep-alive connection, requests one at a time, timings from the moment the request is written.

    Far lighter than a full client library, so what it measures is the server, and it sees each chunk of a
    chunked (SSE) body as it arrives.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: Mapping[str, str] | None = None) -> HttpResult:
        async with asyncio.timeout(self.timeout):
            return await self._request(method, path, body, headers or {})

    async def _request(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> HttpResult:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        start = time.perf_counter()
        raw = await reader.readuntil(b"\r\n\r\n")
        headers_ms = (time.perf_counter() - start) * 1000.0
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        got: dict[str, str] = {}
        for line in lines:
            if line:
                k, _, v = line.partition(":")
                got[k.strip().lower()] = v.strip()
        first_byte = first_data = None
        parts: list[bytes] = []

        def seen(data: bytes) -> None:
            nonlocal first_byte, first_data
            now = (time.perf_counter() - start) * 1000.0
            if first_byte is None and data:
                first_byte = now
            if first_data is None and b"data:" in data:
                first_data = now
            parts.append(data)

        if got.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers from our servers
                    break
                seen(await reader.readexactly(size))
                await reader.readexactly(2)
        else:
            length = int(got.get("content-length", "0"))
            if length:
                seen(await reader.readexactly(length))
        total_ms = (time.perf_counter() - start) * 1000.0
        if got.get("connection", "").lower() == "close":
            await self.close()
        return HttpResult(status, got, b"".join(parts), headers_ms, first_byte, first_data, total_ms)


# --- statistics ------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct 0-100) of a non-empty sequence."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarise(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(percentile(values, 50), 4), "p90_ms": round(percentile(values, 90), 4),
            "p99_ms": round(percentile(values, 99), 4), "mean_ms": round(sum(values) / len(values), 4)}


def median(values: Iterable[float]) -> float:
    return percentile(list(values), 50)


# --- targets and the report ------------------------------------------------------------------------------

@dataclass(slots=True)
class Target:
    """One line of the report: a measured figure against its target (``op`` is '<=' or '>=', or '' for
    figures reported without a target)."""

    name: str
    measured: float | None
    op: str = ""
    target: float | None = None
    unit: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "n/a"
        if not self.op or self.target is None:
            return "info"
        ok = self.measured <= self.target if self.op == "<=" else self.measured >= self.target
        return "PASS" if ok else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "op": self.op, "target": self.target,
                "unit": self.unit, "verdict": self.verdict, "detail": self.detail, **self.extra}


def evaluate(targets: Iterable[Target]) -> dict[str, int]:
    counts = {"PASS": 0, "MISS": 0, "info": 0, "n/a": 0}
    for t in targets:
        counts[t.verdict] += 1
    return counts


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 1000:
            text = f"{value:,.0f}"
        elif abs(value) >= 100:
            text = f"{value:.0f}"
        elif abs(value) >= 10:
            text = f"{value:.1f}"
        elif abs(value) >= 1:
            text = f"{value:.2f}"
        else:
            text = f"{value:.3f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip() if unit else text


def render_markdown(results: Mapping[str, Any]) -> str:
    """The README's table: every scenario with its target, the measured figure and PASS/MISS."""
    out = ["# orcache benchmark", ""]
    for section, title in (("proxy", "Proxy"), ("logs", "Log pipeline")):
        data = results.get(section) or {}
        rows = data.get("targets") or []
        if not rows:
            continue
        out += [f"## {title}", ""]
        meta = data.get("meta") or {}
        if meta:
            out += [", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
        out += ["| Scenario | Target | Measured | Result | Detail |", "|---|---|---|---|---|"]
        for row in rows:
            target = f"{row['op']} {_fmt(row['target'], row['unit'])}" if row.get("op") else "–"
            out.append(f"| {row['name']} | {target} | {_fmt(row['measured'], row['unit'])} | {row['verdict']} "
                       f"| {row.get('detail', '')} |")
        out.append("")
        scaling = data.get("scaling")
        if scaling:
            out += ["### Scaling figures", "", "| Figure | Value |", "|---|---|"]
            out += [f"| {k} | {_fmt(v)} |" for k, v in scaling.items()]
            out.append("")
    return "\n".join(out)


def merge_results(path: Path, section: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Read ``path`` (if any), replace one section, write it back with the Markdown next to it."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        results = {}
    results[section] = data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(render_markdown(results))
    return results
