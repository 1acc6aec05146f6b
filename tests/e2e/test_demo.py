"""`costroute demo` is the main job: it must run on a fresh machine with no keys and no
network, and show every lane working."""

from __future__ import annotations

import os
import subprocess
import sys


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
    assert "long-polled every ticket: {'completed': 5}" in out
    assert "the same Idempotency-Key again returns the same ticket" in out
    assert "realtime+cache" in out  # the Gemini prompt got cached
    assert "batch line succeeded" in out
    report = out[out.index("costroute report") :]
    for lane in ("batch", "realtime", "realtime+cache", "(total)"):
        assert lane in report
    # No secrets on screen: the demo's provider keys stay inside the proxy.
    assert "sk-emulated" not in out
