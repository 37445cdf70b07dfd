"""The HTTP app in-process over a stub TTS (no model): what a real model cannot be made to do on demand.

An internal error is a 500 in OpenAI's shape with the request id, logged with its traceback and never sent;
the small pure helpers (metric route labels, the service API's age in years, `temperature` 0, the
catalog names a served folder is also known by).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.testclient import TestClient

from qwen3tts_cli.cli.serve import _catalog_names
from qwen3tts_cli.engine.scheduler import SchedulerStats
from qwen3tts_cli.errors import Busy
from qwen3tts_cli.server.app import create_app, route_label
from qwen3tts_cli.server.errors import APIError
from qwen3tts_cli.server.openai_api import sampling_options
from qwen3tts_cli.server.service_api import age_word
from qwen3tts_cli.server.synthesis import ServerSettings

SECRET = "secret detail of the failure"


class StubTTS:
    """Just enough of TTS for the routes; `stream` fails the way it is told to."""

    kind = "custom_voice"
    speakers = ["ryan", "vivian"]
    languages = ["auto", "english"]
    model = SimpleNamespace(max_batch=2)

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure

    def stats(self) -> SchedulerStats:
        return SchedulerStats(2, 4, 0, 0, 0)

    def stream(self, *_args: Any, **_kwargs: Any) -> Any:
        raise self.failure


def _client(failure: BaseException) -> TestClient:
    app = create_app(StubTTS(failure), ServerSettings(model_id="m", default_voice="ryan"))  # type: ignore[arg-type]
    return TestClient(app, raise_server_exceptions=False)


SPEECH = {"model": "m", "input": "Hello.", "voice": "ryan"}


def test_an_internal_error_is_a_500_in_openai_shape_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _client(RuntimeError(SECRET))
    with caplog.at_level(logging.ERROR, logger="qwen3tts.server"):
        response = client.post("/v1/audio/speech", json=SPEECH, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-42"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    assert "req-42" in error["message"]
    assert SECRET not in response.text and "Traceback" not in response.text
    assert "x-should-retry" not in response.headers  # a 500 may be worth a retry
    # logged once, with the traceback
    records = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info and SECRET in str(records[0].exc_info[1])
    metrics = client.get("/metrics").text
    assert 'qwen3tts_http_requests_total{route="/v1/audio/speech",status="500"} 1.0' in metrics
    assert client.get("/health").status_code == 200  # still serving


def test_busy_is_429_with_retry_after() -> None:
    response = _client(Busy("the server is busy", "retry shortly")).post("/v1/audio/speech", json=SPEECH)
    assert response.status_code == 429 and response.headers["retry-after"]
    error = response.json()["error"]
    assert error["code"] == "busy" and error["type"] == "rate_limit_error"
    assert "x-should-retry" not in response.headers  # the client's retry is what 429 asks for


def test_route_labels_are_bounded() -> None:
    assert route_label("/v1/audio/speech") == "/v1/audio/speech"
    assert route_label("/v1/audio/voices/alice") == "/v1/audio/voices/{id}"
    assert route_label("/v1/models/tts-1") == "/v1/models/{id}"
    assert route_label("/anything/../else") == "other"


@pytest.mark.parametrize(
    ("age", "word"),
    [(None, None), (8, "child"), (16, "teenage"), (30, "young"), (45.5, "middle-aged"), (80, "old"),
     ("elderly", "elderly")],
)  # fmt: skip
def test_service_ages_in_years_become_words(age: object, word: str | None) -> None:
    assert age_word(age) == word


@pytest.mark.parametrize("age", [0, 121, True, [3]])
def test_service_ages_out_of_range_are_refused(age: object) -> None:
    with pytest.raises(APIError) as caught:
        age_word(age)
    assert caught.value.status == 400


def test_temperature_zero_means_greedy() -> None:
    assert sampling_options({"temperature": 0}, 2.0).greedy is True
    assert sampling_options({"temperature": 0}, 2.0).temperature is None
    assert sampling_options({"temperature": 0.7}, 2.0).temperature == 0.7
    assert sampling_options({}, 2.0).greedy is False
    for bad in (0.001, 2.5, -1, "warm"):
        with pytest.raises(APIError):
            sampling_options({"temperature": bad}, 2.0)


def test_a_converted_catalog_model_is_also_known_by_its_catalog_names() -> None:
    served = SimpleNamespace(model=SimpleNamespace(manifest=SimpleNamespace(source_repo=None)))
    assert _catalog_names(Path("/models/mine"), served) == ()
    served.model.manifest.source_repo = "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice"
    assert _catalog_names(Path("/models/mine"), served) == (
        "0.6b-custom",
        "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice",
    )
    assert _catalog_names("0.6b-base", served) == ("0.6b-base", "Qwen/Qwen3-TTS-12Hz-0.6B-Base")


def test_cors_and_the_api_key_together() -> None:
    settings = ServerSettings(model_id="m", api_key="k", cors_origins=("http://app.test",))
    client = TestClient(create_app(StubTTS(RuntimeError()), settings), raise_server_exceptions=False)  # type: ignore[arg-type]
    origin = {"Origin": "http://app.test"}
    # a preflight needs no key and still gets a request id
    preflight = client.options(
        "/v1/audio/speech", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 200 and preflight.headers["x-request-id"]
    assert preflight.headers["access-control-allow-origin"] == "http://app.test"
    # a refusal is readable by the page (CORS headers on the 401), in OpenAI's shape, with an id
    refused = client.get("/v1/models", headers=origin)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.headers["access-control-allow-origin"] == "http://app.test"
    assert refused.headers["x-request-id"] and refused.headers["x-should-retry"] == "false"
    assert "x-request-id" in refused.headers["access-control-expose-headers"].lower()
    allowed = client.get("/v1/models", headers={**origin, "Authorization": "Bearer k"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://app.test"
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
