"""Text promises: sentence splitting of long text (lazy, bounded pieces) and style control."""

from __future__ import annotations

import re
import time

import pytest

from qwen3tts_cli.audio import Qwen3TTSWarning
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.text import (
    attributes_to_instruct,
    parse_control,
    split_leading_tags,
    split_text,
    spoken_length,
)


def visible(text: str) -> str:
    return re.sub(r"\s+", "", text)


# ---- splitting --------------------------------------------------------------------------------------


def test_chinese_and_english_paragraphs_split_at_sentence_ends() -> None:
    text = (
        "今天的天气非常好，阳光明媚。我们一起去公园散步吧！你觉得怎么样？\n"
        "\n"
        "The weather is lovely today, and the sun is shining. Shall we take a walk in the park? "
        "I think that would be wonderful!\n"
    )
    pieces = list(split_text(text, min_length=20, max_length=60))
    assert pieces == [
        "今天的天气非常好，阳光明媚。",
        "我们一起去公园散步吧！你觉得怎么样？",  # the tiny question (weight 19 < 20) joins its predecessor
        "The weather is lovely today, and the sun is shining.",
        "Shall we take a walk in the park?",
        "I think that would be wonderful!",
    ]


def test_latin_sentence_ends_and_what_is_not_one() -> None:
    text = (
        "Pi is about 3.14159 and e is 2.71828; see notes.txt for details. Wait... what? "
        "Really! He said “Stop.” Then he left."
    )
    assert list(split_text(text, min_length=1, max_length=300)) == [
        "Pi is about 3.14159 and e is 2.71828;",
        "see notes.txt for details.",
        "Wait...",
        "what?",
        "Really!",
        "He said “Stop.”",
        "Then he left.",
    ]


def test_short_sentences_merge_but_never_across_paragraphs() -> None:
    text = "Hi. Mr. Smith is here. Yes.\n\nOk.\n\nChapter two begins now, and it is long enough."
    pieces = list(split_text(text, min_length=25, max_length=300))
    assert pieces == [
        "Hi. Mr. Smith is here. Yes.",
        "Ok.",  # alone in its paragraph: kept, not glued to the next paragraph
        "Chapter two begins now, and it is long enough.",
    ]


def test_a_tiny_last_sentence_joins_the_previous_piece() -> None:
    text = "This sentence is comfortably long enough by itself. And this one also is long enough. Ok."
    pieces = list(split_text(text, min_length=30, max_length=300))
    assert pieces == [
        "This sentence is comfortably long enough by itself.",
        "And this one also is long enough. Ok.",
    ]


def test_hard_wrapped_prose_is_not_split_mid_sentence() -> None:
    text = (
        "It was the best of times, it was the worst of times, it was\n"
        "the age of wisdom, it was the age of foolishness.\n"
        "It was the epoch of belief.\n"
    )
    pieces = list(split_text(text, min_length=20, max_length=300))
    assert pieces == [
        "It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness.",
        "It was the epoch of belief.",
    ]


def test_overlong_sentences_split_at_commas_then_spaces_then_hard() -> None:
    clause = "this clause has some words in it"
    sentence = ", ".join([clause] * 12) + "."
    pieces = list(split_text(sentence, min_length=10, max_length=80))
    assert all(spoken_length(p) <= 80 for p in pieces)
    assert all(p.endswith((",", ".")) for p in pieces)  # cut after commas only
    assert visible("".join(pieces)) == visible(sentence)

    words = " ".join(["word"] * 100)  # no commas at all: cut at spaces
    pieces = list(split_text(words, min_length=10, max_length=50))
    assert all(spoken_length(p) <= 50 for p in pieces) and len(pieces) > 1
    assert " ".join(pieces).split() == words.split()

    cjk = "我" * 100  # no punctuation, no spaces: hard cut (each ideograph weighs 3)
    pieces = list(split_text(cjk, min_length=10, max_length=60))
    assert [len(p) for p in pieces] == [20] * 5


def test_chinese_clause_marks_cut_overlong_sentences() -> None:
    sentence = "、".join(["春天来了花开了"] * 10) + "，" + "，".join(["我们都很高兴"] * 10) + "。"
    pieces = list(split_text(sentence, min_length=10, max_length=60))
    assert all(spoken_length(p) <= 60 for p in pieces)
    assert all(p[-1] in "、，。" for p in pieces)
    assert "".join(pieces) == sentence


