"""Hypothesis properties of the pure parts that take untrusted input: the duration
parser (header and config), the planner, and the Gemini translation (requests in,
replies out). Slow tier: ``pytest -m fuzz tests/fuzz`` or ``tests/fuzz/run.sh``;
``FUZZ_EXAMPLES`` sets the examples per property (default 500)."""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.errors import AdapterError
from adapters.gemini.chat import GeminiAdapter
from adapters.gemini.reply import parse_response
from adapters.gemini.translate import build_request
from adapters.registry import capabilities
from proxy.costs.windows import window_multiplier as multiplier_at
from proxy.durations import MAX_SECONDS, DurationError, format_duration, parse_duration
from proxy.lanes.planner import Lane, plan
from proxy.settings import ConfigError, parse_settings

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# --- durations ---------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=40))
def test_parse_duration_accepts_or_refuses_cleanly(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except DurationError as exc:
        refusal = str(exc)
        seconds = -1
    if seconds < 0:
        assert refusal
        return
    assert 0 <= seconds <= MAX_SECONDS
    assert parse_duration(format_duration(seconds)) == seconds


@FUZZ
@given(st.integers(0, MAX_SECONDS))
def test_format_then_parse_round_trips(seconds: int) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert len(text) <= 10


@FUZZ
@given(st.integers(0, 10**9), st.sampled_from(sorted(UNITS)), st.sampled_from(["", " ", "\t"]))
def test_the_grammar_is_exactly_integer_and_unit(number: int, unit: str, pad: str) -> None:
    text = f"{pad}{number}{unit}{pad}"
    expected = number * UNITS[unit]
    if expected > MAX_SECONDS:
        with pytest.raises(DurationError):
            parse_duration(text)
    else:
        assert parse_duration(text) == expected


# --- planner -----------------------------------------------------------------------------

NOW = st.floats(1_700_000_000, 1_900_000_000, allow_nan=False)
HHMM = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
WINDOW = st.fixed_dictionaries(
    {
        "name": st.just("w"),
        "days": st.lists(
            st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
            min_size=1,
            unique=True,
        ),
        "start": HHMM,
        "end": HHMM,
        "multiplier": st.floats(0.1, 4, allow_nan=False),
    }
)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "providers": {
            "openai": {"type": "openai", "base_url": "http://o.test/v1"},
            "deepseek": {
                "type": "deepseek",
                "base_url": "http://d.test",
                "price_windows": draw(st.lists(WINDOW, max_size=3)),
            },
            "gemini": {"type": "gemini", "base_url": "http://g.test/v1beta"},
        },
        "models": {
            "o": {"provider": "openai", "flex": draw(st.booleans()), "batch": draw(st.booleans())},
            "e": {"provider": "openai", "kind": "embedding"},
            "d": {"provider": "deepseek"},
            "g": {"provider": "gemini"},
        },
        "batch": {
            "min_tolerance": draw(st.integers(0, 86400)),
            "flex_min_tolerance": draw(st.integers(0, 3600)),
            "deadline_margin": draw(st.integers(0, 7200)),
        },
    }


@FUZZ
@given(
    configs(),
    st.sampled_from(["o", "e", "d", "g"]),
    st.one_of(st.none(), st.integers(0, MAX_SECONDS)),
    NOW,
)
def test_plan_is_total_and_its_lanes_keep_their_promises(
    data: dict[str, Any], model: str, tolerance: int | None, now: float
) -> None:
    try:
        config = parse_settings(data)
    except ConfigError:
        return
    endpoint = "/v1/embeddings" if model == "e" else "/v1/chat/completions"
    decision = plan(model=model, endpoint=endpoint, tolerance=tolerance, settings=config, now=now)
    assert decision.reason
    assert decision.provider == config.models[model].provider
    provider = config.providers[decision.provider]
    if not tolerance:
        assert decision.lane is Lane.REALTIME
        return
    if decision.deferred:
        assert decision.deadline == pytest.approx(now + tolerance)
    if decision.lane is Lane.BATCH:
        # Only a provider with a batch lane that carries this endpoint (OpenAI; Gemini for chat).
        can = capabilities(provider.type)
        assert can.batch
        assert can.batch_endpoints is None or endpoint in can.batch_endpoints
        assert config.models[model].batch
        assert tolerance >= config.batch.min_tolerance
    if decision.lane is Lane.FLEX:
        assert config.models[model].flex
        assert endpoint == "/v1/chat/completions"
        assert tolerance >= config.batch.flex_min_tolerance
    if decision.lane is Lane.OFFPEAK:
        assert decision.not_before is not None
        latest = now + tolerance - config.batch.deadline_margin
        assert now < decision.not_before <= latest
        windows = provider.price_windows
        assert multiplier_at(windows, decision.not_before) < multiplier_at(windows, now)


