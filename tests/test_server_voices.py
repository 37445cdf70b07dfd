"""Voice uploads on a Base-model server, and Wyoming started by `qwen3tts serve --wyoming` beside HTTP.

Uploads are checked before anything reaches the library: not audio, too short, too long, too big, names
with path or control characters; a good one clones, speaks and can be deleted.
"""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from server_process import ServerProcess, free_port
from wyoming.audio import AudioChunk, AudioStop
from wyoming.client import AsyncClient
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from qwen3tts_cli.convert.converter import convert_checkpoint


def _wav(seconds: float, rate: int = 24000) -> bytes:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    sf.write(buffer, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base_server(
    tmp_path_factory: pytest.TempPathFactory, checkpoint_factory
) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("base-srv")
    model = convert_checkpoint(checkpoint_factory("base"), root / "base", "f32")
    voices = root / "voices"
    process = ServerProcess(
        model,
        "--threads",
        "2",
        "--max-upload-mb",
        "1",
        "--voices-dir",
        str(voices),
        "--max-frames",
        "4",
        "--quiet",
    )
    yield process, voices
    process.kill()


def _upload(server: ServerProcess, name: str, data: bytes, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/audio/voices",
        data={"name": name, **fields},
        files={"audio_sample": ("sample.wav", data, "audio/wav")},
        timeout=120,
    )


def _error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and fragment in error["message"], error


def test_upload_speak_and_delete_a_voice(base_server: tuple[ServerProcess, Path]) -> None:
    server, voices = base_server
    created = _upload(server, "alice", _wav(4.0), ref_text="The words of the sample.")
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "alice" and created.json()["mode"] == "icl"
    assert (voices / "alice.json").is_file()
    listed = httpx.get(f"{server.url}/v1/audio/voices").json()["voices"]
    assert [v["id"] for v in listed] == ["alice"]
    body = {
        "model": "tts-1",
        "input": "Now in the cloned voice.",
        "voice": "alice",
        "seed": 2,
        "response_format": "pcm",
    }
    speech = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120)
    assert speech.status_code == 200 and len(speech.content) == 4 * 1920 * 2
    _error(_upload(server, "alice", _wav(4.0)), 409, "exists already")
    deleted = httpx.delete(f"{server.url}/v1/audio/voices/alice")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert not (voices / "alice.json").exists()
    _error(httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60), 400, "unknown voice")


@pytest.mark.parametrize(
    ("name", "data", "status", "fragment"),
    [
        ("notaudio", b"this is not audio at all" * 10, 400, "cannot decode"),
        ("short", _wav(0.3), 400, "at least 1 s"),
        ("long", _wav(61.0, rate=8000), 400, "at most 60 s"),
        ("big", _wav(30.0, rate=48000), 413, "larger than"),  # 2.9 MB against --max-upload-mb 1
        ("../escape", _wav(4.0), 400, "invalid voice name"),
        ("/abs/path", _wav(4.0), 400, "invalid voice name"),
        ("bell\u0007", _wav(4.0), 400, "invalid voice name"),
        ("", _wav(4.0), 400, "'name'"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_written(
    base_server: tuple[ServerProcess, Path], name: str, data: bytes, status: int, fragment: str
) -> None:
    server, voices = base_server
    _error(_upload(server, name, data), status, fragment)
    assert not voices.exists() or not any(voices.glob("*.json"))
    assert not (voices.parent / "escape.json").exists()
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_an_upload_without_content_length_is_cut_at_the_limit(
    base_server: tuple[ServerProcess, Path],
) -> None:
    server, voices = base_server
    boundary = "qwen3ttsboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nchunky\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="audio_sample"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()

    def chunks() -> Iterator[bytes]:  # chunked transfer, 2 MB against --max-upload-mb 1
        yield head
        for _ in range(32):
            yield b"\0" * 65536

    response = httpx.post(
        f"{server.url}/v1/audio/voices",
        content=chunks(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=60,
    )
    _error(response, 413, "larger than")
    assert not voices.exists() or not any(voices.glob("*.json"))


def test_an_upload_that_is_not_a_form_is_refused(base_server: tuple[ServerProcess, Path]) -> None:
    server, _ = base_server
    response = httpx.post(f"{server.url}/v1/audio/voices", json={"name": "x"}, timeout=60)
    assert response.status_code == 400 and set(response.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }


def test_bad_voice_ids_on_delete(base_server: tuple[ServerProcess, Path]) -> None:
    server, _ = base_server
    _error(httpx.delete(f"{server.url}/v1/audio/voices/..%2F..%2Fetc"), 400, "invalid voice name")
    _error(httpx.delete(f"{server.url}/v1/audio/voices/ghost"), 404, "no voice")


def test_serve_runs_wyoming_beside_http(tmp_path: Path, checkpoint_factory) -> None:
    model = convert_checkpoint(checkpoint_factory("custom_voice", "tiny", 0), tmp_path / "cv", "q8_0")
    port = free_port()
    process = ServerProcess(
        model,
        "--threads",
        "1",
        "--max-frames",
        "3",
        "--seed",
        "4",
        "--wyoming",
        f"tcp://127.0.0.1:{port}",
        "--quiet",
    )
    try:
        info, audio = asyncio.run(_wyoming_round(port))
        assert "ryan" in [voice.name for voice in info.tts[0].voices]
        assert len(audio) == 3 * 1920 * 2
        http = httpx.post(
            f"{process.url}/v1/audio/speech",
            json={
                "model": "tts-1",
                "input": "Hello over Wyoming.",
                "voice": "ryan",
                "response_format": "pcm",
            },
            timeout=60,
        )
        assert http.content == audio  # the same seed and cap: the same audio on both protocols
        assert process.terminate() == 0
    finally:
        process.kill()


async def _wyoming_round(port: int) -> tuple[Info, bytes]:
    async with AsyncClient.from_uri(f"tcp://127.0.0.1:{port}") as client:
        await client.write_event(Describe().event())
        info = None
        while info is None:
            event = await asyncio.wait_for(client.read_event(), 60)
            if Info.is_type(event.type):
                info = Info.from_event(event)
        await client.write_event(
            Synthesize(text="Hello over Wyoming.", voice=SynthesizeVoice(name="ryan")).event()
        )
        audio = b""
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            if AudioChunk.is_type(event.type):
                audio += AudioChunk.from_event(event).audio
            elif AudioStop.is_type(event.type):
                return info, audio


def test_serve_wyoming_alone(tmp_path: Path, checkpoint_factory) -> None:
    model = convert_checkpoint(checkpoint_factory("custom_voice", "tiny", 0), tmp_path / "cv", "q8_0")
    port, http_port = free_port(), free_port()
    command = [sys.executable, "-m", "qwen3tts_cli.cli", "serve", "--model-dir", str(model), "--no-http"]
    command += ["--port", str(http_port), "--wyoming", f"tcp://127.0.0.1:{port}", "--threads", "1"]
    command += ["--max-frames", "3", "--seed", "4", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        _, audio = asyncio.run(_wyoming_round(port))
        assert len(audio) == 3 * 1920 * 2
        with pytest.raises(httpx.ConnectError):  # no HTTP at all
            httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