def test_a_100kb_text_is_split_lazily() -> None:
    paragraph = "A sentence of moderate length about nothing in particular. Another one follows it here.\n"
    lines_read = 0

    def lines(count: int):
        nonlocal lines_read
        for _ in range(count):
            lines_read += 1
            yield paragraph

    pieces = split_text(lines(1200))  # ~105 kB
    first = next(pieces)
    assert first.startswith("A sentence")
    assert lines_read <= 5  # it did not read the whole text to produce the first piece
    rest = list(pieces)
    assert lines_read == 1200
    total = [first, *rest]
    assert all(0 < spoken_length(p) <= 300 for p in total)
    assert visible("".join(total)) == visible(paragraph * 1200)


def test_a_100kb_string_streams_its_first_piece_fast() -> None:
    text = "Word " * 20_000 + "end."  # one 100 kB sentence without punctuation
    start = time.perf_counter()
    first = next(split_text(text))
    assert time.perf_counter() - start < 2.0
    assert spoken_length(first) <= 300


@pytest.mark.parametrize("text", ["", "   \n\n  ", "...", "!?。！", "— * —\n\n---"])
def test_empty_or_punctuation_only_text_is_a_clear_error(text: str) -> None:
    with pytest.raises(Qwen3TTSError, match="nothing to speak|empty"):
        list(split_text(text))
    with pytest.raises(Qwen3TTSError):
        parse_control(text)


def test_punctuation_only_lines_are_dropped_not_spoken() -> None:
    assert list(split_text("First part of the story.\n\n* * *\n\nSecond part.", min_length=5)) == [
        "First part of the story.",
        "Second part.",
    ]


# ---- style control ----------------------------------------------------------------------------------


def test_leading_tags_become_the_instruct() -> None:
    result = parse_control("[Happy][Slow]  Hello [there], friend.")
    assert (result.text, result.instruct, result.source) == ("Hello [there], friend.", "Happy, Slow", "tags")


def test_brackets_not_at_the_start_stay_text() -> None:
    result = parse_control("Hello [Happy] world")
    assert (result.text, result.instruct, result.source) == ("Hello [Happy] world", None, "none")


def test_escaped_bracket_is_literal_text() -> None:
    assert split_leading_tags(r"\[Happy] is a tag name \[sic\]") == ([], "[Happy] is a tag name [sic]")
    assert parse_control(r"[Calm] \[1] footnote").text == "[1] footnote"


def test_attributes_compose_a_deterministic_sentence() -> None:
    attributes = {"gender": "Female", "age": "elderly", "emotion": "angry", "pace": "slow", "pitch": "low"}
    expected = "An elderly female voice, speaking in an angry tone, at a slow pace, with a low pitch."
    assert attributes_to_instruct(attributes) == expected
    assert attributes_to_instruct({"emotion": "happy", "pace": "normal"}) == "Speak in a happy tone."
    assert attributes_to_instruct({"gender": "m"}) == "A male voice."
    assert attributes_to_instruct({}) is None
    result = parse_control("Hello.", attributes=attributes)
    assert (result.instruct, result.source) == (expected, "attributes")


def test_tags_and_attributes_combine() -> None:
    result = parse_control("[Whisper] Hello.", attributes={"gender": "male"})
    assert (result.instruct, result.source) == ("A male voice. Whisper", "tags+attributes")


def test_explicit_instruct_wins_over_tags_and_attributes() -> None:
    with pytest.warns(Qwen3TTSWarning, match="ignored"):
        result = parse_control("[Happy] Hello.", instruct="Speak sadly.", attributes={"emotion": "angry"})
    assert (result.text, result.instruct, result.source) == ("Hello.", "Speak sadly.", "explicit")
    with pytest.warns(Qwen3TTSWarning):
        cleared = parse_control("[Happy] Hello.", instruct="")
    assert (cleared.instruct, cleared.source) == (None, "explicit")


def test_model_without_instruct_gets_none_and_a_warning() -> None:
    with pytest.warns(Qwen3TTSWarning, match="no style instruction"):
        result = parse_control("[Happy] Hello.", accepts_instruct=False)
    assert (result.text, result.instruct, result.source) == ("Hello.", None, "none")


@pytest.mark.parametrize(
    ("attributes", "match"),
    [
        ({"mood": "happy"}, "unknown voice attribute"),
        ({"gender": "robot"}, "gender 'robot'"),
        ({"pace": "warp"}, "pace 'warp'"),
        ({"emotion": "happy; ignore previous"}, "emotion"),
    ],
)
def test_bad_attributes_are_clear_errors(attributes: dict[str, str], match: str) -> None:
    with pytest.raises(Qwen3TTSError, match=match):
        parse_control("Hello.", attributes=attributes)


def test_text_made_only_of_tags_is_an_error() -> None:
    with pytest.raises(Qwen3TTSError, match="empty"):
        parse_control("[Happy][Sad]")
