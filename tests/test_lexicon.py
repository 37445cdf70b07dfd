"""Pronunciation lexicons: matching rules, line-numbered errors, the library path (request and voice pack)
and the CLI (`say --lexicon`, `say --show-text` without a model, `voices lexicon`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import FAST, Result, assert_clean_error, cli_env, run_cli
from test_cli import cli_in_process as cli_in_process  # noqa: F401  (fixtures shared with test_cli)
from test_cli import converted as converted  # noqa: F401

from qwen3tts_cli import lexicon as lexicon_module
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.lexicon import Lexicon, Replacement
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.text import parse_control, plan_text, split_text
from qwen3tts_cli.tts import TTS
from qwen3tts_cli.voices import VoiceLibrary, VoicePack, pack_from_json, pack_to_json, read_pack, write_pack


def lex(*pairs: tuple[str, str]) -> Lexicon:
    return Lexicon.parse("\n".join(f"{w}\t{s}" for w, s in pairs), "test.tsv")


# ---- matching rules -------------------------------------------------------------------------------------


def test_whole_words_only_for_letters_and_digits() -> None:
    table = lex(("gif", "jif"), ("3d", "three dee"))
    assert table.apply("gif gifts agif gif_x gif, (gif) gif.") == (
        "jif gifts agif gif_x jif, (jif) jif.",
        [Replacement("gif", "jif", 4)],
    )
    assert table.apply("a 3d model, 3D4 and 23d")[0] == "a three dee model, 3D4 and 23d"


def test_apostrophe_and_hyphen_are_boundaries_and_combining_marks_are_not() -> None:
    table = lex(("NASA", "nassa"), ("mail", "male"), ("cafe", "kaffee"))
    assert table.apply("NASA's e-mail")[0] == "nassa's e-male"
    # a decomposed é (e + U+0301) belongs to the word: "cafe" must not match "café"
    assert table.apply("cafe\u0301 cafe")[0] == "cafe\u0301 kaffee"


def test_symbol_ends_need_no_boundary() -> None:
    table = lex(("C++", "see plus plus"), ("&", "and"))
    assert table.apply("C++11 & Rust; xC++")[0] == "see plus plus11 and Rust; xC++"


def test_case_rules_lower_matches_any_case_upper_only_exact() -> None:
    table = lex(("gif", "jif"), ("US", "you ess"), ("us", "uhs"), ("iPhone", "eye phone"))
    text, used = table.apply("GIF Gif gif US us Us uS iPhone iphone IPHONE")
    assert text == "jif jif jif you ess uhs uhs uhs eye phone iphone IPHONE"
    assert used == [
        Replacement("gif", "jif", 3),
        Replacement("US", "you ess", 1),
        Replacement("us", "uhs", 3),
        Replacement("iPhone", "eye phone", 1),
    ]


def test_scripts_without_spaces_match_as_substrings() -> None:
    table = lex(
        ("重庆", "崇庆"), ("東京", "とうきょう"), ("서울", "소울"), ("ไทย", "ไท"), ("GPU", "gee pee you")
    )
    assert table.apply("我去重庆玩")[0] == "我去崇庆玩"
    assert table.apply("東京都に住む")[0] == "とうきょう都に住む"
    assert table.apply("서울에서")[0] == "소울에서"
    assert table.apply("ภาษาไทยง่าย")[0] == "ภาษาไทง่าย"
    # a Latin entry next to Han characters: Han letters are no word characters, so it still matches
    assert table.apply("我用GPU计算, GPUs")[0] == "我用gee pee you计算, GPUs"


def test_longest_entry_wins_and_output_is_never_rematched() -> None:
    table = lex(("New York", "noo york"), ("York", "yorke"), ("a", "b"), ("b", "c"), ("SQL", "SQL server"))
    text, used = table.apply("New York and York: a b SQL")
    assert text == "noo york and yorke: b c SQL server"
    assert [(r.written, r.count) for r in used] == [
        ("New York", 1),
        ("York", 1),
        ("a", 1),
        ("b", 1),
        ("SQL", 1),
    ]
    # exact-case entry before the any-case one of the same length
    both = lex(("us", "uhs"), ("US", "you ess"))
    assert both.apply("US")[0] == "you ess"


def test_replacement_is_literal_and_empty_lexicon_is_identity() -> None:
    table = lex(("x", r"\1 $0 \g<0>"))
    assert table.apply("x")[0] == r"\1 $0 \g<0>"
    empty = Lexicon.parse("# only a comment\n\n")
    assert not empty and empty.apply("any text") == ("any text", [])
    assert lex(("a", "b"))


def test_merged_other_wins_on_the_same_written_form() -> None:
    pack = Lexicon((("gif", "giff"), ("SQL", "sequel")), "pack")
    request = Lexicon((("gif", "jif"), ("nginx", "engine x")), "file")
    merged = pack.merged(request)
    assert dict(merged.entries) == {"gif": "jif", "SQL": "sequel", "nginx": "engine x"}
    assert merged.apply("gif SQL nginx")[0] == "jif sequel engine x"
    assert pack.merged(None) is pack and Lexicon(()).merged(request) is request


def test_tags_are_never_rewritten_and_split_follows_the_lexicon() -> None:
    table = lex(("Happy", "Glad"), ("Dr.", "Doctor"))
    planned = plan_text("[Happy] Happy Dr. Smith arrived.", lexicon=table)
    assert planned.instruct == "Happy"
    assert planned.text == "Glad Doctor Smith arrived."
    assert planned.pieces == ["Glad Doctor Smith arrived."]  # "Dr." no longer ends a sentence
    assert [r.written for r in planned.replacements] == ["Happy", "Dr."]
    assert plan_text("[Happy] Happy Dr. Smith arrived.").pieces == ["Happy Dr. Smith arrived."]


def test_a_lexicon_that_leaves_nothing_to_speak_is_an_error() -> None:
    with pytest.raises(Qwen3TTSError, match="nothing to speak"):
        plan_text("hmm", lexicon=lex(("hmm", "...")), split=False)


# ---- file errors: every one names the file, the line and the fix -----------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("a\tb\n# fine\nc\n", 3, "expected 2 tab-separated columns, found 1"),
        ("a\tb\nc\td\te\n", 2, "found 3"),
        ("\n\n \tspoken\n", 3, "written form is empty"),
        ("a\tb\nword\t  \n", 2, "spoken form is empty"),
        ("gif\tjif\nx\ty\ngif\tgiff\n", 3, "already listed on line 1"),
        ("a\tb\nx\x00y\tz\n", 2, "control character U+0000"),
        ("a\tb\r\nc\td\r\nc\te\r\n", 3, "already listed on line 2"),
    ],
)
def test_parse_errors_name_the_line(content: str, line: int, problem: str) -> None:
    with pytest.raises(Qwen3TTSError) as info:
        Lexicon.parse(content, "fix.tsv")
    assert f"lexicon fix.tsv line {line}: " in info.value.message and problem in info.value.message
    assert info.value.hint


def test_case_variants_are_not_duplicates() -> None:
    assert len(Lexicon.parse("us\tuhs\nUS\tyou ess\nUs\tuss\n").entries) == 3


def test_file_bom_crlf_comments_and_spaces(tmp_path: Path) -> None:
    file = tmp_path / "fix.tsv"
    file.write_bytes("\ufeff# comment\r\n  GIF \t jif \r\n\r\n  # indented comment\r\n重庆\t崇庆".encode())
    table = Lexicon.load(file)
    assert table.entries == (("GIF", "jif"), ("重庆", "崇庆")) and table.source == str(file)


def test_file_errors_name_file_and_line(tmp_path: Path) -> None:
    bad_utf8 = tmp_path / "latin1.tsv"
    bad_utf8.write_bytes(b"\xef\xbb\xbfa\tb\ncaf\xe9\tkafay\n")
    with pytest.raises(
        Qwen3TTSError, match=rf"lexicon {re.escape(str(bad_utf8))} line 2: is not valid UTF-8"
    ):
        Lexicon.load(bad_utf8)
    too_big = tmp_path / "big.tsv"
    too_big.write_bytes(b"#" * (lexicon_module.MAX_BYTES + 1))
    with pytest.raises(Qwen3TTSError, match="more than 1024 KB"):
        Lexicon.load(too_big)
    with pytest.raises(Qwen3TTSError, match="cannot read lexicon"):
        Lexicon.load(tmp_path / "missing.tsv")
    with pytest.raises(Qwen3TTSError, match="is a folder"):
        Lexicon.load(tmp_path)


def test_too_many_entries_names_the_first_line_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexicon_module, "MAX_ENTRIES", 3)
    with pytest.raises(Qwen3TTSError, match=r"line 5: more than 3 entries"):
        Lexicon.parse("a\t1\nb\t2\n#\nc\t3\nd\t4\n")


def test_entries_given_directly_are_checked() -> None:
    with pytest.raises(Qwen3TTSError, match=r"lexicon api entry 2: 'a' is listed twice"):
        Lexicon((("a", "b"), ("a", "c")), "api")
    with pytest.raises(Qwen3TTSError, match=r"entry 1: the written form ' a' has spaces"):
        Lexicon(((" a", "b"),))
    with pytest.raises(Qwen3TTSError, match=r"entry 1: the spoken form is not valid Unicode"):
        Lexicon((("a", "b\ud800"),))
    with pytest.raises(Qwen3TTSError, match=r"entry 1: an entry is a pair"):
        Lexicon((("a", "b", "c"),))  # type: ignore[arg-type]


def test_fifty_thousand_entries_apply_fast() -> None:
    import time

    words = [f"w{i:05d}x" for i in range(lexicon_module.MAX_ENTRIES)]
    table = Lexicon.parse("\n".join(f"{w}\t{w.upper()}" for w in words))
    text = " ".join(words[::97]) + " plain words that match nothing " * 50
    started = time.perf_counter()
    spoken, used = table.apply(text)
    assert time.perf_counter() - started < 1.0
    assert len(used) == len(words[::97]) and spoken.startswith("W00000X W00097X")


# ---- properties -----------------------------------------------------------------------------------------

_LINE_ERROR = re.compile(r" line \d+: ")
_TEXTS = st.text(
    alphabet=st.sampled_from(
        list("aAbB gG\t\t\n\r#'_-.9") + ["é", "\u0301", "重", "庆", "ไ", "\x00", "\ufeff"]
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_TEXTS, st.text(max_size=60)))
def test_any_text_parses_or_fails_with_a_line_number(content: str) -> None:
    try:
        table = Lexicon.parse(content, "p.tsv")
    except Qwen3TTSError as exc:
        assert _LINE_ERROR.search(exc.message), exc.message
        return
    assert all(w and s for w, s in table.entries)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=80))
def test_any_file_loads_or_fails_with_a_line_number(tmp_path: Path, data: bytes) -> None:
    file = tmp_path / "any.tsv"
    file.write_bytes(data)
    try:
        Lexicon.load(file)
    except Qwen3TTSError as exc:
        assert _LINE_ERROR.search(exc.message), exc.message


_FORMS = st.text(alphabet=st.sampled_from(list("aAbB '-_.9&") + ["é", "\u0301", "重", "庆", "ไ"]), min_size=1)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_FORMS.map(str.strip).filter(bool), _FORMS.map(str.strip).filter(bool), max_size=8),
    st.one_of(st.text(max_size=60), _TEXTS),
)
def test_apply_never_raises_and_keeps_text_without_matches(entries: dict[str, str], text: str) -> None:
    table = Lexicon(tuple(entries.items()))
    spoken, used = table.apply(text)
    assert isinstance(spoken, str)
    assert all(r.count >= 1 and r.written in entries for r in used)
    if not used:
        assert spoken == text


# ---- the library: a request's lexicon and a voice pack's --------------------------------------------------


@pytest.fixture(scope="module")
def base_tts(converted: Callable[..., Path]) -> TTS:  # noqa: F811
    tts = TTS(LoadedModel(converted("base"), threads=1, exact=True))
    yield tts
    tts.close()


def _voice(tts: TTS, lexicon: tuple[tuple[str, str], ...] = ()) -> VoicePack:
    embedding = np.random.default_rng(3).standard_normal(tts.model.talker_hidden).astype(np.float32)
    return VoicePack(
        name="reader",
        mode="xvector",
        talker_hidden_size=tts.model.talker_hidden,
        speaker_embedding=embedding,
        lexicon=lexicon,
    )


def _codes(tts: TTS, text: str, voice: VoicePack, **options: object) -> list[np.ndarray]:
    return tts.synthesize(text, voice=voice, language="english", max_frames=4, seed=9, **options).codes


def test_request_lexicon_gives_the_codes_of_the_respelled_text(base_tts: TTS) -> None:
    voice = _voice(base_tts)
    respelled = _codes(base_tts, "The jif is sequel ready. Engine x serves it.", voice)
    table = lex(("GIF", "jif"), ("SQL", "sequel"), ("nginx", "engine x"))
    fixed = _codes(base_tts, "The GIF is SQL ready. Nginx serves it.", voice, lexicon=table)
    assert len(fixed) == len(respelled) and all(
        np.array_equal(a, b) for a, b in zip(fixed, respelled, strict=True)
    )
    unfixed = _codes(base_tts, "The GIF is SQL ready. Nginx serves it.", voice)
    assert not all(np.array_equal(a, b) for a, b in zip(unfixed, respelled, strict=True))
    with base_tts.stream("A GIF.", voice=voice, max_frames=1, seed=1, lexicon=table) as stream:
        assert stream.pieces == ["A jif."] and stream.replacements == [Replacement("GIF", "jif", 1)]


def test_request_lexicon_may_be_a_file_path(base_tts: TTS, tmp_path: Path) -> None:
    (tmp_path / "fix.tsv").write_text("GIF\tjif\n", encoding="utf-8")
    plan = base_tts.plan(
        base_tts._request("A GIF.", {"voice": _voice(base_tts), "lexicon": tmp_path / "fix.tsv"})
    )
    assert plan.pieces == ["A jif."] and plan.text == "A jif."


def test_pack_lexicon_applies_and_the_request_wins(base_tts: TTS) -> None:
    plain, packed = _voice(base_tts), _voice(base_tts, (("GIF", "giff"), ("SQL", "sequel")))
    expected = _codes(base_tts, "A giff and sequel.", plain)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(_codes(base_tts, "A GIF and SQL.", packed), expected, strict=True)
    )
    plan = base_tts.plan(
        base_tts._request("A GIF and SQL.", {"voice": packed, "lexicon": lex(("GIF", "jif"))})
    )
    assert plan.pieces == ["A jif and sequel."]
    assert plan.replacements == [Replacement("GIF", "jif", 1), Replacement("SQL", "sequel", 1)]


def test_no_lexicon_plans_exactly_as_before(base_tts: TTS) -> None:
    text = "[Calm]  First sentence here, long enough to stand alone.  Second one.\n\nNext paragraph. "
    with pytest.warns(UserWarning, match="takes no style instruction"):
        plan = base_tts.plan(base_tts._request(text, {"voice": _voice(base_tts)}))
    old = parse_control(text)  # what TTS.plan did before lexicons
    assert plan.text == old.text and plan.replacements == [] and plan.instruct is None
    assert plan.pieces == list(split_text(old.text))


# ---- voice packs ----------------------------------------------------------------------------------------


def _pack(lexicon: tuple[tuple[str, str], ...] = ()) -> VoicePack:
    return VoicePack(
        name="narrator",
        mode="xvector",
        talker_hidden_size=8,
        speaker_embedding=np.arange(8, dtype=np.float32),
        created="2026-01-01T00:00:00Z",
        tool_version="0.1.0",
        lexicon=lexicon,
    )


def test_pack_lexicon_round_trips_and_is_checksummed(tmp_path: Path) -> None:
    pack = _pack((("GIF", "jif"), ("重庆", "崇庆")))
    loaded = read_pack(write_pack(pack, tmp_path / "narrator.json"))
    assert loaded.lexicon == pack.lexicon
    document = json.loads((tmp_path / "narrator.json").read_text(encoding="utf-8"))
    assert document["schema_version"] == 2 and document["lexicon"] == [["GIF", "jif"], ["重庆", "崇庆"]]
    document["lexicon"][0][1] = "giff"  # a hand edit without the tool: the payload changed
    with pytest.raises(Qwen3TTSError, match="payload checksum mismatch"):
        pack_from_json(json.dumps(document))


def test_pack_without_lexicon_is_written_and_read_as_before() -> None:
    old = pack_to_json(_pack())
    document = json.loads(old)
    assert "lexicon" not in document and document["schema_version"] == 1
    # the checksum of a pack without the key is what it always was: the payload keys alone
    import hashlib

    payload = {
        key: document[key]
        for key in (
            "model_family",
            "talker_hidden_size",
            "mode",
            "speaker_embedding",
            "reference_codes",
            "reference_text",
            "reference_language",
            "sample_rate",
        )
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert document["payload_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    loaded = pack_from_json(old)
    assert loaded.lexicon == () and pack_to_json(loaded) == old


def test_bad_pack_lexicon_names_the_entry() -> None:
    document = json.loads(pack_to_json(_pack((("a", "b"),))))
    for bad, problem in (
        (["a", "b"], "list of \\[written, spoken\\] pairs"),
        ([["a", "b"], ["a", "c"]], "entry 2"),
    ):
        document["lexicon"] = bad
        from qwen3tts_cli import voices

        document["payload_sha256"] = voices._payload_checksum(document)
        with pytest.raises(Qwen3TTSError, match=problem):
            pack_from_json(json.dumps(document), "p.json")


# ---- the CLI --------------------------------------------------------------------------------------------

_PROBE = (
    "import sys\n"
    "from qwen3tts_cli import cli\n"
    "code = cli.run(sys.argv[1:])\n"
    "engine = ('qwen3tts_cli.tts', 'qwen3tts_cli.model', 'llama_cpp', 'onnxruntime')\n"
    "heavy = [m for m in engine if m in sys.modules]\n"
    "print('imported:', ','.join(heavy), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _probe(args: list[str | Path], env: dict[str, str]) -> Result:
    """The CLI in a fresh interpreter that reports afterwards whether any engine module was imported."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, args)], env=env, capture_output=True, timeout=120
    )
    return Result(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))


