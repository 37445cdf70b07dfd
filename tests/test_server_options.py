"""`serve` options: --request-timeout stops a request, --cors-origin opens CORS (and only then), a
missing server extra is one line naming the install command; a VoiceDesign model served (the voice comes
from `instructions`) and known by its catalog name."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from server_process import ServerProcess

from qwen3tts_cli.convert.converter import convert_checkpoint

ORIGIN = "http://app.test"
# this prompt and seed run to the frame limit on the seed-0 tiny weights (984 frames, ~4 s to decode)
LONG_REQUEST = {
    "model": "tts-1",
    "input": "A request that would run for a long time.",
    "voice": "ryan",
    "seed": 1,
    "max_frames": 1000,
    "response_format": "pcm",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory) -> Path:
    return convert_checkpoint(
        checkpoint_factory("custom_voice", "tiny", 0), tmp_path_factory.mktemp("opt") / "cv", "q8_0"
    )


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        model, "--threads", "2", "--request-timeout", "1", "--cors-origin", ORIGIN, "--quiet"
    )
    yield process
    process.kill()


def test_request_timeout_ends_a_long_request(server: ServerProcess) -> None:
    started = time.monotonic()
    response = httpx.post(f"{server.url}/v1/audio/speech", json=LONG_REQUEST, timeout=60)
    elapsed = time.monotonic() - started
    assert response.status_code == 200  # the audio had started: the stream ends early instead
    assert 0 < len(response.content) < 984 * 1920 * 2
    assert elapsed < 3.0
    assert (
        'qwen3tts_requests_cancelled_total{reason="timeout"} 1.0' in httpx.get(f"{server.url}/metrics").text
    )
    # the cancelled request leaves the batch at the worker's next frame step (asynchronously)
    deadline = time.monotonic() + 5
    while _batch_sequences(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _batch_sequences(server) == 0


def _batch_sequences(server: ServerProcess) -> int:
    return int(httpx.get(f"{server.url}/health").json()["batch"]["in_flight"])


def test_cors_only_for_the_given_origin(server: ServerProcess, model: Path) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    answer = httpx.options(f"{server.url}/v1/audio/speech", headers=preflight)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(
        f"{server.url}/v1/audio/speech", headers={**preflight, "Origin": "http://evil.test"}
    )
    assert "access-control-allow-origin" not in other.headers
    plain = ServerProcess(model, "--threads", "1", "--quiet")  # no --cors-origin: no CORS headers at all
    try:
        got = httpx.get(f"{plain.url}/v1/models", headers={"Origin": ORIGIN})
        assert got.status_code == 200 and "access-control-allow-origin" not in got.headers
    finally:
        plain.kill()


def test_serve_without_the_extra_names_the_install_command(tmp_path: Path, model: Path) -> None:
    blocked = tmp_path / "blocked"
    (blocked / "starlette").mkdir(parents=True)
    (blocked / "starlette" / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
    done = subprocess.run(
        [sys.executable, "-m", "qwen3tts_cli.cli", "serve", "--model-dir", str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(blocked), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "qwen3tts-cli[server]"' in lines[0] and "starlette" in lines[0]


DESIGN = "A calm, low male voice, speaking slowly."


def test_a_voice_design_model_speaks_the_instructions(
    tmp_path_factory: pytest.TempPathFactory, checkpoint_factory
) -> None:
    model = convert_checkpoint(
        checkpoint_factory("voice_design", "tiny", 0),
        tmp_path_factory.mktemp("vd") / "vd",
        "q8_0",
        source_repo="Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign",
    )
    server = ServerProcess(model, "--threads", "1", "--max-frames", "4", "--quiet")
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        ids = [m.id for m in client.models.list().data]
        assert ids[:2] == ["vd", "1.7b-design"] and "tts-1" in ids
        with pytest.raises(openai.BadRequestError, match="instructions"):
            client.audio.speech.create(model="1.7b-design", voice="alloy", input="Hello there.")
        spoken = [
            client.audio.speech.create(
                model="1.7b-design",
                voice=voice,  # anything: a VoiceDesign model's voice is the description
                input="Hello there.",
                instructions=DESIGN,
                response_format="pcm",
                extra_body={"seed": 4},
            ).content
            for voice in ("alloy", "whatever")
        ]
        command = [sys.executable, "-m", "qwen3tts_cli.cli", "say", "Hello there.", "--model-dir", str(model)]
        command += ["--design", DESIGN, "--seed", "4", "--max-frames", "4", "-o", "-", "--format", "pcm"]
        cli = subprocess.run(command + ["--quiet"], capture_output=True, timeout=300, check=True).stdout
        assert spoken[0] == spoken[1] == cli and len(cli) == 4 * 1920 * 2
        assert httpx.get(f"{server.url}/v1/audio/voices").json() == {"voices": []}
    finally:
        server.kill()
