"""Who is calling: the admin, a proxy token holder, or nobody.

Hot path: one dict lookup when the token was seen in the last ``token_cache_seconds``, otherwise one
HGETALL. Every worker subscribes to the token events channel and forgets cached records when any
token changes, so a revoke takes effect at once (the short TTL bounds it if a message is lost).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import suppress
from dataclasses import dataclass

import structlog
from aiohttp import web
from redis.asyncio import Redis

from proxy.channel import follow_channel
from proxy.errors import ProxyError
from proxy.keys import AUTH, REDIS, REDIS_COMMANDS, SETTINGS
from proxy.rediskeys import admin_key, events_channel, session_key, token_key
from proxy.resp import Commands, RedisPyCommands
from proxy.settings import Settings
from proxy.tokens import Token, hash_secret, parse_token_id

__all__ = ["Principal", "TokenAuthenticator", "require_admin", "require_principal", "require_token",
           "bearer_secret", "SESSION_COOKIE", "auth_ctx"]

log = structlog.get_logger("orcache.auth")
SESSION_COOKIE = "orcache_session"


@dataclass(frozen=True, slots=True)
class Principal:
    is_admin: bool
    token: Token | None = None


ADMIN = Principal(is_admin=True)


def bearer_secret(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        # some clients (Anthropic-style SDKs) send the key in x-api-key
        return request.headers.get("x-api-key") or None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _unauthorized(message: str, code: str = "invalid_api_key") -> ProxyError:
    return ProxyError(401, message, code, headers={"WWW-Authenticate": 'Bearer realm="orcache"'})


class TokenAuthenticator:
    def __init__(self, redis: Redis, settings: Settings, commands: Commands | None = None) -> None:
        self._redis = redis
        self._commands = commands or RedisPyCommands(redis)  # token lookups are on the request path
        self._prefix = settings.key_prefix
        self._ttl = settings.token_cache_seconds
        self._cache: dict[str, tuple[Token, float]] = {}
        self._admin_sha: str | None = hash_secret(settings.admin_token) if settings.admin_token else None
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        if self._admin_sha is None:
            stored = await self._redis.hget(admin_key(self._prefix), "sha256")
            if stored:
                self._admin_sha = stored.decode()
        self._listener = asyncio.create_task(self._listen(), name="token-events")

    async def stop(self) -> None:
        if self._listener is not None:
            self._stopping = True
            self._listener.cancel()
            # bounded: a listener stuck inside a dead connection must not hold up shutdown
            with suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._listener, 2.0)

    async def _listen(self) -> None:
        await follow_channel(self._redis, events_channel(self._prefix), self._cache.clear, lambda: not self._stopping)

    def forget(self) -> None:
        self._cache.clear()

    def is_admin_secret(self, secret: str) -> bool:
        return self._admin_sha is not None and hmac.compare_digest(self._admin_sha, hash_secret(secret))

    async def token_for_secret(self, secret: str) -> Token:
        """The active token this secret belongs to; raises a 401 ProxyError otherwise."""
        now = time.monotonic()
        hit = self._cache.get(secret)
        if hit is not None and hit[1] > now:
            token = hit[0]
        else:
            tid = parse_token_id(secret)
            if tid is None:
                raise _unauthorized("Invalid API key: not a proxy token (they start with sk-orc-).")
            raw = await self._commands.hgetall(token_key(self._prefix, tid))
            if not raw:
                raise _unauthorized("Invalid API key: unknown token.")
            token = Token.from_hash(tid, {k.decode(): v.decode() for k, v in raw.items()})
            if not token.matches(secret):
                raise _unauthorized("Invalid API key: unknown token.")
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[secret] = (token, now + self._ttl)
        if token.revoked:
            raise _unauthorized("This API key has been revoked.", "revoked_api_key")
        return token

    async def principal_for_session(self, session_id: str) -> Principal | None:
        raw = await self._redis.hgetall(session_key(self._prefix, hash_secret(session_id)))
        if not raw:
            return None
        kind = raw.get(b"kind", b"").decode()
        if kind == "admin":
            return ADMIN
        if kind == "token":
            tid = raw.get(b"token_id", b"").decode()
            h = await self._redis.hgetall(token_key(self._prefix, tid))
            if not h:
                return None
            token = Token.from_hash(tid, {k.decode(): v.decode() for k, v in h.items()})
            return None if token.revoked else Principal(is_admin=False, token=token)
        return None


async def require_token(request: web.Request) -> Token:
    """A proxy token from the Authorization header (the proxy routes accept nothing else)."""
    secret = bearer_secret(request)
    if secret is None:
        raise _unauthorized("Missing API key: send 'Authorization: Bearer sk-orc-...'.", "missing_api_key")
    return await request.app[AUTH].token_for_secret(secret)


async def require_principal(request: web.Request) -> Principal:
    """The admin or a token holder, by bearer header or by dashboard session cookie."""
    auth = request.app[AUTH]
    secret = bearer_secret(request)
    if secret is not None:
        if auth.is_admin_secret(secret):
            return ADMIN
        return Principal(is_admin=False, token=await auth.token_for_secret(secret))
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        principal = await auth.principal_for_session(session)
        if principal is not None:
            return principal
    raise _unauthorized("Missing credentials: send 'Authorization: Bearer <admin or proxy token>'.",
                        "missing_api_key")


async def require_admin(request: web.Request) -> Principal:
    principal = await require_principal(request)
    if not principal.is_admin:
        # the spec (and peer gateways) answer a wrong admin credential with 401, even a valid proxy token
        raise _unauthorized("This endpoint needs the admin token.", "admin_required")
    return principal


async def auth_ctx(app: web.Application):
    authenticator = TokenAuthenticator(app[REDIS], app[SETTINGS], app.get(REDIS_COMMANDS))
    await authenticator.start()
    app[AUTH] = authenticator
    yield
    await authenticator.stop()
