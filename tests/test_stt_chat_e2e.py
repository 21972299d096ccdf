"""`cli.py chat --user-transcript` through real sounddevice streams on the virtual devices.

The tiny fixture Moshi and the fixture STT (which reads all 16 codebooks of the small
Mimi, sharing Moshi's encode) hear espeak speech played into the microphone. The
recording must hold the user's words with sane times, the same words the STT gives
when the recorded microphone channel is replayed through Mimi and the STT directly.
"""

from __future__ import annotations

import json
import re
import signal
import time

import numpy as np
import pytest
import soundfile as sf
from audio_env import play_into_mic, virtual_audio_env
from helpers import FIXTURES, FRAME, FRAME_S, START_TIMEOUT_S, App, stt_words

from moshi_mlx.app.file_mode import split_frames
from moshi_mlx.app.recorder import JSON_NAME, TEXT_NAME, WAV_NAME

pytestmark = pytest.mark.audio

STT_FLAGS = ["--user-transcript", "--stt-config", str(FIXTURES / "stt" / "config.json")]


def test_user_words_through_real_devices(tmp_path, chat_speech):
    _, speech_wav = chat_speech
    env = virtual_audio_env()
    record_dir = tmp_path / "rec"
    app = App(["--record", str(record_dir), "--aec", "off", *STT_FLAGS], env)
    app.wait_for("listening", START_TIMEOUT_S)
    player = play_into_mic(speech_wav, env)
    player.wait(timeout=30)
    time.sleep(1.0)
    app.process.send_signal(signal.SIGINT)
    code, lines, stderr = app.finish()
    assert code == 0, stderr
    assert "Traceback" not in stderr

    transcript = json.loads((record_dir / JSON_NAME).read_text())
    words = transcript["user_words"]
    steps = len(transcript["frames"])
    times = [w["time"] for w in words]
    assert len(words) > 5
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= steps * FRAME_S
    you = [line for line in lines if line.startswith("you [")]
    printed = " ".join(line.split("] ", 1)[1] for line in you)
    assert printed == " ".join(w["text"] for w in words)
    status = [line for line in lines if line.startswith("status ")][-1]
    match = re.search(
        r"you \(speech-to-text\) ([\d.]+) ms/step.*?([\d.]+) s skipped", status
    )
    assert match and float(match[1]) > 0
    assert "] you: " in (record_dir / TEXT_NAME).read_text()

    if float(match[2]) == 0:  # the STT kept up: replaying the recording gives its words
        pcm16, _ = sf.read(str(record_dir / WAV_NAME), dtype="int16")
        user = pcm16[:, 0].astype(np.float32) / 32768
        assert stt_words(split_frames(user, FRAME)) == words
