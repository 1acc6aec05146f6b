"""The TOML configuration, validated with pydantic at start-up.

This module is the only reader of files and environment variables for configuration.
Secrets are named by environment variable (``key_env``, ``api_key_env``) and resolved
here; their values never enter the models that get logged or rendered.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from proxy.durations import DurationError, parse_duration


def _duration(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    return value


Duration = Annotated[int, BeforeValidator(_duration), Field(ge=0)]
ProviderType = Literal["openai", "deepseek", "gemini", "anthropic"]
CacheMode = Literal["auto", "force", "off"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_messages: int = Field(2048, gt=0)
    # Request headers above this size are refused (400) while still arriving.
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    # How long a client may take to send its request headers, and separately its body;
    # then the connection is closed (headers) or answered 408 (body).
    client_timeout: Duration = Field(30, ge=1)
    # Whole-request budget for a real-time upstream call (flex calls get flex_timeout).
    upstream_timeout: Duration = 600
    flex_timeout: Duration = 900
    connect_timeout: Duration = 10
    max_upstream_response_bytes: int = Field(64 * 1024 * 1024, gt=0)
    # Allow serving without client keys on a non-loopback address (never by default).
    allow_unauthenticated: bool = False


class StoreSettings(_Strict):
    """Where tickets, batches and the routing log live. SQLite (``path``) is the default
    for one process on one box; ``url_env`` names an environment variable holding a
    ``postgresql://`` URL and selects PostgreSQL, for several replicas on one database.
    The URL (it may carry a password) is read from the environment only, never from
    this file, and never logged."""

    path: str = "costroute.db"
    url_env: str | None = Field(None, min_length=1)
    # Connections per process to PostgreSQL (plus one that listens for wake-ups).
    pool_size: int = Field(8, ge=2, le=100)
    # How long a replica's claim on a piece of background work (a batch being created,
    # polled or ingested; a ticket being sent; the flush) lasts without renewal. Held
    # work is renewed every third of it; a replica that dies loses it after this long.
    lease: Duration = Field(30, ge=1)
    # After a lease on a batch being created ran out, how long another replica waits
    # before it lists the provider's batches to adopt it or requeue its tickets: longer
    # than a batch create call can take, so no create the dead holder started is still
    # in flight.
    reconcile_grace: Duration = 120

    def target(self, environ: Mapping[str, str] | None = None) -> str:
        """The SQLite path, or the PostgreSQL URL from ``url_env``."""
        if self.url_env is None:
            return self.path
        env = os.environ if environ is None else environ
        url = env.get(self.url_env, "").strip()
        if not url:
            raise ConfigError(
                f"store.url_env: environment variable {self.url_env} is not set "
                "(it must hold the postgresql:// URL)"
            )
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"store.url_env: {self.url_env} must hold a postgresql:// URL")
        return url


class FilesSettings(_Strict):
    """Uploads for costroute's own Files and Batch API (``/v1/files``, ``/v1/batches``)."""

    # Where uploaded and result files live; default: a ``files`` folder beside the database.
    dir: str | None = None
    # OpenAI's limit for batch input files; larger uploads get 413.
    max_bytes: int = Field(200 * 1000 * 1000, gt=0)

    def folder(self, store: StoreSettings) -> Path:
        if self.dir is not None:
            return Path(self.dir)
        return Path(store.path).resolve().parent / "files"


class PassthroughSettings(_Strict):
    """The stateless rest of OpenAI's API, forwarded to a provider as it is."""

    allow: list[str] = Field(
        default_factory=lambda: [
            "/v1/completions", "/v1/moderations", "/v1/images/generations",
            "/v1/images/edits", "/v1/images/variations", "/v1/audio/speech",
            "/v1/audio/transcriptions", "/v1/audio/translations",
        ]
    )  # fmt: skip
    # Where a request goes whose model is not configured here, and every multipart upload
    # (whose model is inside the stream): a provider name, or none (400).
    default_provider: str | None = None
    # Request bodies above this get 413 (OpenAI's audio uploads stop at 25 MB).
    max_bytes: int = Field(25 * 1000 * 1000, gt=0)


