"""`qwen3tts serve` over HTTP with real clients (the official `openai` package, httpx), loopback only.

Every route and format; streamed bodies equal non-streamed ones and decode to the whole utterance; the
audio equals `qwen3tts say` with the same seed; every kind of bad input gets a 4xx in OpenAI's error shape
and the server keeps serving; the API key, request ids, metrics and SIGTERM.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_process import ServerProcess, cli_pcm

from qwen3tts_cli.convert.converter import convert_checkpoint

KEY = "test-key-123"
TEXT = "Hello from the server, this is a test."
RUNS_LONG = "A request that would run for a long time."
LONG = " ".join(f"Sentence number {i} keeps the server busy for a while." for i in range(30))
FRAMES = 6


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory) -> Path:
    # seed 0: random weights whose first pieces run for hundreds of frames (the disconnect test needs a
    # request that is still generating)
    return convert_checkpoint(
        checkpoint_factory("custom_voice", "tiny", 0), tmp_path_factory.mktemp("srv") / "cv", "q8_0"
    )


@pytest.fixture(scope="module")
def server(custom_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    voices = tmp_path_factory.mktemp("voices")
    process = ServerProcess(
        custom_model,
        "--threads",
        "2",
        "--max-batch",
        "4",
        "--max-queue",
        "8",
        "--api-key",
        KEY,
        "--voices-dir",
        str(voices),
        "--quiet",
    )
    yield process
    process.kill()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


def _post(
    server: ServerProcess, path: str, body: object, key: str | None = KEY, **kwargs: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    kwargs.setdefault("timeout", 120)
    if isinstance(body, (bytes, str, Iterator)):
        return httpx.post(f"{server.url}{path}", content=body, headers=headers, **kwargs)  # type: ignore[arg-type]
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, **kwargs)  # type: ignore[arg-type]


def _speech(**fields: object) -> dict[str, object]:
    return {"model": "tts-1", "input": TEXT, "voice": "vivian", "seed": 3, "max_frames": FRAMES, **fields}


def _assert_openai_error(response: httpx.Response, status: int, fragment: str = "") -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment.lower() in error["message"].lower(), error["message"]
    if status in (400, 401, 404, 413, 422):
        assert response.headers.get("x-should-retry") == "false"
    assert response.headers.get("x-request-id")
    return error


def _decode(data: bytes) -> np.ndarray:
    """Any container PyAV reads -> mono float32 samples."""
    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    return np.concatenate(frames) if frames else np.zeros(0, np.float32)


# ---- audio ------------------------------------------------------------------------------------------------
def test_openai_client_pcm_equals_the_cli(
    server: ServerProcess, client: openai.OpenAI, custom_model: Path
) -> None:
    response = client.audio.speech.create(
        model="tts-1",
        voice="vivian",
        input=TEXT,
        response_format="pcm",
        extra_body={"seed": 3, "max_frames": FRAMES},
    )
    assert response.content == cli_pcm(custom_model, TEXT, "vivian", 3, FRAMES)
    assert len(response.content) == FRAMES * 1920 * 2


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus", "aac", "flac"])
def test_streamed_body_equals_the_plain_one_and_decodes_whole(
    server: ServerProcess, client: openai.OpenAI, fmt: str
) -> None:
    plain = client.audio.speech.create(
        model="tts-1",
        voice="ryan",
        input=TEXT,
        response_format=fmt,
        extra_body={"seed": 5, "max_frames": FRAMES},
    ).content
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="ryan",
        input=TEXT,
        response_format=fmt,
        extra_body={"seed": 5, "max_frames": FRAMES},
    ) as response:
        parts = list(response.iter_bytes())
    assert b"".join(parts) == plain
    seconds = FRAMES * 0.08
    if fmt == "pcm":
        assert len(plain) == FRAMES * 1920 * 2
    elif fmt == "wav":
        assert plain[:4] == b"RIFF" and plain[40:44] == b"\xff\xff\xff\xff"  # open-ended: streamable
        assert len(plain) - 44 == FRAMES * 1920 * 2
    else:
        decoded = _decode(plain)
        rate = 48000 if fmt == "opus" else 24000
        # lossy codecs pad by at most a few frames of their own at both ends
        assert abs(len(decoded) / rate - seconds) < 0.1, (fmt, len(decoded) / rate)


def test_sse_deltas_carry_the_same_audio(server: ServerProcess) -> None:
    pcm = _post(server, "/v1/audio/speech", _speech(response_format="pcm")).content
    response = _post(server, "/v1/audio/speech", _speech(response_format="pcm", stream_format="sse"))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done" and "usage" in events[-1]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert audio == pcm


def test_voice_object_form_and_openai_voice_names(server: ServerProcess) -> None:
    by_object = _post(
        server, "/v1/audio/speech", _speech(voice={"id": "vivian"}, response_format="pcm")
    ).content
    assert by_object == _post(server, "/v1/audio/speech", _speech(response_format="pcm")).content
    # OpenAI's own names mean the server's default voice (ryan for preset models)
    alloy = _post(server, "/v1/audio/speech", _speech(voice="alloy", response_format="pcm")).content
    assert alloy == _post(server, "/v1/audio/speech", _speech(voice="ryan", response_format="pcm")).content


# ---- listings ---------------------------------------------------------------------------------------------
def test_models_and_voices_listings(server: ServerProcess, client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert "tts-1" in ids and "cv" in ids
    voices = httpx.get(f"{server.url}/v1/audio/voices", headers={"Authorization": f"Bearer {KEY}"}).json()
    names = {v["id"] for v in voices["voices"]}
    assert {"vivian", "ryan"} <= names and all(v["name"] for v in voices["voices"])
    models = httpx.get(f"{server.url}/v1/audio/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert {"id": "tts-1"} in models["models"]
    assert client.models.retrieve("gpt-4o-mini-tts").id == "gpt-4o-mini-tts"
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.models.retrieve("whisper-1")


def test_a_preset_model_refuses_voice_uploads(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/v1/audio/voices",
        headers={"Authorization": f"Bearer {KEY}"},
        data={"name": "me"},
        files={"audio_sample": ("a.wav", b"RIFF", "audio/wav")},
    )
    _assert_openai_error(response, 400, "cannot clone")


# ---- the Qwen-TTS service API -----------------------------------------------------------------------------
def test_health_reports_model_queue_and_batch(server: ServerProcess) -> None:
    health = httpx.get(f"{server.url}/health").json()  # open without the key
    assert health["status"] == "ok" and health["model_loaded"] is True and health["model"] == "cv"
    assert health["batch"]["max"] == 4 and health["queue"]["max"] == 8


@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg"])
def test_service_tts_returns_real_files(server: ServerProcess, fmt: str) -> None:
    body = {
        "text": TEXT,
        "format": fmt,
        "temperature": 0.7,
        "seed": 2,
        "max_length": FRAMES,
        "voice_attributes": {"gender": "female", "age": 30, "emotion": "happy"},
    }
    response = _post(server, "/tts", body)
    assert response.status_code == 200, response.text
    if fmt == "wav":
        samples, rate = sf.read(io.BytesIO(response.content))  # a whole file: exact sizes
        assert rate == 24000 and len(samples) == FRAMES * 1920
    else:
        assert abs(len(_decode(response.content)) / (48000 if fmt == "ogg" else 24000) - FRAMES * 0.08) < 0.1


def test_stream_tts_is_one_wav_stream(server: ServerProcess) -> None:
    text = "First sentence of the stream is here. " * 3 + "And a second, different one follows it now."
    response = _post(server, "/stream-tts", {"text": text, "seed": 1, "max_length": FRAMES})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert response.content.count(b"RIFF") == 1
    assert (len(response.content) - 44) % 2 == 0 and len(response.content) > 44


def test_request_ids_are_echoed_or_made(server: ServerProcess) -> None:
    echoed = httpx.get(f"{server.url}/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    made = httpx.get(f"{server.url}/health", headers={"X-Request-ID": "bad id\twith tab"})
    assert made.headers["x-request-id"] != "bad id\twith tab" and len(made.headers["x-request-id"]) == 32


def test_metrics_in_prometheus_format(server: ServerProcess) -> None:
    _post(server, "/v1/audio/speech", _speech(response_format="pcm"))
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        'qwen3tts_http_requests_total{route="/v1/audio/speech",status="200"}',
        "qwen3tts_http_requests_in_flight",
        "qwen3tts_queue_depth",
        "qwen3tts_batch_sequences",
        "qwen3tts_time_to_first_audio_seconds_bucket",
        'qwen3tts_request_duration_seconds_bucket{le="600.0"}',
        "qwen3tts_audio_seconds_total",
        "qwen3tts_real_time_factor_bucket",
    ):
        assert name in text, name


# ---- bad input ----------------------------------------------------------------------------------------
BAD_BODIES = [
    ("{not json", 400, "not valid JSON"),
    ("[1, 2]", 400, "JSON object"),
    (json.dumps(_speech(input=5)), 400, "'input' must be a string"),
    (json.dumps(_speech(input="   ")), 400, "non-empty"),
    (json.dumps(_speech(input="x" * 5000)), 400, "at most 4096"),
    (json.dumps(_speech(voice="nobody")), 400, "unknown voice"),
    (json.dumps(_speech(voice="../etc/passwd")), 400, "invalid voice name"),
    (json.dumps(_speech(voice="/abs/path")), 400, "invalid voice name"),
    (json.dumps(_speech(voice="bad\u0007name")), 400, "invalid voice name"),
    (json.dumps(_speech(voice=7)), 400, "'voice' must be"),
    (json.dumps(_speech(model="gpt-9")), 404, "not served"),
    (json.dumps(_speech(response_format="ogg-vorbis")), 400, "response_format"),
    (json.dumps(_speech(speed=9)), 400, "'speed' must be in 0.5..2.0"),
    (json.dumps(_speech(speed=0.25)), 400, "'speed' must be in 0.5..2.0"),
    (json.dumps(_speech(seed=-1)), 400, "seed"),
    (json.dumps(_speech(seed=True)), 400, "seed"),
    (json.dumps(_speech(temperature="hot")), 400, "temperature"),
    (json.dumps(_speech(top_p=3)), 400, "top_p"),
    (json.dumps(_speech(language="klingon")), 400, "unknown language"),
    (json.dumps({"input": TEXT, "voice": "ryan"}), 400, "'model' is required"),
]


@pytest.mark.parametrize(("body", "status", "fragment"), BAD_BODIES)
def test_bad_speech_bodies_get_openai_errors(
    server: ServerProcess, body: str, status: int, fragment: str
) -> None:
    response = _post(server, "/v1/audio/speech", body, headers={"Content-Type": "application/json"})
    _assert_openai_error(response, status, fragment)
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_oversized_body_is_413_before_it_is_read(server: ServerProcess) -> None:
    response = _post(
        server, "/v1/audio/speech", b"x" * (2 << 20), headers={"Content-Type": "application/json"}
    )
    _assert_openai_error(response, 413, "larger than")


def test_oversized_body_without_content_length_is_413_while_read(server: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to check up front
        for _ in range(64):
            yield b"x" * 65536

    for path in ("/v1/audio/speech", "/tts"):
        response = _post(server, path, chunks(), headers={"Content-Type": "application/json"})
        _assert_openai_error(response, 413, "larger than")
    assert httpx.get(f"{server.url}/health").status_code == 200


SERVICE_BAD_BODIES = [
    ("/tts", "{oops", 400, "not valid JSON"),
    ("/tts", {"format": "wav"}, 400, "'text' must be"),
    ("/tts", {"text": "x" * 5000}, 400, "at most 4096"),
    ("/tts", {"text": TEXT, "format": "aiff"}, 400, "'format' must be"),
    ("/tts", {"text": TEXT, "temperature": 3}, 400, "temperature"),
    ("/tts", {"text": TEXT, "max_length": 0}, 400, "max_length"),
    ("/tts", {"text": TEXT, "voice_attributes": "happy"}, 400, "voice_attributes"),
    ("/tts", {"text": TEXT, "voice_attributes": {"gender": "robot"}}, 400, "gender"),
    ("/tts", {"text": TEXT, "voice_attributes": {"age": 500}}, 400, "1-120"),
    ("/tts", {"text": TEXT, "voice_attributes": {"emotion": 3}}, 400, "emotion"),
    ("/tts", {"text": TEXT, "voice": "../../x"}, 400, "invalid voice name"),
    ("/stream-tts", {"text": ""}, 400, "non-empty"),
    ("/stream-tts", [TEXT], 400, "JSON object"),
]


@pytest.mark.parametrize(("path", "body", "status", "fragment"), SERVICE_BAD_BODIES)
def test_bad_service_bodies_get_openai_errors(
    server: ServerProcess, path: str, body: object, status: int, fragment: str
) -> None:
    if isinstance(body, str):
        response = _post(server, path, body, headers={"Content-Type": "application/json"})
    else:
        response = _post(server, path, body)
    _assert_openai_error(response, status, fragment)


def test_temperature_zero_is_greedy(server: ServerProcess) -> None:
    greedy = _post(server, "/v1/audio/speech", _speech(response_format="pcm", greedy=True, seed=1)).content
    zero = _post(server, "/v1/audio/speech", _speech(response_format="pcm", temperature=0, seed=2)).content
    assert zero == greedy and len(zero) == FRAMES * 1920 * 2
    service = _post(server, "/tts", {"text": TEXT, "voice": "vivian", "temperature": 0, "max_length": FRAMES})
    assert service.status_code == 200 and service.content[44:] == greedy  # wav: header, then the same pcm


def test_api_key_is_required(server: ServerProcess) -> None:
    _assert_openai_error(_post(server, "/v1/audio/speech", _speech(), key=None), 401, "API key")
    _assert_openai_error(_post(server, "/v1/audio/speech", _speech(), key="wrong"), 401, "API key")
    _assert_openai_error(_post(server, "/tts", {"text": TEXT}, key=None), 401, "API key")
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        bad.audio.speech.create(model="tts-1", voice="ryan", input=TEXT)


def test_unknown_routes_and_methods_use_the_error_shape(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    _assert_openai_error(httpx.get(f"{server.url}/v1/nothing", headers=headers), 404, "no route")
    _assert_openai_error(httpx.get(f"{server.url}/v1/audio/speech", headers=headers), 405, "not allowed")
    _assert_openai_error(
        httpx.delete(f"{server.url}/v1/audio/voices/ghost", headers=headers), 404, "no voice"
    )


def test_openai_client_sees_the_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown voice 'nobody'"):
        client.audio.speech.create(model="tts-1", voice="nobody", input=TEXT)


# ---- cancel, shutdown ---------------------------------------------------------------------------------
def test_a_client_that_leaves_frees_its_slot(server: ServerProcess) -> None:
    # this prompt and seed run to the frame limit on these weights: the request is still generating
    body = _speech(input=RUNS_LONG, voice="ryan", max_frames=1000, seed=1, response_format="pcm")
    with httpx.stream(
        "POST",
        f"{server.url}/v1/audio/speech",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        for _ in response.iter_bytes(4096):
            # still reading: the request is generating (leaving the loop closes the connection)
            assert _batch_sequences(server) >= 1
            break
    deadline = time.monotonic() + 10
    while _batch_sequences(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _batch_sequences(server) == 0
    assert 'qwen3tts_requests_cancelled_total{reason="client"}' in httpx.get(f"{server.url}/metrics").text


def test_a_whole_file_client_that_leaves_frees_its_slot(server: ServerProcess) -> None:
    # /tts answers only at the end: nothing is written that could notice the client leave, so the server
    # watches the connection itself
    cancelled = _cancelled(server)
    body = {"text": RUNS_LONG, "voice": "ryan", "seed": 1, "max_length": 1000}
    with pytest.raises(httpx.ReadTimeout):
        _post(server, "/tts", body, timeout=httpx.Timeout(60, read=0.5))
    deadline = time.monotonic() + 10
    while (_batch_sequences(server) or _cancelled(server) == cancelled) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _batch_sequences(server) == 0 and _cancelled(server) == cancelled + 1


def _cancelled(server: ServerProcess) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith('qwen3tts_requests_cancelled_total{reason="client"}'):
            return float(line.split()[-1])
    return 0.0


def _batch_sequences(server: ServerProcess) -> int:
    return int(httpx.get(f"{server.url}/health").json()["batch"]["in_flight"])


def test_sigterm_finishes_in_flight_work_and_exits_zero(custom_model: Path) -> None:
    process = ServerProcess(custom_model, "--threads", "1", "--quiet", "--shutdown-timeout", "20")
    try:
        with httpx.stream(
            "POST", f"{process.url}/v1/audio/speech", json=_speech(response_format="pcm"), timeout=60
        ) as response:
            received = b""
            for part in response.iter_bytes():
                if not received:
                    process.process.send_signal(signal.SIGTERM)  # while the request is in flight
                received += part
        assert len(received) == FRAMES * 1920 * 2  # the request in flight was finished
        process.process.wait(timeout=60)
        assert process.process.returncode == 0, process.stderr()
    finally:
        process.kill()


def test_sigterm_cancels_what_outlasts_the_shutdown_timeout_and_exits_zero(custom_model: Path) -> None:
    process = ServerProcess(custom_model, "--threads", "1", "--shutdown-timeout", "1")
    body = _speech(input=RUNS_LONG, voice="ryan", max_frames=1000, seed=1, response_format="pcm")
    received = 0
    try:
        started = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):  # the body is cut, so the client knows it is short
            with httpx.stream("POST", f"{process.url}/v1/audio/speech", json=body, timeout=60) as response:
                for part in response.iter_bytes():
                    if not received:
                        process.process.send_signal(signal.SIGTERM)
                    received += len(part)
        process.process.wait(timeout=30)
        assert process.process.returncode == 0, process.stderr()
        assert time.monotonic() - started < 15
        assert 0 < received < 984 * 1920 * 2
        log = process.stderr(limit=None)
        assert "cancelled: the shutdown timeout passed" in log and "Traceback" not in log, log
    finally:
        process.kill()


# ---- property: no body is a 5xx ------------------------------------------------------------------------
_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
_BODIES = st.fixed_dictionaries(
    {"max_frames": st.just(2)},
    optional={
        "model": st.one_of(st.sampled_from(["tts-1", "cv", "gpt-4o-mini-tts", "nope"]), _ANY),
        "input": st.one_of(st.text(max_size=60), _ANY),
        "voice": st.one_of(st.sampled_from(["ryan", "vivian", "alloy", "../x", ""]), _ANY),
        "response_format": st.one_of(st.sampled_from(["pcm", "wav", "mp3", "flac", "bogus"]), _ANY),
        "speed": _ANY,
        "stream_format": st.one_of(st.sampled_from(["audio", "sse"]), _ANY),
        "instructions": _ANY,
        "language": _ANY,
        "seed": _ANY,
        "temperature": _ANY,
        "top_k": _ANY,
        "top_p": _ANY,
        "repetition_penalty": _ANY,
        "greedy": _ANY,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_BODIES)
def test_any_speech_body_gets_audio_or_an_openai_error(
    server: ServerProcess, body: dict[str, object]
) -> None:
    response = _post(
        server, "/v1/audio/speech", json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code < 500, (body, response.text)
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert "Traceback" not in response.text


def test_the_server_log_has_no_internal_errors(server: ServerProcess) -> None:
    """After every test above (bad bodies, property bodies, disconnects): nothing failed inside."""
    log = server.stderr(limit=None)
    assert "Traceback" not in log and "internal error" not in log and "mid-stream" not in log, log
