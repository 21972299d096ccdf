"""Speech-to-text: padding, Mimi codes, float32 parity from audio, word times, loading."""

from __future__ import annotations

import dataclasses
import json
import threading

import mlx.core as mx
import numpy as np
import pytest
from helpers import FIXTURES, FRAME, FRAME_S, RATE, fixture_request

from moshi_mlx.errors import ConfigError, WeightsError
from moshi_mlx.mimi import MimiStream
from moshi_mlx.stt import (
    SttStream,
    benchmark_step,
    load_stt,
    load_stt_mimi,
    pad_for_file,
    resolve_stt_checkpoint,
)
from moshi_mlx.stt.checkpoint import read_stt_config
from moshi_mlx.stt.file import transcribe_pcm
from moshi_mlx.words import Word, word_lines

STT = FIXTURES / "stt"
MIMI = FIXTURES / "mimi"
VARIANTS = [
    pytest.param("model.safetensors", "ref", id="bf16-file"),
    pytest.param("model.q4.safetensors", "ref.q4", id="q4-file"),
]


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in mx.load(str(STT / "ref.safetensors")).items()}


@pytest.fixture(scope="module")
def summary() -> dict:
    return json.loads((STT / "ref_summary.json").read_text())


@pytest.fixture(scope="module")
def checkpoint():
    return resolve_stt_checkpoint(fixture_request())


@pytest.fixture(scope="module")
def mimi(checkpoint):
    return load_stt_mimi(checkpoint, 16)


def test_fixture_checkpoint_resolves_beside_its_config(checkpoint):
    assert (
        checkpoint.weight == STT / "model.safetensors"
    )  # moshi_name, beside the config
    assert (
        checkpoint.tokenizer == STT / "tokenizer.model"
    )  # tokenizer_name, beside the config
    assert checkpoint.mimi_weight == MIMI / "mimi_small.safetensors"  # override
    without = resolve_stt_checkpoint(fixture_request(mimi_weight=None), with_mimi=False)
    assert without.mimi_weight is None


def test_padding_is_the_reference_rule(ref, summary):
    cfg = read_stt_config(STT / "config.json")
    padded = pad_for_file(ref["pcm"].reshape(-1), cfg.stt, RATE)
    np.testing.assert_array_equal(padded, ref["pcm_padded"].reshape(-1))
    assert len(padded) == summary["pcm_padded_samples"]
    assert len(padded) // FRAME == summary["steps"] == 39


def test_our_mimi_gives_the_fixture_codes(mimi, ref):
    stream = MimiStream(mimi)
    frames = ref["pcm_padded"].reshape(-1)[: 39 * FRAME].reshape(39, FRAME)
    codes = np.stack([np.array(stream.encode(mx.array(f)))[0] for f in frames], axis=1)
    np.testing.assert_array_equal(
        codes, ref["codes"][0]
    )  # (16, 39), every codebook exact


@pytest.mark.parametrize("weights,golden", VARIANTS)
def test_float32_parity_end_to_end_from_pcm(checkpoint, mimi, weights, golden):
    """pcm → padding → our Mimi → STT steps: every text token and model input exact.

    (tests/test_lm_stt.py checks logits and transformer outputs from the stored codes.)
    """
    ref = {
        k: np.array(v) for k, v in mx.load(str(STT / f"{golden}.safetensors")).items()
    }
    audio = {k: np.array(v) for k, v in mx.load(str(STT / "ref.safetensors")).items()}
    model = load_stt(dataclasses.replace(checkpoint, weight=STT / weights))
    assert model.lm.dtype == mx.float32 and model.codebooks == 16

    fed_text, fed_audio = [], []
    temporal = model.lm.temporal

    def spy(text, audio_in, cache):
        fed_text.append(np.array(text))
        fed_audio.append(np.array(audio_in))
        return temporal(text, audio_in, cache)

    model.lm.temporal = spy
    try:
        stt = SttStream(model.lm, model.tokenizer, FRAME_S, lead_seconds=0.16)
        result = transcribe_pcm(stt, MimiStream(mimi), audio["pcm"].reshape(-1), RATE)
    finally:
        del model.lm.temporal
    np.testing.assert_array_equal(result.tokens, ref["text_tokens"])
    np.testing.assert_array_equal(np.concatenate(fed_text), ref["model_input_text"])
    np.testing.assert_array_equal(np.concatenate(fed_audio), ref["model_input_audio"])


def expected_words(
    tokens: list[int], tokenizer, lead: float, delay: float
) -> list[Word]:
    """Words by hand: '▁' starts one, padding ends one; time = t·0.08 − lead − delay."""
    words: list[list] = []
    open_word = False
    for t, token in enumerate(tokens):
        if token in (0, 3):
            open_word = False
            continue
        piece = tokenizer.piece(token)
        if not open_word or piece.startswith(" "):
            words.append([t, piece.strip()])
        else:
            words[-1][1] += piece
        open_word = True
    return [
        Word(round(max(0.0, t * FRAME_S - lead - delay), 3), w) for t, w in words if w
    ]