class AuthKey(_Strict):
    name: str = Field(min_length=1, max_length=64)
    key_env: str = Field(min_length=1)
    admin: bool = False
    default_tolerance: Duration | None = None


class AuthSettings(_Strict):
    keys: list[AuthKey] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AuthSettings:
        names = [key.name for key in self.keys]
        if len(names) != len(set(names)):
            raise ValueError("auth.keys: key names must be unique")
        return self


_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_ALL_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PriceWindow(_Strict):
    """A time-of-day window (UTC) in which a provider charges ``multiplier`` times its
    base price. Windows may wrap midnight (``start`` later than ``end``)."""

    name: str
    days: list[Weekday] = Field(default_factory=lambda: list(_ALL_DAYS))
    start: str
    end: str
    multiplier: float = Field(gt=0)

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.fullmatch(value):
            raise ValueError(f"{value!r} is not a time of day in HH:MM (UTC)")
        return value

    def minutes(self) -> tuple[int, int]:
        sh, sm = self.start.split(":")
        eh, em = self.end.split(":")
        return int(sh) * 60 + int(sm), int(eh) * 60 + int(em)


class ProviderSettings(_Strict):
    type: ProviderType
    base_url: str
    api_key_env: str | None = None
    max_connections: int = Field(512, gt=0)
    # Live batches allowed at once, counted per upstream model by default (providers
    # enforce their batch quotas per model: OpenAI's enqueued tokens), or per provider
    # with ``batch_limit_scope = "provider"``. Unset scope: the lane's own fact.
    max_active_batches: int = Field(1, ge=1)
    batch_limit_scope: Literal["model", "provider"] | None = None
    price_windows: list[PriceWindow] = Field(default_factory=list)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class ModelSettings(_Strict):
    provider: str
    upstream_model: str | None = None
    kind: Literal["chat", "embedding"] = "chat"
    # OpenAI's flex tier (half price, synchronous, slower) is offered for this model.
    flex: bool = False
    # The provider's batch lane may be used for this model (where the provider has one).
    batch: bool = True
    # Optional cap on prompt tokens enqueued in live batches (the provider's batch queue limit).
    enqueued_token_budget: int | None = Field(None, gt=0)
    # Gemini explicit caching: the smallest cache the provider accepts for this model.
    cache_min_tokens: int = Field(1024, gt=0)
    # Anthropic requires max_tokens: this is sent when the caller gives none.
    max_tokens_default: int = Field(4096, gt=0)


class BatchSettings(_Strict):
    min_tolerance: Duration = 3600
    max_wait: Duration = 600
    poll_interval: Duration = 30
    flush_interval: Duration = 5
    flex_min_tolerance: Duration = 60
    max_lines: int = Field(50_000, gt=0, le=50_000)
    max_bytes: int = Field(200 * 1000 * 1000, gt=0, le=200 * 1000 * 1000)
    # A group is flushed early once it holds this many tickets.
    flush_lines: int = Field(50_000, gt=0, le=50_000)
    max_attempts: int = Field(3, ge=1)
    # A ticket whose deadline is this close and still has no result goes real time.
    deadline_margin: Duration = 900
    # Batch only when the tolerance also covers the provider's recent batch turnaround
    # (its median, learnt from the batches it ran: ``proxy.deferral.turnaround``).
    learn_turnaround: bool = True
    # Monitoring thresholds.
    stuck_after: Duration = 6 * 3600
    alert_failure_rate: float = Field(0.2, ge=0, le=1)
    alert_queue_age: Duration = 3600


class WebhookSettings(_Strict):
    allowed_hosts: list[str] = Field(default_factory=list)
    secret_env: str | None = None
    timeout: Duration = 10
    max_attempts: int = Field(5, ge=1)
    max_payload_bytes: int = Field(8 * 1024 * 1024, gt=0)
    # Monitoring: a delivery that has failed this many times in a row raises an alert.
    alert_failures: int = Field(3, ge=1)


