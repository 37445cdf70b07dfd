"""Voice pack promises: exact round trip, strict validation, width check, the named library."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from qwen3tts_cli import voices
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.voices import (
    VOICES_DIR_ENV,
    VoiceLibrary,
    VoicePack,
    pack_from_json,
    pack_to_json,
    packs_equal,
    read_pack,
    validate_name,
    write_pack,
)


def awkward_embedding(width: int) -> np.ndarray:
    """Values a decimal round trip could get wrong: subnormals, -0.0, extremes, full-precision randoms."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal(width).astype(np.float32)
    values[:6] = [np.float32(1e-45), -0.0, np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1 / 3, -1e-38]
    return values


def icl_pack(name: str = "alice", width: int = 1024, frames: int = 40) -> VoicePack:
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 2048, size=(frames, 16))
    codes[0, 0], codes[-1, -1] = 0, 2047
    return VoicePack(
        name=name,
        mode="icl",
        talker_hidden_size=width,
        speaker_embedding=awkward_embedding(width),
        reference_codes=codes,
        reference_text="Hello, this is my voice.",
        reference_language="english",
        audio_sha256="ab" * 32,
        description="test voice",
    )


def xvector_pack(name: str = "bob", width: int = 2048) -> VoicePack:
    return VoicePack(
        name=name, mode="xvector", talker_hidden_size=width, speaker_embedding=awkward_embedding(width)
    )


def rechecksum(document: dict) -> dict:
    """Re-seal a hand-edited document so validation reaches the field under test."""
    embedding = document["speaker_embedding"]
    embedding["sha256"] = hashlib.sha256(base64.b64decode(embedding["base64"])).hexdigest()
    document["payload_sha256"] = voices._payload_checksum(document)
    return document


# ---- round trip -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [icl_pack, xvector_pack], ids=["icl", "xvector"])
def test_round_trip_is_bit_exact(tmp_path: Path, make) -> None:
    pack = make()
    path = write_pack(pack, tmp_path / "voice.json")
    loaded = read_pack(path)
    assert loaded.speaker_embedding.dtype == np.float32
    np.testing.assert_array_equal(
        loaded.speaker_embedding.view(np.uint32), pack.speaker_embedding.view(np.uint32)
    )
    if pack.reference_codes is None:
        assert loaded.reference_codes is None
    else:
        np.testing.assert_array_equal(loaded.reference_codes, pack.reference_codes)
    assert packs_equal(loaded, pack)
    assert pack_to_json(loaded) == path.read_text(encoding="utf-8")  # re-serialization is byte-identical
    for key in (
        "name",
        "mode",
        "reference_text",
        "reference_language",
        "audio_sha256",
        "created",
        "tool_version",
    ):
        assert getattr(loaded, key) == getattr(pack, key)


def test_pack_json_is_readable(tmp_path: Path) -> None:
    text = pack_to_json(icl_pack(frames=3))
    document = json.loads(text)
    assert document["format"] == "qwen3tts-voice" and document["schema_version"] == 1
    assert document["model_family"] == "qwen3-tts-12hz" and document["talker_hidden_size"] == 1024
    assert document["reference_codes"]["frames"] == 3 and len(document["reference_codes"]["codes"][0]) == 16
    assert text.count("\n      [") == 3  # one frame per line


def test_metadata_can_be_edited_by_hand() -> None:
    document = json.loads(pack_to_json(icl_pack()))
    document["description"] = "my favourite voice"
    assert pack_from_json(json.dumps(document)).description == "my favourite voice"


# ---- refused packs ----------------------------------------------------------------------------------


def test_truncated_pack_is_refused(tmp_path: Path) -> None:
    text = pack_to_json(icl_pack())
    path = tmp_path / "voice.json"
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(Qwen3TTSError, match="truncated"):
        read_pack(path)