def test_file_words_and_times(checkpoint, mimi, ref, summary):
    model = load_stt(checkpoint)
    stt = SttStream(model.lm, model.tokenizer, FRAME_S, lead_seconds=0.16)
    result = transcribe_pcm(stt, MimiStream(mimi), ref["pcm"].reshape(-1), RATE)
    assert result.tokens == summary["text_tokens"]
    assert result.text == summary["printed_text"].strip()
    want = expected_words(summary["text_tokens"], model.tokenizer, 0.16, 0.48)
    want = [Word(min(w.time, 1.52), w.text) for w in want]  # clamped to the clip
    assert result.words == want
    times = [w.time for w in result.words]
    assert times == sorted(times) and 0 < times[4] < times[-1] <= 1.52
    assert result.to_json()["words"][4] == {"time": want[4].time, "text": want[4].text}


def test_live_times_use_the_given_frame_and_only_the_delay(checkpoint, ref):
    """Live: time = frame · 0.08 − delay, with the caller's frame numbers (any may be skipped)."""
    model = load_stt(checkpoint)
    first, later = (SttStream(model.lm, model.tokenizer, FRAME_S) for _ in range(2))
    assert first.word_time(20) == pytest.approx(20 * FRAME_S - 0.48)
    assert first.word_time(2) == 0.0  # before the delay has passed
    words_first, words_later = [], []
    for frame, c in enumerate(ref["codes"][0].T):
        words_first += first.step(c).words
        words_later += later.step(c, frame=frame + 100).words  # 8 s into a conversation
    words_first += first.flush()
    words_later += later.flush()
    assert first.steps == later.steps == 39 and len(words_first) > 5
    assert [w.text for w in words_first] == [w.text for w in words_later]
    for a, b in zip(words_first, words_later, strict=True):
        if a.time > 0:
            assert b.time == pytest.approx(a.time + 8.0)


def test_steps_on_another_thread_than_the_loader(checkpoint, ref):
    """Warmed up on the loading thread, stepped on a worker (MLX ties lazy arrays to a thread)."""
    model = load_stt(checkpoint)
    stt = SttStream(model.lm, model.tokenizer, FRAME_S)
    stt.warmup()
    assert stt.steps == 0
    got: list = []

    def work() -> None:
        try:
            got.extend(stt.step(c).token for c in ref["codes"][0].T[:5])
        except Exception as exc:  # reported below
            got.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    fresh = SttStream(model.lm, model.tokenizer, FRAME_S)
    assert got == [fresh.step(c).token for c in ref["codes"][0].T[:5]]


def test_wider_codes_use_the_first_codebooks(checkpoint, ref):
    """The app's Mimi may encode more codebooks than the STT reads; extra ones are ignored."""
    model = load_stt(checkpoint)
    a, b = (SttStream(model.lm, model.tokenizer, FRAME_S) for _ in range(2))
    for c in ref["codes"][0].T[:8]:
        wide = np.concatenate([c, np.full(16, 7, np.int32)])
        assert a.step(c).token == b.step(wide).token


def test_word_lines_break_at_pauses():
    words = [Word(0.0, "hello"), Word(0.4, "there"), Word(2.5, "again")]
    assert word_lines(words) == ["[00:00.00] hello there", "[00:02.50] again"]
    assert word_lines([]) == []


def test_benchmark_step_runs_one_frame(checkpoint):
    model = load_stt(checkpoint)
    step = benchmark_step(model.lm)
    tokens = [int(step().item()) for _ in range(3)]
    assert all(0 <= t < 100 for t in tokens)


def test_loading_errors_name_the_file(tmp_path, checkpoint):
    with pytest.raises(
        ConfigError, match="not a speech-to-text config .*model_type 'moshi'"
    ):
        read_stt_config(FIXTURES / "lm" / "config.json")
    with pytest.raises(ConfigError, match="lacks the model architecture"):
        read_stt_config(STT / "config_stt_2.6b_en.json")
    data = json.loads((STT / "config.json").read_text())
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({**data, "text_card": 99}))
    with pytest.raises(
        ConfigError, match="tokenizer.model has 100 pieces but .* writes 99"
    ):
        load_stt(dataclasses.replace(checkpoint, config=bad))
    bad.write_text(json.dumps({**data, "n_q": 32, "delays": [0] * 33}))
    wide = resolve_stt_checkpoint(fixture_request(config=bad, weight=STT / "model.safetensors",
                                                  tokenizer=STT / "tokenizer.model"))  # fmt: skip
    with pytest.raises(ConfigError, match="reads 32 Mimi codebooks but .* has only 16"):
        load_stt_mimi(wide, 32)
    with pytest.raises(
        WeightsError, match="--stt-weight .*/nope.safetensors: file not found"
    ):
        resolve_stt_checkpoint(fixture_request(weight=tmp_path / "nope.safetensors"))
    with pytest.raises(ConfigError, match="--dtype int8 is not supported"):
        resolve_stt_checkpoint(fixture_request(dtype="int8"))


def test_q4_weights_are_detected_from_the_file(checkpoint):
    model = load_stt(
        dataclasses.replace(checkpoint, weight=STT / "model.q4.safetensors")
    )
    assert model.lm.text_linear.bits == 4 and model.lm.text_linear.group_size == 32
    stt = SttStream(model.lm, model.tokenizer, FRAME_S)
    assert stt.codebooks == 16 and stt.delay_seconds == 0.48