CHINESE = "我们明天早上一起坐火车去重庆看看朋友。"  # long enough (3 per ideograph) to be its own piece
CHINESE_FIXED = CHINESE.replace("重庆", "崇庆")


def test_show_text_prints_respelled_pieces_without_a_model(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    (tmp_path / "fix.tsv").write_text("# fixes\nGIF\tjif\n重庆\t崇庆\n", encoding="utf-8")
    library = VoiceLibrary(tmp_path / "voices")
    library.save(_pack((("GIF", "giff"), ("SQL", "sequel"))))
    text = "[Happy] This GIF shows a query in SQL, and it is long enough to be a piece. " + CHINESE
    args = ["say", "--show-text", "--lexicon", tmp_path / "fix.tsv", "--voice", "narrator", text]
    result = _probe([*args, "--model-dir", tmp_path / "no-such-model"], env)
    assert result.code == 0, result.stderr
    assert result.out.splitlines() == [
        "This jif shows a query in sequel, and it is long enough to be a piece.",
        CHINESE_FIXED,
    ]
    assert "instruct: Happy" in result.stderr and "imported: \n" in result.stderr + "\n"
    shown = _probe([*args, "--json", "--model", "1.7b-custom"], env)
    assert shown.code == 0, shown.stderr
    assert shown.json() == {
        "text": "This jif shows a query in sequel, and it is long enough to be a piece. " + CHINESE_FIXED,
        "pieces": result.out.splitlines(),
        "instruct": "Happy",
        "replacements": [
            {"written": "GIF", "spoken": "jif", "count": 1},
            {"written": "SQL", "spoken": "sequel", "count": 1},
            {"written": "重庆", "spoken": "崇庆", "count": 1},
        ],
    }
    assert not (tmp_path / "cache").exists()  # nothing resolved, downloaded or converted
    # the probe is honest: the same command without --show-text does import the engine (and fails)
    loading = _probe(
        [a for a in args if a != "--show-text"] + ["--model-dir", tmp_path / "no-such-model"], env
    )
    assert loading.code != 0 and "imported: qwen3tts_cli.tts" in loading.stderr, loading.stderr


def test_say_with_a_bad_lexicon_fails_on_one_line_before_any_model(tmp_path: Path) -> None:
    (tmp_path / "bad.tsv").write_text("GIF\tjif\n\nSQL sequel\n", encoding="utf-8")
    result = run_cli(
        ["say", "--lexicon", tmp_path / "bad.tsv", "-o", tmp_path / "x.wav", "Hi."], cli_env(tmp_path)
    )
    assert_clean_error(result, "bad.tsv line 3", "2 tab-separated columns")
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "cache").exists()


