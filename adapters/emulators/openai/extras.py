"""The rest of OpenAI's stateless API, as far as costroute passes it through: legacy
completions, moderations, image generation and edits, speech, transcriptions and
translations. Shapes from the OpenAPI document (``CreateCompletionResponse``,
``CreateModerationResponse``, ``ImagesResponse``, ``CreateTranscriptionResponseJson``);
answers are deterministic functions of the request.

Multipart endpoints (image edits, transcriptions, translations) require their file part
and ``model``, as the real API does; speech answers audio bytes.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from adapters.emulators.openai.chat import random_id
from adapters.emulators.openai.errors import invalid
from adapters.emulators.tokens import count_text

# A 1x1 transparent PNG: what every generated image is.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)  # fmt: skip


def _require(body: Any, *names: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for name in names:
        if body.get(name) in (None, ""):
            raise invalid(f"Missing required parameter: '{name}'.", param=name)
    return body


def completion(body: Any) -> dict[str, Any]:
    request = _require(body, "model", "prompt")
    prompt = request["prompt"]
    text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    reply = " and so it continues."
    prompt_tokens, completion_tokens = count_text(text), count_text(reply)
    return {
        "id": random_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": request["model"],
        "choices": [{"text": reply, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip


def moderation(body: Any) -> dict[str, Any]:
    request = _require(body, "input")
    given = request["input"]
    texts = [given] if isinstance(given, str) else [str(item) for item in given]
    results = []
    for text in texts:
        flagged = "kill" in text.lower()
        results.append({
            "flagged": flagged,
            "categories": {c: flagged and c == "violence" for c in _CATEGORIES},
            "category_scores": {c: (0.9 if flagged and c == "violence" else 0.0001)
                                for c in _CATEGORIES},
            "category_applied_input_types": {c: ["text"] for c in _CATEGORIES},
        })  # fmt: skip
    return {"id": random_id("modr-"), "model": request.get("model") or "omni-moderation-latest",
            "results": results}  # fmt: skip


def images(body: Any) -> dict[str, Any]:
    request = _require(body, "prompt")
    count = int(request.get("n") or 1)
    data = [{"b64_json": base64.b64encode(PIXEL).decode(), "revised_prompt": request["prompt"]}
            for _ in range(count)]  # fmt: skip
    return {"created": int(time.time()), "data": data,
            "usage": {"input_tokens": count_text(request["prompt"]), "output_tokens": 0,
                      "total_tokens": count_text(request["prompt"]),
                      "input_tokens_details": {"text_tokens": count_text(request["prompt"]),
                                               "image_tokens": 0}}}  # fmt: skip


def speech(body: Any) -> Response:
    request = _require(body, "model", "input", "voice")
    # Not real audio: bytes that stand for it, sized by the text (the client only stores them).
    audio = b"ID3" + hashlib.sha256(str(request["input"]).encode()).digest() * 32
    media = {"wav": "audio/wav", "opus": "audio/ogg", "flac": "audio/flac", "aac": "audio/aac",
             "pcm": "audio/pcm"}.get(str(request.get("response_format")), "audio/mpeg")  # fmt: skip
    return Response(audio, media_type=media)


async def transcription(request: Request) -> dict[str, Any]:
    """Transcriptions and translations: a multipart ``file`` and ``model``."""
    async with request.form() as form:
        upload = form.get("file")
        model = form.get("model")
        if not isinstance(upload, UploadFile):
            raise invalid("Missing required parameter: 'file'.", param="file")
        if not isinstance(model, str) or not model:
            raise invalid("Missing required parameter: 'model'.", param="model")
        size = len(await upload.read())
    return {"text": f"An emulated transcript of {size} bytes of audio."}


async def image_edit(request: Request) -> dict[str, Any]:
    async with request.form() as form:
        image = form.get("image") or form.get("image[]")
        prompt = form.get("prompt")
        if not isinstance(image, UploadFile):
            raise invalid("Missing required parameter: 'image'.", param="image")
        if not isinstance(prompt, str) or not prompt:
            raise invalid("Missing required parameter: 'prompt'.", param="prompt")
    return images({"prompt": prompt})
