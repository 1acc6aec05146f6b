"""Alert rules as tables: rows + thresholds + now -> alerts (``proxy/ops/alerts.py``)."""

from __future__ import annotations

import pytest

from proxy.ops.alerts import (
    WINDOW_MS,
    Alert,
    AlertKind,
    Delivery,
    EndedBatch,
    Facts,
    LiveBatch,
    Queue,
    Severity,
    Thresholds,
    evaluate,
    failure_rates,
    host_of,
    human_duration,
    old_queues,
    scrub,
    stuck_batches,
    webhook_failures,
)
from proxy.settings import parse_settings

NOW = 1_800_000_000_000
H = 3_600_000
T = Thresholds(stuck_after_s=6 * 3600, failure_rate=0.2, queue_age_s=3600, webhook_failures=3)


def _live(status: str = "submitted", *, created: int, submitted: int | None) -> LiveBatch:
    return LiveBatch("cb_1", "openai", "gpt-4o-mini", status, created, submitted, "batch_abc")


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        # Exactly at the threshold is not yet stuck; one millisecond later it is.
        (_live(created=NOW - 7 * H, submitted=NOW - 6 * H), None),
        (_live(created=NOW - 7 * H, submitted=NOW - 6 * H - 1000), Severity.WARNING),
        # Age counts from submission, not creation.
        (_live(created=NOW - 30 * H, submitted=NOW - 2 * H), None),
        # Never accepted by the provider: counts from creation.
        (_live("created", created=NOW - 7 * H, submitted=None), Severity.WARNING),
        # Past the provider's 24 h completion window: critical.
        (_live(created=NOW - 25 * H, submitted=NOW - 25 * H), Severity.CRITICAL),
        # Finished batches are never stuck.
        (_live("completed", created=NOW - 30 * H, submitted=NOW - 30 * H), None),
        (_live("expired", created=NOW - 30 * H, submitted=NOW - 30 * H), None),
    ],
)
def test_stuck_batches(batch: LiveBatch, expected: Severity | None) -> None:
    found = stuck_batches([batch], T.stuck_after_s, NOW)
    assert [a.severity for a in found] == ([] if expected is None else [expected])
    for alert in found:
        assert alert.kind is AlertKind.BATCH_STUCK
        assert alert.subject == "cb_1"
        assert alert.threshold == T.stuck_after_s
        assert alert.since_ms == (batch.submitted_ms or batch.created_ms)


def test_a_stuck_batch_says_where_it_is() -> None:
    at_provider = stuck_batches([_live(created=NOW - 8 * H, submitted=NOW - 8 * H)], 3600, NOW)
    assert "batch_abc" in at_provider[0].message
    assert "8h" in at_provider[0].message
    local = LiveBatch("cb_2", "openai", "m", "created", NOW - 8 * H, None, None)
    assert "never accepted" in stuck_batches([local], 3600, NOW)[0].message


def _ended(
    status: str, lines: int, done: int, failed: int, *, provider: str = "openai", ago: int = H
) -> EndedBatch:
    return EndedBatch("cb", provider, status, lines, done, failed, NOW - ago)


@pytest.mark.parametrize(
    ("batches", "expected"),
    [
        ([], {}),
        # 20 % is the threshold itself: no alert; above it: an alert.
        ([_ended("completed", 10, 8, 2)], {}),
        ([_ended("completed", 10, 7, 3)], {"openai": (0.3, Severity.WARNING)}),
        # Lines are pooled over a provider's batches.
        ([_ended("completed", 10, 7, 3), _ended("completed", 90, 90, 0)], {}),
        # A failed or expired batch fails every line it did not complete.
        ([_ended("expired", 10, 6, 0)], {"openai": (0.4, Severity.WARNING)}),
        ([_ended("failed", 10, 0, 0)], {"openai": (1.0, Severity.CRITICAL)}),
        # Cancelled batches were an operator's choice.
        ([_ended("cancelled", 10, 0, 0)], {}),
        # Only the last 24 h count.
        ([_ended("failed", 10, 0, 0, ago=WINDOW_MS + 1)], {}),
        ([_ended("failed", 10, 0, 0, ago=WINDOW_MS)], {"openai": (1.0, Severity.CRITICAL)}),
        # Per provider.
        (
            [_ended("completed", 10, 5, 5), _ended("completed", 10, 10, 0, provider="gemini")],
            {"openai": (0.5, Severity.WARNING)},
        ),
        # Empty batches carry no information.
        ([_ended("failed", 0, 0, 0)], {}),
    ],
)
def test_failure_rates(
    batches: list[EndedBatch], expected: dict[str, tuple[float, Severity]]
) -> None:
    found = failure_rates(batches, 0.2, NOW)
    assert {a.subject: (a.value, a.severity) for a in found} == expected
    assert all(a.kind is AlertKind.BATCH_FAILURE_RATE for a in found)


