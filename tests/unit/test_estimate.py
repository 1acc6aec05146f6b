"""`costroute estimate`: the issue's figures, exactly."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.costs import estimate


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="costroute")
    estimate.add_parser(parser.add_subparsers())
    args = parser.parse_args(["estimate", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def gpt4o(requests: str, per: str, *extra: str) -> list[str]:
    return [
        "--model",
        "gpt-4o",
        "--requests",
        requests,
        "--per",
        per,
        "--input-tokens",
        "800",
        "--output-tokens",
        "400",
        *extra,
    ]


def test_a_thousand_requests_a_day(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(gpt4o("1000", "day", "--json"), capsys)
    assert code == 0
    result = json.loads(out)
    assert result["realtime_cost"] == 6.0
    assert result["batch_cost"] == 3.0
    assert result["savings"] == 3.0
    assert result["period"] == "day"
    assert result["savings_per_year"] == 1095.0
    assert result["prices"] == {
        "input": 2.5,
        "cached_input": 1.25,
        "output": 10.0,
        "batch_discount": 0.5,
    }
    assert result["source"][0].startswith("genai-prices")


@pytest.mark.parametrize(
    ("requests", "realtime", "batch"),
    [("10000", 60.0, 30.0), ("100K", 600.0, 300.0), ("1M", 6000.0, 3000.0)],
)
def test_per_month(
    capsys: pytest.CaptureFixture[str], requests: str, realtime: float, batch: float
) -> None:
    code, out, _ = run(gpt4o(requests, "month", "--json"), capsys)
    assert code == 0
    result = json.loads(out)
    assert (result["realtime_cost"], result["batch_cost"]) == (realtime, batch)
    assert result["savings"] == realtime - batch
    assert result["savings_per_year"] == (realtime - batch) * 12
    assert result["period"] == "month"


def test_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(gpt4o("1,000", "day"), capsys)
    assert code == 0
    lines = out.splitlines()
    assert "gpt-4o (openai): 1,000 requests a day, 800 input + 400 output tokens each" in lines
    assert lines[1] == (
        "prices per 1M tokens: input $2.50, cached input $1.25, output $10.00; batch 50% off"
    )
    assert lines[2].startswith("source: genai-prices")
    assert lines[3] == ""
    assert lines[4].split() == ["per", "day", "per", "year"]
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[5:]}
    assert rows["real time"][-2:] == ["$6.00", "$2,190.00"]
    assert rows["batch"][-2:] == ["$3.00", "$1,095.00"]
    assert rows["saved"][-2:] == ["$3.00", "$1,095.00"]


def test_exact_decimal_arithmetic() -> None:
    from proxy.costs.pricing import Pricer
    from proxy.settings import ModelPrice

    rates = Pricer(user_models={"m": ModelPrice(input=0.1, output=0.3)}).rates("openai", "m", 0)
    assert rates is not None
    result = estimate.estimate(
        rates,
        model="m",
        provider_type="openai",
        requests=3,
        period="day",
        input_tokens=1,
        output_tokens=1,
    )
    assert result.realtime == Decimal("0.0000012")  # float arithmetic gives 1.2000000000000002e-06
    assert result.batch == Decimal("0.0000006")


def test_cached_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(gpt4o("1000", "day", "--cached-tokens", "400", "--json"), capsys)
    assert code == 0
    # 400 * 2.5 + 400 * 1.25 + 400 * 10 = 5,500 micro-dollars a request.
    assert json.loads(out)["realtime_cost"] == 5.5


def test_config_overrides_and_names_its_source(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "costroute.toml"
    config.write_text(
        '[providers.oa]\ntype = "openai"\nbase_url = "http://127.0.0.1:9"\n'
        '[models.fast]\nprovider = "oa"\nupstream_model = "gpt-4o"\n'
        '[pricing.models."gpt-4o"]\ninput = 5.0\noutput = 20.0\n'
    )
    code, out, _ = run(
        [
            "--model",
            "fast",
            "--requests",
            "1000",
            "--input-tokens",
            "800",
            "--output-tokens",
            "400",
            "--config",
            str(config),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    result = json.loads(out)
    assert result["model"] == "gpt-4o"
    assert (result["realtime_cost"], result["batch_cost"]) == (12.0, 6.0)
    assert result["source"][-1] == "pricing.models"


def test_deepseek_has_no_batch_lane_but_shows_its_windows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "--model",
        "deepseek-flash",
        "--requests",
        "1M",
        "--per",
        "month",
        "--input-tokens",
        "800",
        "--output-tokens",
        "400",
    ]
    code, out, _ = run([*argv, "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["batch_available"] is False
    assert result["batch_cost"] is None
    assert result["savings_per_year"] is None
    assert result["realtime_cost"] == 360.0  # 1M * (800 * 0.15 + 400 * 0.60) / 1M
    assert [w["name"] for w in result["price_windows"]] == ["peak-morning", "peak-afternoon"]
    code, out, _ = run(argv, capsys)
    assert "deepseek has no batch lane" in out
    assert "price window peak-morning: x2 01:00-04:00 UTC" in out


def test_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        [
            "--model",
            "gpt-unknown",
            "--requests",
            "1",
            "--input-tokens",
            "1",
            "--output-tokens",
            "1",
        ],
        capsys,
    )
    assert code == 1
    assert out == ""
    assert "no price known for openai model 'gpt-unknown'" in err


def test_provider_must_be_known() -> None:
    from proxy.settings import ConfigError

    parser = argparse.ArgumentParser()
    estimate.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "estimate",
            "--model",
            "llama",
            "--requests",
            "1",
            "--input-tokens",
            "1",
            "--output-tokens",
            "1",
        ]
    )
    with pytest.raises(ConfigError, match="--provider-type"):
        args.func(args)


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("1000", 1000), ("1,000", 1000), ("10K", 10_000), ("2m", 2_000_000)],
)
def test_counts(text: str, value: int) -> None:
    assert estimate._count(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1.5K", "ten", "1G"])
def test_bad_counts(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        estimate._count(text)