def test_tampered_embedding_is_refused() -> None:
    document = json.loads(pack_to_json(icl_pack()))
    b64 = document["speaker_embedding"]["base64"]
    document["speaker_embedding"]["base64"] = ("B" if b64[10] == "A" else "A").join([b64[:10], b64[11:]])
    with pytest.raises(Qwen3TTSError, match="checksum"):
        pack_from_json(json.dumps(document))


def test_tampered_codes_or_text_are_refused() -> None:
    for edit in (
        lambda d: d["reference_codes"]["codes"][5].__setitem__(3, 7),
        lambda d: d.__setitem__("reference_text", "Something else."),
        lambda d: d.__setitem__("talker_hidden_size", 2048),
    ):
        document = json.loads(pack_to_json(icl_pack()))
        edit(document)
        with pytest.raises(Qwen3TTSError, match="payload checksum"):
            pack_from_json(json.dumps(document))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["reference_codes"]["codes"][0].__setitem__(0, 2048), "0..2047"),
        (lambda d: d["reference_codes"]["codes"][0].__setitem__(0, -1), "0..2047"),
        (lambda d: d["reference_codes"]["codes"][0].__setitem__(0, 1.5), "only integers"),
        (lambda d: d["reference_codes"]["codes"][0].pop(), "different lengths"),
        (lambda d: d["reference_codes"].__setitem__("frames", 41), "header says"),
        (
            lambda d: d["reference_codes"].__setitem__(
                "codes", [r[:15] for r in d["reference_codes"]["codes"]]
            ),
            "16",
        ),
        (lambda d: d.__setitem__("talker_hidden_size", 2048), "expected \\(2048,\\)"),
        (lambda d: d.__setitem__("talker_hidden_size", "1024"), "wrong type"),
        (lambda d: d.__setitem__("mode", "magic"), "mode must be"),
        (lambda d: d.__setitem__("reference_text", ""), "reference text"),
        (lambda d: d.__setitem__("reference_language", "klingon"), "reference_language"),
        (lambda d: d.__setitem__("sample_rate", 16000), "sample_rate"),
        (lambda d: d.__setitem__("model_family", "qwen3-tts-25hz"), "model family"),
        (lambda d: d.__setitem__("name", "../evil"), "invalid voice name"),
        (lambda d: d.__setitem__("extra", 1), "unknown keys"),
        (lambda d: d.pop("created"), "missing keys"),
        (lambda d: d.__setitem__("schema_version", 3), "upgrade|schema version 3"),
        (lambda d: d.__setitem__("format", "something"), "not a qwen3tts voice pack"),
    ],
)
def test_invalid_fields_are_refused_even_with_valid_checksums(edit, match: str) -> None:
    document = json.loads(pack_to_json(icl_pack()))
    edit(document)
    if "payload_sha256" in document and all(k in document for k in voices._PAYLOAD_KEYS):
        rechecksum(document)
    with pytest.raises(Qwen3TTSError, match=match):
        pack_from_json(json.dumps(document))


def test_embedding_length_must_equal_width() -> None:
    document = json.loads(pack_to_json(xvector_pack(width=2048)))
    short = np.zeros(1024, "<f4").tobytes()
    document["speaker_embedding"]["base64"] = base64.b64encode(short).decode()
    document["speaker_embedding"]["length"] = 1024
    with pytest.raises(Qwen3TTSError, match="talker_hidden_size"):
        pack_from_json(json.dumps(rechecksum(document)))


def test_pack_for_another_model_width_is_refused_clearly(tmp_path: Path) -> None:
    pack = xvector_pack(width=2048)
    pack.check_compatible(2048)
    with pytest.raises(Qwen3TTSError) as info:
        pack.check_compatible(1024)
    assert (
        "1.7B (talker width 2048)" in info.value.message and "0.6B (talker width 1024)" in info.value.message
    )
    assert "clone the voice again" in info.value.hint
    library = VoiceLibrary(tmp_path)
    library.save(pack)
    with pytest.raises(Qwen3TTSError, match="was made with a 1.7B"):
        library.resolve("bob", talker_hidden_size=1024)


