"""Prometheus metrics (prometheus-client), multi-process aware when PROMETHEUS_MULTIPROC_DIR is set."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["Metrics", "route_label", "render_metrics"]

_KNOWN_ROUTES = ("chat/completions", "completions", "embeddings", "models", "responses")


def route_label(tail: str) -> str:
    """Bounded label values: a known endpoint, or 'other'."""
    for route in _KNOWN_ROUTES:
        if tail == route:
            return route
    return "models" if tail.startswith("models/") else "other"


class Metrics:
    """Every metric the proxy exports, built once per process on its own registry."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("orcache_requests_total", "Proxied requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("orcache_request_duration_seconds", "Proxy request duration", ["route"],
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30,
                                          60, 120), registry=r)
        self.upstream_errors = Counter("orcache_upstream_errors_total", "Upstream failures by kind", ["kind"],
                                       registry=r)
        self.cache = Counter("orcache_cache_lookups_total", "Response cache lookups by result", ["result"],
                             registry=r)
        self.cache_errors = Counter("orcache_cache_errors_total",
                                    "Cache operations that failed or timed out (served as misses)", registry=r)
        gauge_mode = {"multiprocess_mode": "livesum"}
        self.log_queue = Gauge("orcache_log_queue_depth", "Records waiting for the log writer", registry=r,
                               **gauge_mode)
        self.log_written = Gauge("orcache_log_rows_written", "Rows written to Postgres by this process", registry=r,
                                 **gauge_mode)
        self.log_spooled = Gauge("orcache_log_rows_spooled", "Rows spooled to disk while Postgres was unavailable",
                                 registry=r, **gauge_mode)
        self.log_dropped = Gauge("orcache_log_rows_dropped", "Rows lost because neither Postgres nor the spool "
                                 "could take them", registry=r, **gauge_mode)
        self._cache_errors_seen = 0
        self._children: dict[tuple[str, int], object] = {}
        self._latency_children: dict[str, object] = {}
        self._cache_children: dict[str, object] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, str(status))
        child.inc()  # type: ignore[attr-defined]
        lat = self._latency_children.get(route)
        if lat is None:
            lat = self._latency_children[route] = self.latency.labels(route)
        lat.observe(seconds)  # type: ignore[attr-defined]

    def cache_result(self, result: str) -> None:
        """One response cache lookup: hit kind or 'miss' (label children cached: ``labels()`` is not free)."""
        child = self._cache_children.get(result)
        if child is None:
            child = self._cache_children[result] = self.cache.labels(result)
        child.inc()  # type: ignore[attr-defined]

    def sync_cache_errors(self, total: int) -> None:
        """The cache counts its own failures; carry the increase over into the counter."""
        if total > self._cache_errors_seen:
            self.cache_errors.inc(total - self._cache_errors_seen)
            self._cache_errors_seen = total


def render_metrics(metrics: Metrics) -> tuple[bytes, str]:
    if metrics.multiprocess:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
