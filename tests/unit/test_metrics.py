"""/metrics: prometheus_client's parser reads it back with the right values."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.ops.metrics import CONTENT_TYPE, Metrics
from proxy.settings import parse_settings
from proxy.store.db import Database

NOW_MS = 1_795_000_000_000

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: bytes) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


# ``db``: one fresh store per engine (tests/conftest.py).


async def add_ticket(db: Database, ticket_id: str, status: str, created_ms: int) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO tickets (id, key_name, endpoint, model, provider, upstream_model, lane, "
            "reason, status, body_bytes, created_ms, deadline_ms, updated_ms) "
            "VALUES (?, 'k', '/v1/chat/completions', 'm', 'oa', 'm', 'batch', 'r', ?, 2, "
            "?, ?, ?)",
            (ticket_id, status, created_ms, created_ms + 86_400_000, created_ms),
        )


async def add_batch(db: Database, batch_id: str, provider: str, status: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO batches (id, provider, model, endpoint, status, created_ms) "
            "VALUES (?, ?, 'm', '/v1/chat/completions', ?, ?)",
            (batch_id, provider, status, NOW_MS),
        )


async def test_request_path_metrics(db: Database) -> None:
    metrics = Metrics()
    metrics.observe_request("batch", "oa", "gpt-4o", 200, 0.2, 0.15)
    metrics.observe_request("batch", "oa", "gpt-4o", 200, 40.0, 39.0)
    metrics.observe_request("realtime", "oa", "gpt-4o", 429, 0.01, 0.0)
    metrics.observe_request("realtime", None, None, 400, 0.001)
    metrics.add_cost("batch", "oa", "gpt-4o", 0.003, 0.003)
    metrics.add_cost("batch", "oa", "gpt-4o", 0.001, 0.001)
    metrics.add_cost("realtime+cache", "gm", "flash", 0.02, -0.005)
    metrics.add_cost("realtime", "oa", "mystery", None, None)
    metrics.batch_line_failures("oa", "gpt-4o", 3)
    metrics.batch_line_failures("oa", "gpt-4o", 0)

    samples = parse(await metrics.render(db, NOW_MS))

    request = {"lane": "batch", "provider": "oa", "model": "gpt-4o", "status": "200"}
    assert value(samples, "costroute_requests_total", **request) == 2
    assert (
        value(
            samples,
            "costroute_requests_total",
            lane="realtime",
            provider="oa",
            model="gpt-4o",
            status="429",
        )
        == 1
    )
    assert (
        value(
            samples,
            "costroute_requests_total",
            lane="realtime",
            provider="none",
            model="none",
            status="400",
        )
        == 1
    )
    latency = "costroute_request_duration_seconds"
    assert value(samples, f"{latency}_count", lane="batch", provider="oa") == 2
    assert value(samples, f"{latency}_sum", lane="batch", provider="oa") == pytest.approx(40.2)
    assert value(samples, f"{latency}_bucket", lane="batch", provider="oa", le="0.25") == 1
    assert value(samples, f"{latency}_bucket", lane="batch", provider="oa", le="60.0") == 2
    upstream = "costroute_upstream_duration_seconds"
    assert value(samples, f"{upstream}_count", lane="batch", provider="oa") == 2
    # No upstream time: the request never reached a provider.
    assert (
        f"{upstream}_count",
        frozenset({("lane", "realtime"), ("provider", "oa")}),
    ) not in samples

    batch = {"lane": "batch", "provider": "oa", "model": "gpt-4o"}
    assert value(samples, "costroute_cost_usd_total", **batch) == pytest.approx(0.004)
    assert value(samples, "costroute_baseline_usd_total", **batch) == pytest.approx(0.008)
    assert value(samples, "costroute_saved_usd_total", **batch) == pytest.approx(0.004)
    cache = {"lane": "realtime+cache", "provider": "gm", "model": "flash"}
    assert value(samples, "costroute_overspent_usd_total", **cache) == pytest.approx(0.005)
    assert value(samples, "costroute_baseline_usd_total", **cache) == pytest.approx(0.015)
    assert (
        value(
            samples,
            "costroute_unpriced_requests_total",
            lane="realtime",
            provider="oa",
            model="mystery",
        )
        == 1
    )
    assert value(samples, "costroute_batch_line_failures_total", provider="oa", model="gpt-4o") == 3


async def test_queue_gauges_come_from_the_database(db: Database) -> None:
    metrics = Metrics()
    await add_ticket(db, "a", "queued", NOW_MS - 90_000)
    await add_ticket(db, "b", "queued", NOW_MS - 30_000)
    await add_ticket(db, "c", "submitted", NOW_MS - 500_000)
    await add_ticket(db, "d", "completed", NOW_MS - 900_000)
    await add_batch(db, "b1", "oa", "submitted")
    await add_batch(db, "b2", "oa", "created")
    await add_batch(db, "b3", "oa", "completed")
    await add_batch(db, "b4", "gm", "submitted")

    samples = parse(await metrics.render(db, NOW_MS))
    assert value(samples, "costroute_queue_depth", status="queued") == 2
    assert value(samples, "costroute_queue_depth", status="submitted") == 1
    assert value(samples, "costroute_queue_depth", status="realtime") == 0
    assert ("costroute_queue_depth", frozenset({("status", "completed")})) not in samples
    assert value(samples, "costroute_queue_oldest_age_seconds") == 90.0
    assert value(samples, "costroute_active_batches", provider="oa") == 2
    assert value(samples, "costroute_active_batches", provider="gm") == 1

    # The next scrape sees the queue as it is now, not as it was.
    async with db.transaction() as conn:
        await conn.execute("UPDATE tickets SET status = 'completed'")
        await conn.execute("UPDATE batches SET status = 'completed' WHERE provider = 'gm'")
    samples = parse(await metrics.render(db, NOW_MS + 1000))
    assert value(samples, "costroute_queue_depth", status="queued") == 0
    assert value(samples, "costroute_queue_oldest_age_seconds") == 0
    assert ("costroute_active_batches", frozenset({("provider", "gm")})) not in samples
    assert value(samples, "costroute_active_batches", provider="oa") == 2


async def test_labels_are_limited_to_configured_names(db: Database) -> None:
    settings = parse_settings(
        {
            "providers": {"oa": {"type": "openai", "base_url": "http://127.0.0.1:1"}},
            "models": {"fast": {"provider": "oa", "upstream_model": "gpt-4o-mini"}},
        }
    )
    metrics = Metrics.from_settings(settings)
    metrics.observe_request("realtime", "oa", "fast", 200, 0.1, 0.1)
    metrics.observe_request("realtime", "oa", "gpt-4o-mini", 200, 0.1, 0.1)
    for i in range(20):  # a client inventing model names
        metrics.observe_request("realtime", "oa", f"junk-{i}", 404, 0.001)
    metrics.observe_request("realtime", "evil", "fast", 200, 0.1)
    samples = parse(await metrics.render(db, NOW_MS))
    models = {
        dict(labels)["model"] for name, labels in samples if name == "costroute_requests_total"
    }
    assert models == {"fast", "gpt-4o-mini", "other"}
    assert (
        value(
            samples,
            "costroute_requests_total",
            lane="realtime",
            provider="oa",
            model="other",
            status="404",
        )
        == 20
    )
    assert (
        value(
            samples,
            "costroute_requests_total",
            lane="realtime",
            provider="other",
            model="fast",
            status="200",
        )
        == 1
    )


async def test_each_instance_has_its_own_registry(db: Database) -> None:
    one, two = Metrics(), Metrics()
    one.observe_request("realtime", "oa", "m", 200, 0.1)
    samples = parse(await two.render(db, NOW_MS))
    assert not any(name == "costroute_requests_total" for name, _ in samples)
    assert CONTENT_TYPE.startswith("text/plain")
