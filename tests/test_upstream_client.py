"""The relay's HTTP/1.1 client against real sockets: scripted servers that answer byte by byte as real
upstreams do (and as broken ones do), plain TCP and TLS."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.egress import EgressProxy
from proxy.upstream_client import (
    HIGH_WATER,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from tests.support import Handler, Scripted, answer, serving, start


@pytest.fixture
async def client():
    c = UpstreamClient(connect_timeout=2.0, read_timeout=2.0)
    yield c
    await c.close()


async def test_keep_alive_reuses_one_connection_and_sends_a_clean_head(client):
    server = await start(serving(lambda n: answer(b'{"n":%d}' % n)))
    try:
        for n in (1, 2, 3):
            resp = await client.request("POST", server.url, "chat/completions?x=a%20b",
                                        [("Content-Type", "application/json"), ("X-Title", "t")], b'{"q":1}')
            async with resp:
                assert resp.status == 200
                assert await resp.read() == b'{"n":%d}' % n
        assert server.connections == 1
        head, body = server.requests[0]
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /api/v1/chat/completions?x=a%20b HTTP/1.1"
        assert lines[1] == f"Host: {server.url.split('/')[2]}"
        assert "Content-Length: 7" in lines and "Accept-Encoding: identity" in lines
        assert lines.index("Content-Type: application/json") < lines.index("X-Title: t")  # order kept
        assert body == b'{"q":1}'
        assert client.idle_connections() == 1
    finally:
        await server.__aexit__()


async def test_chunked_body_arrives_piece_by_piece(client):
    release_second = asyncio.Event()

    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            await server.next_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"7\r\ndata: 1\r\n")
            await writer.drain()
            await release_second.wait()
            writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
            await writer.drain()
            await server.next_request(reader)
        return handler

    server = await start(make)
    try:
        resp = await client.request("POST", server.url, "chat/completions", [], b"{}")
        got = []
        async with resp:
            async for chunk in resp.iter_chunks():
                got.append(chunk)
                release_second.set()  # the second piece is only sent once the first was handed over
        assert got == [b"data: 1", b"data: 2"]
        assert resp.complete and client.idle_connections() == 1
    finally:
        await server.__aexit__()


async def test_close_delimited_body_and_connection_close_are_not_reused(client):
    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            await server.next_request(reader)
            if len(server.requests) % 2:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b'{"until":"close"}')
            else:
                writer.write(answer(b'{"n":2}', extra="Connection: close\r\n"))
            await writer.drain()
        return handler

    server = await start(make)
    try:
        async with await client.request("GET", server.url, "models", []) as resp:
            assert await resp.read() == b'{"until":"close"}'
        async with await client.request("GET", server.url, "models", []) as resp:
            assert await resp.read() == b'{"n":2}'
        async with await client.request("GET", server.url, "models", []) as resp:
            assert await resp.read() == b'{"until":"close"}'
        assert server.connections == 3
        await asyncio.sleep(0.05)
        assert client.open_connections() == 0
    finally:
        await server.__aexit__()


async def test_a_connection_the_server_closed_while_idle_is_not_used_again(client):
    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            await server.next_request(reader)
            writer.write(answer(b"{}"))
            await writer.drain()
            # then close the idle connection, as servers do after their keep-alive timeout
        return handler

    server = await start(make)
    try:
        for _ in range(3):
            async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
                assert await resp.read() == b"{}"
            await asyncio.sleep(0.05)  # the server's FIN arrives
        assert server.connections == 3
    finally:
        await server.__aexit__()


def closing_after(answered: int, reply: bytes = b"", delay: float = 0.0) -> Callable[[Scripted], Handler]:
    """Each connection answers ``answered`` requests, then takes one more and, after ``delay``, sends
    ``reply`` and closes: an upstream ending an idle connection just as a request arrives on it."""
    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            for _ in range(answered):
                if await server.next_request(reader) is None:
                    return
                writer.write(answer(b'{"n":%d}' % len(server.requests)))
                await writer.drain()
            if await server.next_request(reader) is not None:
                await asyncio.sleep(delay)
                writer.write(reply)
                await writer.drain()
        return handler
    return make


async def test_a_request_on_a_connection_the_upstream_closed_as_idle_goes_again_on_a_new_one(client):
    server = await start(closing_after(1))
    try:
        async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
            assert await resp.read() == b'{"n":1}'
        async with await client.request("POST", server.url, "chat/completions", [], b'{"again":1}') as resp:
            assert await resp.read() == b'{"n":3}'  # request 2 met the close; 3 is it again, on connection 2
        assert server.connections == 2
        assert [body for _, body in server.requests] == [b"{}", b'{"again":1}', b'{"again":1}']
    finally:
        await server.__aexit__()


@pytest.mark.parametrize("answered, reply, delay", [
    (0, b"", 0.0),  # a new connection closed without a word: nothing to blame on keep-alive
    (1, b"HTTP/1.1 200 OK\r\nContent-Le", 0.0),  # it had begun to answer
    (1, b"", 1.5),  # it kept the request a while first: it may have acted on it
])
async def test_a_connection_closed_any_other_way_is_not_retried(answered, reply, delay):
    client = UpstreamClient(connect_timeout=2.0, read_timeout=5.0)
    server = await start(closing_after(answered, reply, delay))
    try:
        for _ in range(answered):
            async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
                await resp.read()
        with pytest.raises(UpstreamDisconnected):
            async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
                await resp.read()
        assert len(server.requests) == answered + 1 and server.connections == 1
    finally:
        await server.__aexit__()
        await client.close()


async def test_the_request_goes_again_only_once():
    client = UpstreamClient(connect_timeout=2.0, read_timeout=2.0)

    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            # the first connection answers once; every later one closes on its first request
            if server.connections == 1 and await server.next_request(reader) is not None:
                writer.write(answer(b"{}"))
                await writer.drain()
            await server.next_request(reader)
        return handler

    server = await start(make)
    try:
        async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
            await resp.read()
        with pytest.raises(UpstreamDisconnected):
            await client.request("POST", server.url, "chat/completions", [], b"{}")
        assert len(server.requests) == 3 and server.connections == 2
    finally:
        await server.__aexit__()
        await client.close()


@pytest.mark.parametrize("reply, partial", [
    (b"", False),  # closed without a word
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", True),
])
async def test_an_answer_cut_short_is_an_error_not_a_short_body(client, reply, partial):
    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            await server.next_request(reader)
            writer.write(reply)
            await writer.drain()
        return handler

    server = await start(make)
    try:
        with pytest.raises(UpstreamDisconnected) as caught:
            async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
                await resp.read()
        assert caught.value.partial is partial
        await asyncio.sleep(0.05)
        assert client.open_connections() == 0
    finally:
        await server.__aexit__()


@pytest.mark.parametrize("reply", [
    b"SMTP ready\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nxx",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
])
async def test_what_is_not_http_or_cannot_be_relayed_is_a_protocol_error(client, reply):
    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            await server.next_request(reader)
            writer.write(reply)
            await writer.drain()
            await server.next_request(reader)
        return handler

    server = await start(make)
    try:
        with pytest.raises(UpstreamProtocolError):
            async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
                await resp.read()
        await asyncio.wait_for(server.closed_by_client.wait(), 2)  # and the connection is dropped
    finally:
        await server.__aexit__()


async def test_interim_answers_are_skipped_and_gzip_and_deflate_are_decoded(client):
    bodies = {2: gzip.compress(b'{"z":"gzip"}'), 3: zlib.compress(b'{"z":"deflate"}')}

    def reply(n: int) -> bytes:
        if n == 1:
            return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer(b'{"z":1}')
        encoding = "gzip" if n == 2 else "deflate"
        return answer(bodies[n], extra=f"Content-Encoding: {encoding}\r\n")

    server = await start(serving(reply))
    try:
        for want in (b'{"z":1}', b'{"z":"gzip"}', b'{"z":"deflate"}'):
            async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
                assert resp.status == 200
                assert await resp.read() == want
        assert server.connections == 1
    finally:
        await server.__aexit__()


async def test_head_answers_have_no_body(client):
    server = await start(serving(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"))
    try:
        async with await client.request("HEAD", server.url, "models", []) as resp:
            assert resp.status == 200 and resp.headers["Content-Length"] == "50"
            assert await resp.read() == b""
    finally:
        await server.__aexit__()


async def test_read_timeout_counts_silence_not_total_time():
    client = UpstreamClient(connect_timeout=2.0, read_timeout=0.3)

    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            while await server.next_request(reader) is not None:
                if len(server.requests) > 1:
                    await asyncio.sleep(5)  # nothing at all
                    return
                # a slow trickle: 8 x 0.1 s, longer than the timeout in all
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(8):
                    await asyncio.sleep(0.1)
                    writer.write(b"1\r\nx\r\n")
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        return handler

    server = await start(make)
    try:
        async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
            assert await resp.read() == b"x" * 8
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(UpstreamTimeout):
            await client.request("POST", server.url, "chat/completions", [], b"{}")
        assert 0.25 < loop.time() - began < 1.5
    finally:
        await server.__aexit__()
        await client.close()


async def test_connection_failures_are_connect_errors(client):
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(UpstreamConnectError):
        await client.request("GET", f"http://127.0.0.1:{port}/api/v1", "models", [])
    with pytest.raises((UpstreamConnectError, UpstreamTimeout)):
        await client.request("GET", "http://no-such-host.invalid/api/v1", "models", [])
    assert client.open_connections() == 0


async def test_the_pool_limit_queues_requests_and_a_long_wait_times_out():
    client = UpstreamClient(limit=2, connect_timeout=0.5, read_timeout=5.0)
    gate = asyncio.Event()
    busy = 0
    most = 0

    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            nonlocal busy, most
            while await server.next_request(reader) is not None:
                busy += 1
                most = max(most, busy)
                await gate.wait()
                busy -= 1
                writer.write(answer(b"{}"))
                await writer.drain()
        return handler

    server = await start(make)

    async def one() -> bytes:
        async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
            return await resp.read()

    try:
        tasks = [asyncio.create_task(one()) for _ in range(5)]
        await asyncio.sleep(0.1)
        assert server.connections == 2 and most == 2  # three wait their turn
        gate.set()
        assert await asyncio.gather(*tasks) == [b"{}"] * 5
        assert server.connections == 2

        gate.clear()
        holders = [asyncio.create_task(one()) for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(UpstreamTimeout):
            await one()  # both connections stay busy for longer than the connect timeout
        gate.set()
        await asyncio.gather(*holders)
    finally:
        await server.__aexit__()
        await client.close()


async def test_cancelling_a_request_closes_its_connection(client):
    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            await server.next_request(reader)
            await server.next_request(reader)  # returns None when the client hangs up
        return handler

    server = await start(make)
    try:
        task = asyncio.create_task(client.request("POST", server.url, "chat/completions", [], b"{}"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.closed_by_client.wait(), 2)  # the upstream sees us leave
        assert client.open_connections() == 0
    finally:
        await server.__aexit__()


async def test_a_body_left_unread_closes_the_connection(client):
    server = await start(serving(lambda n: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"))
    try:
        resp = await client.request("POST", server.url, "chat/completions", [], b"{}")
        async for chunk in resp.iter_chunks():
            assert chunk == b"abc"
            break
        resp.release()
        await asyncio.wait_for(server.closed_by_client.wait(), 2)
        assert client.open_connections() == 0
    finally:
        await server.__aexit__()


async def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_everything(client):
    total = 16 * 1024 * 1024
    piece = b"y" * 65536

    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            await server.next_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % total)
            for _ in range(total // len(piece)):
                writer.write(piece)
                await writer.drain()
        return handler

    server = await start(make)
    try:
        largest = received = 0
        async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
            async for chunk in resp.iter_chunks():
                largest = max(largest, len(chunk))
                received += len(chunk)
                await asyncio.sleep(0.01)  # a client on a slow link
        assert received == total
        # held at most about HIGH_WATER (1 MiB) plus what the socket handed over at once; unpaused, the
        # whole 16 MiB would pile up while the client sleeps
        assert HIGH_WATER == 1024 * 1024 and largest <= 2 * 1024 * 1024
    finally:
        await server.__aexit__()


async def test_a_body_read_whole_is_capped():
    client = UpstreamClient(max_body_bytes=4096)
    server = await start(serving(lambda n: answer(b"z" * 10_000)))
    try:
        with pytest.raises(UpstreamProtocolError):
            async with await client.request("POST", server.url, "chat/completions", [], b"{}") as resp:
                await resp.read()
    finally:
        await server.__aexit__()
        await client.close()


async def test_line_breaks_in_headers_are_refused_before_anything_is_sent(client):
    with pytest.raises(ValueError):
        await client.request("POST", "http://127.0.0.1:9/api/v1", "chat", [("X-A", "b\r\nX-Injected: 1")], b"{}")
    with pytest.raises(ValueError):
        await client.request("POST", "http://127.0.0.1:9/api/v1", "chat\r\nX: 1", [], b"{}")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,DNS:upstream.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_https_upstream_is_verified_and_kept_alive(tls_files):
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = await start(serving(lambda n: answer(b'{"tls":%d}' % n)), tls=server_tls)
    trusting = UpstreamClient(ssl_context=ssl.create_default_context(cafile=str(cert)))
    default = UpstreamClient(connect_timeout=2.0)  # the system's CAs: a self-signed certificate fails
    try:
        for n in (1, 2):
            async with await trusting.request("POST", server.url, "chat/completions", [], b"{}") as resp:
                assert await resp.read() == b'{"tls":%d}' % n
        assert server.connections == 1
        with pytest.raises(UpstreamConnectError):
            await default.request("POST", server.url, "chat/completions", [], b"{}")
    finally:
        await server.__aexit__()
        await trusting.close()
        await default.close()


async def test_an_address_that_never_answers_does_not_hold_up_the_next_one(monkeypatch):
    """Happy eyeballs: a resolved address that swallows the connection attempt (IPv6 without a route,
    a firewall dropping packets) costs HAPPY_EYEBALLS_DELAY, not the connect timeout."""
    server = await start(serving(lambda n: answer(b'{"ok":true}')))
    client = UpstreamClient(connect_timeout=5.0)
    port = int(server.url.split(":")[2].split("/")[0])
    loop = asyncio.get_running_loop()
    real_connect = loop.sock_connect
    swallowed: list[tuple] = []

    async def sock_connect(sock, address):
        if address[0] == "127.0.0.2":  # stands in for an address that never answers
            swallowed.append(address)
            await asyncio.sleep(3600)
        return await real_connect(sock, address)

    async def resolve(host, port_):
        import socket
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    monkeypatch.setattr(client, "_resolve", resolve)
    try:
        began = loop.time()
        async with await client.request("POST", f"http://upstream.test:{port}/api/v1", "chat/completions", [],
                                        b"{}") as resp:
            assert await resp.read() == b'{"ok":true}'
        assert swallowed and loop.time() - began < 2.0
        assert client.open_connections() == 1
    finally:
        await server.__aexit__()
        await client.close()


# --- outbound proxies ---------------------------------------------------------------------------------------

async def test_an_http_upstream_through_a_proxy_gets_absolute_form_requests_with_the_proxy_credentials():
    seen: list[bytes] = []

    def make(server: Scripted) -> Handler:
        async def handler(reader, writer):
            while (got := await server.next_request(reader)) is not None:
                seen.append(got[0])
                writer.write(answer(b'{"via":"proxy"}'))
                await writer.drain()
        return handler

    proxy = await start(make)
    proxy_url = proxy.url.removesuffix("/api/v1").replace("http://", "http://user%40corp:s3cret@")
    client = UpstreamClient(egress=EgressProxy(http=proxy_url))
    try:
        for _ in range(2):
            async with await client.request("POST", "http://upstream.test:8000/api/v1", "chat/completions",
                                            [("Authorization", "Bearer k")], b"{}") as resp:
                assert await resp.read() == b'{"via":"proxy"}'
        head = seen[0].decode()
        assert head.startswith("POST http://upstream.test:8000/api/v1/chat/completions HTTP/1.1\r\n")
        assert "\r\nHost: upstream.test:8000\r\n" in head
        assert "\r\nProxy-Authorization: Basic dXNlckBjb3JwOnMzY3JldA==\r\n" in head  # user@corp:s3cret
        assert proxy.connections == 1 and len(seen) == 2  # kept alive
    finally:
        await proxy.__aexit__()
        await client.close()


async def _connect_proxy(target_port: int, seen: list[bytes], refuse: bytes | None = None) -> asyncio.Server:
    """A CONNECT proxy that tunnels every authority to 127.0.0.1:``target_port`` (or answers ``refuse``)."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        if refuse is not None:
            writer.write(refuse)
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_an_https_upstream_through_a_proxy_is_a_verified_tls_tunnel(tls_files):
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    upstream = await start(serving(lambda n: answer(b'{"tunnelled":%d}' % n)), tls=server_tls)
    seen: list[bytes] = []
    proxy = await _connect_proxy(int(upstream.url.split(":")[2].split("/")[0]), seen)
    proxy_url = f"http://u:p@127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    client = UpstreamClient(ssl_context=ssl.create_default_context(cafile=str(cert)),
                            egress=EgressProxy(https=proxy_url))
    try:
        for n in (1, 2):
            async with await client.request("POST", "https://upstream.test/api/v1", "chat/completions", [],
                                            b"{}") as resp:
                assert await resp.read() == b'{"tunnelled":%d}' % n
        assert seen == [b"CONNECT upstream.test:443 HTTP/1.1\r\nHost: upstream.test:443\r\n"
                        b"Proxy-Authorization: Basic dTpw\r\n\r\n"]  # one tunnel, kept alive
        head = upstream.requests[0][0].decode()
        assert head.startswith("POST /api/v1/chat/completions HTTP/1.1\r\n") and "Proxy-Authorization" not in head
    finally:
        proxy.close()
        await upstream.__aexit__()
        await client.close()


async def test_a_proxy_that_refuses_the_tunnel_is_a_connect_error_naming_its_answer():
    seen: list[bytes] = []
    proxy = await _connect_proxy(1, seen, refuse=b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                                 b"Content-Length: 0\r\n\r\n")
    client = UpstreamClient(egress=EgressProxy(https=f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"))
    try:
        with pytest.raises(UpstreamConnectError, match="407 Proxy Authentication Required"):
            await client.request("POST", "https://upstream.test/api/v1", "chat/completions", [], b"{}")
        assert len(seen) == 1 and client.open_connections() == 0
    finally:
        proxy.close()
        await client.close()