def test_say_json_reports_text_and_replacements(converted: Callable[..., Path], tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "fix.tsv").write_text("GIF\tjif\n", encoding="utf-8")
    model = converted("custom_voice")
    common = ["say", "--model-dir", model, *FAST, "--max-frames", "3", "--json", "-o"]
    fixed = run_cli(
        [*common, tmp_path / "a.wav", "--lexicon", tmp_path / "fix.tsv", "A GIF, a GIF."], cli_env(tmp_path)
    )
    assert fixed.code == 0, fixed.stderr
    facts = fixed.json()
    assert facts["text"] == "A jif, a jif." and facts["replacements"] == [
        {"written": "GIF", "spoken": "jif", "count": 2}
    ]
    plain = run_cli([*common, tmp_path / "b.wav", "A jif, a jif."], cli_env(tmp_path))
    assert plain.code == 0 and "replacements" not in plain.json()
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_voices_lexicon_set_show_and_clear(cli_in_process: Callable[..., Result], tmp_path: Path) -> None:  # noqa: F811
    library = VoiceLibrary(tmp_path / "voices")
    library.save(_pack())
    before = (tmp_path / "voices" / "narrator.json").read_bytes()
    (tmp_path / "fix.tsv").write_text("GIF\tjif\nSQL\tsequel\n", encoding="utf-8")
    done = cli_in_process("voices", "lexicon", "narrator", tmp_path / "fix.tsv")
    assert done.code == 0 and "2 lexicon entries" in done.out
    assert library.show("narrator").lexicon == (("GIF", "jif"), ("SQL", "sequel"))
    shown = cli_in_process("voices", "show", "narrator", "--json")
    assert json.loads(shown.out)["lexicon_entries"] == 2
    assert "lexicon_entries:" in cli_in_process("voices", "show", "narrator").out
    (tmp_path / "bad.tsv").write_text("GIF\tjif\nGIF\tgiff\n", encoding="utf-8")
    bad = cli_in_process("voices", "lexicon", "narrator", tmp_path / "bad.tsv")
    assert bad.code != 0 and "line 2" in bad.stderr and library.show("narrator").lexicon
    assert cli_in_process("voices", "lexicon", "narrator").code == 2  # neither FILE nor --clear
    cleared = cli_in_process("voices", "lexicon", "narrator", "--clear")
    assert cleared.code == 0 and "cleared" in cleared.out
    assert (tmp_path / "voices" / "narrator.json").read_bytes() == before  # back to the exact old pack
