"""The emulator's ``cachedContents`` store (providers.md §3.5-3.7).

Rules it owns:

- A cache is created for one model (``models/x``, required, immutable) from contents, a
  system instruction, tools and a tool config; those inputs are never returned again.
- It must hold at least the model's configured minimum of tokens, else 400
  "Cached content is too small. total_token_count=N, min_total_token_count=M".
- Its life is ``ttl`` (Duration, "3600s" / "3.5s") or ``expireTime`` (RFC 3339), one of
  them, one hour by default; only the expiration may be patched.
- Expiry is read from the injected clock; an expired cache is gone (get -> 404).
- A ``generateContent`` call may use a cache only with the same model and without its own
  systemInstruction, tools or toolConfig.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from adapters.clock import Clock
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.errors import invalid_argument, not_found
from adapters.emulators.gemini.tokens import count_prompt
from adapters.emulators.gemini.validate import check_contents, check_system, check_tools, parse
from adapters.emulators.gemini.wire import CachedContentBody, Content, Tool, ToolConfig

MAX_DISPLAY_NAME = 128
MAX_PAGE_SIZE = 1000
# The proto leaves the default page size to the service; 50 is our choice.
DEFAULT_PAGE_SIZE = 50
_DURATION = re.compile(r"(-?)([0-9]+)(?:\.([0-9]{1,9}))?s")
_TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_UPDATABLE = frozenset({"ttl", "expire_time"})
_OUTPUT_ONLY = frozenset({"name", "create_time", "update_time", "usage_metadata"})
SHAPE_MESSAGE = (
    "CachedContent can not be used with GenerateContent request setting system_instruction, "
    "tools or tool_config. Proposed fix: move those values to CachedContent from "
    "GenerateContent request."
)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    name: str
    model: str
    display_name: str | None
    system: Content | None
    contents: tuple[Content, ...]
    tools: tuple[Tool, ...]
    tool_config: ToolConfig | None
    tally: Counter[str]
    create_time: float
    update_time: float
    expire_time: float
    seq: int

    @property
    def total_tokens(self) -> int:
        return sum(self.tally.values())

    def resource(self) -> dict[str, Any]:
        """The resource as get/list return it: input-only fields stay hidden."""
        body: dict[str, Any] = {"name": self.name, "model": self.model}
        if self.display_name:
            body["displayName"] = self.display_name
        body["createTime"] = format_time(self.create_time)
        body["updateTime"] = format_time(self.update_time)
        body["expireTime"] = format_time(self.expire_time)
        body["usageMetadata"] = {"totalTokenCount": self.total_tokens}
        return body


class CacheStore:
    def __init__(self, config: GeminiEmulatorConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._entries: dict[str, CacheEntry] = {}
        self._seq = 0

    def purge(self) -> None:
        now = self._clock.now()
        for name in [n for n, e in self._entries.items() if e.expire_time <= now]:
            del self._entries[name]

    def create(self, raw: Any) -> CacheEntry:
        body = parse(CachedContentBody, raw, root="cached_content")
        model = self._model(body.model)
        if body.display_name is not None and len(body.display_name) > MAX_DISPLAY_NAME:
            raise invalid_argument(
                f"* CachedContent.display_name: must be at most {MAX_DISPLAY_NAME} characters.",
                field="display_name",
            )
        check_contents(body.contents or [], where="CachedContent", required=False)
        check_system(body.system_instruction)
        check_tools(body.tools, body.tool_config)
        now = self._clock.now()
        expire = self._expiry(body, now, default=True)
        tally = count_prompt(
            contents=body.contents or [], system=body.system_instruction, tools=body.tools
        )
        minimum = self._config.min_cache_tokens(model.removeprefix("models/"))
        total = sum(tally.values())
        if total < minimum:
            raise invalid_argument(
                "Cached content is too small. "
                f"total_token_count={total}, min_total_token_count={minimum}"
            )
        self._seq += 1
        entry = CacheEntry(
            name=f"cachedContents/{_new_id()}",
            model=model,
            display_name=body.display_name,
            system=body.system_instruction,
            contents=tuple(body.contents or ()),
            tools=tuple(body.tools or ()),
            tool_config=body.tool_config,
            tally=tally,
            create_time=now,
            update_time=now,
            expire_time=expire,
            seq=self._seq,
        )
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> CacheEntry:
        self.purge()
        entry = self._entries.get(name)
        if entry is None:
            raise not_found(f"CachedContent not found (or permission denied): {name}")
        return entry

    def delete(self, name: str) -> None:
        self.get(name)
        del self._entries[name]

    def page(self, page_size: int, page_token: str) -> tuple[list[CacheEntry], str | None]:
        if page_size < 0:
            raise invalid_argument("* page_size: must not be negative.", field="page_size")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_token(page_token) if page_token else 0
        self.purge()
        ordered = sorted((e for e in self._entries.values() if e.seq > after), key=lambda e: e.seq)
        chunk = ordered[:size]
        token = encode_token(chunk[-1].seq) if len(ordered) > size else None
        return chunk, token

    def patch(self, name: str, raw: Any, update_mask: str) -> CacheEntry:
        entry = self.get(name)
        body = parse(CachedContentBody, raw, root="cached_content")
        given = {_snake(key) for key in raw} - _OUTPUT_ONLY
        # The SDK sends no mask; Google then updates the fields present in the body.
        fields = {_snake(f.strip()) for f in update_mask.split(",") if f.strip()} or given
        frozen = sorted(fields - _UPDATABLE)
        if frozen:
            raise invalid_argument(
                f"* CachedContent.{frozen[0]}: field can not be updated; only ttl or "
                "expire_time can be updated.",
                field=f"update_mask.{frozen[0]}",
            )
        if not fields:
            raise invalid_argument("* update_mask: ttl or expire_time must be set.")
        chosen = replace_fields(body, fields)
        now = self._clock.now()
        expire = self._expiry(chosen, now, default=False)
        updated = replace(entry, update_time=now, expire_time=expire)
        self._entries[name] = updated
        return updated

    def for_request(self, name: str, model: str, *, sets_shape: bool) -> CacheEntry:
        """The cache a ``generateContent`` call on ``model`` names, if it may use it."""
        if sets_shape:
            raise invalid_argument(SHAPE_MESSAGE)
        # Not verified in the reference (providers.md §3.6): a missing or expired cache is
        # answered 404 NOT_FOUND naming the cache, which clients treat as "recreate".
        entry = self.get(name)
        if entry.model != f"models/{model}":
            raise invalid_argument(
                f"Model used by GenerateContent request (models/{model}) and CachedContent "
                f"({entry.model}) has to be the same."
            )
        return entry

    def _model(self, model: str | None) -> str:
        if not model:
            raise invalid_argument("* CachedContent.model: model is required.", field="model")
        if not model.startswith("models/"):
            raise invalid_argument(
                f'* CachedContent.model: invalid model name "{model}"; '
                'expected "models/{model}".',
                field="model",
            )
        if model.removeprefix("models/") not in self._config.chat_models:
            raise not_found(
                f"{model} is not found for API version v1beta, or is not supported for "
                "createCachedContent. Call ListModels to see the list of available models and "
                "their supported methods."
            )
        return model

    def _expiry(self, body: CachedContentBody, now: float, *, default: bool) -> float:
        if body.ttl is not None and body.expire_time is not None:
            raise invalid_argument(
                "Invalid JSON payload received. Oneof field 'expiration' is already set. "
                "Cannot set 'expireTime'",
                field="expire_time",
            )
        if body.ttl is not None:
            return now + parse_duration(body.ttl, field="cached_content.ttl")
        if body.expire_time is not None:
            when = parse_time(body.expire_time, field="cached_content.expire_time")
            # Not verified against Google: we refuse an expiry in the past rather than
            # create a resource that is already gone.
            if when <= now:
                raise invalid_argument(
                    "* CachedContent.expire_time: must be in the future.", field="expire_time"
                )
            return when
        if not default:
            raise invalid_argument("* CachedContent: ttl or expire_time must be set.")
        return now + self._config.default_cache_ttl


def replace_fields(body: CachedContentBody, fields: set[str]) -> CachedContentBody:
    """``body`` with only the masked expiration fields kept."""
    return body.model_copy(
        update={
            "ttl": body.ttl if "ttl" in fields else None,
            "expire_time": body.expire_time if "expire_time" in fields else None,
        }
    )


def parse_duration(text: str, *, field: str) -> float:
    match = _DURATION.fullmatch(text)
    # Negative lifetimes are refused (our choice; the reference sets no minimum).
    if match is None or match.group(1):
        raise invalid_argument(
            f"Invalid value at '{field}' (type.googleapis.com/google.protobuf.Duration), "
            f'"{text}"',
            field=field,
        )
    return int(match.group(2)) + float(f"0.{match.group(3) or 0}")


def parse_time(text: str, *, field: str) -> float:
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise invalid_argument(
            f"Invalid value at '{field}' (type.googleapis.com/google.protobuf.Timestamp), "
            f'"{text}"',
            field=field,
        )
    day, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    whole = datetime.fromisoformat(f"{day}T{clock}{zone}").timestamp()
    return whole + (float(fraction) if fraction else 0.0)


def format_time(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12))


def encode_token(seq: int, *, prefix: str = "after") -> str:
    """An opaque page token naming the last item served (by sequence number)."""
    return base64.urlsafe_b64encode(f"{prefix}:{seq}".encode()).decode().rstrip("=")


def decode_token(token: str, *, prefix: str = "after") -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, number = text.partition(":")
        if kind == prefix and number.isdigit():
            return int(number)
    except (ValueError, UnicodeDecodeError):
        pass
    raise invalid_argument("Invalid page token.", field="page_token")


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
