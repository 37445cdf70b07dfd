"""Batch list parsing (no model): formats, defaults, names, line-numbered errors, any bytes never raise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3tts_cli import audio, catalog
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.longform.lists import (
    AUDIO_FORMATS,
    JSONL,
    MAX_LIST_BYTES,
    MERGED,
    SHORT,
    SPLIT,
    TSV,
    ZIPVOICE,
    ListDefaults,
    check_files,
    output_name,
    parse_list,
    read_list,
)


def _errors(content: bytes, **kwargs) -> dict[int, str]:
    return {e.line: e.reason for e in parse_list(content, **kwargs).errors}


def test_formats_are_the_writers() -> None:
    assert set(AUDIO_FORMATS) == set(audio.OUTPUT_FORMATS)


def test_zipvoice_tsv_forms(tmp_path: Path) -> None:
    content = (
        b"a\tprompt words\tp/a.wav\tSay this.\n"
        b"b\t[S1] hi [S2] yo\tm.wav\t[S1] One. [S2] Two.\n"
        b"c\tfirst\tsecond\t1.wav\t/abs/2.wav\t[S1] Three. [S2] Four.\n"
        b"d\tShort form.\n"
    )
    parsed = parse_list(content, base_dir=tmp_path)
    assert parsed.format == TSV and not parsed.errors
    a, b, c, d = parsed.lines
    assert (a.form, a.ref_audio, a.ref_text, a.text) == (
        ZIPVOICE,
        tmp_path / "p/a.wav",
        "prompt words",
        "Say this.",
    )
    assert (b.form, b.prompt_wavs, b.prompt_texts) == (MERGED, (tmp_path / "m.wav",), ("[S1] hi [S2] yo",))
    assert (c.form, c.prompt_wavs) == (SPLIT, (tmp_path / "1.wav", Path("/abs/2.wav")))
    assert c.prompt_texts == ("first", "second")
    assert all(line.mode == catalog.MODE_CLONE for line in (a, b, c)) and b.dialogue and not a.dialogue
    assert (d.form, d.mode, d.speaker, d.output) == (SHORT, catalog.MODE_PRESETS, None, "d.wav")


def test_jsonl_detected_by_extension_or_first_line(tmp_path: Path) -> None:
    row = {"name": "x", "text": "Hi.", "speaker": "ryan", "seed": 5, "speed": 1.25, "format": "flac"}
    listing = tmp_path / "list.txt"
    listing.write_text("# comment first\n\n" + json.dumps(row) + "\n", encoding="utf-8")
    parsed = read_list(listing)
    assert parsed.format == JSONL
    (line,) = parsed.lines
    assert (line.line, line.speaker, line.seed, line.speed, line.output) == (3, "ryan", 5, 1.25, "x.flac")
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("x\tnot json\n", encoding="utf-8")
    assert read_list(jsonl).errors[0].reason.startswith("not valid JSON")


def test_command_line_voice_fills_lines_without_one() -> None:
    content = (
        b'{"name": "a", "text": "Hi."}\n'
        b'{"name": "b", "text": "Hi.", "speaker": "vivian", "language": "english"}\n'
        b'{"name": "c", "text": "Hi.", "instruct": "Whisper."}\n'
    )
    preset = parse_list(content, defaults=ListDefaults(speaker="ryan", language="chinese", format="mp3"))
    a, b, c = preset.lines
    assert (a.speaker, a.language, a.output) == ("ryan", "chinese", "a.mp3")
    assert (b.speaker, b.language) == ("vivian", "english")
    assert (c.speaker, c.instruct) == ("ryan", "Whisper.")
    designed = parse_list(content, defaults=ListDefaults(design="A calm voice."))
    assert [line.mode for line in designed.lines] == [catalog.MODE_DESIGN, catalog.MODE_PRESETS]
    assert (
        "instruct styles a preset speaker"
        in _errors(content, defaults=ListDefaults(design="A calm voice."))[3]
    )
    cloned = parse_list(b"a\tHi.\n", defaults=ListDefaults(voice="narrator"))
    assert cloned.lines[0].voice == "narrator" and cloned.lines[0].mode == catalog.MODE_CLONE


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("../x", "unsafe name"),
        ("a/b", "unsafe name"),
        ("a\\b", "unsafe name"),
        ("/abs", "unsafe name"),
        (".", "unsafe name"),
        ("..", "unsafe name"),
        (".hidden", "unsafe name"),
        ("bell\x07", "unsafe name"),
        ("CON", "reserved device name"),
        ("nul.txt", "reserved device name"),
        ("com1", "reserved device name"),
        ("what?", "unsafe name"),
        ("trailing.", "may not end"),
        ("x" * 201, "longer than 200 bytes"),
        ("", "empty name"),
        (".wav", "unsafe name"),
    ],
)
def test_unsafe_names(raw: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("?", r"\?")):
        output_name(raw)


def test_safe_names_keep_their_stem() -> None:
    assert output_name(" chapter-01.WAV ") == "chapter-01"
    assert output_name("a.b.flac") == "a.b"
    assert output_name("notes.txt") == "notes.txt"
    assert output_name("ñandú 中文") == "ñandú 中文"
    twice = parse_list("caf\u00e9\tOne.\ncafe\u0301\tTwo.\n".encode())  # NFC and NFD spellings
    assert [e.line for e in twice.errors] == [2] and "duplicate name" in twice.errors[0].reason


def test_every_bad_line_is_numbered_and_the_rest_parse() -> None:
    content = (
        b"good\tA fine line.\n"
        b"one column only\n"
        b"three\tcolumns\there\n"
        b"empty\t   \n"
        b"GOOD\tSame name, other case.\n"
        b"bytes\t\xff\xfe\n"
        b"p\t\tx.wav\tNo transcription.\n"
        b"q\tplain prompt\tx.wav\t[S1] markers only in the text\n"
        b"r\t[S1] a [S2] b\tm.wav\tno markers in the text\n"
        b"s\tone\ttwo\t1.wav\t2.wav\t[S1] a [S3] c\n"
        b"t\t!!!\n"
        b"u\tOk.\r\n"
    )
    parsed = parse_list(content)
    assert [line.name for line in parsed.lines] == ["good", "u"]
    errors = {e.line: e.reason for e in parsed.errors}
    assert "1 column(s); expected 2 columns (name, text), 4 (ZipVoice" in errors[2]
    assert errors[3].startswith("3 column(s)")
    assert errors[4] == "empty text"
    assert errors[5].startswith("duplicate name (line 1")
    assert errors[6].startswith("not valid UTF-8")
    assert "prompt transcription is empty" in errors[7]
    assert "prompt transcription has none" in errors[8]
    assert "needs a text with [S1]/[S2] markers" in errors[9]
    assert "S3" in errors[10]
    assert "nothing to say" in errors[11]
    assert len(errors) == 10


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"name": "a"}, "no text"),
        ({"text": "Hi."}, "no name"),
        ({"name": 3, "text": "Hi."}, "name must be a string"),
        ({"name": "a", "text": "Hi.", "seed": "7"}, "seed must be an integer"),
        ({"name": "a", "text": "Hi.", "seed": True}, "seed must be an integer"),
        ({"name": "a", "text": "Hi.", "seed": -1}, "seed must be an integer"),
        ({"name": "a", "text": "Hi.", "speed": 2.5}, "speed must be 0.5-2.0"),
        ({"name": "a", "text": "Hi.", "speed": "fast"}, "speed must be a number"),
        ({"name": "a", "text": "Hi.", "format": "aiff"}, "unknown format"),
        ({"name": "a", "text": "Hi.", "speaker": "ryan", "voice": "me"}, "give one voice"),
        ({"name": "a", "text": "Hi.", "ref_text": "words"}, "ref_text goes with ref_audio"),
        ({"name": "a", "text": "Hi.", "voice": "me", "instruct": "Loud."}, "instruct styles a preset"),
        ({"name": "a", "text": "Hi.", "speaker": " "}, "speaker is empty"),
        ({"name": "a", "text": "[S1] a [S2] b"}, "need a ZipVoice prompt"),
        ({"name": "a", "text": "Hi.", "colour": "red"}, "unknown key(s) colour"),
    ],
)
def test_json_line_errors(row: dict, fragment: str) -> None:
    (error,) = parse_list(json.dumps(row).encode() + b"\n", jsonl=True).errors
    assert error.line == 1 and fragment in error.reason


def test_json_line_that_is_not_an_object() -> None:
    errors = _errors(b'{"name": "a", "text": "Hi."}\n[1, 2]\n"text"\n')
    assert set(errors) == {2, 3} and all("one object" in reason for reason in errors.values())


def test_check_files_reports_missing_references(tmp_path: Path) -> None:
    (tmp_path / "here.wav").write_bytes(b"RIFF")
    (tmp_path / "folder.wav").mkdir()
    content = b"a\tw\there.wav\tOne.\nb\tw\tgone.wav\tTwo.\nc\tw\tfolder.wav\tThree.\n"
    parsed = parse_list(content, base_dir=tmp_path)
    good, errors = check_files(parsed.lines)
    assert [line.name for line in good] == ["a"]
    assert [(e.line, e.name) for e in errors] == [(2, "b"), (3, "c")]
    assert errors[0].reason.startswith("file not found") and errors[1].reason.startswith("not a file")


def test_whole_file_problems_raise(tmp_path: Path) -> None:
    with pytest.raises(Qwen3TTSError, match="list file not found"):
        read_list(tmp_path / "missing.tsv")
    with pytest.raises(Qwen3TTSError, match="not a file"):
        read_list(tmp_path)
    with pytest.raises(Qwen3TTSError, match="larger than"):
        parse_list(b"x" * (MAX_LIST_BYTES + 1))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(alphabet=st.sampled_from('\t\n\r{}[]":,S12ab./\\# é中\x00\xff'), max_size=200).map(
            lambda text: text.encode("utf-8", "surrogatepass")
        ),
        st.lists(
            st.dictionaries(
                st.sampled_from(["name", "text", "speaker", "seed", "speed", "format", "voice", "x"]),
                st.one_of(st.text(max_size=8), st.integers(-3, 3), st.floats(0, 3), st.booleans()),
            ),
            max_size=5,
        ).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
    )
)
def test_any_bytes_give_lines_and_numbered_errors(content: bytes) -> None:
    parsed = parse_list(content)
    count = len(content.removeprefix(b"\xef\xbb\xbf").split(b"\n"))
    seen = set()
    for line in parsed.lines:
        assert 1 <= line.line <= count and line.text.strip()
        assert output_name(line.name) == line.name and line.name.casefold() not in seen
        assert line.format in AUDIO_FORMATS
        seen.add(line.name.casefold())
    for error in parsed.errors:
        assert 1 <= error.line <= count and error.reason
    assert len({e.line for e in parsed.errors} | {line.line for line in parsed.lines}) == len(
        parsed.errors
    ) + len(parsed.lines)


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        (["-s", "ryan", "--voice", "me"], 2, "--speaker and --voice both given"),
        (["--voice", "me", "--instruct", "Loud."], 2, "--instruct styles a preset speaker"),
        (["--format", "aiff"], 2, "unknown --format 'aiff'"),
        (["--design", " "], 2, "--design needs a description"),
    ],
)
def test_command_line_problems_are_one_error(tmp_path: Path, capsys, extra, code, fragment) -> None:
    from qwen3tts_cli.cli.app import run

    listing = tmp_path / "list.tsv"
    listing.write_text("a\tHello.\n", encoding="utf-8")
    assert run(["batch", str(listing), "--out-dir", str(tmp_path / "out"), *extra]) == code
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0]
    assert not (tmp_path / "out").exists()


def test_missing_list_is_one_error(tmp_path: Path, capsys) -> None:
    from qwen3tts_cli.cli.app import run

    assert run(["batch", str(tmp_path / "nope.jsonl"), "--out-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: list file not found") and err.count("\n") == 1
