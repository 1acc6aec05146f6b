"""`costroute demo` is the main job: it must run on a fresh machine with no keys and no
network, and show every lane working."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_demo_runs_every_lane_and_ends_with_the_savings_report() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--requests", "2", "--deferred", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "long-polled every gpt-4o-mini ticket: {'completed': 5}" in out
    # Deferred Gemini requests go through a Gemini batch, at the batch price.
    assert "long-polled every gemini-2.5-flash ticket: {'completed': 2}" in out
    gemini_batch = [
        line for line in out.splitlines()
        if "gemini-2.5-flash" in line and " batch " in line and "batch line succeeded" in line
    ]  # fmt: skip
    # The two deferred chat calls, plus the Gemini lines of the demo's Batch API file.
    assert len(gemini_batch) >= 2
    for line in gemini_batch:
        cost, saved = line.split()[-5:-3]
        assert float(saved) > 0
        assert float(saved) == pytest.approx(float(cost), abs=2e-6)  # half price
    assert "the same Idempotency-Key again returns the same ticket" in out
    assert "realtime+cache" in out  # the Gemini prompt got cached
    assert "batch line succeeded" in out
    report = out[out.index("costroute report") :]
    for lane in ("batch", "realtime", "realtime+cache", "(total)"):
        assert lane in report
    # No secrets on screen: the demo's provider keys stay inside the proxy.
    assert "sk-emulated" not in out
