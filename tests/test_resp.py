"""The lean Redis client of the request path, against the real embedded Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from proxy.resp import RedisPyCommands, RespClient, Script, commands_for


@pytest.fixture
async def lean(redis: Redis) -> AsyncIterator[RespClient]:
    client = RespClient.for_client(redis)
    assert client is not None
    yield client
    await client.close()


async def test_commands_replies_and_errors(lean: RespClient, redis: Redis, key_prefix: str) -> None:
    await redis.set(f"{key_prefix}:s", b"\x00binary\r\nvalue")
    await redis.hset(f"{key_prefix}:h", mapping={"a": "1", "b": "2"})
    assert await lean.get(f"{key_prefix}:s") == b"\x00binary\r\nvalue"
    assert await lean.get(f"{key_prefix}:missing") is None
    assert await lean.hgetall(f"{key_prefix}:h") == {b"a": b"1", b"b": b"2"}
    assert await lean.hgetall(f"{key_prefix}:missing") == {}
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await lean.execute("INCR", f"{key_prefix}:h")
    assert await lean.execute("INCRBY", f"{key_prefix}:n", 5) == 5  # the connection is still in step


async def test_scripts_load_themselves(lean: RespClient, redis: Redis, key_prefix: str) -> None:
    script = Script("return {KEYS[1], ARGV[1], ARGV[2]}")
    await redis.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    assert await lean.run_script(script, [f"{key_prefix}:k"], [7, 2.5]) == [f"{key_prefix}:k".encode(), b"7", b"2.5"]
    assert (await redis.script_exists(script.sha)) == [True]
    assert await lean.run_script(script, ["x"], ["y", "z"]) == [b"x", b"y", b"z"]
    await redis.hset(f"{key_prefix}:h", "f", "v")
    with pytest.raises(ResponseError, match="WRONGTYPE"):  # an error raised inside the script
        await lean.run_script(Script("return redis.call('incr', KEYS[1])"), [f"{key_prefix}:h"], [])


async def test_concurrent_callers_each_get_their_own_reply(lean: RespClient, redis: Redis, key_prefix: str) -> None:
    await redis.mset({f"{key_prefix}:c{i}": str(i) for i in range(200)})
    replies = await asyncio.gather(*(lean.get(f"{key_prefix}:c{i}") for i in range(200)))
    assert replies == [str(i).encode() for i in range(200)]


async def test_a_caller_that_gives_up_leaves_the_connection_in_step(lean: RespClient, redis: Redis,
                                                                    key_prefix: str) -> None:
    await redis.set(f"{key_prefix}:after", b"right")
    proto = await lean._connection()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await lean.execute("BLPOP", f"{key_prefix}:empty-list", "0.3")  # Redis answers after 0.3 s
    # the next reply in line is BLPOP's nil: it must not be handed to this GET
    assert await lean.get(f"{key_prefix}:after") == b"right"
    assert lean._proto is proto  # and the connection was kept


async def test_reconnects_after_the_connection_is_lost(lean: RespClient, redis: Redis, key_prefix: str) -> None:
    await redis.set(f"{key_prefix}:k", b"1")
    client_id = await lean.execute("CLIENT", "ID")
    await redis.client_kill_filter(_id=str(client_id))
    for _ in range(50):
        if lean._proto is not None and lean._proto.closed:
            break
        await asyncio.sleep(0.01)
    assert await lean.get(f"{key_prefix}:k") == b"1"
    assert await lean.execute("CLIENT", "ID") != client_id


async def test_uses_the_database_and_server_of_the_redis_py_client(redis_url: str, key_prefix: str) -> None:
    url = redis_url + ("&" if "?" in redis_url else "?") + "db=3"
    client = Redis.from_url(url)
    lean = commands_for(client)
    try:
        assert isinstance(lean, RespClient)
        await client.set(f"{key_prefix}:db3", b"here")
        assert await lean.get(f"{key_prefix}:db3") == b"here"
    finally:
        await client.delete(f"{key_prefix}:db3")
        await lean.close()
        await client.aclose()


async def test_a_server_that_is_not_there_raises_a_connection_error(tmp_path) -> None:
    lean = RespClient.for_client(Redis.from_url(f"unix://{tmp_path}/nothing.sock"))
    assert lean is not None
    with pytest.raises(RedisConnectionError):
        await lean.get("k")


async def test_other_clients_go_through_redis_py() -> None:
    fake = fakeredis.FakeAsyncRedis()
    commands = commands_for(fake)
    assert isinstance(commands, RedisPyCommands)
    await fake.set("k", b"v")
    assert await commands.get("k") == b"v"
    assert await commands.execute("SET", "a", "1") is True
    assert await commands.hgetall("nothing") == {}


async def test_a_command_past_its_timeout_fails_and_the_rest_carry_on(lean: RespClient, redis: Redis,
                                                                      key_prefix: str) -> None:
    await redis.set(f"{key_prefix}:k", b"v")
    slow = asyncio.ensure_future(lean.execute("BLPOP", f"{key_prefix}:none", "0.3", timeout=0.05))
    quick = asyncio.ensure_future(lean.get(f"{key_prefix}:k", timeout=1.0))  # queued behind the slow one
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await slow
    assert asyncio.get_running_loop().time() - started < 0.25
    assert await quick == b"v"  # answered once Redis gets to it, in step
    assert await lean.get(f"{key_prefix}:k", timeout=0.5) == b"v"


async def test_connecting_counts_against_the_timeout() -> None:
    """A server that takes the connection but never answers (here: the AUTH of the handshake) must not hold
    a call past its timeout."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # connections complete in the backlog; nobody ever reads them
    lean = RespClient.for_client(Redis(host="127.0.0.1", port=listener.getsockname()[1], password="secret"))
    assert lean is not None
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await lean.get("k", timeout=0.1)
        assert asyncio.get_running_loop().time() - started < 0.5
    finally:
        await lean.close()
        listener.close()
