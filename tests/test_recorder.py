"""Transcript assembly and the crash-safe recorder (WAV and transcript log valid)."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from app_fakes import PIECES, FailingDisk, add_steps, moshi_frame, user_frame
from helpers import FRAME, FRAME_S, RATE, REPO_ROOT, recover_with_cli

from moshi_mlx.app.recorder import (
    JSON_NAME,
    LOG_NAME,
    TEXT_NAME,
    WAV_NAME,
    Recorder,
    recover,
)
from moshi_mlx.app.transcript import Transcript, finish_transcript
from moshi_mlx.audio.files import WAV_HEADER_BYTES, WavAppender, wav_header
from moshi_mlx.errors import AudioError, MoshiError
from moshi_mlx.words import format_time


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


def log_frames(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {
        "transcript_log": 1,
        "frame_seconds": FRAME_S,
        "user_words": False,
    }
    return [json.loads(line) for line in lines[1:]]


def test_recording_is_valid_while_it_runs_and_after_close(tmp_path):
    rec = tmp_path / "rec"
    recorder = Recorder(rec, RATE, FRAME)
    assert sf.info(str(rec / WAV_NAME)).frames == 0  # valid from the start
    add_steps(recorder, range(20))  # 1.6 s: one block of 12 frames handed over
    recorder.wait_written()
    info = sf.info(str(rec / WAV_NAME))
    assert (info.channels, info.samplerate, info.frames) == (2, RATE, 12 * FRAME)
    assert [f["step"] for f in log_frames(rec / LOG_NAME)] == list(range(12))
    assert not (rec / JSON_NAME).exists()  # written on close, from the log
    recorder.close()

    pcm, rate = sf.read(str(rec / WAV_NAME), dtype="float32")
    assert rate == RATE and pcm.shape == (20 * FRAME, 2)
    for step in (0, 7, 19):
        chunk = pcm[step * FRAME : (step + 1) * FRAME]
        np.testing.assert_allclose(chunk[:, 0], user_frame(step), atol=1 / 32767)
        np.testing.assert_allclose(chunk[:, 1], moshi_frame(step), atol=1 / 32767)
    data = json.loads((rec / JSON_NAME).read_text())
    assert len(data["frames"]) == 20
    assert data["frames"][19]["time"] == pytest.approx(19 * FRAME_S)
    assert (rec / TEXT_NAME).read_text().startswith("[00:00.00] Hello, how are you?")
    assert {p.name for p in rec.iterdir()} == {JSON_NAME, TEXT_NAME, WAV_NAME}
    recorder.close()  # a second close changes nothing


def test_files_from_the_log_equal_the_transcript_in_memory(tmp_path):
    """transcript.json byte for byte as json.dumps(Transcript.to_json()) writes it."""
    recorder = Recorder(tmp_path, RATE, FRAME, user_words=True)
    transcript = Transcript(FRAME_S, user_words=True)
    for step in range(100):
        piece = PIECES[step % len(PIECES)]
        codes = None if step == 0 else np.arange(8) * step
        token = 3 if not piece else 1000 + step
        recorder.add(step, user_frame(step), moshi_frame(step), token, piece, codes)
        transcript.add(step, token, piece, codes)
        if step % 30 == 12:
            word = ("é", "hi", "there")[step % 3]  # non-ASCII escaped like json.dumps
            recorder.add_user_word(step * FRAME_S + 0.0004, word)
            transcript.add_user_word(step * FRAME_S + 0.0004, word)
    recorder.close()
    assert (tmp_path / JSON_NAME).read_text() == json.dumps(transcript.to_json()) + "\n"
    assert (tmp_path / TEXT_NAME).read_text() == transcript.to_text()
    assert "] you: " in transcript.to_text() and "] moshi: " in transcript.to_text()


def test_refuses_to_overwrite_a_recording(tmp_path):
    Recorder(tmp_path, RATE, FRAME).close()
    with pytest.raises(AudioError, match=r"already holds conversation\.wav"):
        Recorder(tmp_path, RATE, FRAME)


RECORD_FOREVER = """
import sys, time
import numpy as np
sys.path.insert(0, {tests!r})
from app_fakes import add_steps
from helpers import FRAME, RATE
from moshi_mlx.app.recorder import Recorder
recorder = Recorder({out!r}, RATE, FRAME)
step = 0
while True:
    add_steps(recorder, range(step, step + 1))
    step += 1
    if step % 12 == 0:
        recorder.wait_written()
        print(step, flush=True)
    time.sleep(0.005)
