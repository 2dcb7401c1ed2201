"""Outbound HTTP proxies: ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY``, read as curl and most HTTP clients
read them (the settings hold the values). https upstreams go through a ``CONNECT`` tunnel, http ones as
absolute-form requests; credentials in the proxy URL become ``Proxy-Authorization: Basic``. Loopback hosts
never go through a proxy (as Go's clients do): a local upstream or embeddings server keeps working when a
corporate proxy is set for everything else. ``NO_PROXY`` takes host names, domain suffixes, ``*`` and, as
curl 7.86+ and Go do, CIDR blocks (``10.0.0.0/8``), which match upstreams given by IP address."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit
from urllib.request import proxy_bypass_environment

__all__ = ["EgressProxy", "ProxyEndpoint", "normalise_proxy_url"]


def normalise_proxy_url(value: str) -> str:
    """``proxy.corp:3128`` -> ``http://proxy.corp:3128``; raises ValueError for what cannot be used."""
    value = value.strip()
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    if parts.scheme.lower() != "http":
        raise ValueError("only http:// proxies are supported (the tunnel to an https upstream is still TLS)")
    if not parts.hostname:
        raise ValueError("no proxy host")
    parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    return value


@dataclass(frozen=True, slots=True)
class ProxyEndpoint:
    """One proxy, parsed: where to connect, and the ``Proxy-Authorization`` value, if any."""

    host: str
    port: int
    authorization: str | None

    @classmethod
    def parse(cls, url: str) -> ProxyEndpoint:
        parts = urlsplit(url)
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        assert parts.hostname is not None
        return cls(parts.hostname, parts.port or 80, authorization)


def _in_networks(host: str, no_proxy: str) -> bool:
    """Whether ``host``, an IP address, falls in a CIDR block listed in ``no_proxy`` (names never resolve)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in no_proxy.split(","):
        entry = entry.strip()
        if "/" not in entry:
            continue
        try:
            if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                return True
        except ValueError:  # not a network (or another family's): only what parses is an exclusion
            continue
    return False


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class EgressProxy:
    https: str | None = field(default=None, repr=False)  # the URLs may carry credentials
    http: str | None = field(default=None, repr=False)
    no_proxy: str = ""

    def for_url(self, url: str) -> str | None:
        """The proxy URL a request to ``url`` goes through, or None for a direct connection."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        host = parts.hostname
        if proxy is None or not host or _loopback(host):
            return None
        if self.no_proxy and (
                proxy_bypass_environment(f"{host}:{parts.port}" if parts.port else host, {"no": self.no_proxy})
                or _in_networks(host, self.no_proxy)):
            return None
        return proxy
