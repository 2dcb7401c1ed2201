"""`orcache serve` as a user runs it: embedded Redis + Postgres, restarts, several workers, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.support import free_port, http

pytestmark = pytest.mark.slow

CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "DATABASE_URL", "OPENROUTER_API_KEY", "ORCACHE_ADMIN_TOKEN"}}
    env.update(ORCACHE_LOG_FORMAT="json", ORCACHE_EMBEDDINGS="off", PYTHONUNBUFFERED="1", **extra)
    return env


class Served:
    def __init__(self, data_dir: Path, upstream: str | None, *args: str, **env: str) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "proxy.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir),
               *args]
        if upstream:
            cmd += ["--upstream", upstream]
            env.setdefault("OPENROUTER_API_KEY", "sk-or-test-upstream")
        self.stderr_path = data_dir.parent / f"serve-{self.port}.err"
        self.proc = subprocess.Popen(cmd, env=_env(**env), stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "wb"), cwd=Path(__file__).parent.parent)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr
            try:
                if http("GET", self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("orcache serve did not come up:\n" + self.stderr)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def test_serve_with_embedded_servers_survives_restart(tmp_path, fake_upstream_url):
    data = tmp_path / "data"
    first = Served(data, fake_upstream_url)
    try:
        admin = (data / "admin-token").read_text().strip()
        assert admin in first.stderr, "a generated admin token is printed once at first start"
        h = {"Authorization": f"Bearer {admin}"}
        created = http("POST", first.url + "/admin/tokens", json={"name": "keeper"}, headers=h).json()
        ok = http("POST", first.url + "/v1/chat/completions", json=CHAT,
                        headers={"Authorization": f"Bearer {created['token']}"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["choices"][0]["message"]["content"] == "Echo from openai/gpt-4o-mini: Hi"
        assert http("GET", first.url + "/readyz").status_code == 200
    finally:
        assert first.stop() == 0
    assert not (data / "redis" / "redis.sock").exists(), "the embedded Redis was stopped"
    assert not (data / "pg" / "postmaster.pid").exists(), "the embedded Postgres was stopped"

    second = Served(data, fake_upstream_url)
    try:
        assert admin not in second.stderr, "the admin token is printed only once"
        again = http("POST", second.url + "/v1/chat/completions", json=CHAT,
                           headers={"Authorization": f"Bearer {created['token']}"})
        assert again.status_code == 200, "tokens survive a restart"
        listed = http("GET", second.url + "/admin/tokens", headers={"Authorization": f"Bearer {admin}"}).json()
        assert [t["name"] for t in listed["items"]] == ["keeper"]
        logs = http("GET", second.url + "/admin/logs", headers={"Authorization": f"Bearer {admin}"}).json()
        assert ok.headers["X-Request-Id"] in {row["request_id"] for row in logs["items"]}, "logs survive too"
    finally:
        assert second.stop() == 0


def test_serve_without_openrouter_key_explains_how_to_set_it(tmp_path):
    served = Served(tmp_path / "data", None, ORCACHE_ADMIN_TOKEN="sk-orc-admin-given-xxxxxxxxxxxx")
    try:
        text = served.stderr
        assert "OPENROUTER_API_KEY is not set" in text and "scripts.fake_openrouter" in text
        ready = http("GET", served.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["upstream"]["ok"] is False
        assert not (tmp_path / "data" / "admin-token").exists(), "a given admin token is not replaced"
    finally:
        assert served.stop() == 0


def test_revoke_reaches_every_worker_within_a_second(tmp_path, fake_upstream_url):
    served = Served(tmp_path / "data", fake_upstream_url, "--workers", "2",
                    ORCACHE_ADMIN_TOKEN="sk-orc-admin-given-xxxxxxxxxxxx")
    try:
        h = {"Authorization": "Bearer sk-orc-admin-given-xxxxxxxxxxxx"}
        token = http("POST", served.url + "/admin/tokens", json={"name": "w"}, headers=h).json()
        auth = {"Authorization": f"Bearer {token['token']}"}
        # new connections are spread over both workers by SO_REUSEPORT; warm each worker's token cache
        statuses = {http("POST", served.url + "/v1/chat/completions", json=CHAT, headers=auth).status_code
                    for _ in range(20)}
        assert statuses == {200}
        assert http("DELETE", served.url + f"/admin/tokens/{token['id']}", headers=h).status_code == 200
        time.sleep(1.0)
        after = [http("POST", served.url + "/v1/chat/completions", json=CHAT, headers=auth).status_code
                 for _ in range(20)]
        assert after == [401] * 20
    finally:
        assert served.stop() == 0


def test_token_cli_round_trip(tmp_path):
    data = tmp_path / "data"
    run = lambda *a: subprocess.run([sys.executable, "-m", "proxy.cli", *a, "--data-dir", str(data)],  # noqa: E731
                                    env=_env(), capture_output=True, text=True, timeout=60,
                                    cwd=Path(__file__).parent.parent)
    created = run("token", "create", "--name", "cli", "--cache-mode", "semantic", "--threshold", "0.7")
    assert created.returncode == 0, created.stderr
    token = orjson.loads(created.stdout)
    assert token["token"].startswith("sk-orc-") and "70%" in created.stderr
    shown = orjson.loads(run("token", "show", token["id"]).stdout)
    assert shown["similarity_threshold"] == 0.7 and "token" not in shown
    bad = run("token", "update", token["id"], "--threshold", "1.5")
    assert bad.returncode == 2 and "similarity_threshold" in bad.stderr
    updated = orjson.loads(run("token", "update", token["id"], "--cache-mode", "exact").stdout)
    assert updated["cache_mode"] == "exact"
    assert orjson.loads(run("token", "revoke", token["id"]).stdout)["revoked"] is True
    assert [t["id"] for t in orjson.loads(run("token", "list").stdout)] == [token["id"]]


def test_sigterm_under_load_loses_no_rows(tmp_path, fake_upstream_url, redis_url, database_url):
    import asyncio
    import threading

    import asyncpg

    env = dict(REDIS_URL=redis_url, DATABASE_URL=database_url, ORCACHE_KEY_PREFIX="sig" + os.urandom(3).hex(),
               ORCACHE_ADMIN_TOKEN="sk-orc-admin-given-xxxxxxxxxxxx")
    served = Served(tmp_path / "data", fake_upstream_url, **env)
    h = {"Authorization": "Bearer sk-orc-admin-given-xxxxxxxxxxxx"}
    token = http("POST", served.url + "/admin/tokens", json={"name": "load"}, headers=h).json()
    auth = {"Authorization": f"Bearer {token['token']}"}
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                resp = http("POST", served.url + "/v1/chat/completions", json=CHAT, headers=auth, timeout=10)
            except OSError:
                continue  # refused while the proxy is down
            if resp.status_code == 200:
                answered.append(resp.headers["X-Request-Id"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        assert served.stop() == 0, served.stderr
        time.sleep(0.3)
        served = Served(tmp_path / "data", fake_upstream_url, **env)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    try:
        assert len(answered) > 50

        async def stored() -> dict[str, int]:
            conn = await asyncpg.connect(database_url)
            try:
                rows = await conn.fetch("SELECT request_id, count(*) AS n FROM request_logs WHERE token_id = $1 "
                                        "GROUP BY request_id", token["id"])
                return {r["request_id"]: r["n"] for r in rows}
            finally:
                await conn.close()

        deadline = time.monotonic() + 20
        while True:
            counts = asyncio.run(stored())
            if set(answered) <= set(counts) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        missing = set(answered) - set(counts)
        assert not missing, f"{len(missing)} answered requests have no log row"
        assert set(counts.values()) == {1}, "no request is stored twice"
    finally:
        assert served.stop() == 0
