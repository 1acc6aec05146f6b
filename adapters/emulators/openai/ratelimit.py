"""OpenAI's per-minute rate-limit window and its ``x-ratelimit-*`` headers (§1.6).

Every answer reports the request and token budget left in the last minute (by the
emulator's clock); reset times are Go-style durations (``12ms``, ``1.5s``, ``6m0s``).
With ``enforce`` the window also refuses requests beyond the limit with a 429, so a
proxy can be tested against real limiting rather than a scripted fault.
"""

from __future__ import annotations

from collections import deque

from adapters.clock import Clock
from adapters.emulators.openai.errors import EmulatorError

_WINDOW = 60.0


def go_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s"


class RateWindow:
    def __init__(self, clock: Clock, *, rpm: int, tpm: int, enforce: bool) -> None:
        self._clock = clock
        self.rpm = rpm
        self.tpm = tpm
        self.enforce = enforce
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()

    def _trim(self) -> float:
        now = self._clock.now()
        while self._requests and now - self._requests[0] >= _WINDOW:
            self._requests.popleft()
        while self._tokens and now - self._tokens[0][0] >= _WINDOW:
            self._tokens.popleft()
        return now

    def admit(self, model: str) -> None:
        """Count one request; with ``enforce``, refuse it when the minute is used up."""
        now = self._trim()
        if self.enforce and len(self._requests) >= self.rpm:
            wait = _WINDOW - (now - self._requests[0])
            raise EmulatorError(
                429,
                f"Rate limit reached for {model} in organization org-emulator on requests per "
                f"min (RPM): Limit {self.rpm}, Used {len(self._requests)}, Requested 1. Please "
                f"try again in {go_duration(wait)}. Visit "
                "https://platform.openai.com/account/rate-limits to learn more.",
                error_type="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": str(max(1, round(wait))), **self.headers(exhausted=True)},
            )
        self._requests.append(now)

    def spend(self, tokens: int) -> None:
        self._tokens.append((self._clock.now(), tokens))

    def headers(self, *, exhausted: bool = False) -> dict[str, str]:
        now = self._trim()
        used_tokens = sum(t for _, t in self._tokens)
        left_requests = 0 if exhausted else max(0, self.rpm - len(self._requests))
        left_tokens = 0 if exhausted else max(0, self.tpm - used_tokens)
        reset_requests = _WINDOW - (now - self._requests[0]) if self._requests else 0.0
        reset_tokens = _WINDOW - (now - self._tokens[0][0]) if self._tokens else 0.0
        return {
            "x-ratelimit-limit-requests": str(self.rpm),
            "x-ratelimit-limit-tokens": str(self.tpm),
            "x-ratelimit-remaining-requests": str(left_requests),
            "x-ratelimit-remaining-tokens": str(left_tokens),
            "x-ratelimit-reset-requests": go_duration(reset_requests),
            "x-ratelimit-reset-tokens": go_duration(reset_tokens),
        }
