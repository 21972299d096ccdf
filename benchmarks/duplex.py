"""Frame-loop cost per 80 ms frame on the tiny fixture Moshi (no sound devices needed).

Separates the model work (Mimi encode + LM step + Mimi decode) from what the app adds
around it: the worker's ring-buffer reads/writes and event, and the main thread's UI
state, recorder and screen rendering.

    uv run python benchmarks/duplex.py --frames 200
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from rich.console import Console

from moshi_mlx.app.engine import load_engine
from moshi_mlx.app.file_mode import split_frames
from moshi_mlx.app.loop import FrameLoop
from moshi_mlx.app.recorder import Recorder
from moshi_mlx.app.ui import ChatState, ChatView
from moshi_mlx.audio.ring_buffer import RingBuffer
from moshi_mlx.audio.stats import AudioStats
from moshi_mlx.benchmark.measure import frame_timing, peak_mlx_mib
from moshi_mlx.benchmark.report import print_table, write_json
from moshi_mlx.checkpoints import WeightRequest, resolve_checkpoint
from moshi_mlx.lm import SamplingSettings

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


class MemoryDuplex:
    """DuplexAudio's consumer API over in-memory rings, fed by the benchmark."""

    def __init__(self, sample_rate: int, frame_size: int, frames: int) -> None:
        self.sample_rate = sample_rate
        self.frame_size = frame_size
        self.mic = RingBuffer(frames * frame_size)
        self.played = RingBuffer(frames * frame_size)
        self.speaker = RingBuffer(4 * frame_size)
        self._out = np.empty(frame_size, np.float32)

    def read_frame(self, timeout: float = 0.0) -> np.ndarray | None:
        return self.mic.read(self.frame_size)

    def read_played_frame(self) -> np.ndarray | None:
        return self.played.read(self.frame_size)

    def input_frames_available(self) -> int:
        return self.mic.available // self.frame_size

    def drop_input_frames(self, n: int) -> int:
        return self.mic.discard(n * self.frame_size) // self.frame_size

    def write_frame(self, pcm: np.ndarray) -> None:
        self.speaker.write(pcm)
        self.speaker.read_into(self._out)  # the "device" plays it at once

    def stats(self) -> AudioStats:
        return AudioStats(
            sample_rate=self.sample_rate, input_fill_frames=0.0, output_fill_frames=1.0
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frames", type=int, default=200, help="frames to time per row"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out/duplex.json")
    args = parser.parse_args()

    request = WeightRequest(
        moshi_weight=FIXTURES / "lm/model.safetensors",
        lm_config=FIXTURES / "lm/config.json",
        tokenizer=FIXTURES / "lm/tokenizer.model",
        mimi_weight=FIXTURES / "mimi/mimi_small.safetensors",
        mimi_config=FIXTURES / "mimi/mimi_small.json",
        offline=True,
    )
    engine = load_engine(resolve_checkpoint(request), SamplingSettings())
    engine.warmup()
    speech = np.array(mx.load(str(FIXTURES / "mimi/mimi_small_ref.safetensors"))["pcm"])
    clip = split_frames(speech.reshape(-1), engine.frame_size)
    frames = np.resize(clip, (args.frames, engine.frame_size))

    engine_ms = np.empty(args.frames)
    for i, frame in enumerate(frames):
        start = time.perf_counter()
        engine.step(frame)
        engine_ms[i] = (time.perf_counter() - start) * 1000

    engine.reset()
    audio = MemoryDuplex(engine.sample_rate, engine.frame_size, args.frames)
    loop = FrameLoop(engine, audio, max_backlog=args.frames)
    loop_ms = np.empty(args.frames)
    for i, frame in enumerate(frames):
        audio.mic.write(frame)
        audio.played.write(frame)
        start = time.perf_counter()
        loop.process_available()
        loop_ms[i] = (time.perf_counter() - start) * 1000
    events = [loop.events.get_nowait() for _ in range(args.frames)]

    state = ChatState(engine.frame_seconds, engine.context_steps)
    view = ChatView(state)
    console = Console(file=io.StringIO(), width=100)
    consume_ms = np.empty(args.frames)
    render_ms = np.empty(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder(tmp, engine.sample_rate, engine.frame_size)
        for i, ev in enumerate(events):
            start = time.perf_counter()
            state.on_frame(ev)
            recorder.add(
                ev.step,
                ev.user_pcm,
                ev.moshi_pcm,
                ev.text_token,
                ev.text,
                ev.audio_codes,
            )
            consume_ms[i] = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            console.print(view.render(audio.stats()))
            render_ms[i] = (time.perf_counter() - start) * 1000
        recorder.close()

    rows = {
        "engine step (Mimi + LM + Mimi)": frame_timing(engine_ms),
        "worker frame (rings + engine + event)": frame_timing(loop_ms),
        "main thread per frame (state + recorder)": frame_timing(consume_ms),
        "screen render (10 per second in the app)": frame_timing(render_ms),
    }
    print_table(
        f"Frame loop on the tiny fixture Moshi ({args.frames} frames)",
        ["part", "median ms", "p95 ms", "mean ms", "share of 80 ms"],
        [
            [k, v["median_ms"], v["p95_ms"], v["mean_ms"], v["rtf"]]
            for k, v in rows.items()
        ],
    )
    write_json(
        args.out,
        {
            "command": " ".join(["uv run python benchmarks/duplex.py", *sys.argv[1:]]),
            "frames": args.frames,
            "results": rows,
            "peak_mlx_mib": peak_mlx_mib(),
        },
    )


if __name__ == "__main__":
    main()
