"""Text tokens for display: pieces, padding ids, and streamed words with their steps."""

from __future__ import annotations

import json

import pytest
from helpers import load_tiny_engine

from moshi_mlx.errors import ConfigError
from moshi_mlx.text import TEXT_EPAD, TEXT_PAD, Tokenizer, WordAssembler
from moshi_mlx.words import Word


@pytest.fixture(scope="module")
def tokenizer(lm_fixtures) -> Tokenizer:
    return Tokenizer(lm_fixtures / "tokenizer.model")


def test_pieces_match_the_reference_printout(tokenizer, stt_fixtures):
    """run_inference.py prints id_to_piece with '▁' -> ' ', skipping ids 0 and 3."""
    summary = json.loads((stt_fixtures / "ref_summary.json").read_text())
    printed = "".join(tokenizer.piece(t) for t in summary["text_tokens"])
    assert printed == summary["printed_text"]
    assert [tokenizer.piece(t) for t in (TEXT_EPAD, 1, 2, TEXT_PAD, 4, 6)] == [
        "",
        "",
        "",
        "",
        " t",
        "he",
    ]
    assert tokenizer.piece(100) == "" and tokenizer.piece(-1) == ""


def test_moshi_engine_takes_the_padding_ids_from_its_config(lm_fixtures, tmp_path):
    """The chat's pieces skip the LM config's PAD and EPAD, as the STT's words do."""
    config = json.loads((lm_fixtures / "config.json").read_text())
    config.update(existing_text_padding_id=4, existing_text_end_padding_id=6)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    engine = load_tiny_engine(lm_config=path)
    # " t" and "he" with the default ids (test above)
    assert [engine._piece(t) for t in (4, 6)] == ["", ""]


def test_decode_skips_padding(tokenizer, lm_fixtures):
    summary = json.loads((lm_fixtures / "ref_summary.json").read_text())
    tokens = summary["variants"]["ref.safetensors"]["text_tokens"]
    assert tokenizer.decode(tokens) == summary["tokenizer_decode_of_ref_text"]


def test_words_are_assembled_with_their_first_step(tokenizer):
    ids = tokenizer.encode("the house and the wave")
    # stream: padding, then each word's pieces back to back, with PAD/EPAD between words
    stream, starts = [TEXT_PAD, TEXT_PAD], []
    for word in ["the", "house", "and", "the", "wave"]:
        stream.append(TEXT_EPAD)
        word_ids = tokenizer.encode(word)
        starts.append(len(stream))
        stream += word_ids + [TEXT_PAD] * 2
    assert [t for t in stream if t not in (TEXT_PAD, TEXT_EPAD)] == ids
    assembler, words = WordAssembler(tokenizer, lambda step: step * 0.08), []
    for step, token in enumerate(stream):
        words += assembler.push(token, step)
    assert len(words) == 4  # the last word waits for the next one or for flush()
    words += assembler.flush()
    assert words == [
        Word(s * 0.08, w)
        for w, s in zip(["the", "house", "and", "the", "wave"], starts, strict=True)
    ]
    assert assembler.flush() == []


def test_word_boundary_without_epad(tokenizer):
    """A '▁' piece also ends the previous word (the model may skip EPAD)."""
    assembler = WordAssembler(tokenizer)
    words = []
    for step, token in enumerate(tokenizer.encode("the wave is")):
        words += assembler.push(token, step)
    assert [w.text for w in words + assembler.flush()] == ["the", "wave", "is"]


def test_missing_tokenizer_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer file not found"):
        Tokenizer(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="bad.model: not a SentencePiece model"):
        Tokenizer(bad)
