from pathlib import Path

import pytest

from proxy.durations import DurationError, format_duration, parse_duration
from proxy.settings import ConfigError, load_settings, parse_settings, resolve_client_keys

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("90s", 90),
        ("15m", 900),
        ("4h", 14400),
        ("24h", 86400),
        ("1d", 86400),
        (" 2h ", 7200),
    ],
)
def test_parse_duration_accepts_the_contract(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "1.5h", "-1h", "1w", "h", "1 h", "10ms", "31d", "1h30m"])
def test_parse_duration_rejects_everything_else(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 59, 60, 3600, 5400, 86400, 90000])
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nport = "eighty"\n[batch]\nmax_wait = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "server.port" in message
    assert "batch.max_wait" in message


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"server\.prot"):
        parse_settings({"server": {"prot": 1}})


def test_model_must_name_a_configured_provider() -> None:
    with pytest.raises(ConfigError, match=r"models\.m\.provider"):
        parse_settings({"models": {"m": {"provider": "nope"}}})


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(path)


def test_client_keys_resolve_from_named_variables_and_only_hashes_are_kept() -> None:
    settings = parse_settings({"auth": {"keys": [{"name": "team-a", "key_env": "TEAM_A_KEY"}]}})
    keys = resolve_client_keys(settings, {"TEAM_A_KEY": "sk-secret-a"})
    assert next(iter(keys.values())).name == "team-a"
    assert all("sk-secret-a" not in digest for digest in keys)
    with pytest.raises(ConfigError, match="TEAM_A_KEY"):
        resolve_client_keys(settings, {})


def test_shipped_example_config_is_valid() -> None:
    settings = load_settings(REPO / "config" / "costroute.example.toml")
    assert settings.models
    for model in settings.models.values():
        assert model.provider in settings.providers
