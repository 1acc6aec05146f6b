"""Prometheus metrics, each ``Metrics`` owning its own ``CollectorRegistry``.

The request path calls ``observe_request``, ``add_cost`` and ``batch_line_failures``:
plain dict updates (``proxy.ops.series``), exported when scraped. Queue gauges are
read from the database when scraped, in ``render``. Labels that come from callers
(model, provider) are limited to the configured names, so a client sending random model
names cannot grow the series without bound; anything else is reported as ``other``.

Savings can be negative (a cache whose storage did not pay off) while a counter only
goes up, so the positive part counts in ``saved_usd`` and the negative part in
``overspent_usd``: net savings = saved - overspent = baseline - cost.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from proxy.ops.series import CounterSeries, HistogramSeries, SeriesCollector
from proxy.settings import Settings
from proxy.store.db import Database
from proxy.store.reports import queue_gauges

__all__ = ["CONTENT_TYPE", "Metrics"]

OTHER = "other"
# LLM calls take from tens of milliseconds to the 15-minute flex timeout.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
# Shown at zero when empty, so dashboards and alerts see a series rather than a gap.
QUEUE_STATUSES = ("queued", "submitted", "realtime")


class Metrics:
    def __init__(
        self, *, models: Iterable[str] | None = None, providers: Iterable[str] | None = None
    ) -> None:
        """``models``/``providers``: the label values allowed (``None``: any)."""
        self._models = None if models is None else frozenset(models)
        self._providers = None if providers is None else frozenset(providers)
        self.registry = registry = CollectorRegistry(auto_describe=True)
        per_request = ("lane", "provider", "model")

        def counter(name: str, doc: str, labels: tuple[str, ...] = per_request) -> CounterSeries:
            return CounterSeries(name, doc, labels)

        def histogram(name: str, doc: str) -> HistogramSeries:
            return HistogramSeries(name, doc, ("lane", "provider"), LATENCY_BUCKETS)

        self._requests = counter(
            "costroute_requests",
            "Requests answered, by lane, provider, model and HTTP status.",
            (*per_request, "status"),
        )
        self._latency = histogram(
            "costroute_request_duration_seconds",
            "Time from receiving a request to its last byte, in the proxy.",
        )
        self._upstream = histogram(
            "costroute_upstream_duration_seconds",
            "Time spent waiting on the provider for one request.",
        )
        self._cost = counter("costroute_cost_usd", "Actual cost (USD).")
        self._baseline = counter(
            "costroute_baseline_usd", "Real-time list price of the same usage (USD)."
        )
        self._saved = counter(
            "costroute_saved_usd", "Savings against the baseline (USD, positive part)."
        )
        self._overspent = counter(
            "costroute_overspent_usd", "Cost above the baseline (USD, negative savings)."
        )
        self._unpriced = counter(
            "costroute_unpriced_requests", "Requests whose model has no known price."
        )
        self._line_failures = counter(
            "costroute_batch_line_failures",
            "Failed lines in provider batch jobs.",
            ("provider", "model"),
        )
        registry.register(
            SeriesCollector(
                [
                    self._requests,
                    self._latency,
                    self._upstream,
                    self._cost,
                    self._baseline,
                    self._saved,
                    self._overspent,
                    self._unpriced,
                    self._line_failures,
                ]
            )
        )
        self._queue_depth = Gauge(
            "costroute_queue_depth",
            "Deferred requests not yet finished, by status.",
            ("status",),
            registry=registry,
        )
        self._oldest = Gauge(
            "costroute_queue_oldest_age_seconds",
            "Age of the oldest ticket still queued.",
            registry=registry,
        )
        self._batches = Gauge(
            "costroute_active_batches",
            "Provider batch jobs not yet finished.",
            ("provider",),
            registry=registry,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Metrics:
        models = {*settings.models, *(m.upstream_model for m in settings.models.values())}
        return cls(models={m for m in models if m}, providers=settings.providers)

    # -- the request path

    def observe_request(
        self,
        lane: str,
        provider: str | None,
        model: str | None,
        status: int,
        latency_s: float,
        upstream_s: float | None = None,
    ) -> None:
        """``upstream_s`` of ``None`` or 0: the request never reached a provider."""
        by_lane = (lane, self._provider(provider))
        self._requests.inc((*by_lane, self._model(model), str(status)))
        self._latency.observe(by_lane, max(latency_s, 0.0))
        if upstream_s:
            self._upstream.observe(by_lane, max(upstream_s, 0.0))

    def add_cost(
        self,
        lane: str,
        provider: str | None,
        model: str | None,
        actual: float | None,
        saved: float | None,
    ) -> None:
        """``actual`` of ``None``: the model has no price (counted as unpriced)."""
        labels = (lane, self._provider(provider), self._model(model))
        if actual is None:
            self._unpriced.inc(labels)
            return
        saved = saved or 0.0
        self._cost.inc(labels, max(actual, 0.0))
        self._baseline.inc(labels, max(actual + saved, 0.0))
        if saved >= 0:
            self._saved.inc(labels, saved)
        else:
            self._overspent.inc(labels, -saved)

    def batch_line_failures(self, provider: str | None, model: str | None, n: int) -> None:
        if n > 0:
            self._line_failures.inc((self._provider(provider), self._model(model)), n)

    # -- the scrape

    async def render(self, db: Database, now_ms: int) -> bytes:
        """The Prometheus text format (serve with ``CONTENT_TYPE``)."""
        gauges = await queue_gauges(db)
        # No await from here on: concurrent scrapes never see half-updated gauges.
        self._queue_depth.clear()
        for status in QUEUE_STATUSES:
            self._queue_depth.labels(status).set(0)
        for status, count in gauges.depth.items():
            self._queue_depth.labels(status).set(count)
        oldest = gauges.oldest_queued_ms
        self._oldest.set(0 if oldest is None else max(now_ms - oldest, 0) / 1000)
        self._batches.clear()
        for provider, count in gauges.active_batches.items():
            self._batches.labels(self._provider(provider)).inc(count)
        return generate_latest(self.registry)

    def _model(self, model: str | None) -> str:
        if not model:
            return "none"
        return model if self._models is None or model in self._models else OTHER

    def _provider(self, provider: str | None) -> str:
        if not provider:
            return "none"
        return provider if self._providers is None or provider in self._providers else OTHER
