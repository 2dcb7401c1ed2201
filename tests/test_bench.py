"""Smoke tests of the benchmark harness's pure parts: wrk output and scripts, the HTTP client's chunked
decoding, statistics, the report. Nothing here starts a server or times anything."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import fakeredis
import pytest

from proxy.tokens import Token, parse_token_id
from scripts.bench import paraphrases, seed_tokens
from scripts.bench_tools import (
    RawClient,
    Target,
    lua_fixed,
    lua_many_tokens,
    lua_unique_bodies,
    merge_results,
    parse_duration_ms,
    parse_wrk,
    percentile,
    render_markdown,
    summarise,
)

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:9300/v1/chat/completions
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.73ms    4.83ms  55.31ms   96.63%
    Req/Sec     1.64k   314.55     2.23k    73.33%
  Latency Distribution
     50%  291.00us
     75%    1.14ms
     90%    2.01s
     99%    1.00m
  9808 requests in 5.01s, 9.86MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   1957.49
Transfer/sec:      3.27MB
"""


def test_parse_wrk_reads_the_latency_distribution_and_errors() -> None:
    r = parse_wrk(WRK_OUTPUT)
    assert r.requests == 9808 and r.seconds == pytest.approx(5.01)
    assert r.rps == pytest.approx(1957.49)
    assert (r.p50_ms, r.p75_ms, r.p90_ms, r.p99_ms) == pytest.approx((0.291, 1.14, 2010.0, 60_000.0))
    assert r.avg_ms == pytest.approx(3.73) and r.max_ms == pytest.approx(55.31)
    assert (r.non_2xx, r.socket_errors, r.errors) == (12, 3, 15)


def test_parse_wrk_without_latency_flag_is_an_error() -> None:
    without = "\n".join(line for line in WRK_OUTPUT.splitlines() if "%" not in line or "Stdev" in line)
    with pytest.raises(ValueError, match="--latency"):
        parse_wrk(without)


@pytest.mark.parametrize(("text", "ms"), [("250us", 0.25), ("1.5ms", 1.5), ("2s", 2000.0), ("1.00m", 60_000.0)])
def test_parse_duration(text: str, ms: float) -> None:
    assert parse_duration_ms(text) == pytest.approx(ms)


def test_lua_scripts_quote_bodies_and_headers_safely() -> None:
    body = '{"content": "a ]] tricky [[ body"}'
    fixed = lua_fixed("/v1/chat/completions", body, {"Authorization": "Bearer sk-orc-x"})
    assert f"wrk.body = [=[{body}]=]" in fixed
    assert "wrk.headers[ [[Authorization]] ] = [[Bearer sk-orc-x]]" in fixed  # "[[[" would open a string
    unique = lua_unique_bodies("/v1/chat/completions", '{"q": "%s"}', {"A": "b"}, "run1")
    assert "string.format(template, [[run1]]" in unique and 'thread:set("tid"' in unique
    with pytest.raises(ValueError):
        lua_unique_bodies("/p", "no placeholder", {}, "r")
    many = lua_many_tokens("/v1/chat/completions", "{}", {"Content-Type": "application/json"}, Path("/tmp/t.txt"))
    assert "io.lines([[/tmp/t.txt]])" in many and '"Bearer " .. secret' in many


class _Writer:
    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += data

    def close(self) -> None:
        pass


def _client_with(response: bytes) -> tuple[RawClient, _Writer]:
    client = RawClient("127.0.0.1", 1)
    reader = asyncio.StreamReader()
    reader.feed_data(response)
    writer = _Writer()
    client._reader, client._writer = reader, writer  # type: ignore[assignment]
    return client, writer


async def test_raw_client_decodes_chunked_sse_and_marks_the_first_data_event() -> None:
    chunks = [b": OPENROUTER PROCESSING\n\n", b'data: {"x": 1}\n\n', b"data: [DONE]\n\n"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    client, writer = _client_with(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                  b"Transfer-Encoding: chunked\r\nX-Cache: MISS\r\n\r\n" + body)
    r = await client.request("POST", "/v1/chat/completions", b"{}", {"Authorization": "Bearer k"})
    assert r.status == 200 and r.headers["x-cache"] == "MISS"
    assert r.body == b"".join(chunks)
    assert r.first_byte_ms is not None and r.first_data_ms is not None and r.first_data_ms >= r.first_byte_ms
    assert writer.sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and b"Content-Length: 2" in writer.sent


async def test_raw_client_reads_a_content_length_body() -> None:
    client, _ = _client_with(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!")
    r = await client.request("GET", "/x")
    assert (r.status, r.body, r.first_data_ms) == (404, b"nope!", None)


def test_percentiles_and_summary() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    s = summarise([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["p50_ms"] == 2.0 and s["mean_ms"] == 2.5
    with pytest.raises(ValueError):
        percentile([], 50)


def test_target_verdicts() -> None:
    assert Target("a", 0.2, "<=", 0.3).verdict == "PASS"
    assert Target("a", 0.4, "<=", 0.3).verdict == "MISS"
    assert Target("a", 7000.0, ">=", 6000.0).verdict == "PASS"
    assert Target("a", 1.0).verdict == "info"
    assert Target("a", None, "<=", 1.0).verdict == "n/a"


def test_report_lists_every_scenario_with_its_verdict(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "results.json"
    proxy = {"meta": {"mode": "quick"}, "targets": [Target("Exact hit p50", 0.25, "<=", 0.3, "ms").as_dict()],
             "scaling": {"misses/s per core": 1400}}
    merge_results(out, "proxy", proxy)
    merge_results(out, "logs", {"targets": [Target("Ingest", 40_000.0, ">=", 50_000.0, "rows/s").as_dict()]})
    data = json.loads(out.read_text())
    assert set(data) == {"proxy", "logs"}, "each script replaces only its own section"
    md = out.with_suffix(".md").read_text()
    assert md == render_markdown(data)
    assert "| Exact hit p50 | <= 0.300 ms | 0.250 ms | PASS |" in md
    assert "| Ingest | >= 50,000 rows/s | 40,000 rows/s | MISS |" in md
    assert "| misses/s per core | 1,400 |" in md


def test_paraphrases_are_distinct_and_never_the_primed_question() -> None:
    qs = paraphrases(300)
    assert len(qs) == len(set(qs)) == 300
    assert "What is the capital of France?" not in qs


def test_seeded_tokens_use_the_token_store_layout() -> None:
    r = fakeredis.FakeRedis()
    secrets_ = seed_tokens(r, 3, prefix="t")
    assert r.zcard("t:tokens") == 3
    for secret in secrets_:
        tid = parse_token_id(secret)
        assert tid is not None
        raw = r.hgetall(f"t:token:{tid}")
        token = Token.from_hash(tid, {k.decode(): v.decode() for k, v in raw.items()})
        assert token.matches(secret) and not token.revoked and token.cache_mode == "off"
