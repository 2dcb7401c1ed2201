"""The benchmark, in one command: ``python -m scripts.bench [--quick] [--out bench/results.json]``.

It starts everything itself on loopback, in a temporary directory, and stops it all at the end (also on
Ctrl-C or an error): the fake upstream (``scripts.fake_openrouter``), the bare aiohttp pass-through
(``scripts.bench_passthrough``, the floor for this stack), embedded Redis 8 + RediSearch and Postgres, and
several proxies (``orcache serve``) sharing them: the main one (one worker, logging on, embeddings off),
one with logging off, one with two workers, one with the canonical log line off (full mode), and one with
local embeddings for the semantic cache. Load comes from wrk (``--latency``; ``-t1 -c1`` for latency,
``-t1 -c10`` for throughput); time to first byte and semantic hits come from a small asyncio HTTP/1.1 client
(``scripts.bench_tools.RawClient``), one request at a time.

These machines are shared and noisy, so every figure is a ratio against a baseline measured in the same run,
runs are interleaved (direct, pass-through, proxy, ...) in rounds, and the median over rounds is kept. CPU
time per request of each process (from /proc) is recorded next to the latencies: it is what decides
throughput per core, and it is far less sensitive to other load than latency is.

Results go to ``bench/results.json`` (section ``proxy``) and ``bench/results.md``; ``scripts.bench_logs``
adds the ``logs`` section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripts.bench_tools import (
    RawClient,
    Target,
    WrkResult,
    lua_fixed,
    lua_many_tokens,
    lua_unique_bodies,
    median,
    merge_results,
    parse_wrk,
    summarise,
)

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = "127.0.0.1"
MODEL = "openai/gpt-4o-mini"
QUESTION = "What is the capital of France?"
UPSTREAM_KEY = "bench-upstream-key"
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]}, separators=(",", ":"))
# the same size class as BODY, a different question every request
UNIQUE_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Question %s: " + QUESTION}]},
                         separators=(",", ":"))
JSON_HEADERS = {"Content-Type": "application/json"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --- processes -------------------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    stdout: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        """The process and its children (the workers of a multi-worker proxy)."""
        out = [self.pid]
        try:
            out += [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except OSError:
            pass
        return out


class Processes:
    """Everything the benchmark started; ``stop()`` ends each by its pid (process group), newest first."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.cleanups: list[Callable[[], None]] = []

    def start(self, name: str, argv: Sequence[str], port: int, env: dict[str, str] | None = None) -> Proc:
        stdout = self.tmp / f"{name}.out"
        with open(stdout, "wb") as out, open(self.tmp / f"{name}.err", "wb") as err:
            popen = subprocess.Popen(list(argv), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        proc = Proc(name, popen, port, stdout)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait(5)
        self.procs.clear()
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - stop the rest anyway
                log(f"cleanup failed: {exc!r}")
        self.cleanups.clear()


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def wait_http(url: str, proc: Proc, timeout: float = 90.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            err = (proc.stdout.with_suffix(".err")).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{err}")
        try:
            if http("GET", url, timeout=2)[0] == status:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout:.0f}s")


def wait_log_line(proc: Proc, needle: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in proc.stdout.read_text(errors="replace"):
            return True
        time.sleep(0.25)
    return False


# --- CPU and memory accounting ------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    return total


def rss_mb(pid: int) -> float | None:
    try:
        m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def cpu_pressure() -> float | None:
    try:
        m = re.search(r"some avg10=([0-9.]+)", Path("/proc/pressure/cpu").read_text())
    except OSError:
        return None
    return float(m.group(1)) if m else None


def cpu_ticks() -> tuple[int, int]:
    """(all ticks, steal ticks) of the machine so far: steal is time the hypervisor gave our vCPUs to others."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def postgres_pids(pgdata: Path) -> list[int]:
    try:
        master = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        children = []
    return [master, *map(int, children)]


# --- wrk -------------------------------------------------------------------------------------------------

@dataclass
class Run:
    label: str
    port: int
    path: str
    lua: Path | Callable[[], Path]  # a callable writes a fresh script for every run (unique bodies)
    conns: int
    watch: dict[str, Callable[[], list[int]]] = field(default_factory=dict)  # name -> pids for CPU/request
    redis: Any = None  # a redis client: count commands per request

    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"


@dataclass
class Measured:
    wrk: WrkResult
    cpu_us: dict[str, float]
    redis_ops: float | None
    pressure: float | None
    upstream_calls: float | None  # upstream calls per request: ~1 for a miss, 0 for a hit


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        # wrk takes whole seconds; quick mode keeps 2 s at c=1 (enough samples for a p99) and 1 s at c=10
        self.duration = int(args.duration or (1 if self.quick else 5))
        self.duration_c1 = int(args.duration or (2 if self.quick else 5))
        self.rounds = args.rounds or (1 if self.quick else 3)
        self.samples: dict[str, list[Measured]] = {}
        self.pressures: list[float] = []
        self.steals: list[float] = []  # % of CPU time stolen by the hypervisor during each run
        self.upstream_count: Callable[[], int] | None = None  # the fake upstream's request counter

    def wrk(self, run: Run, duration: int | None = None) -> Measured:
        seconds = duration or (self.duration_c1 if run.conns == 1 else self.duration)
        lua = run.lua() if callable(run.lua) else run.lua
        argv = ["wrk", "-t1", f"-c{run.conns}", f"-d{seconds}s", "--latency", "--timeout", "5s", "-s", str(lua),
                run.url()]
        before = {name: cpu_seconds(pids()) for name, pids in run.watch.items()}
        ops_before = _redis_commands(run.redis)
        calls_before = self.upstream_count() if self.upstream_count else None
        pressure = cpu_pressure()
        ticks_before = cpu_ticks()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
        after = {name: cpu_seconds(pids()) for name, pids in run.watch.items()}
        ops_after = _redis_commands(run.redis)
        calls_after = self.upstream_count() if self.upstream_count else None
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed for {run.label}: {out.stderr or out.stdout}")
        result = parse_wrk(out.stdout)
        if result.errors:
            log(f"  {run.label}: {result.non_2xx} non-2xx, {result.socket_errors} socket errors")
        n = max(result.requests, 1)
        cpu = {name: round((after[name] - before[name]) * 1e6 / n, 1) for name in run.watch}
        ops = None if ops_before is None or ops_after is None else round((ops_after - ops_before) / n, 2)
        calls = None if calls_before is None or calls_after is None else round((calls_after - calls_before) / n, 3)
        if pressure is not None:
            self.pressures.append(pressure)
        ticks_after = cpu_ticks()
        if ticks_after[0] > ticks_before[0]:
            self.steals.append(100.0 * (ticks_after[1] - ticks_before[1]) / (ticks_after[0] - ticks_before[0]))
        m = Measured(result, cpu, ops, pressure, calls)
        self.samples.setdefault(run.label, []).append(m)
        log(f"  {run.label:28s} rps {result.rps:8.0f}  p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms  "
            f"cpu/req {cpu}  redis ops/req {ops}  upstream calls/req {calls}")
        return m

    def rounds_of(self, runs: Sequence[Run]) -> None:
        for i in range(self.rounds):
            log(f"round {i + 1}/{self.rounds}")
            for run in runs:
                self.wrk(run)

    def med(self, label: str, attr: str) -> float | None:
        got = self.samples.get(label)
        if not got:
            return None
        return median(getattr(m.wrk, attr) for m in got)

    def cpu(self, label: str, name: str) -> float | None:
        got = [m.cpu_us[name] for m in self.samples.get(label, []) if name in m.cpu_us]
        return min(got) if got else None  # least disturbed by other load

    def ops(self, label: str) -> float | None:
        got = [m.redis_ops for m in self.samples.get(label, []) if m.redis_ops is not None]
        return median(got) if got else None

    def calls(self, label: str) -> float | None:
        got = [m.upstream_calls for m in self.samples.get(label, []) if m.upstream_calls is not None]
        return median(got) if got else None

    def summary(self) -> dict[str, Any]:
        out = {}
        for label, got in self.samples.items():
            out[label] = {
                "rps": median(m.wrk.rps for m in got), "p50_ms": median(m.wrk.p50_ms for m in got),
                "p99_ms": median(m.wrk.p99_ms for m in got), "runs": [m.wrk.as_dict() for m in got],
                "cpu_us_per_request": {k: self.cpu(label, k) for k in got[0].cpu_us},
                "redis_ops_per_request": self.ops(label),
                "upstream_calls_per_request": self.calls(label),
            }
        return out


def _redis_commands(client: Any) -> int | None:
    if client is None:
        return None
    return int(client.info("stats")["total_commands_processed"]) - 1  # minus this INFO


# --- set-up ------------------------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def create_token(port: int, admin: str, name: str, mode: str) -> str:
    status, _, body = http("POST", f"http://{HOST}:{port}/admin/tokens",
                           json.dumps({"name": name, "cache_mode": mode}).encode(),
                           {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    if status != 201 and status != 200:
        raise RuntimeError(f"token creation failed: {status} {body[:300]!r}")
    return json.loads(body)["token"]


def seed_tokens(redis_client: Any, n: int, prefix: str = "orcache") -> list[str]:
    """``n`` tokens written with one pipeline, in exactly the layout ``proxy.tokens.TokenStore`` writes."""
    from proxy.rediskeys import token_key, tokens_index
    from proxy.tokens import DEFAULT_THRESHOLD, DEFAULT_TTL, SECRET_PREFIX, hash_secret

    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    secrets_out = []
    pipe = redis_client.pipeline(transaction=False)
    for i in range(n):
        tid = secrets.token_hex(8)
        secret = f"{SECRET_PREFIX}{tid}-{secrets.token_urlsafe(32)}"
        pipe.hset(token_key(prefix, tid), mapping={
            "name": f"bench-{i}", "cache_mode": "off", "similarity_threshold": repr(DEFAULT_THRESHOLD),
            "cache_ttl_seconds": str(DEFAULT_TTL), "cache_shared_scope": "", "upstream": "", "created_at": now,
            "revoked": "0", "secret_sha256": hash_secret(secret)})
        pipe.zadd(tokens_index(prefix), {tid: time.time()})
        secrets_out.append(secret)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return secrets_out


# paraphrases of QUESTION: the guard (cache.guard) must accept them, else they measure refusals, not hits
PARAPHRASE_HEADS = ["", "Please tell me: ", "I was wondering, ", "Can you tell me ", "Hey, ", "Tell me ",
                    "Do you know ", "I'd like to know ", "Please, ", "Hi! ", "Hello, ", "So, ", "Okay, ",
                    "Just wondering: ", "Question: ", "Could you tell me ", "Hi there, "]
PARAPHRASE_CORES = ["what is the capital of France?", "what's the capital of France?", "what's France's capital?",
                    "what is France's capital?", "what would the capital of France be?",
                    "the capital of France is what?", "what is the capital of france?",
                    "which is the capital of France?", "France's capital is what?",
                    "what is the capital of France, please?"]
PARAPHRASE_TAILS = ["", " Thanks!", " Thank you.", " Just curious.", " Thanks.", " Thank you!", " Please.", " :)",
                    " Many thanks."]


def paraphrases(n: int, seed: int = 7) -> list[str]:
    """Distinct paraphrases of QUESTION that the semantic guard accepts (so the exact cache never answers
    them, and a miss is the cache's doing, not the guard's)."""
    from cache.guard import guard_allows

    all_ = [h + (c[0].upper() + c[1:] if not h else c) + t
            for h in PARAPHRASE_HEADS for c in PARAPHRASE_CORES for t in PARAPHRASE_TAILS]
    all_ = [q for q in all_ if q != QUESTION and guard_allows(q, QUESTION)]
    random.Random(seed).shuffle(all_)
    return all_[:n]


# --- the scenarios ------------------------------------------------------------------------------------------

async def stream_ttfb(targets: dict[str, tuple[int, str, str]], n: int) -> dict[str, dict[str, Any]]:
    """Sequential streamed requests, interleaved across targets; time to first body byte and total."""
    body = json.dumps({"model": MODEL, "stream": True,
                       "messages": [{"role": "user", "content": QUESTION}]}).encode()
    clients = {name: RawClient(HOST, port) for name, (port, _, _) in targets.items()}
    got: dict[str, dict[str, list[float]]] = {name: {"ttfb": [], "first_data": [], "total": []} for name in targets}
    errors = dict.fromkeys(targets, 0)
    try:
        names = list(targets)
        for i in range(n + 10):
            # alternate the order, so no target always runs right after the same other one
            for name in names if i % 2 == 0 else names[::-1]:
                _, path, auth = targets[name]
                r = await clients[name].request("POST", path, body, {
                    "Authorization": f"Bearer {auth}", "Content-Type": "application/json",
                    "X-Fake-Chunk-Delay-Ms": "1"})
                if r.status != 200 or r.first_byte_ms is None or b"[DONE]" not in r.body:
                    errors[name] += 1
                    continue
                if i >= 10:  # warm-up: connections, caches
                    got[name]["ttfb"].append(r.first_byte_ms)
                    got[name]["first_data"].append(r.first_data_ms or r.first_byte_ms)
                    got[name]["total"].append(r.total_ms)
    finally:
        for c in clients.values():
            await c.close()
    return {name: {"ttfb": summarise(v["ttfb"]), "first_data": summarise(v["first_data"]),
                   "total": summarise(v["total"]), "errors": errors[name]} for name, v in got.items()}


async def semantic_hits(port: int, token: str, questions: Sequence[str]) -> dict[str, Any]:
    client = RawClient(HOST, port)
    hits: list[float] = []
    others: dict[str, int] = {}
    try:
        for q in questions:
            body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": q}]}).encode()
            r = await client.request("POST", "/v1/chat/completions", body,
                                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            state = r.headers.get("x-cache", "?") if r.status == 200 else f"HTTP {r.status}"
            if state == "HIT-SEMANTIC":
                hits.append(r.total_ms)
            else:
                others[state] = others.get(state, 0) + 1
    finally:
        await client.close()
    return {"hits": summarise(hits) if hits else None, "requests": len(questions), "hit_count": len(hits),
            "not_hits": others}


async def logged_durations(database_url: str, secret: str, cache_status: str) -> dict[str, float] | None:
    """p50/p99 of ``duration_ms`` in the log rows of one token's calls with this cache status: the time from
    the request's arrival in the proxy's middleware to its response handed back to aiohttp."""
    import asyncpg

    from proxy.tokens import parse_token_id

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50, "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 FROM request_logs "
            "WHERE token_id = $1 AND cache_status = $2", parse_token_id(secret), cache_status)
    finally:
        await conn.close()
    if not row or not row["n"]:
        return None
    return {"n": row["n"], "p50_ms": round(row["p50"], 3), "p99_ms": round(row["p99"], 3)}


def check_cache_header(port: int, token: str, body: str, want: str, *, within: float = 0.0) -> str:
    """Send ``body``; the answer must carry ``X-Cache: want`` (retried for ``within`` seconds: a store runs
    after the response, and a cache that timed out under load stays away from Redis for a second)."""
    deadline = time.monotonic() + within
    while True:
        status, headers, raw = http("POST", f"http://{HOST}:{port}/v1/chat/completions", body.encode(),
                                    {"Authorization": f"Bearer {token}", **JSON_HEADERS})
        got = headers.get("x-cache", "")
        if status == 200 and got == want:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected 200 with X-Cache {want}, got {status} {got!r}: {raw[:200]!r}")
        time.sleep(0.2)


def count_in_log(proc: Proc, needle: str) -> int:
    try:
        return proc.stdout.read_text(errors="replace").count(needle)
    except OSError:
        return 0


@contextmanager
def stop_on_signals() -> Iterator[None]:
    def raise_interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starts background jobs with it ignored, and Python keeps it that way
    old = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one round (under a minute)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 5; quick: 2 at c=1, 1 at c=10)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds for the core comparisons (default 3, quick 1)")
    parser.add_argument("--skip-semantic", action="store_true", help="do not load the embedding model")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) at the end")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="orcache-bench-"))
    procs = Processes(tmp)
    started = time.monotonic()
    try:
        with stop_on_signals():
            results = run(Bench(args), procs, tmp)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        procs.stop()
        if args.keep:
            log(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    merge_results(args.out, "proxy", results)
    log(f"wrote {args.out} and {args.out.with_suffix('.md')} in {results['meta']['seconds']} s")
    for t in results["targets"]:
        target = f" (target {t['op']} {t['target']:g})" if t["op"] else ""
        measured = "n/a" if t["measured"] is None else f"{t['measured']:.4g}"
        print(f"{t['verdict']:5s} {t['name']}: {measured} {t['unit']}{target}")
    return 0


def run(bench: Bench, procs: Processes, tmp: Path) -> dict[str, Any]:
    import redis as redis_sync

    from proxy.embedded import EmbeddedPostgres, EmbeddedRedis

    quick = bench.quick
    t_start = time.monotonic()
    admin = "bench-admin-" + secrets.token_hex(16)
    fake_port, bare_port = free_port(), free_port()
    fake = procs.start("fake", [PY, "-m", "scripts.fake_openrouter", "--host", HOST, "--port", str(fake_port)],
                       fake_port)
    bare = procs.start("bare", [PY, "-m", "scripts.bench_passthrough", "--host", HOST, "--port", str(bare_port),
                                "--upstream", f"http://{HOST}:{fake_port}"], bare_port)

    log("starting embedded Redis and Postgres")
    services = tmp / "services"
    redis_server = EmbeddedRedis((services / "redis").resolve()).start()
    procs.cleanups.append(redis_server.stop)
    pg = EmbeddedPostgres((services / "pg").resolve()).start()
    procs.cleanups.append(pg.stop)
    rds = redis_sync.Redis.from_url(redis_server.url)
    procs.cleanups.append(rds.close)
    upstream = f"http://{HOST}:{fake_port}/api/v1"

    def proxy(name: str, *, workers: int = 1, **env: str) -> Proc:
        port = free_port()
        data = tmp / name
        argv = [PY, "-m", "proxy.cli", "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data),
                "--upstream", upstream, "--workers", str(workers)]
        base_env = {"ORCACHE_ADMIN_TOKEN": admin, "OPENROUTER_API_KEY": UPSTREAM_KEY, "ORCACHE_EMBEDDINGS": "off",
                    "ORCACHE_LOG_FORMAT": "json", "ORCACHE_LOG_LEVEL": "info", "REDIS_URL": redis_server.url,
                    "DATABASE_URL": pg.url, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        return procs.start(name, argv, port, {**base_env, **env})

    semantic_proxy = None
    if not bench.args.skip_semantic:
        # the model loads for several seconds: start it first, measure it last
        semantic_proxy = proxy("proxy-semantic", ORCACHE_EMBEDDINGS="local")
    main_proxy = proxy("proxy")
    nolog = proxy("proxy-nolog", ORCACHE_LOGGING_ENABLED="false")
    # exact hits with the hot tier off: every hit is a Redis GET, as for entries not asked for a moment ago
    cold = proxy("proxy-nohot", ORCACHE_CACHE_HOT_SECONDS="0")
    two = proxy("proxy-2w", workers=2)
    quiet = None if quick else proxy("proxy-nolines", ORCACHE_LOG_LEVEL="warning")
    for p in (fake, bare):
        wait_http(f"http://{HOST}:{p.port}/api/v1/models", p)
    for p in (main_proxy, nolog, cold, two, quiet, semantic_proxy):
        if p is not None:
            wait_http(f"http://{HOST}:{p.port}/readyz", p)
    log(f"all up after {time.monotonic() - t_start:.1f}s")

    def upstream_count() -> int:
        return int(json.loads(http("GET", f"http://{HOST}:{fake_port}/_fake/stats")[2])["total"])

    bench.upstream_count = upstream_count
    off = create_token(main_proxy.port, admin, "bench-off", "off")
    exact = create_token(main_proxy.port, admin, "bench-exact", "exact")
    t0 = time.monotonic()
    many = seed_tokens(rds, 10_000)
    seed_seconds = time.monotonic() - t0
    tokens_file = write(tmp / "tokens.txt", "\n".join(many) + "\n")

    direct_lua = write(tmp / "direct.lua", lua_fixed("/api/v1/chat/completions", BODY,
                                                     {**JSON_HEADERS, "Authorization": f"Bearer {UPSTREAM_KEY}"}))
    off_lua = write(tmp / "off.lua", lua_fixed("/v1/chat/completions", BODY,
                                               {**JSON_HEADERS, "Authorization": f"Bearer {off}"}))
    exact_lua = write(tmp / "exact.lua", lua_fixed("/v1/chat/completions", BODY,
                                                   {**JSON_HEADERS, "Authorization": f"Bearer {exact}"}))
    def unique(name: str, secret: str) -> Callable[[], Path]:
        """A new run id for every wrk run: a repeated body would be an exact hit in the next round."""
        def make() -> Path:
            return write(tmp / f"{name}.lua", lua_unique_bodies(
                "/v1/chat/completions", UNIQUE_BODY, {**JSON_HEADERS, "Authorization": f"Bearer {secret}"},
                secrets.token_hex(6)))
        return make

    miss_lua = unique("miss-unique", exact)
    off_unique_lua = unique("off-unique", off)
    many_lua = write(tmp / "many.lua", lua_many_tokens("/v1/chat/completions", BODY, JSON_HEADERS, tokens_file))

    pgdata = (services / "pg").resolve()
    fake_w: dict[str, Callable[[], list[int]]] = {"fake": fake.pids}
    redis_pid = int((services / "redis" / "redis.pid").read_text().strip())

    def watch(p: Proc) -> dict[str, Callable[[], list[int]]]:
        return {"proxy": p.pids, "fake": fake.pids, "redis": lambda: [redis_pid],
                "postgres": lambda: postgres_pids(pgdata)}

    def proxy_run(label: str, p: Proc, lua: Path | Callable[[], Path], conns: int) -> Run:
        return Run(label, p.port, "/v1/chat/completions", lua, conns, watch(p), rds)

    direct1 = Run("direct c1", fake_port, "/api/v1/chat/completions", direct_lua, 1, fake_w)
    bare1 = Run("bare c1", bare_port, "/api/v1/chat/completions", direct_lua, 1, {"bare": bare.pids, **fake_w})
    proxy1 = proxy_run("proxy miss c1", main_proxy, off_lua, 1)
    direct10 = Run("direct c10", fake_port, "/api/v1/chat/completions", direct_lua, 10, fake_w)
    bare10 = Run("bare c10", bare_port, "/api/v1/chat/completions", direct_lua, 10, {"bare": bare.pids, **fake_w})
    proxy10 = proxy_run("proxy miss c10", main_proxy, off_lua, 10)
    nolog1 = proxy_run("proxy logging off c1", nolog, off_lua, 1)
    nolog10 = proxy_run("proxy logging off c10", nolog, off_lua, 10)
    two10 = proxy_run("proxy 2 workers c10", two, off_lua, 10)
    many1 = proxy_run("proxy 10k tokens c1", main_proxy, many_lua, 1)
    many10 = proxy_run("proxy 10k tokens c10", main_proxy, many_lua, 10)
    runs = [direct1, bare1, proxy1, nolog1, direct10, bare10, proxy10, nolog10, two10, many1, many10]
    if quiet is not None:
        runs += [proxy_run("proxy no log line c1", quiet, off_lua, 1), proxy_run("proxy no log line c10", quiet,
                                                                                  off_lua, 10)]
    log("warm-up")
    for r in (direct10, bare10, proxy10, nolog10, two10, many10):
        bench.wrk(r, duration=1)  # warm connections and caches
    bench.samples.clear()
    log("miss path: direct vs pass-through vs proxy (interleaved rounds)")
    bench.rounds_of(runs)

    log("cache: enabled miss vs off (unique bodies), exact hits")
    miss_runs = [proxy_run("cache off unique c1", main_proxy, off_unique_lua, 1),
                 proxy_run("cache miss c1", main_proxy, miss_lua, 1),
                 proxy_run("cache off unique c10", main_proxy, off_unique_lua, 10),
                 proxy_run("cache miss c10", main_proxy, miss_lua, 10)]
    bench.rounds_of(miss_runs)
    check_cache_header(main_proxy.port, exact, BODY, "MISS")
    check_cache_header(main_proxy.port, exact, BODY, "HIT-EXACT", within=5.0)
    exact_cold = create_token(cold.port, admin, "bench-exact-cold", "exact")
    cold_lua = write(tmp / "exact-cold.lua", lua_fixed("/v1/chat/completions", BODY,
                                                       {**JSON_HEADERS, "Authorization": f"Bearer {exact_cold}"}))
    check_cache_header(cold.port, exact_cold, BODY, "MISS")
    check_cache_header(cold.port, exact_cold, BODY, "HIT-EXACT", within=5.0)
    # a token of its own for the c=1 hits, so its log rows tell the time spent inside the proxy
    exact_c1 = create_token(main_proxy.port, admin, "bench-exact-c1", "exact")
    exact_c1_lua = write(tmp / "exact-c1.lua", lua_fixed("/v1/chat/completions", BODY,
                                                         {**JSON_HEADERS, "Authorization": f"Bearer {exact_c1}"}))
    check_cache_header(main_proxy.port, exact_c1, BODY, "MISS")
    check_cache_header(main_proxy.port, exact_c1, BODY, "HIT-EXACT", within=5.0)
    hit_runs = [proxy_run("exact hit c1", main_proxy, exact_c1_lua, 1),
                proxy_run("exact hit c10", main_proxy, exact_lua, 10),
                proxy_run("exact hit from Redis c1", cold, cold_lua, 1),
                proxy_run("exact hit from Redis c10", cold, cold_lua, 10)]
    bench.rounds_of(hit_runs)

    log("streaming: time to first byte, direct vs pass-through vs proxy")
    stream = asyncio.run(stream_ttfb({
        "direct": (fake_port, "/api/v1/chat/completions", UPSTREAM_KEY),
        "bare": (bare_port, "/api/v1/chat/completions", UPSTREAM_KEY),
        "proxy": (main_proxy.port, "/v1/chat/completions", off)}, 100 if quick else 500))
    for name, s in stream.items():
        log(f"  stream {name:7s} ttfb p50 {s['ttfb']['p50_ms']:.3f} ms  total p50 {s['total']['p50_ms']:.3f} ms")

    rss = rss_mb(main_proxy.pid)
    rss_2w = [rss_mb(pid) for pid in two.pids()[1:]]
    log(f"RSS of the main worker: {rss:.1f} MB; two-worker workers: {rss_2w}")

    semantic: dict[str, Any] | None = None
    if semantic_proxy is not None:
        log("semantic hits (local embeddings)")
        if not wait_log_line(semantic_proxy, '"embedder_ready"', 90):
            log("  the embedding model did not load; skipping")
        else:
            sem = create_token(semantic_proxy.port, admin, "bench-semantic", "semantic")
            check_cache_header(semantic_proxy.port, sem, BODY, "MISS")
            check_cache_header(semantic_proxy.port, sem, BODY, "HIT-EXACT", within=5.0)  # stored, with its vector
            semantic = asyncio.run(semantic_hits(semantic_proxy.port, sem, paraphrases(60 if quick else 300)))
            semantic["rss_mb_with_model"] = rss_mb(semantic_proxy.pid)
            log(f"  {semantic['hit_count']}/{semantic['requests']} hits; {semantic['hits']}; others "
                f"{semantic['not_hits']}")

    log("log ingest through the LogWriter")
    from scripts.bench_logs import measure_ingest

    ingest = asyncio.run(measure_ingest(pg.url, 10_000 if quick else 100_000, tmp / "ingest-spool"))
    log(f"  {ingest['rows_per_s']:.0f} rows/s ({ingest['rows']} rows in {ingest['seconds']:.2f}s)")

    hit_inside = asyncio.run(logged_durations(pg.url, exact_c1, "exact"))
    log(f"  exact hits at c=1, time inside the proxy: {hit_inside}")

    # the cache treats a Redis call over its budget (cache_timeout_ms) as an outage: count how often that hit
    notes = {"exact_hit_c1_inside_proxy_ms": hit_inside,
             "cache_unavailable_warnings": count_in_log(main_proxy, '"cache_unavailable"'),
             "semantic_cache_unavailable_warnings": count_in_log(semantic_proxy, '"cache_unavailable"')
             if semantic_proxy else None}
    return build_results(bench, stream, semantic, ingest, rss, rss_2w, seed_seconds, notes)


def build_results(bench: Bench, stream: dict[str, Any], semantic: dict[str, Any] | None, ingest: dict[str, Any],
                  rss: float | None, rss_2w: list[float | None], seed_seconds: float,
                  notes: dict[str, Any]) -> dict[str, Any]:
    med, cpu = bench.med, bench.cpu
    d1, b1, p1 = med("direct c1", "p50_ms"), med("bare c1", "p50_ms"), med("proxy miss c1", "p50_ms")
    bare_over = (b1 or 0) - (d1 or 0)
    proxy_over = (p1 or 0) - (d1 or 0)
    r_bare, r_proxy = med("bare c10", "rps"), med("proxy miss c10", "rps")
    targets: list[Target] = [
        Target("Miss overhead p50, c=1 (proxy ÷ bare pass-through, each minus direct)",
               round(proxy_over / bare_over, 3) if bare_over > 0 else None, "<=", 1.2, "×",
               f"direct {d1:.3f} ms, bare {b1:.3f} ms (+{bare_over:.3f}), proxy {p1:.3f} ms (+{proxy_over:.3f})"),
        Target("Miss throughput, c=10 (proxy ÷ bare pass-through)",
               round(r_proxy / r_bare, 3) if r_bare else None, ">=", 0.75, "×",
               f"direct {med('direct c10', 'rps'):.0f} rps, bare {r_bare:.0f}, proxy {r_proxy:.0f}"),
        Target("Miss p99, c=1", med("proxy miss c1", "p99_ms"), "", None, "ms",
               f"direct {med('direct c1', 'p99_ms'):.3f}, bare {med('bare c1', 'p99_ms'):.3f}"),
        Target("CPU per miss: proxy worker", cpu("proxy miss c10", "proxy"), "", None, "µs",
               f"bare pass-through {cpu('bare c10', 'bare')} µs, fake upstream {cpu('direct c10', 'fake')} µs, "
               f"Postgres {cpu('proxy miss c10', 'postgres')} µs, Redis {cpu('proxy miss c10', 'redis')} µs "
               "(min over rounds)"),
    ]
    h1, h10 = med("exact hit c1", "p50_ms"), med("exact hit c10", "rps")
    targets += [
        Target("Exact hit p50, c=1 (end to end, wrk)", h1, "<=", 0.3, "ms",
               f"p99 {med('exact hit c1', 'p99_ms'):.3f} ms; CPU {cpu('exact hit c10', 'proxy')} µs/hit; "
               f"upstream calls/request {bench.calls('exact hit c10')}"),
        Target("Exact hit throughput, c=10", h10, ">=", 6000.0, "rps",
               "a repeated request: served from the worker's hot tier"),
        Target("Exact hit p50, c=1, inside the proxy (log rows' duration_ms)",
               (notes.get("exact_hit_c1_inside_proxy_ms") or {}).get("p50_ms"), "", None, "ms",
               "middleware in to response out; the end-to-end figure above adds aiohttp's parsing and writing, "
               "the kernel and wrk"),
        Target("Exact hit from Redis (hot tier off): p50 c=1", med("exact hit from Redis c1", "p50_ms"), "", None,
               "ms", f"c=10 {med('exact hit from Redis c10', 'rps'):.0f} rps; CPU "
               f"{cpu('exact hit from Redis c10', 'proxy')} µs/hit; Redis ops/hit "
               f"{bench.ops('exact hit from Redis c10')}"),
    ]
    mo, mm = med("cache off unique c1", "p50_ms"), med("cache miss c1", "p50_ms")
    targets.append(Target("Cache enabled miss vs cache off, p50 c=1 (unique bodies)",
                          round((mm or 0) - (mo or 0), 3), "<=", 0.2, "ms",
                          f"off {mo:.3f} ms, exact-cache miss {mm:.3f} ms; c=10 rps off "
                          f"{med('cache off unique c10', 'rps'):.0f} vs miss {med('cache miss c10', 'rps'):.0f}; "
                          f"Redis ops/miss {bench.ops('cache miss c10')}; upstream calls/request "
                          f"{bench.calls('cache miss c1')}"))
    if semantic and semantic.get("hits"):
        targets.append(Target("Semantic hit p50 (incl. local embedding, c=1)", semantic["hits"]["p50_ms"], "<=", 12.0,
                              "ms", f"{semantic['hit_count']}/{semantic['requests']} unique paraphrases hit; "
                              f"p90 {semantic['hits']['p90_ms']:.2f} ms"))
    else:
        targets.append(Target("Semantic hit p50 (incl. local embedding, c=1)", None, "<=", 12.0, "ms", "not measured"))
    sd, sp, sb = stream["direct"], stream["proxy"], stream["bare"]
    targets += [
        Target("Streaming TTFB, proxy minus direct (p50)", round(sp["ttfb"]["p50_ms"] - sd["ttfb"]["p50_ms"], 3), "<=",
               0.5, "ms", f"direct {sd['ttfb']['p50_ms']:.3f} ms, bare {sb['ttfb']['p50_ms']:.3f} ms, proxy "
               f"{sp['ttfb']['p50_ms']:.3f} ms (first body byte, asyncio client, {sd['ttfb']['n']} sequential)"),
        Target("Streaming TTFB, proxy minus bare pass-through (p50)",
               round(sp["ttfb"]["p50_ms"] - sb["ttfb"]["p50_ms"], 3), "", None, "ms",
               "what the proxy adds to the first byte beyond what any aiohttp hop adds here"),
        Target("Streaming total, proxy minus direct (p50)", round(sp["total"]["p50_ms"] - sd["total"]["p50_ms"], 3),
               "", None, "ms", f"direct {sd['total']['p50_ms']:.3f} ms, bare {sb['total']['p50_ms']:.3f} ms, "
               f"proxy {sp['total']['p50_ms']:.3f} ms (1 ms between chunks)"),
    ]
    lo1, lf1 = med("proxy miss c1", "p99_ms"), med("proxy logging off c1", "p99_ms")
    lo10, lf10 = med("proxy miss c10", "p99_ms"), med("proxy logging off c10", "p99_ms")
    targets += [
        Target("Logging on vs off, p99 c=1", round(lo1 / lf1 - 1, 3) if lf1 else None, "<=", 0.10, "× − 1",
               f"on {lo1:.3f} ms, off {lf1:.3f} ms"),
        Target("Logging on vs off, p99 c=10", round(lo10 / lf10 - 1, 3) if lf10 else None, "<=", 0.10, "× − 1",
               f"on {lo10:.3f} ms, off {lf10:.3f} ms; rps on {med('proxy miss c10', 'rps'):.0f}, off "
               f"{med('proxy logging off c10', 'rps'):.0f}; CPU/req on {cpu('proxy miss c10', 'proxy')} µs, off "
               f"{cpu('proxy logging off c10', 'proxy')} µs"),
    ]
    if bench.samples.get("proxy no log line c10"):
        targets.append(Target("Canonical log line cost (CPU per request)",
                              round(cpu("proxy miss c10", "proxy") - cpu("proxy no log line c10", "proxy"), 1), "",
                              None, "µs", f"info {cpu('proxy miss c10', 'proxy')} µs vs warning level "
                              f"{cpu('proxy no log line c10', 'proxy')} µs per request"))
    m1, m10 = med("proxy 10k tokens c1", "p50_ms"), med("proxy 10k tokens c10", "rps")
    targets.append(Target("Auth with 10,000 tokens (requests spread over all): c=10 rps ÷ one token",
                          round(m10 / r_proxy, 3) if r_proxy else None, "", None, "×",
                          f"p50 c=1 {m1:.3f} ms vs {p1:.3f} ms; {m10:.0f} vs {r_proxy:.0f} rps; Redis ops/req "
                          f"{bench.ops('proxy 10k tokens c10')}; 10k tokens seeded in {seed_seconds:.2f}s"))
    targets.append(Target("RSS of one worker after the run (no model)", round(rss, 1) if rss else None, "<=", 150.0,
                          "MB", f"two-worker workers: {', '.join(f'{x:.0f}' for x in rss_2w if x)} MB"
                          + (f"; with MiniLM loaded {semantic['rss_mb_with_model']:.0f} MB"
                             if semantic and semantic.get("rss_mb_with_model") else "")))
    w2 = med("proxy 2 workers c10", "rps")
    targets.append(Target("2 workers ÷ 1 worker, c=10 rps", round(w2 / r_proxy, 3) if r_proxy else None, "", None,
                          "×", f"{w2:.0f} vs {r_proxy:.0f} rps (2 cores shared with wrk, the fake upstream, Redis, "
                          "Postgres)"))
    targets.append(Target("Log ingest through the LogWriter", round(ingest["rows_per_s"]), ">=", 50_000.0, "rows/s",
                          f"{ingest['rows']} CallRecords, batches of {ingest['batch_size']}"))
    targets.append(Target("Cache calls over their time budget (warnings, rate-limited to 1/s)",
                          float(notes["cache_unavailable_warnings"]), "", None, "",
                          "each one makes the cache skip Redis for 1 s (served as misses); semantic proxy: "
                          f"{notes['semantic_cache_unavailable_warnings']}"))
    proxy_cpu = cpu("proxy miss c10", "proxy") or 0
    hit_cpu = cpu("exact hit c10", "proxy") or 0
    scaling = {
        "proxy CPU per miss (µs)": proxy_cpu,
        "proxy CPU per exact hit (µs)": hit_cpu,
        "misses/s per fully used worker core": round(1e6 / proxy_cpu) if proxy_cpu else None,
        "exact hits/s per fully used worker core": round(1e6 / hit_cpu) if hit_cpu else None,
        "Redis commands per miss (cache off)": bench.ops("proxy miss c10"),
        "Redis commands per miss (exact cache on)": bench.ops("cache miss c10"),
        "Redis commands per exact hit": bench.ops("exact hit c10"),
        "Redis commands per request, 10k tokens (token cache cold)": bench.ops("proxy 10k tokens c10"),
        "Redis CPU per exact-cache miss (µs)": cpu("cache miss c10", "redis"),
        "Postgres CPU per logged request (µs)": cpu("proxy miss c10", "postgres"),
        "Log writer ingest (rows/s, one process)": round(ingest["rows_per_s"]),
    }
    return {
        "meta": {"started": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
                 "cpus": os.cpu_count(), "mode": "quick" if bench.quick else "full", "duration_s": bench.duration,
                 "rounds": bench.rounds, "load_generator": "wrk -t1 (c=1 and c=10), asyncio client for streams",
                 "cpu_pressure": (f"some avg10 median {median(bench.pressures):.0f}%" if bench.pressures else "n/a"),
                 "cpu_steal": (f"median {median(bench.steals):.1f}%, max {max(bench.steals):.1f}% of CPU time per run"
                               if bench.steals else "n/a"),
                 "python": platform.python_version()},
        "targets": [t.as_dict() for t in targets],
        "scaling": scaling,
        "runs": bench.summary(),
        "streaming": stream,
        "semantic": semantic,
        "ingest": ingest,
        "notes": notes,
    }


if __name__ == "__main__":
    sys.exit(main())