class RetrySettings(_Strict):
    max_retries: int = Field(2, ge=0, le=10)
    backoff_base: float = Field(0.5, ge=0)
    backoff_max: float = Field(8.0, ge=0)
    max_retry_after: float = Field(60.0, ge=0)


class CacheSettings(_Strict):
    """Gemini explicit context caching."""

    mode: CacheMode = "auto"
    min_repeats: int = Field(2, ge=1)
    window: Duration = 3600
    ttl: Duration = 3600
    idle_delete: Duration = 1800
    # Expected reads per hour are estimated from the observed repeat rate; a cache is
    # created only when that estimate saves more than its storage costs.


class ModelPrice(_Strict):
    """USD per 1M tokens. ``None`` cached price falls back to ``input``."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    batch_discount: float = Field(0.5, ge=0, le=1)
    flex_discount: float = Field(0.5, ge=0, le=1)
    cache_storage_per_hour: float = Field(0.0, ge=0)
    # Anthropic prompt-cache write prices (5-minute, 1-hour entries); None: 1.25x / 2x input.
    cache_write: float | None = Field(None, ge=0)
    cache_write_1h: float | None = Field(None, ge=0)


class PricingSettings(_Strict):
    # Extra TOML price table merged over the shipped one (same shape as [pricing.models]).
    table: str | None = None
    models: dict[str, ModelPrice] = Field(default_factory=dict)


class MetricsSettings(_Strict):
    require_key: bool = False


class Settings(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    passthrough: PassthroughSettings = Field(default_factory=PassthroughSettings)

    @model_validator(mode="after")
    def _models_name_known_providers(self) -> Settings:
        for name, model in self.models.items():
            if model.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none"
                raise ValueError(
                    f"models.{name}.provider: unknown provider {model.provider!r} "
                    f"(configured: {known})"
                )
        return self

    @model_validator(mode="after")
    def _passthrough_provider_is_known(self) -> Settings:
        name = self.passthrough.default_provider
        if name is not None and name not in self.providers:
            raise ValueError(f"passthrough.default_provider: unknown provider {name!r}")
        return self

    def upstream_model(self, model: str) -> str:
        return self.models[model].upstream_model or model


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


def load_settings(path: str | Path) -> Settings:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_settings(data, source=str(path))


def parse_settings(data: Mapping[str, Any], *, source: str = "config") -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: invalid configuration"]
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "(top level)"
            lines.append(f"  {key}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


# --- secrets -----------------------------------------------------------------------


def hash_key(secret: str) -> str:
    """The only form in which a client key is kept (memory, database)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def read_secret(env_name: str, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(env_name)
    return value or None


def resolve_client_keys(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, AuthKey]:
    """Map sha256(key) to its config entry. A key whose variable is unset is an error."""
    resolved: dict[str, AuthKey] = {}
    for index, key in enumerate(settings.auth.keys):
        secret = read_secret(key.key_env, environ)
        if secret is None:
            raise ConfigError(
                f"auth.keys.{index}.key_env: environment variable {key.key_env} "
                f"(key {key.name!r}) is not set"
            )
        digest = hash_key(secret)
        if digest in resolved:
            raise ConfigError(f"auth.keys.{index}: key {key.name!r} repeats another key's value")
        resolved[digest] = key
    return resolved


def resolve_provider_key(
    name: str, provider: ProviderSettings, environ: Mapping[str, str] | None = None
) -> str | None:
    if provider.api_key_env is None:
        return None
    secret = read_secret(provider.api_key_env, environ)
    if secret is None:
        raise ConfigError(
            f"providers.{name}.api_key_env: environment variable {provider.api_key_env} is not set"
        )
    return secret


def resolve_webhook_secret(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> str | None:
    """The HMAC key for webhook signatures; ``None`` when webhooks are not configured."""
    name = settings.webhooks.secret_env
    if name is None:
        return None
    secret = read_secret(name, environ)
    if secret is None:
        raise ConfigError(f"webhooks.secret_env: environment variable {name} is not set")
    return secret
