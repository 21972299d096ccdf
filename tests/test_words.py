"""Timed words and their lines: built word by word, bounded, equal to the whole text."""

from __future__ import annotations

import random

from moshi_mlx.words import (
    LINE_PAUSE_S,
    SpeechLines,
    Word,
    WordJoiner,
    format_time,
    speech_lines,
)


def test_a_whole_word_ends_where_it_starts():
    assert Word(1.5, "hi") == Word(1.5, "hi", 1.5)
    assert Word(1.5, "hi", 2.0).to_json() == {"time": 1.5, "text": "hi"}


def test_pieces_join_into_words():
    joiner = WordJoiner()
    pushed = [
        joiner.push(t, piece)
        for t, piece in enumerate([" It", "'s", "", " ", "4", "2", " ok"])
    ]
    assert pushed == [
        (Word(0, "It", 0), True),
        (Word(0, "It's", 1), False),
        None,
        None,
        (Word(4, "4", 4), True),
        (Word(4, "42", 5), False),
        (Word(6, "ok", 6), True),
    ]


def reference_lines(words: list[Word]) -> list[tuple[float, str]]:
    """The rule, written plainly: a pause over LINE_PAUSE_S starts a line."""
    lines = []
    for i, word in enumerate(words):
        if i == 0 or word.time - words[i - 1].end > LINE_PAUSE_S:
            lines.append((word.time, f"[{format_time(word.time)}] {word.text}"))
        else:
            lines[-1] = (lines[-1][0], f"{lines[-1][1]} {word.text}")
    return lines


def random_words(count: int, seed: int = 0) -> list[Word]:
    rng = random.Random(seed)
    words, time = [], 0.0
    for i in range(count):
        time += rng.choice([0.2, 0.4, 1.0, 1.5, 1.6, 3.0])
        end = time + rng.choice([0.0, 0.08, 0.5])
        words.append(Word(round(time, 3), f"w{i}", round(end, 3)))
        time = end
    return words


def test_lines_built_word_by_word_are_the_rule():
    words = random_words(500)
    assert speech_lines(words) == reference_lines(words)
    assert speech_lines([]) == []


def test_bounded_lines_keep_the_recent_ones_and_number_them_all():
    words = random_words(500, seed=1)
    every = [line for _, line in reference_lines(words)]
    lines = SpeechLines(keep=5)
    for word in words:
        lines.add(word)
    assert lines.count == len(every) > 20
    assert [line for _, line in lines.lines()] == every[-6:]  # 5 finished + the open
    assert lines.since(len(every) - 3) == every[-3:]
    assert lines.since(0) == every[-6:]  # older ones are forgotten
    assert lines.last_end == words[-1].end
    text = "\n".join(every)
    assert lines.tail(40) == "…" + text[-40:]
    assert SpeechLines().tail(40) == ""


def test_the_last_word_can_grow():
    lines = SpeechLines()
    lines.add(Word(0.0, "Hel"))
    lines.replace_last(Word(0.0, "Hello,", 0.16))
    lines.add(Word(1.6, "you"))  # 1.44 s after the last piece: the same line
    assert lines.lines() == [(0.0, "[00:00.00] Hello, you")]
