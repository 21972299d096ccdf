"""The user's words in a chat: transcript schema, UI, and the live loop on the fixture models."""

from __future__ import annotations

from moshi_mlx.app.transcript import Transcript


def test_transcript_has_user_words_only_when_transcribed():
    transcript = Transcript(0.08)
    for step, piece in enumerate([" Hi", " there", "", "", "", ""] + [""] * 30 + [" Bye"]):
        transcript.add(step, 3 if not piece else 10, piece, None)
    assert "user_words" not in transcript.to_json()
    assert transcript.to_text() == "[00:00.00] Hi there\n[00:02.88] Bye\n"
    transcript.user_words = []
    assert transcript.to_json()["user_words"] == []
    for time, word in [(0.4, "hello"), (0.72, "Moshi"), (4.0, "ciao")]:
        transcript.add_user_word(time, word)
    assert transcript.to_json()["user_words"] == [
        {"time": 0.4, "text": "hello"},
        {"time": 0.72, "text": "Moshi"},
        {"time": 4.0, "text": "ciao"},
    ]
    assert transcript.to_text() == (
        "[00:00.00] moshi: Hi there\n"
        "[00:00.40] you: hello Moshi\n"
        "[00:02.88] moshi: Bye\n"
        "[00:04.00] you: ciao\n"
    )