# --- Gemini translation ------------------------------------------------------------------

# What orjson.loads can produce from a provider reply (64-bit integers, finite floats).
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
ROLE = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "x"])
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}),
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": st.text()})}
    ),
    st.fixed_dictionaries({"type": st.text(max_size=8)}),
)
MESSAGE = st.fixed_dictionaries(
    {"role": ROLE},
    optional={
        "content": st.one_of(st.none(), st.text(max_size=30), st.lists(PART, max_size=3), JSON),
        "tool_call_id": st.text(max_size=8),
        "name": st.text(max_size=8),
        "tool_calls": st.one_of(
            JSON,
            st.lists(
                st.fixed_dictionaries(
                    {
                        "id": st.text(max_size=8),
                        "type": st.just("function"),
                        "function": st.fixed_dictionaries(
                            {"name": st.text(max_size=8), "arguments": st.text(max_size=30)}
                        ),
                    }
                ),
                max_size=2,
            ),
        ),
    },
)
CHAT = st.fixed_dictionaries(
    {"model": st.one_of(st.just("gemini-2.5-flash"), JSON), "messages": st.lists(MESSAGE)},
    optional={
        "tools": JSON,
        "tool_choice": JSON,
        "temperature": JSON,
        "max_tokens": JSON,
        "stop": JSON,
        "n": JSON,
        "response_format": JSON,
        # Scalars only: the list/object case is its own test below.
        "reasoning_effort": SCALARS,
        "seed": JSON,
    },
)


def test_build_request_refuses_an_unhashable_reasoning_effort() -> None:
    # Was a TypeError (a 500) from `effort not in _THINKING_BUDGET` on a list; now the
    # adapter refuses any non-string effort with a 400 naming the field.
    messages = [{"role": "user", "content": "hi"}]
    for effort in ([], {}, ["low"], 3):
        with pytest.raises(AdapterError) as refused:
            build_request(
                {"model": "gemini-2.5-flash", "messages": messages, "reasoning_effort": effort}
            )
        assert refused.value.status == 400
        assert refused.value.param == "reasoning_effort"


@FUZZ
@given(CHAT)
def test_build_request_translates_or_refuses_with_a_400(body: dict[str, Any]) -> None:
    try:
        call = build_request(body)
    except AdapterError as exc:  # Unsupported: a 400 naming the field
        refused: AdapterError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.status == 400
        assert refused.message
        return
    orjson.dumps(call.payload)  # plain JSON, nothing else
    roles = [turn.get("role") for turn in call.payload["contents"]]
    assert all(role in ("user", "model") for role in roles)
    assert all(a != b for a, b in itertools.pairwise(roles))  # strict alternation
    for turn in call.payload["contents"]:
        for part in turn.get("parts", []):
            assert part.get("text", "x") != ""  # Gemini rejects empty text parts


