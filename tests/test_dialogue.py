"""Dialogues: script and cast parsing, the mixdown, ZipVoice prompts, and `qwen3tts dialogue` end to end."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import assert_clean_error, cli_env, read_pcm16, run_cli
from test_cli import converted as converted  # noqa: F401  (the session fixture, shared)

from qwen3tts_cli import spec
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.longform.cast import (
    DESIGN,
    PACK,
    PRESET,
    REFERENCE,
    Cast,
    CastVoice,
    parse_cast_entries,
    read_cast_file,
)
from qwen3tts_cli.longform.dialogue import DialogueSettings, render_dialogue, turn_seed
from qwen3tts_cli.longform.mixdown import mix_turns, pan_gains, srt_text, srt_time
from qwen3tts_cli.longform.prompts import split_merged_prompt, turn_boundaries
from qwen3tts_cli.longform.script import Turn, parse_script
from qwen3tts_cli.tts import TTS, SamplingOptions

RATE = spec.SAMPLE_RATE


# ---- scripts ---------------------------------------------------------------------------------------------
def test_marker_script_turns_and_continuations() -> None:
    script = parse_script("# a comment\n[S1] Hello there. [S2] Hi!\nstill S2\n\n[s1] [Happy] Bye.\n")
    assert script.turns == [
        Turn("S1", "Hello there.", 2),
        Turn("S2", "Hi! still S2", 2),
        Turn("S1", "[Happy] Bye.", 5),
    ]
    assert script.speakers == ["S1", "S2"]


def test_named_script() -> None:
    script = parse_script("Anna: Hello, Bob.\nBob: Hi Anna: how are you?\n  at 10:30 we meet\n")
    assert [(t.speaker, t.text) for t in script.turns] == [
        ("Anna", "Hello, Bob."),
        ("Bob", "Hi Anna: how are you? at 10:30 we meet"),
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("hello\n[S1] hi", "line 1: text before the first speaker"),
        ("[S1] hi\n[S2]\n", "line 2: turn of S2 has nothing to say"),
        ("[S1] hi [S2] [Happy]", "turn of S2 has nothing to say"),
        ("", "no turns"),
        ("# only a comment", "no turns"),
    ],
)
def test_script_errors_name_the_line(text: str, fragment: str) -> None:
    with pytest.raises(Qwen3TTSError) as info:
        parse_script(text)
    assert fragment in info.value.message


def test_script_undecodable_line() -> None:
    with pytest.raises(Qwen3TTSError, match="line 2: not valid UTF-8"):
        parse_script(b"[S1] ok\n[S2] \xff\xfe bad\n", source="")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(st.binary(max_size=300), st.text(alphabet=st.sampled_from("[]S12:ab \n#\\é中"), max_size=120))
)
def test_any_script_parses_or_fails_clearly(content: bytes | str) -> None:
    try:
        script = parse_script(content)
    except Qwen3TTSError as exc:
        assert exc.message and ("line" in exc.message or "no turns" in exc.message or "larger" in exc.message)
        return
    assert script.turns and all(turn.text.strip() for turn in script.turns)


# ---- casts -----------------------------------------------------------------------------------------------
def test_cast_values(tmp_path: Path) -> None:
    wav = tmp_path / "me.wav"
    sf.write(str(wav), np.zeros(RATE, dtype=np.float32), RATE)
    pack = tmp_path / "narrator.json"
    pack.write_text("{}", encoding="utf-8")
    cast = parse_cast_entries(
        ["S1=Vivian", "s2=me", f"S3={wav}", f"S4={pack}", "S5=design:A calm old man", "S6=preset:ryan"],
        library_names=["me"],
    )
    assert cast.get("S1") == CastVoice(PRESET, "vivian")
    assert cast.get("S2") == CastVoice(PACK, "me")
    assert cast.get("s3") == CastVoice(REFERENCE, str(wav), x_vector_only=True)
    assert cast.get("S4") == CastVoice(PACK, str(pack))
    assert cast.get("S5") == CastVoice(DESIGN, "A calm old man")
    assert cast.modes(["S1", "S2", "S5"]) == ["presets", "clone", "design"]


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("S1", "is not NAME=VOICE"),
        ("S1=", "no voice given"),
        ("S1=nobody", "no preset speaker, saved voice or file named 'nobody'"),
        ("S1=vivian", "both a preset speaker and a saved voice"),
        ("S1=preset:nobody", "unknown preset speaker"),
        ("S1=ref:missing.wav", "no such file"),
        ("S1=design:", "nothing after 'design:'"),
    ],
)
def test_cast_errors(entry: str, fragment: str) -> None:
    with pytest.raises(Qwen3TTSError) as info:
        parse_cast_entries([entry], library_names=["vivian"])
    assert fragment in info.value.message


def test_cast_file_json_and_lines(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(RATE, dtype=np.float32), RATE)
    (tmp_path / "cast.json").write_text(
        json.dumps(
            {"S1": {"speaker": "serena", "instruct": "calm"}, "S2": {"ref_audio": "a.wav", "ref_text": "hi"}}
        ),
        encoding="utf-8",
    )
    cast = read_cast_file(tmp_path / "cast.json")
    assert cast.get("S1") == CastVoice(PRESET, "serena", instruct="calm")
    assert cast.get("S2") == CastVoice(REFERENCE, str(wav), ref_text="hi")
    (tmp_path / "cast.txt").write_text("# cast\nAnna=vivian\nBob\tref:a.wav\n", encoding="utf-8")
    lines = read_cast_file(tmp_path / "cast.txt")
    assert lines.get("anna") == CastVoice(PRESET, "vivian")
    assert lines.get("BOB") == CastVoice(REFERENCE, str(wav), x_vector_only=True)
    (tmp_path / "bad.txt").write_text("Anna=vivian\nBob=nobody\n", encoding="utf-8")
    with pytest.raises(Qwen3TTSError, match=r"bad.txt:2: "):
        read_cast_file(tmp_path / "bad.txt")
    (tmp_path / "bad.json").write_text('{"S1": {"speaker": "vivian", "voice": "x"}}', encoding="utf-8")
    with pytest.raises(Qwen3TTSError, match="exactly one of"):
        read_cast_file(tmp_path / "bad.json")


def test_cast_must_cover_every_speaker() -> None:
    cast = Cast({"S1": CastVoice(PRESET, "vivian")})
    with pytest.raises(Qwen3TTSError, match="no voice for speaker"):
        cast.check_covers(["S1", "S2"])


# ---- mixdown ---------------------------------------------------------------------------------------------
def _tone(seconds: float, level: float = 0.3, freq: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_mix_order_pauses_and_timeline() -> None:
    turns = [_tone(0.5), _tone(0.25, freq=440), _tone(0.75)]
    mix, timeline = mix_turns(turns, ["S1", "S2", "S1"], ["a", "b", "c"], RATE, pause=0.1)
    gap = round(0.1 * RATE)
    assert len(mix) == sum(map(len, turns)) + 2 * gap
    for entry, samples in zip(timeline, turns, strict=True):
        start = round(entry.start * RATE)
        assert round(entry.end * RATE) - start == len(samples)
        np.testing.assert_array_equal(mix[start : start + len(samples)], samples)
    assert not mix[len(turns[0]) : len(turns[0]) + gap].any()
    assert [e.speaker for e in timeline] == ["S1", "S2", "S1"]


def test_stereo_places_each_speaker_on_its_channel() -> None:
    turns = [_tone(0.2), _tone(0.2, freq=440)]
    mix, timeline = mix_turns(turns, ["A", "B"], ["a", "b"], RATE, pause=0.0, stereo=True)
    assert mix.shape == (len(turns[0]) * 2, 2)
    first, second = slice(0, len(turns[0])), slice(len(turns[0]), None)
    np.testing.assert_array_equal(mix[first, 0], turns[0])
    assert not mix[first, 1].any()
    np.testing.assert_array_equal(mix[second, 1], turns[1])
    assert not mix[second, 0].any()
    # three speakers: left, centre (equal power), right
    assert pan_gains(0, 3) == (1.0, 0.0)
    left, right = pan_gains(1, 3)
    assert left == pytest.approx(right) and left**2 + right**2 == pytest.approx(1.0)
    assert pan_gains(2, 3) == (0.0, 1.0)


def test_mix_never_clips() -> None:
    mix, _ = mix_turns([_tone(0.2, level=1.6)], ["S1"], ["x"], RATE, pause=0.0)
    assert np.max(np.abs(mix)) == pytest.approx(0.99, abs=1e-6)


def test_srt() -> None:
    assert srt_time(3723.4567) == "01:02:03,457"
    _, timeline = mix_turns([_tone(1.0), _tone(0.5)], ["S1", "S2"], ["[Happy] Hi.", "Yo."], RATE, pause=0.5)
    assert srt_text(timeline) == (
        "1\n00:00:00,000 --> 00:00:01,000\nS1: Hi.\n\n2\n00:00:01,500 --> 00:00:02,000\nS2: Yo.\n"
    )


# ---- ZipVoice prompts ------------------------------------------------------------------------------------
def test_merged_prompt_is_cut_at_the_pause() -> None:
    # S1 speaks 2 s, 0.4 s of silence, S2 speaks 1.2 s; the transcript shares are 2:1, so the estimate
    # (2.4 s) falls after the pause and must snap back into it
    audio = np.concatenate([_tone(2.0), np.zeros(round(0.4 * RATE), np.float32), _tone(1.2, freq=440)])
    (s1, s2) = turn_boundaries(audio, [20, 10])
    assert 2.0 * RATE <= s1[1] <= 2.4 * RATE and s2 == (s1[1], len(audio))
    parts = split_merged_prompt(audio, "[S1] one two three four five six. [S2] seven eight nine.")
    assert set(parts) == {"S1", "S2"}
    assert parts["S2"][1] == "seven eight nine."
    assert np.abs(parts["S1"][0][-RATE // 100 :]).max() < 1e-6  # ends in the pause, no S2 in it


def test_merged_prompt_needs_two_speakers_with_enough_audio() -> None:
    with pytest.raises(Qwen3TTSError, match="two or more speakers"):
        split_merged_prompt(_tone(3.0), "[S1] only me")
    with pytest.raises(Qwen3TTSError, match="has only"):
        split_merged_prompt(_tone(1.2), "[S1] a [S2] b")


# ---- rendering on tiny models ----------------------------------------------------------------------------
def _loader(folders: dict[str, Path]):
    @contextmanager
    def load(mode: str, width: int):
        with TTS.load(folders[mode], threads=1, exact=True, max_batch=width) as tts:
            yield tts

    return load


def test_dialogue_equals_its_turns_spoken_alone(converted) -> None:
    folder = converted("custom_voice")
    script = parse_script("[S1] Hello there.\n[S2] Hi, how are you?\n[S1] Fine, thanks. And you?\n")
    cast = parse_cast_entries(["S1=vivian", "S2=ryan"])
    settings = DialogueSettings(seed=11, max_frames=12, pause=0.25, equal_loudness=False, batch=3)
    result = render_dialogue(script, cast, _loader({"presets": folder}), settings)
    assert result.seed == 11
    with TTS.load(folder, threads=1, exact=True) as tts:
        for index, turn in enumerate(script.turns):
            alone = tts.synthesize(
                turn.text,
                speaker=cast.get(turn.speaker).value,
                seed=turn_seed(11, index),
                max_frames=12,
                sampling=SamplingOptions(),
            ).samples
            entry = result.timeline[index]
            start = round(entry.start * RATE)
            np.testing.assert_array_equal(result.samples[start : start + len(alone)], alone)
            assert round(entry.end * RATE) == start + len(alone)
    gaps = [
        round((b.start - a.end) * RATE) for a, b in zip(result.timeline, result.timeline[1:], strict=False)
    ]
    assert gaps == [round(0.25 * RATE)] * 2


def test_dialogue_cli_mixed_cast_stereo_stems_srt(converted, tmp_path: Path, golden) -> None:
    custom, base = converted("custom_voice"), converted("base")
    ref = tmp_path / "ref.wav"
    sf.write(str(ref), np.tile(golden.ref_audio(), 3), RATE)  # ~4 s: no "too short" warning
    script = tmp_path / "talk.txt"
    script.write_text("Anna: Good morning.\nBob: Morning! Coffee?\nAnna: Yes please.\n", encoding="utf-8")
    out = tmp_path / "talk.wav"
    result = run_cli(
        [
            "dialogue",
            script,
            "-o",
            out,
            "--cast",
            "Anna=vivian",
            "--cast",
            f"Bob={ref}",
            "-m",
            custom,
            "-m",
            base,
            "--seed",
            "5",
            "--max-frames",
            "10",
            "--stereo",
            "--stems",
            tmp_path / "stems",
            "--srt",
            tmp_path / "talk.srt",
            "--no-equal-loudness",
            "--threads",
            "1",
            "--json",
        ],
        cli_env(tmp_path),
    )
    assert result.code == 0, result.stderr
    facts = result.json()
    assert facts["models"].keys() == {"presets", "clone"} and facts["channels"] == 2
    mix, rate = sf.read(str(out), dtype="int16")
    assert rate == RATE and mix.shape[1] == 2
    document = json.loads((tmp_path / "stems" / "turns.json").read_text(encoding="utf-8"))
    assert [t["speaker"] for t in document["turns"]] == ["Anna", "Bob", "Anna"]
    for turn in document["turns"]:
        stem = read_pcm16(tmp_path / "stems" / turn["file"])
        start = round(turn["start"] * RATE)
        assert round(turn["end"] * RATE) - start == len(stem)
        channel, silent = (0, 1) if turn["speaker"] == "Anna" else (1, 0)
        np.testing.assert_array_equal(mix[start : start + len(stem), channel], stem)
        assert not mix[start : start + len(stem), silent].any()
    srt = (tmp_path / "talk.srt").read_text(encoding="utf-8")
    assert srt.count(" --> ") == 3 and "Bob: Morning! Coffee?" in srt
    assert len(mix) == round(document["turns"][-1]["end"] * RATE)


def test_dialogue_cli_refuses_a_kind_it_cannot_get_offline(converted, tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    script.write_text("[S1] Hi.\n[S2] Hello.\n", encoding="utf-8")
    result = run_cli(
        [
            "dialogue",
            script,
            "-o",
            tmp_path / "o.wav",
            "--cast",
            "S1=vivian",
            "--cast",
            "S2=design:A deep voice",
            "-m",
            converted("custom_voice"),
        ],
        cli_env(tmp_path),
    )
    assert_clean_error(result, "S2 need(s) a voice_design model")
    assert not (tmp_path / "o.wav").exists()


def test_dialogue_cli_missing_cast_is_one_line(tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    script.write_text("[S1] Hi.\n[S2] Hello.\n", encoding="utf-8")
    result = run_cli(["dialogue", script, "-o", tmp_path / "o.wav", "--cast", "S1=vivian"], cli_env(tmp_path))
    assert_clean_error(result, "no voice for speaker(s) S2")


def test_dialogue_turns_equal_loudness_and_shaping(converted) -> None:
    import pyloudnorm

    from qwen3tts_cli.shaping import Shaping

    folder = converted("custom_voice")
    script = parse_script("[S1] Hello there.\n[S2] Hi, how are you?\n")
    cast = parse_cast_entries(["S1=vivian", "S2=ryan"])
    plain = render_dialogue(
        script, cast, _loader({"presets": folder}), DialogueSettings(seed=3, max_frames=12, pause=0.2)
    )
    meter = pyloudnorm.Meter(RATE)
    levels = [meter.integrated_loudness(turn.astype(np.float64)) for turn in plain.turns]
    assert levels[0] == pytest.approx(-20.0, abs=0.5) and levels[1] == pytest.approx(-20.0, abs=0.5)
    fast = render_dialogue(
        script,
        cast,
        _loader({"presets": folder}),
        DialogueSettings(seed=3, max_frames=12, pause=0.2, shaping=Shaping(speed=2.0, normalize="peak")),
    )
    for slow_turn, fast_turn in zip(plain.turns, fast.turns, strict=True):
        assert len(fast_turn) == round(len(slow_turn) / 2)
    assert [round((e.end - e.start) * RATE) for e in fast.timeline] == [len(t) for t in fast.turns]
    assert 20 * np.log10(np.max(np.abs(fast.samples))) == pytest.approx(-1.0, abs=0.05)


def test_dialogue_lexicon_respells_every_turn(converted) -> None:
    from qwen3tts_cli.lexicon import Lexicon

    folder = converted("custom_voice")
    script = parse_script("[S1] GIF files.\n[S2] More GIF files.\n")
    cast = parse_cast_entries(["S1=vivian", "S2=ryan"])
    settings = DialogueSettings(
        seed=2, max_frames=8, equal_loudness=False, lexicon=Lexicon.parse("gif\tjif\n")
    )
    result = render_dialogue(script, cast, _loader({"presets": folder}), settings)
    with TTS.load(folder, threads=1, exact=True) as tts:
        for index, (text, speaker) in enumerate([("jif files.", "vivian"), ("More jif files.", "ryan")]):
            alone = tts.synthesize(text, speaker=speaker, seed=turn_seed(2, index), max_frames=8).samples
            np.testing.assert_array_equal(result.turns[index], alone)
