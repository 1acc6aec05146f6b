import pytest

from adapters.errors import RateLimited, Unsupported, UpstreamStatus, UpstreamTimeout
from proxy.auth import Authenticator
from proxy.errors import Unauthorized
from proxy.lanes.realtime import call_with_retries
from proxy.lanes.retry import retry_delay
from proxy.settings import AuthKey, RetrySettings, hash_key

POLICY = RetrySettings(max_retries=2, backoff_base=0.5, backoff_max=8.0, max_retry_after=60.0)


@pytest.mark.parametrize(
    ("error", "retries_done", "jitter", "expected"),
    [
        (UpstreamStatus(500, {}), 0, 0.0, 0.5),
        (UpstreamStatus(503, {}), 1, 0.0, 1.0),
        (UpstreamStatus(503, {}), 1, 0.999, 1.0 * (1 - 0.25 * 0.999)),
        (UpstreamStatus(503, {}), 2, 0.0, None),  # out of retries
        (UpstreamStatus(400, {}), 0, 0.0, None),  # not retryable
        (UpstreamStatus(402, {}), 0, 0.0, None),  # DeepSeek: insufficient balance
        (UpstreamStatus(500, {}, should_retry=False), 0, 0.0, None),  # x-should-retry wins
        (UpstreamStatus(400, {}, should_retry=True), 0, 0.0, 0.5),
        (RateLimited({}, retry_after=3.0), 0, 0.5, 3.0),  # Retry-After honoured exactly
        (RateLimited({}, retry_after=120.0), 0, 0.0, None),  # longer than we wait: give up
        (UpstreamTimeout(), 0, 0.0, 0.5),
        (Unsupported("no"), 0, 0.0, None),
    ],
)
def test_retry_delay_table(error, retries_done, jitter, expected) -> None:
    delay = retry_delay(error, retries_done=retries_done, policy=POLICY, jitter=jitter)
    assert delay == (pytest.approx(expected) if expected is not None else None)


def test_backoff_is_capped() -> None:
    policy = RetrySettings(max_retries=10, backoff_base=0.5, backoff_max=2.0)
    assert retry_delay(UpstreamStatus(500, {}), retries_done=8, policy=policy, jitter=0) == 2.0


async def test_call_with_retries_retries_then_succeeds_and_counts_attempts() -> None:
    calls = []
    sleeps: list[float] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RateLimited({"message": "slow down"}, retry_after=0.25)
        return "ok"

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    result, attempts = await call_with_retries(flaky, POLICY, sleep=fake_sleep, rand=lambda: 0.0)
    assert (result, attempts, sleeps) == ("ok", 3, [0.25, 0.25])


async def test_call_with_retries_gives_up_with_attempts_on_the_error() -> None:
    async def broken() -> str:
        raise UpstreamStatus(502, {"message": "bad gateway"})

    async def fake_sleep(seconds: float) -> None:
        return None

    with pytest.raises(UpstreamStatus) as info:
        await call_with_retries(broken, POLICY, sleep=fake_sleep, rand=lambda: 0.0)
    assert info.value.attempts == 3


def _auth() -> Authenticator:
    return Authenticator(
        {
            hash_key("sk-a"): AuthKey(name="team-a", key_env="A"),
            hash_key("sk-admin"): AuthKey(name="ops", key_env="B", admin=True),
        }
    )


def test_authenticator_identifies_each_key() -> None:
    auth = _auth()
    assert auth.authenticate("Bearer sk-a").name == "team-a"
    assert not auth.authenticate("Bearer sk-a").admin
    assert auth.authenticate("bearer sk-admin").admin


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic sk-a", "sk-a", "Bearer sk-b"]
)
def test_authenticator_rejects(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        _auth().authenticate(header)


def test_authenticator_keeps_no_plaintext_key() -> None:
    auth = _auth()
    assert "sk-a" not in repr(vars(auth))
