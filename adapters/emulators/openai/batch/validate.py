"""Validation of an OpenAI batch input file (providers.md §2.6, §2.8, §2.9).

One streaming pass over the file: nothing but offsets, custom ids and counters stays in
memory, so a 50,000-line file validates in well under a second. Problems become
``errors.data`` entries ``{code, message, param, line}`` (``line`` 1-based, ``None`` for
file-level problems). The codes follow what OpenAI has been observed to send
(``invalid_json_line``, ``token_limit_exceeded``) or is reported to send
(``duplicate_custom_id``, ``url_mismatch``, ``model_mismatch``, ``empty_file``,
``too_many_tasks``); the rest (``missing_required_parameter``, ``invalid_value``,
``file_too_large``) borrow OpenAI's request-level codes because no batch-level code is
documented for them.

Blank lines are skipped rather than rejected: OpenAI's own guide files end in a
newline and no source says what it does with an empty line in the middle.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import IO, Any, TypeGuard

import orjson

from adapters.emulators.tokens import count_messages, count_text, text_of

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_lines: int = 50_000
    max_bytes: int = 200 * MB
    # Stop reporting (and scanning) after this many line errors.
    max_errors: int = 1_000


@dataclass(frozen=True, slots=True)
class LinePlan:
    """Where each request line of a valid file is, so the runner can re-read lines in
    any order without holding the file in memory."""

    offsets: array[int] = field(default_factory=lambda: array("q"))
    lengths: array[int] = field(default_factory=lambda: array("q"))
    numbers: array[int] = field(default_factory=lambda: array("q"))
    custom_ids: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True, slots=True)
class Validation:
    errors: tuple[dict[str, Any], ...]
    plan: LinePlan
    # The file's model (the first one seen), also known when validation fails.
    model: str | None
    # Estimated prompt tokens, for the per-model enqueued-token limit.
    tokens: int


def error(
    code: str, message: str, *, param: str | None = None, line: int | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def validate_file(handle: IO[bytes], *, size: int, endpoint: str, limits: Limits) -> Validation:
    if size > limits.max_bytes:
        message = (
            f"The input file is {size:,} bytes; the Batch API accepts files of at most "
            f"{limits.max_bytes // MB} MB."
        )
        return Validation((error("file_too_large", message),), LinePlan(), None, 0)
    scan = _Scan(endpoint, limits)
    offset = 0
    for number, raw in enumerate(handle, start=1):
        if raw.strip():
            scan.line(raw, number, offset)
            if len(scan.errors) >= limits.max_errors:
                break
        offset += len(raw)
    return scan.finish()


class _Scan:
    def __init__(self, endpoint: str, limits: Limits) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.errors: list[dict[str, Any]] = []
        self.plan = LinePlan()
        self.seen: dict[str, int] = {}
        self.model: str | None = None
        self.count = 0
        self.tokens = 0
        self.embedding_inputs = 0

    def line(self, raw: bytes, number: int, offset: int) -> None:
        self.count += 1
        if self.count > self.limits.max_lines:
            return  # only counted, for too_many_tasks
        before = len(self.errors)
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            line = None
        if not isinstance(line, dict):
            self.fail(
                "invalid_json_line", "This line is not parseable as valid JSON.", None, number
            )
            return
        custom_id = self.check_custom_id(line.get("custom_id"), number)
        self.check_method_url(line, number)
        body = line.get("body")
        if not isinstance(body, dict):
            self.missing("body", number)
        else:
            self.check_body(body, number)
        if len(self.errors) == before and custom_id is not None:
            self.plan.offsets.append(offset)
            self.plan.lengths.append(len(raw))
            self.plan.numbers.append(number)
            self.plan.custom_ids.append(custom_id)

    def check_custom_id(self, custom_id: Any, number: int) -> str | None:
        if not isinstance(custom_id, str) or not custom_id:
            self.missing("custom_id", number)
            return None
        first = self.seen.setdefault(custom_id, number)
        if first != number:
            self.fail(
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} is also used on line {first}; custom_id "
                "values must be unique within a batch.",
                "custom_id",
                number,
            )
            return None
        return custom_id

    def check_method_url(self, line: dict[str, Any], number: int) -> None:
        method, url = line.get("method"), line.get("url")
        if method is None:
            self.missing("method", number)
        elif method != "POST":
            self.fail(
                "invalid_value",
                f"Invalid method {method!r}: only 'POST' is supported.",
                "method",
                number,
            )
        if url is None:
            self.missing("url", number)
        elif url != self.endpoint:
            self.fail(
                "url_mismatch",
                f"The url {url!r} does not match the batch endpoint {self.endpoint!r}.",
                "url",
                number,
            )

    def check_body(self, body: dict[str, Any], number: int) -> None:
        if body.get("stream") is True:
            self.fail(
                "invalid_value",
                "Streaming is not supported in the Batch API: 'stream' must not be true.",
                "body.stream",
                number,
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self.missing("body.model", number)
        elif self.model is None:
            self.model = model
        elif model != self.model:
            self.fail(
                "model_mismatch",
                f"The model {model!r} differs from the model {self.model!r} used on earlier "
                "lines. A batch input file may contain requests for one model only.",
                "body.model",
                number,
            )
        self.tokens += estimate_tokens(self.endpoint, body)
        if self.endpoint == "/v1/embeddings":
            given = body.get("input")
            self.embedding_inputs += len(given) if _is_batch_input(given) else 1

    def missing(self, param: str, number: int) -> None:
        self.fail(
            "missing_required_parameter",
            f"Missing required parameter: {param!r}.",
            param,
            number,
        )

    def fail(self, code: str, message: str, param: str | None, number: int | None) -> None:
        if len(self.errors) < self.limits.max_errors:
            self.errors.append(error(code, message, param=param, line=number))

    def finish(self) -> Validation:
        if self.count == 0:
            self.errors.append(error("empty_file", "The batch input file is empty."))
        elif self.count > self.limits.max_lines:
            self.errors.append(
                error(
                    "too_many_tasks",
                    f"The batch input file has {self.count:,} requests; a batch may contain "
                    f"at most {self.limits.max_lines:,}.",
                )
            )
        elif self.embedding_inputs > self.limits.max_lines:
            self.errors.append(
                error(
                    "too_many_tasks",
                    f"The batch has {self.embedding_inputs:,} embedding inputs; an embeddings "
                    f"batch may contain at most {self.limits.max_lines:,}.",
                )
            )
        return Validation(tuple(self.errors), self.plan, self.model, self.tokens)


def estimate_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """Prompt tokens of one request body, by the emulators' shared rule of thumb."""
    if endpoint == "/v1/chat/completions" and isinstance(body.get("messages"), list):
        return count_messages(body["messages"])
    prompt = body.get("input", body.get("prompt"))
    if _is_batch_input(prompt):
        return sum(len(p) if isinstance(p, list) else count_text(text_of(p)) for p in prompt)
    return count_text(text_of(prompt))


def _is_batch_input(value: Any) -> TypeGuard[list[Any]]:
    """A list of prompts (strings or token arrays), not a single token array."""
    return isinstance(value, list) and bool(value) and not isinstance(value[0], int)