def test_constructor_validates_too() -> None:
    with pytest.raises(Qwen3TTSError, match="needs reference codes"):
        VoicePack(
            name="x", mode="icl", talker_hidden_size=8, speaker_embedding=np.zeros(8), reference_text="hi"
        )
    with pytest.raises(Qwen3TTSError, match="NaN"):
        VoicePack(name="x", mode="xvector", talker_hidden_size=2, speaker_embedding=[np.nan, 0.0])


# ---- names and the library --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "a/b", "a\\b", "..", ".hidden", "../x", "x" * 65, "trailing.", "-dash", "a\nb"]
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(Qwen3TTSError, match="invalid voice name"):
        validate_name(name)


@pytest.mark.parametrize("name", ["alice", "Alice-2", "my voice.v1", "张三", "x" * 64])
def test_good_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name


def test_library_folder_argument_then_env_then_user_data_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(VOICES_DIR_ENV, str(tmp_path / "from-env"))
    assert VoiceLibrary().root == tmp_path / "from-env"
    assert VoiceLibrary(tmp_path / "arg").root == tmp_path / "arg"
    monkeypatch.delenv(VOICES_DIR_ENV)
    default = VoiceLibrary().root
    assert default.name == "voices" and default.parent.name == "qwen3tts"


def test_list_show_remove_import_export(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path / "voices")
    assert list(library.entries()) == []  # a missing folder is an empty library
    alice = icl_pack("alice")
    library.save(alice)
    library.save(xvector_pack("bob"))
    (library.root / "broken.json").write_text("{", encoding="utf-8")

    entries = {e.name: e for e in library.entries()}
    assert sorted(entries) == ["alice", "bob", "broken"]
    assert entries["alice"].pack is not None and entries["alice"].pack.frames == 40
    assert entries["broken"].pack is None and "not valid JSON" in entries["broken"].error

    assert packs_equal(library.show("alice"), alice)
    assert library.path_for("alice") == library.root / "alice.json"

    exported = library.export("alice", tmp_path)
    assert exported == tmp_path / "alice.json"
    with pytest.raises(Qwen3TTSError, match="file exists"):
        library.export("alice", tmp_path)

    library.remove("alice")
    assert "alice" not in library.names()
    with pytest.raises(Qwen3TTSError, match="no voice named 'alice'"):
        library.remove("alice")
    with pytest.raises(Qwen3TTSError, match="no voice named 'alice'"):
        library.show("alice")

    library.import_pack(exported, name="alice copy")
    imported = library.show("alice copy")
    assert imported.name == "alice copy"
    np.testing.assert_array_equal(imported.reference_codes, read_pack(exported).reference_codes)


def test_saving_over_an_existing_voice_needs_overwrite(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path)
    library.save(xvector_pack("bob"))
    with pytest.raises(Qwen3TTSError, match="already exists"):
        library.save(xvector_pack("bob"))
    replacement = VoicePack(name="bob", mode="xvector", talker_hidden_size=4, speaker_embedding=np.ones(4))
    library.save(replacement, overwrite=True)
    assert library.show("bob").talker_hidden_size == 4


def test_voice_usable_by_name_or_path(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path / "lib")
    library.save(icl_pack("alice"))
    outside = write_pack(icl_pack("carol"), tmp_path / "carol.json")
    assert library.resolve("alice").name == "alice"
    assert library.resolve(str(outside)).name == "carol"
    with pytest.raises(Qwen3TTSError, match="not found"):
        library.resolve(str(tmp_path / "nope.json"))
    with pytest.raises(Qwen3TTSError, match="no voice named"):
        library.resolve("nobody")


def test_failed_write_leaves_the_old_pack_and_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    library = VoiceLibrary(tmp_path)
    path = library.save(xvector_pack("bob"))
    before = path.read_bytes()

    def crash(*_args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        library.save(icl_pack("bob"), overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "bob.json"]
