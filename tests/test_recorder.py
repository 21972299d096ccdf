"""Transcript assembly and the crash-safe recorder (WAV + JSON + text always valid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx.app.recorder import JSON_NAME, TEXT_NAME, WAV_NAME, Recorder
from moshi_mlx.app.transcript import Transcript, format_time
from moshi_mlx.errors import AudioError

RATE = 24000
FRAME = 1920
FRAME_S = FRAME / RATE
REPO_ROOT = Path(__file__).resolve().parents[1]

# A piece per step: "Hello, how are you?", a long pause, "I am fine." ("" = padding)
PIECES = (
    [" Hello", ",", "", " how", " are", "", " you", "?"]
    + [""] * 25
    + [" I", " am", " fi", "ne", "."]
)


def user_frame(step: int) -> np.ndarray:
    return np.full(FRAME, 0.25 if step % 2 else -0.25, np.float32)


def moshi_frame(step: int) -> np.ndarray:
    return np.linspace(-0.5, 0.5, FRAME, dtype=np.float32) * (step % 3)


def test_transcript_frames_and_words():
    transcript = Transcript(FRAME_S)
    for step, piece in enumerate(PIECES):
        codes = None if step == 0 else np.arange(8) + step
        transcript.add(step, 3 if piece == "" else 10 + step, piece, codes)
    data = transcript.to_json()
    assert [f["step"] for f in data["frames"]] == list(range(len(PIECES)))
    second = data["frames"][1]
    assert second == {
        "step": 1,
        "time": 0.08,
        "text_token": 11,
        "text": ",",
        "audio_codes": [1, 2, 3, 4, 5, 6, 7, 8],
    }
    assert data["frames"][0]["audio_codes"] is None
    assert [w["text"] for w in data["words"]] == [
        "Hello,",
        "how",
        "are",
        "you?",
        "I",
        "am",
        "fine.",
    ]
    assert [w["time"] for w in data["words"]][:4] == [0.0, 0.24, 0.32, 0.48]
    assert (
        transcript.to_text()
        == "[00:00.00] Hello, how are you?\n[00:02.64] I am fine.\n"
    )


def test_lone_space_piece_starts_a_word():
    transcript = Transcript(FRAME_S)
    for step, piece in enumerate([" It", "'s", " ", "4", "2", " ok"]):
        transcript.add(step, 5, piece, None)
    assert [w["text"] for w in transcript.to_json()["words"]] == ["It's", "42", "ok"]


def test_format_time():
    assert format_time(0.0) == "00:00.00"
    assert format_time(83.456) == "01:23.46"


def add_steps(recorder: Recorder, steps: range) -> None:
    for step in steps:
        piece = PIECES[step % len(PIECES)]
        recorder.add(step, user_frame(step), moshi_frame(step), 5, piece, np.arange(8))


def test_recording_is_valid_while_it_runs_and_after_close(tmp_path):
    recorder = Recorder(tmp_path / "rec", RATE, FRAME)
    assert sf.info(str(tmp_path / "rec" / WAV_NAME)).frames == 0  # valid from the start
    add_steps(recorder, range(20))  # 1.6 s: one flush of 12 frames so far
    info = sf.info(str(tmp_path / "rec" / WAV_NAME))
    assert (info.channels, info.samplerate, info.frames) == (2, RATE, 12 * FRAME)
    saved = json.loads((tmp_path / "rec" / JSON_NAME).read_text())
    assert len(saved["frames"]) == 12
    recorder.close()

    pcm, rate = sf.read(str(tmp_path / "rec" / WAV_NAME), dtype="float32")
    assert rate == RATE and pcm.shape == (20 * FRAME, 2)
    for step in (0, 7, 19):
        chunk = pcm[step * FRAME : (step + 1) * FRAME]
        np.testing.assert_allclose(chunk[:, 0], user_frame(step), atol=1 / 32767)
        np.testing.assert_allclose(chunk[:, 1], moshi_frame(step), atol=1 / 32767)
    data = json.loads((tmp_path / "rec" / JSON_NAME).read_text())
    assert len(data["frames"]) == 20
    assert data["frames"][19]["time"] == pytest.approx(19 * FRAME_S)
    assert (
        (tmp_path / "rec" / TEXT_NAME)
        .read_text()
        .startswith("[00:00.00] Hello, how are you?")
    )
    assert not list((tmp_path / "rec").glob("*.tmp"))


def test_refuses_to_overwrite_a_recording(tmp_path):
    Recorder(tmp_path, RATE, FRAME).close()
    with pytest.raises(AudioError, match=r"already holds conversation\.wav"):
        Recorder(tmp_path, RATE, FRAME)


RECORD_FOREVER = """
import sys, time
import numpy as np
sys.path.insert(0, {tests!r})
from test_recorder import add_steps
from moshi_mlx.app.recorder import Recorder
recorder = Recorder({out!r}, 24000, 1920)
step = 0
while True:
    add_steps(recorder, range(step, step + 1))
    step += 1
    if step % 12 == 0:
        print(step, flush=True)
    time.sleep(0.005)
"""


def test_killed_recording_loses_at_most_a_second(tmp_path):
    out = tmp_path / "rec"
    script = RECORD_FOREVER.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    steps = 0
    while steps < 48:
        steps = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    info = sf.info(str(out / WAV_NAME))
    assert info.channels == 2 and info.frames % (12 * FRAME) == 0
    assert info.frames >= 48 * FRAME
    data = json.loads((out / JSON_NAME).read_text())
    assert len(data["frames"]) * FRAME >= info.frames - 12 * FRAME


FILL_THE_DISK = """
import resource, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_recorder import add_steps
from moshi_mlx.app.recorder import Recorder
# writes past the limit then fail with EFBIG instead of killing the process
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
recorder = Recorder({out!r}, 24000, 1920)
add_steps(recorder, range(60))
recorder.close()
print(recorder.error)
"""


def test_full_disk_keeps_what_was_saved(tmp_path):
    out = tmp_path / "rec"
    script = FILL_THE_DISK.format(tests=str(Path(__file__).parent), out=str(out))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("recording stopped after 2.9 s: File too large")
    # 300 kB holds three one-second blocks (3 x 12 x 1920 x 4 B = 276 kB), not four
    info = sf.info(str(out / WAV_NAME))
    assert info.frames == 36 * FRAME
    assert os.path.getsize(out / WAV_NAME) == 44 + 36 * FRAME * 4
    assert len(json.loads((out / JSON_NAME).read_text())["frames"]) == 36


def test_int16_audio_is_recorded_losslessly(tmp_path):
    """Devices deliver int16 / 32768: the WAV must hold exactly those integers again."""
    ints = np.arange(-32768, 32768, 17, dtype=np.int16)[: 12 * FRAME]
    ints = np.resize(ints, 12 * FRAME)
    recorder = Recorder(tmp_path, RATE, FRAME)
    for step in range(12):
        chunk = ints[step * FRAME : (step + 1) * FRAME].astype(np.float32) / 32768
        recorder.add(step, chunk, -chunk, 3, "", None)
    recorder.close()
    pcm16, _ = sf.read(str(tmp_path / WAV_NAME), dtype="int16")
    np.testing.assert_array_equal(pcm16[:, 0], ints)
    np.testing.assert_array_equal(
        pcm16[:, 1], np.clip(-ints.astype(np.int32), -32768, 32767)
    )