"""


def test_killed_recording_loses_at_most_a_second_and_recovers(tmp_path):
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
    assert not (out / JSON_NAME).exists()
    logged = len(log_frames(out / LOG_NAME))
    # each second goes to the WAV, then to the log
    assert info.frames - 12 * FRAME <= logged * FRAME <= info.frames

    assert recover_with_cli(out).startswith(f"{logged} frames, ")
    data = json.loads((out / JSON_NAME).read_text())
    assert [f["step"] for f in data["frames"]] == list(range(logged))
    assert (out / TEXT_NAME).read_text().startswith("[00:00.00] Hello, how are you?")


def test_a_line_cut_by_a_crash_is_left_out(tmp_path):
    recorder = Recorder(tmp_path, RATE, FRAME)
    add_steps(recorder, range(24))
    recorder.wait_written()
    # what a crash in the middle of a write leaves: half a line
    with open(tmp_path / LOG_NAME, "a") as log:
        log.write('{"step": 24, "time": 1.9')
    json_path, text_path, transcript = recover(tmp_path)
    assert transcript.steps == 24 and json_path == tmp_path / JSON_NAME
    assert len(json.loads(json_path.read_text())["frames"]) == 24
    assert text_path.read_text().startswith("[00:00.00] Hello")


def test_recover_needs_a_log(tmp_path):
    Recorder(tmp_path, RATE, FRAME).close()
    with pytest.raises(MoshiError, match="no transcript log to recover from"):
        recover(tmp_path)
    (tmp_path / "other.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(MoshiError, match="not a transcript log"):
        finish_transcript(tmp_path / "other.jsonl", tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


FILL_THE_DISK = """
import resource, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
from app_fakes import add_steps
from helpers import FRAME, RATE
from moshi_mlx.app.recorder import Recorder
# writes past the limit then fail with EFBIG instead of killing the process
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
recorder = Recorder({out!r}, RATE, FRAME)
add_steps(recorder, range(60))
recorder.close()
print(recorder.errors)
"""


def test_full_disk_keeps_what_was_saved_and_the_transcript_goes_on(tmp_path):
    out = tmp_path / "rec"
    script = FILL_THE_DISK.format(tests=str(Path(__file__).parent), out=str(out))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        [
            "conversation.wav stopped after 2.9 s: File too large "
            "(what was saved is kept)"
        ]
    )
    # 300 kB holds three one-second blocks (3 x 12 x 1920 x 4 B = 276 kB), not four
    info = sf.info(str(out / WAV_NAME))
    assert info.frames == 36 * FRAME
    assert os.path.getsize(out / WAV_NAME) == WAV_HEADER_BYTES + 36 * FRAME * 4
    # the transcript (a few kB) is complete
    assert len(json.loads((out / JSON_NAME).read_text())["frames"]) == 60


def test_a_failed_transcript_does_not_stop_the_audio(tmp_path):
    disk = FailingDisk()
    recorder = Recorder(tmp_path, RATE, FRAME, opener=disk)
    add_steps(recorder, range(24))
    recorder.wait_written()
    disk.fail(LOG_NAME, errno.ENOSPC)
    add_steps(recorder, range(24, 60))
    recorder.wait_written()
    assert recorder.errors == [
        "transcript.jsonl stopped after 24 frames (1.9 s): No space left on device "
        "(the audio goes on; what was saved is kept)"
    ]
    recorder.close()
    assert sf.info(str(tmp_path / WAV_NAME)).frames == 60 * FRAME
    data = json.loads((tmp_path / JSON_NAME).read_text())
    assert [f["step"] for f in data["frames"]] == list(range(24))


def test_a_failed_wav_does_not_stop_the_transcript(tmp_path):
    disk = FailingDisk()
    recorder = Recorder(tmp_path, RATE, FRAME, processed=True, opener=disk)
    for step in range(36):
        recorder.add(step, user_frame(step), moshi_frame(step), 3, "", None,
                     processed_pcm=user_frame(step))  # fmt: skip
        if step == 11:
            recorder.wait_written()
            disk.fail(WAV_NAME, errno.EACCES)
    recorder.close()
    assert recorder.errors == [
        "conversation.wav stopped after 1.0 s: Permission denied "
        "(what was saved is kept)"
    ]
    pcm, _ = sf.read(str(tmp_path / WAV_NAME), dtype="float32")
    assert pcm.shape == (12 * FRAME, 2)  # the block written before the failure
    assert sf.info(str(tmp_path / "mic_processed.wav")).frames == 36 * FRAME
    assert len(json.loads((tmp_path / JSON_NAME).read_text())["frames"]) == 36


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    def denied(path: Path, mode: str):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    with pytest.raises(AudioError, match=r"cannot write there \(Permission denied\)"):
        Recorder(tmp_path / "rec", RATE, FRAME, opener=denied)


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


def test_wav_turns_rf64_past_the_riff_limit(tmp_path):
    """The 4 GB switch, with a limit of a few frames instead of 4 GB."""
    pcm = (np.random.default_rng(0).standard_normal((10 * FRAME, 2)) * 0.1).astype(
        np.float32
    )
    wav = WavAppender(tmp_path / "a.wav", RATE, 2, riff_limit=5 * FRAME * 4)
    for block in np.split(pcm, 10):
        wav.append(block)
        info = sf.info(str(tmp_path / "a.wav"))  # valid after every append
        assert info.frames == wav.data_bytes // 4
    wav.close()
    assert info.format == "RF64" and info.frames == 10 * FRAME
    back, _ = sf.read(str(tmp_path / "a.wav"), dtype="float32")
    np.testing.assert_allclose(back, pcm, atol=1 / 32767)


def test_a_wav_header_past_4_gb_is_rf64(tmp_path):
    """A 5 GiB recording's header, on a sparse file: soundfile reads its length."""
    data_bytes = 5 * 2**30
    header = wav_header(data_bytes, RATE, 2)
    assert len(header) == WAV_HEADER_BYTES and header[:4] == b"RF64"
    riff, data, frames = struct.unpack_from("<QQQ", header, 20)
    assert (riff, data, frames) == (WAV_HEADER_BYTES - 8 + data_bytes, data_bytes,
                                    data_bytes // 4)  # fmt: skip
    path = tmp_path / "big.wav"
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(WAV_HEADER_BYTES + data_bytes)  # sparse: nothing written
    info = sf.info(str(path))
    assert info.format == "RF64" and info.frames == data_bytes // 4
    small = wav_header(2**32 - WAV_HEADER_BYTES, RATE, 2)  # the last plain WAV size
    assert small[:4] == b"RIFF" and struct.unpack_from("<I", small, 4)[0] == 2**32 - 8
