"""Random batch-line failures are drawn per request, not per position in the batch: a
simulated day writes its batch files in ticket-id order, and ticket ids are random, so a
draw by position made the same seed fail different requests from run to run."""

from __future__ import annotations

from types import SimpleNamespace

from adapters.emulators.gemini import batch as gemini_batch
from adapters.emulators.openai.batch.engine import BatchEngine


def test_openai_draws_follow_the_body_and_the_batch_rank() -> None:
    engine = SimpleNamespace(seed=7)
    first, second = SimpleNamespace(rank=0), SimpleNamespace(rank=1)
    a = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}]}
    b = {"messages": [{"content": "a", "role": "user"}], "model": "gpt-4o"}  # same, reordered
    draw = BatchEngine._draw
    assert draw(engine, first, a) == draw(engine, first, b)  # type: ignore[arg-type]
    assert draw(engine, first, a) != draw(engine, second, a)  # type: ignore[arg-type]
    other = {**a, "messages": [{"role": "user", "content": "b"}]}
    assert draw(engine, first, a) != draw(engine, first, other)  # type: ignore[arg-type]


def test_gemini_draws_follow_the_request_and_the_batch() -> None:
    request = {"contents": [{"role": "user", "parts": [{"text": "a"}]}]}
    assert gemini_batch._draw(3, request) == gemini_batch._draw(3, dict(request))
    assert gemini_batch._draw(3, request) != gemini_batch._draw(4, request)