CANDIDATE = st.fixed_dictionaries(
    {},
    optional={
        "content": st.one_of(
            JSON,
            st.fixed_dictionaries(
                {
                    "parts": st.lists(
                        st.one_of(
                            st.fixed_dictionaries({"text": st.text(max_size=20)}),
                            st.fixed_dictionaries(
                                {
                                    "functionCall": st.fixed_dictionaries(
                                        {"name": st.text(max_size=8), "args": JSON}
                                    )
                                }
                            ),
                            JSON,
                        ),
                        max_size=4,
                    )
                }
            ),
        ),
        # Strings only: the non-string case is its own test above.
        "finishReason": st.one_of(st.none(), st.text(max_size=12)),
        "index": JSON,
    },
)
REPLY = st.fixed_dictionaries(
    {},
    optional={
        "candidates": st.one_of(st.lists(CANDIDATE, max_size=3), JSON),
        "usageMetadata": JSON,
        "modelVersion": JSON,
        "responseId": JSON,
        "promptFeedback": JSON,
    },
)


def test_parse_response_refuses_a_non_string_finish_reason() -> None:
    # Was a TypeError from `reason in _CONTENT_FILTER` on a list; now a ValueError naming
    # the field, which the adapter's translation guard turns into a 502 for the caller.
    with pytest.raises(ValueError, match="finishReason"):
        parse_response({"candidates": [{"finishReason": []}]}, model="gemini-2.5-flash", created=1)

    async def through_the_adapter() -> None:
        answer = {"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": []}]}
        adapter = _adapter(httpx.Response(200, content=orjson.dumps(answer)))
        try:
            with pytest.raises(AdapterError) as failed:
                await adapter.complete(dict(REQUEST), headers={})
            assert failed.value.status == 502
        finally:
            await adapter.aclose()

    asyncio.run(through_the_adapter())


@FUZZ
@given(REPLY)
def test_parse_response_gives_a_chat_completion_or_an_upstream_error(data: dict[str, Any]) -> None:
    try:
        reply = parse_response(data, model="gemini-2.5-flash", created=1)
    except AdapterError as exc:
        refused: AdapterError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.status >= 500
        return
    orjson.dumps(reply)
    assert reply["object"] == "chat.completion"
    for choice in reply["choices"]:
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["finish_reason"], str)


# --- the Gemini adapter as the proxy uses it -----------------------------------------------


def _adapter(answer: httpx.Response) -> GeminiAdapter:
    transport = httpx.MockTransport(lambda request: answer)
    client = httpx.AsyncClient(transport=transport, base_url="http://gemini.test/v1beta")
    return GeminiAdapter(client, api_key="k")


REQUEST = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
# Replies whose finishReason (or anything else) is any JSON value at all.
WILD_REPLY = st.one_of(
    REPLY,
    st.fixed_dictionaries(
        {
            "candidates": st.lists(
                st.dictionaries(
                    st.sampled_from(["content", "finishReason", "index", "safetyRatings"]), JSON
                ),
                max_size=3,
            )
        }
    ),
)


@FUZZ
@given(WILD_REPLY)
def test_a_gemini_reply_of_any_shape_is_a_reply_or_an_adapter_error(data: dict[str, Any]) -> None:
    async def run() -> None:
        adapter = _adapter(httpx.Response(200, content=orjson.dumps(data)))
        try:
            reply = await adapter.complete(dict(REQUEST), headers={})
        except AdapterError as exc:  # the proxy renders it (502)
            assert exc.status >= 500  # noqa: PT017
        else:
            assert orjson.loads(reply.body)["object"] == "chat.completion"
        finally:
            await adapter.aclose()

    asyncio.run(run())


@FUZZ
@given(st.lists(st.one_of(WILD_REPLY, JSON), max_size=5))
def test_a_gemini_stream_of_any_events_relays_or_fails_cleanly(events: list[Any]) -> None:
    body = b"".join(b"data: " + orjson.dumps(event) + b"\r\n\r\n" for event in events)

    async def run() -> None:
        answer = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        adapter = _adapter(answer)
        stream = await adapter.open_stream({**REQUEST, "stream": True}, headers={})
        try:
            frames = [frame async for frame in stream.events()]
        except AdapterError as exc:  # the relay turns it into an in-band error event
            assert exc.status >= 500  # noqa: PT017
        else:
            assert frames[-1] == b"data: [DONE]\n\n"
        finally:
            await stream.aclose()
            await adapter.aclose()

    asyncio.run(run())
