"""Alert rules: pure functions of rows, thresholds and the time now.

=====================  ============================================  =========================
rule                   fires when                                    severity
=====================  ============================================  =========================
``batch_stuck``        a batch has been in progress (``created`` or  warning; critical once
                       ``submitted``) longer than                    past the provider's 24 h
                       ``batch.stuck_after``, counted from its       completion window
                       submission (from its creation if it never
                       reached the provider)
``batch_failure_rate`` of the lines in a provider's batches that     warning; critical when
                       ended in the last 24 h, the failed share is   every line failed
                       above ``batch.alert_failure_rate``
``queue_age``          the oldest queued ticket of one (lane,        warning
                       provider, model) queue has waited longer
                       than ``batch.alert_queue_age``
``webhook_failures``   a delivery to one host has failed             warning; critical once a
                       ``webhooks.alert_failures`` times in a row,   delivery gave up
                       or gave up, in the last 24 h
=====================  ============================================  =========================

Failed lines: a batch that ended ``failed`` or ``expired`` fails every line it did not
complete; a ``completed`` batch fails its ``failed_lines``; a ``cancelled`` batch was an
operator's choice and is left out. An off-peak ticket waits on purpose until its window
opens, so its queue age counts from ``not_before``. Webhook alerts name the host only:
a callback URL's path or query may carry the receiver's token.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from proxy.settings import Settings
from proxy.store.admin import WINDOW_MS, Delivery, EndedBatch, Facts, LiveBatch, Queue

_ENDED_FAILING = frozenset({"failed", "expired"})
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")


class AlertKind(StrEnum):
    BATCH_STUCK = "batch_stuck"
    BATCH_FAILURE_RATE = "batch_failure_rate"
    QUEUE_AGE = "queue_age"
    WEBHOOK_FAILURES = "webhook_failures"


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Thresholds:
    stuck_after_s: int
    failure_rate: float
    queue_age_s: int
    webhook_failures: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        batch = settings.batch
        return cls(
            stuck_after_s=batch.stuck_after,
            failure_rate=batch.alert_failure_rate,
            queue_age_s=batch.alert_queue_age,
            webhook_failures=settings.webhooks.alert_failures,
        )


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AlertKind
    severity: Severity
    subject: str
    message: str
    value: float
    threshold: float
    since_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "severity": self.severity.value,
            "subject": self.subject,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "since": None if self.since_ms is None else _iso(self.since_ms),
        }


def evaluate(facts: Facts, thresholds: Thresholds, now_ms: int) -> list[Alert]:
    """Every alert that holds now: critical first, then the longest-standing."""
    alerts = [
        *stuck_batches(facts.live_batches, thresholds.stuck_after_s, now_ms),
        *failure_rates(facts.ended_batches, thresholds.failure_rate, now_ms),
        *old_queues(facts.queues, thresholds.queue_age_s, now_ms),
        *webhook_failures(facts.deliveries, thresholds.webhook_failures, now_ms),
    ]
    return sorted(
        alerts,
        key=lambda a: (a.severity is not Severity.CRITICAL, a.since_ms or now_ms, a.subject),
    )


def stuck_batches(batches: Iterable[LiveBatch], stuck_after_s: int, now_ms: int) -> list[Alert]:
    found = []
    for batch in batches:
        if batch.status not in ("created", "submitted"):
            continue
        started = batch.submitted_ms if batch.submitted_ms is not None else batch.created_ms
        age_s = (now_ms - started) / 1000
        if age_s <= stuck_after_s:
            continue
        where = (
            f"at the provider as {batch.provider_batch_id}"
            if batch.provider_batch_id
            else "never accepted by the provider"
        )
        found.append(
            Alert(
                AlertKind.BATCH_STUCK,
                Severity.CRITICAL if age_s * 1000 > WINDOW_MS else Severity.WARNING,
                batch.id,
                f"Batch {batch.id} ({batch.provider} {batch.model}, {where}) has been "
                f"{batch.status} for {human_duration(age_s)} "
                f"(threshold {human_duration(stuck_after_s)}).",
                value=round(age_s),
                threshold=stuck_after_s,
                since_ms=started,
            )
        )
    return found


def failure_rates(batches: Iterable[EndedBatch], threshold: float, now_ms: int) -> list[Alert]:
    lines: dict[str, int] = defaultdict(int)
    failed: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    first: dict[str, int] = {}
    for batch in batches:
        if batch.finished_ms < now_ms - WINDOW_MS or batch.line_count <= 0:
            continue
        if batch.status in _ENDED_FAILING:
            bad = batch.line_count - batch.completed_lines
        elif batch.status == "completed":
            bad = batch.failed_lines
        else:
            continue
        lines[batch.provider] += batch.line_count
        failed[batch.provider] += min(max(bad, 0), batch.line_count)
        count[batch.provider] += 1
        first[batch.provider] = min(first.get(batch.provider, batch.finished_ms), batch.finished_ms)
    found = []
    for provider in sorted(lines):
        rate = failed[provider] / lines[provider]
        if rate <= threshold:
            continue
        found.append(
            Alert(
                AlertKind.BATCH_FAILURE_RATE,
                Severity.CRITICAL if failed[provider] == lines[provider] else Severity.WARNING,
                provider,
                f"{provider}: {rate:.0%} of {lines[provider]:,} batch lines failed in the "
                f"{plural(count[provider], 'batch', 'batches')} that ended in the last 24h "
                f"(threshold {threshold:.0%}).",
                value=round(rate, 4),
                threshold=threshold,
                since_ms=first[provider],
            )
        )
    return found


def old_queues(queues: Iterable[Queue], queue_age_s: int, now_ms: int) -> list[Alert]:
    found = []
    for queue in queues:
        age_s = (now_ms - queue.waiting_since_ms) / 1000
        if queue.count <= 0 or age_s <= queue_age_s:
            continue
        subject = f"{queue.lane}/{queue.provider}/{queue.model}"
        found.append(
            Alert(
                AlertKind.QUEUE_AGE,
                Severity.WARNING,
                subject,
                f"The {queue.lane} queue for {queue.provider} {queue.model} holds "
                f"{plural(queue.count, 'ticket')}; the oldest has waited {human_duration(age_s)} "
                f"(threshold {human_duration(queue_age_s)}).",
                value=round(age_s),
                threshold=queue_age_s,
                since_ms=queue.waiting_since_ms,
            )
        )
    return found


def webhook_failures(deliveries: Iterable[Delivery], threshold: int, now_ms: int) -> list[Alert]:
    by_host: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        recent = delivery.updated_ms >= now_ms - WINDOW_MS
        if recent and delivery.attempts > 0 and delivery.status in ("pending", "failed"):
            by_host[host_of(delivery.url)].append(delivery)
    found = []
    for host in sorted(by_host):
        failing = by_host[host]
        worst = max(d.attempts for d in failing)
        gave_up = sum(d.status == "failed" for d in failing)
        if worst < threshold and not gave_up:
            continue
        latest = max(failing, key=lambda d: d.updated_ms)
        error = scrub(latest.last_error or "unknown error")
        found.append(
            Alert(
                AlertKind.WEBHOOK_FAILURES,
                Severity.CRITICAL if gave_up else Severity.WARNING,
                host,
                f"Webhooks to {host}: {plural(len(failing), 'delivery', 'deliveries')} "
                f"failing (up to {worst} tries in a row), {gave_up} gave up; last error: {error} "
                f"(threshold {threshold} failures).",
                value=worst,
                threshold=threshold,
                since_ms=min(d.updated_ms for d in failing),
            )
        )
    return found


def host_of(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        return "?"


def scrub(text: str, limit: int = 200) -> str:
    """An error message without any URL in it (a URL may carry a token)."""
    return _URL.sub(lambda m: f"<{host_of(m.group(0))}>", text)[:limit]


def plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def human_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``6h 30m``, ``2d 3h``: the two largest units, rounded down."""
    whole = max(int(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    shown = [f"{value}{unit}" for value, unit in parts[:2] if value]
    return " ".join(shown) or "0s"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