@pytest.mark.parametrize(
    ("queue", "alert"),
    [
        (Queue("batch", "openai", "gpt-4o-mini", 3, NOW - H), False),
        (Queue("batch", "openai", "gpt-4o-mini", 3, NOW - H - 1000), True),
        (Queue("batch", "openai", "gpt-4o-mini", 0, NOW - 5 * H), False),
        # An off-peak ticket whose window has not opened yet waits on purpose.
        (Queue("offpeak", "deepseek", "deepseek-chat", 1, NOW + 2 * H), False),
    ],
)
def test_old_queues(queue: Queue, alert: bool) -> None:
    found = old_queues([queue], 3600, NOW)
    assert len(found) == int(alert)
    if alert:
        assert found[0].subject == f"{queue.lane}/{queue.provider}/{queue.model}"
        assert found[0].severity is Severity.WARNING
        assert "3 tickets" in found[0].message


def _hook(attempts: int, status: str = "pending", *, url: str = "https://hooks.test/cb?token=s3cr3t",
          ago: int = H, error: str | None = "HTTP 500") -> Delivery:  # fmt: skip
    return Delivery(url, status, attempts, error, NOW - ago)


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        ([_hook(2)], {}),
        ([_hook(3)], {"hooks.test": (3, Severity.WARNING)}),
        ([_hook(1), _hook(2)], {}),  # failures of different deliveries are not "in a row"
        ([_hook(5), _hook(1)], {"hooks.test": (5, Severity.WARNING)}),
        # A delivery that gave up is critical whatever its count.
        ([_hook(2, "failed")], {"hooks.test": (2, Severity.CRITICAL)}),
        # Delivered ones and ones never tried do not count; nor do old ones.
        ([_hook(4, "delivered"), _hook(0)], {}),
        ([_hook(4, ago=WINDOW_MS + 1)], {}),
        # Grouped by host (and port).
        (
            [_hook(3), _hook(4, url="http://other.test:8080/x")],
            {"hooks.test": (3, Severity.WARNING), "other.test:8080": (4, Severity.WARNING)},
        ),
    ],
)
def test_webhook_failures(
    deliveries: list[Delivery], expected: dict[str, tuple[int, Severity]]
) -> None:
    found = webhook_failures(deliveries, 3, NOW)
    assert {a.subject: (a.value, a.severity) for a in found} == expected


def test_webhook_alerts_never_show_the_callback_url() -> None:
    url = "https://hooks.test/cb/s3cr3t-path?token=s3cr3t"
    [alert] = webhook_failures(
        [_hook(4, url=url, error=f"ConnectError: cannot reach {url} now")], 3, NOW
    )
    assert "s3cr3t" not in alert.message
    assert "hooks.test" in alert.message
    assert "ConnectError" in alert.message


def test_evaluate_orders_critical_first_then_oldest() -> None:
    facts = Facts(
        live_batches=[
            LiveBatch("young", "openai", "m", "submitted", NOW - 7 * H, NOW - 7 * H),
            LiveBatch("old", "openai", "m", "submitted", NOW - 9 * H, NOW - 9 * H),
        ],
        ended_batches=[_ended("failed", 4, 0, 0)],
        queues=[Queue("batch", "openai", "m", 1, NOW - 2 * H)],
        deliveries=[_hook(3)],
    )
    found = evaluate(facts, T, NOW)
    assert [(a.kind, a.subject) for a in found] == [
        (AlertKind.BATCH_FAILURE_RATE, "openai"),  # critical: every line failed
        (AlertKind.BATCH_STUCK, "old"),
        (AlertKind.BATCH_STUCK, "young"),
        (AlertKind.QUEUE_AGE, "batch/openai/m"),
        (AlertKind.WEBHOOK_FAILURES, "hooks.test"),
    ]
    assert evaluate(Facts(), T, NOW) == []


def test_thresholds_come_from_the_config() -> None:
    settings = parse_settings(
        {
            "batch": {"stuck_after": "2h", "alert_failure_rate": 0.5, "alert_queue_age": "10m"},
            "webhooks": {"alert_failures": 7},
        }
    )
    assert Thresholds.from_settings(settings) == Thresholds(7200, 0.5, 600, 7)
    assert Thresholds.from_settings(parse_settings({})) == T


def test_alert_as_dict() -> None:
    alert = Alert(AlertKind.QUEUE_AGE, Severity.WARNING, "s", "m", 1.0, 2.0, 1_767_225_600_000)
    assert alert.as_dict() == {
        "kind": "queue_age",
        "severity": "warning",
        "subject": "s",
        "message": "m",
        "value": 1.0,
        "threshold": 2.0,
        "since": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (-5, "0s"), (45, "45s"), (60, "1m"), (61, "1m 1s"), (3600, "1h"),
     (23_400, "6h 30m"), (86_400 + 3 * 3600 + 59, "1d 3h"), (2 * 86_400 + 30, "2d")],
)  # fmt: skip
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_host_and_scrub() -> None:
    assert host_of("https://user:pw@hooks.test:8443/p?q=1") == "hooks.test:8443"
    assert host_of("not a url") == "?"
    assert (
        scrub("failed: https://a.test/x?t=1 and http://b.test/") == "failed: <a.test> and <b.test>"
    )
