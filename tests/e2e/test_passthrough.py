"""The stateless rest of OpenAI's API through costroute, with the official SDK: legacy
completions, moderations, images (generation and a multipart edit), speech,
transcriptions and translations; the provider's key substituted; a routing-log row in
lane ``passthrough``; stateful resources refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types import Completion, ImagesResponse, ModerationCreateResponse
from openai.types.audio import Transcription

from adapters.emulators.openai.server import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_emulator
from proxy.app import create_app
from tests.e2e.conftest import CLIENT_KEY, ENV, OPENAI_KEY, Stack, stack_settings
from tests.sdk_checks import strict
from tests.support import ServerThread


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("passthrough")
    oa = ServerThread(openai_emulator(OpenAIEmulatorConfig(flavour="openai"))).start()
    ds = ServerThread(openai_emulator(OpenAIEmulatorConfig(flavour="deepseek"))).start()
    settings = stack_settings(
        tmp, oa.url, ds.url, passthrough={"default_provider": "openai", "max_bytes": 100_000}
    )
    proxy = ServerThread(create_app(settings, environ=ENV)).start()
    try:
        yield Stack(proxy, oa, ds, settings)
    finally:
        proxy.stop()
        oa.stop()
        ds.stop()


def _last_request(p: Stack) -> dict[str, Any]:
    request: dict[str, Any] = p.openai_state.requests[-1]
    return request


def test_legacy_completions_are_forwarded_metered_and_logged(p: Stack) -> None:
    p.reset()
    raw = p.client().completions.with_raw_response.create(model="mini-alias", prompt="Say hi")
    assert raw.headers["x-costroute-lane"] == "passthrough"
    completion = strict(Completion, raw.http_response.json())
    assert completion.usage is not None
    sent = _last_request(p)
    assert sent["json"]["model"] == "gpt-4o-mini"  # the configured upstream model
    assert sent["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"  # never the caller's
    [row] = p.new_routes(1)
    assert (row["endpoint"], row["lane"], row["provider"]) == (
        "/v1/completions",
        "passthrough",
        "openai",
    )
    assert row["prompt_tokens"] == completion.usage.prompt_tokens
    assert row["cost_usd"] is not None


def test_moderations_images_and_speech(p: Stack) -> None:
    moderation = p.client().moderations.create(input=["hello", "I will kill it"])
    strict(
        ModerationCreateResponse,
        moderation.model_dump(mode="json", by_alias=True, exclude_unset=True),
    )
    assert [r.flagged for r in moderation.results] == [False, True]
    image = p.client().images.generate(prompt="a lighthouse", model="gpt-image-1")
    assert isinstance(image, ImagesResponse)
    assert image.data is not None
    assert image.data[0].b64_json
    audio = p.client().audio.speech.create(model="tts-1", voice="alloy", input="Hello there")
    assert audio.content.startswith(b"ID3")


def test_multipart_uploads_stream_through(p: Stack) -> None:
    sound = b"RIFF" + b"\x00" * 5000
    text = p.client().audio.transcriptions.create(model="whisper-1", file=("a.wav", sound))
    assert isinstance(text, Transcription)
    assert "5004 bytes" in text.text
    # The SDK marks translations deprecated: a plain multipart client sends one.
    with httpx.Client(base_url=p.url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as c:
        translated = c.post("/v1/audio/translations", files={"file": ("a.wav", sound)},
                            data={"model": "whisper-1"})  # fmt: skip
    assert translated.status_code == 200
    assert Transcription.model_validate(translated.json()).text
    edited = p.client().images.edit(image=("in.png", b"\x89PNG" + b"\x00" * 64), prompt="bluer")
    assert edited.data
    with pytest.raises(openai.APIStatusError) as too_big:
        p.client().audio.transcriptions.create(model="whisper-1", file=("b.wav", b"x" * 200_000))
    assert too_big.value.status_code == 413


def test_provider_errors_pass_through_with_their_status(p: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as missing:
        p.client().moderations.create(input=None)  # type: ignore[arg-type]
    assert missing.value.status_code == 400
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=p.url + "/v1", api_key="sk-wrong", max_retries=0).moderations.create(
            input="x"
        )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/vector_stores"),
        ("POST", "/v1/assistants"),
        ("GET", "/v1/threads/thread_abc/messages"),
        ("GET", "/v1/fine_tuning/jobs"),
        ("POST", "/v1/uploads"),
        ("POST", "/v1/conversations"),
    ],
)
def test_stateful_resources_are_never_forwarded(p: Stack, method: str, path: str) -> None:
    before = len(p.openai_state.requests)
    with httpx.Client(base_url=p.url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as c:
        reply = c.request(method, path, json={})
    assert reply.status_code == 404
    assert "does not proxy" in reply.json()["error"]["message"]
    assert len(p.openai_state.requests) == before


def test_the_sdks_stateful_calls_get_not_found(p: Stack) -> None:
    with pytest.raises(openai.NotFoundError, match="does not proxy"):
        p.client().fine_tuning.jobs.list()
    with pytest.raises(openai.NotFoundError, match="does not proxy"):
        p.client().vector_stores.list()
