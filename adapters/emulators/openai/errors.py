"""OpenAI- and DeepSeek-shaped error answers, and ready-made faults that produce them.

Every error the emulator sends is ``{"error": {"message", "type", "param", "code"}}``
(providers.md §1.5). Messages copy the wording seen from the real services, because
clients (and our proxy) sometimes match on them. DeepSeek uses the same envelope with
its own wording: ``code`` is always ``"invalid_request_error"`` and a few statuses differ
(§4.6).
"""

from __future__ import annotations

from typing import Any, Literal

from adapters.emulators.faults import Fault

Flavour = Literal["openai", "deepseek"]


class EmulatorError(Exception):
    """An error answer in the OpenAI/DeepSeek envelope, for every OpenAI-shaped emulator
    (chat and embeddings, files and batches). Handlers raise it; the app renders ``body()``
    with ``status`` and ``headers`` (e.g. ``retry-after``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> EmulatorError:
    return EmulatorError(400, message, param=param, code=code)


def deepseek_error(status: int, message: str, error_type: str) -> EmulatorError:
    # DeepSeek always puts "invalid_request_error" in ``code`` (observed on 400/401/402).
    return EmulatorError(status, message, error_type=error_type, code="invalid_request_error")


def quote_list(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def wrong_type(param: str, expected: str, value: Any) -> EmulatorError:
    return invalid(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing(param: str) -> EmulatorError:
    return invalid(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def empty_array(param: str) -> EmulatorError:
    return invalid(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an "
        "empty array instead.",
        param=param,
        code="empty_array",
    )


BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
NO_API_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    "username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)


def masked_key(key: str) -> str:
    # Never echo a whole key back: the real API shows only its ends.
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def unauthorized(flavour: Flavour, key: str | None) -> EmulatorError:
    if flavour == "deepseek":
        if not key:
            return deepseek_error(
                401,
                "Authentication Fails (auth header format should be Bearer sk-...)",
                "authentication_error",
            )
        return deepseek_error(
            401,
            f"Authentication Fails, Your api key: ****{key[-4:]} is invalid",
            "authentication_error",
        )
    if not key:
        return EmulatorError(401, NO_API_KEY)
    return EmulatorError(
        401,
        f"Incorrect API key provided: {masked_key(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def model_not_found(flavour: Flavour, model: str) -> EmulatorError:
    if flavour == "deepseek":
        return deepseek_error(400, "Model Not Exist", "invalid_request_error")
    return EmulatorError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def invalid_url(method: str, path: str) -> EmulatorError:
    return EmulatorError(404, f"Invalid URL ({method} {path})")


def rate_limit_message(model: str, wait: str = "1s") -> str:
    return (
        f"Rate limit reached for {model} in organization org-emulator on tokens per min (TPM): "
        f"Limit 30000, Used 29500, Requested 1200. Please try again in {wait}. Visit "
        "https://platform.openai.com/account/rate-limits to learn more."
    )


_OPENAI_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: (
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    ),
    404: ("Not found.", "invalid_request_error", None),
    408: ("Request timed out.", "timeout", None),
    409: (
        "The server is currently processing another request with the same key.",
        "invalid_request_error",
        "conflict",
    ),
    422: ("Unprocessable entity.", "invalid_request_error", None),
    429: (rate_limit_message("gpt-4o"), "tokens", "rate_limit_exceeded"),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}

_DEEPSEEK_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("Invalid Format", "invalid_request_error"),
    401: ("Authentication Fails (no such user)", "authentication_error"),
    402: ("Insufficient Balance", "unknown_error"),
    422: ("Invalid Parameters", "invalid_request_error"),
    429: ("Rate Limit Reached", "rate_limit_error"),
    500: ("Server Error", "server_error"),
    503: ("Server Overloaded", "server_error"),
}


def default_error_body(status: int, flavour: Flavour = "openai") -> dict[str, Any]:
    """The body a fault with ``status`` and no ``body`` answers with."""
    if flavour == "deepseek":
        message, error_type = _DEEPSEEK_DEFAULTS.get(status, (f"HTTP {status}", "unknown_error"))
        return error_body(message, error_type, None, "invalid_request_error")
    if status in _OPENAI_DEFAULTS:
        message, error_type, code = _OPENAI_DEFAULTS[status]
        return error_body(message, error_type, None, code)
    error_type = "server_error" if status >= 500 else "invalid_request_error"
    return error_body(f"HTTP {status}", error_type, None, None)


def server_error_event() -> dict[str, Any]:
    """The in-band error a stream ends with when a fault cuts it (§1.4)."""
    return error_body(_OPENAI_DEFAULTS[500][0], "server_error")


# --- ready-made faults ----------------------------------------------------------------


def rate_limit_fault(
    *,
    path: str | None = "/chat/completions",
    times: int = 1,
    retry_after: float | None = 1.0,
    retry_after_ms: int | None = None,
    model: str = "gpt-4o",
) -> Fault:
    """A TPM 429 as OpenAI sends it; the app adds ``x-ratelimit-*`` headers."""
    return Fault(
        path=path,
        times=times,
        status=429,
        body=error_body(rate_limit_message(model), "tokens", None, "rate_limit_exceeded"),
        retry_after=retry_after,
        retry_after_ms=retry_after_ms,
    )


_FLEX_UNAVAILABLE = (
    "Resource unavailable: flex processing capacity is temporarily exhausted. "
    "Please try again later, or retry with service_tier 'auto'."
)


def flex_unavailable() -> EmulatorError:
    """Flex capacity is short (``OpenAIEmulatorConfig.flex_capacity``): the unbilled 429."""
    return EmulatorError(429, _FLEX_UNAVAILABLE, code="resource_unavailable")


def flex_unavailable_fault(*, path: str | None = "/chat/completions", times: int = 1) -> Fault:
    """Flex capacity is short: an unbilled 429 with code ``resource_unavailable`` (§1.1.1).

    The exact wording of the real message is not documented; the code is what clients
    match on."""
    return Fault(
        path=path,
        times=times,
        status=429,
        body=error_body(
            _FLEX_UNAVAILABLE,
            "invalid_request_error",
            None,
            "resource_unavailable",
        ),
    )


def insufficient_quota_fault(*, path: str | None = None, times: int = 1) -> Fault:
    """A 429 that retrying will not fix."""
    return Fault(
        path=path,
        times=times,
        status=429,
        body=error_body(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            None,
            "insufficient_quota",
        ),
    )
