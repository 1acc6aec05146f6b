"""The real-time retry policy (openai-python's shape), as a pure function.

Retry what the provider marks retryable (408/409/429/5xx, connection errors, timeouts);
honour ``Retry-After`` up to ``max_retry_after`` (a longer wait is passed to the caller
instead); otherwise jittered exponential backoff capped at ``backoff_max``.
"""

from __future__ import annotations

from adapters.errors import AdapterError
from proxy.settings import RetrySettings


def retry_delay(
    error: AdapterError, *, retries_done: int, policy: RetrySettings, jitter: float
) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` to give up.

    ``jitter`` is a random number in [0, 1).
    """
    if not error.retryable or retries_done >= policy.max_retries:
        return None
    if error.retry_after is not None:
        if error.retry_after > policy.max_retry_after:
            return None
        return error.retry_after
    backoff = min(policy.backoff_base * (2.0**retries_done), policy.backoff_max)
    return backoff * (1.0 - 0.25 * jitter)
