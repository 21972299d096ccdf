"""Run echo cancellation on real sound devices, the way the app's frame loop does, and save it all.

Usage (in an environment whose default devices are the echo test's sinks):
    python tests/echo_harness.py FAR.wav OUT.npz [--seconds S]

Plays FAR.wav as Moshi's voice, frame by frame through DuplexAudio, and for every frame
reads the microphone and the paired played frame, cleans the microphone with the chat's
EchoCanceller (make_echo_canceller: same reference delay from the stream's latencies)
and keeps the raw microphone, the played audio, the cleaned audio and the running ERLE
meter in OUT.npz (plus the streams' reported latencies, the played reference's lead over
the microphone and the reference delay applied).
Prints "playing" once the stream runs.
"""

from __future__ import annotations

import argparse

import numpy as np

from moshi_mlx.app.chat import ChatOptions, make_echo_canceller
from moshi_mlx.audio.duplex import DuplexAudio
from moshi_mlx.audio.files import read_audio
from moshi_mlx.mimi import MimiConfig

MIMI = MimiConfig.official()  # the app's frames
SAMPLE_RATE, FRAME_SIZE = MIMI.sample_rate, MIMI.frame_size
PREFILL_FRAMES = 1  # the frame written before the first step, as the app's loop does


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("far")
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    far = read_audio(args.far, SAMPLE_RATE)
    n_frames = int(args.seconds * SAMPLE_RATE) // FRAME_SIZE
    far = np.pad(far, (0, max(0, (n_frames + PREFILL_FRAMES) * FRAME_SIZE - far.size)))
    far_frames = far[: (n_frames + PREFILL_FRAMES) * FRAME_SIZE].reshape(-1, FRAME_SIZE)
    mic, played, clean, erle = [], [], [], []
    with DuplexAudio(SAMPLE_RATE, FRAME_SIZE) as audio:
        aec = make_echo_canceller(ChatOptions(), audio.stats(), SAMPLE_RATE)
        for frame in far_frames[:PREFILL_FRAMES]:
            audio.write_frame(frame)
        print("playing", flush=True)  # the test starts the second voice from here
        while len(mic) < n_frames:
            frame = audio.read_frame(timeout=1.0)
            if frame is None:
                raise SystemExit("no microphone frame within 1 s")
            reference = audio.read_played_frame()
            audio.write_frame(far_frames[PREFILL_FRAMES + len(mic)])
            aec.process_far(reference)
            clean.append(aec.process_near(frame))
            mic.append(frame)
            played.append(reference)
            erle.append(np.nan if aec.erle_db is None else aec.erle_db)
        stats = audio.stats()
    np.savez(
        args.out,
        mic=np.concatenate(mic),
        played=np.concatenate(played),
        clean=np.concatenate(clean),
        erle=np.array(erle),
        latency_s=np.array([stats.input_latency_s, stats.output_latency_s]),
        played_lead_ms=stats.played_lead_ms,
        reference_delay_ms=aec.reference_delay_ms,
    )


if __name__ == "__main__":
    main()
