"""Hours of conversation, fast-forwarded, through the real recorder, transcript and UI.

Synthetic frames shaped like a chat's (two 1920-sample channels at speech level,
Moshi's text pieces in sentences with pauses, 8 audio codes per step, the user's words
in Moshi's pauses) go through `Recorder` (real files on disk, fsynced), `ChatState`,
`PlainView` (every frame) and `ChatView` (rendered once per second of conversation),
as fast as the machine allows. At each checkpoint it records the longest single
recorder call since the previous checkpoint (`flush_ms_max`: an `add` that hands its
second to the writer thread; what the frame loop and the audio callback may wait
for; `flush_cpu_ms_max`: the most CPU time one call used, which a busy machine does
not inflate), the longest write of a second by that thread (`write_ms_max`, disk sync
included: nobody waits for it), the longest main-thread UI work per frame or render
(`ui_ms_max`) and the process RSS. The conversation goes no faster than the writer.

    uv run python benchmarks/soak.py --hours 3 --json benchmarks/out/soak.json
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from moshi_mlx.app.loop import FrameEvent
from moshi_mlx.app.recorder import Recorder
from moshi_mlx.app.ui import ChatState, ChatView, PlainView
from moshi_mlx.audio.stats import AudioStats
from moshi_mlx.benchmark.report import print_table, write_json
from moshi_mlx.stt.live import SttStatus
from moshi_mlx.words import Word

REPO = Path(__file__).resolve().parents[1]
RATE = 24000
FRAME = 1920
FRAME_S = FRAME / RATE
CONTEXT_STEPS = 3000
POOL_FRAMES = 250  # distinct audio frames, cycled (20 s)
# Moshi talks for 3.2 s, then is silent for 2.4 s while the user speaks
TALK_STEPS, PAUSE_STEPS = 40, 30
PIECES = [" Well", ",", "", " I", " think", "", " that", "'s", " a", " fair", ""]
PIECES += [" quest", "ion", ".", "", " What", " do", " you", " mean", "?", ""]
USER_WORDS = ["yes", "I", "mean", "the", "long", "one", "we", "talked", "about"]
USER_WORD_EVERY = 5  # steps between the user's words
STT_DELAY_STEPS = 7  # the user's words arrive about 0.5 s after they are said
RENDER_EVERY = 12  # frames between screen renders (about 1 s)
WRITE_BACKLOG = 2  # seconds of recording the writer thread may be behind


def rss_mib() -> float:
    """Resident memory of this process now (Linux), else its peak, in MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class Conversation:
    """The synthetic chat: frame events and the user's words, step by step."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        envelope = np.hanning(FRAME).astype(np.float32)
        noise = rng.standard_normal((2, POOL_FRAMES, FRAME)).astype(np.float32)
        self.user = noise[0] * 0.05 * envelope
        self.moshi = noise[1] * 0.08 * envelope
        self.codes = rng.integers(0, 2048, (POOL_FRAMES, 8)).astype(np.int32)

    def event(self, step: int) -> FrameEvent:
        cycle = step % (TALK_STEPS + PAUSE_STEPS)
        piece = PIECES[(step // (TALK_STEPS + PAUSE_STEPS) + cycle) % len(PIECES)]
        text = piece if cycle < TALK_STEPS else ""
        i = step % POOL_FRAMES
        return FrameEvent(
            step=step,
            time=step * FRAME_S,
            step_ms=40.0,
            text_token=3 if not text else 100 + len(text),
            text=text,
            audio_codes=None if step == 0 else self.codes[i],
            user_pcm=self.user[i],
            moshi_pcm=self.moshi[i],
            dropped_frames=0,
        )

    def user_words(self, step: int) -> list[Word]:
        """The words the STT delivers at `step` (said STT_DELAY_STEPS earlier)."""
        said = step - STT_DELAY_STEPS
        cycle = said % (TALK_STEPS + PAUSE_STEPS)
        if said < 0 or cycle < TALK_STEPS or cycle % USER_WORD_EVERY:
            return []
        text = USER_WORDS[(said // USER_WORD_EVERY) % len(USER_WORDS)]
        return [Word(round(said * FRAME_S, 3), text)]


class KeepingUpStt:
    """What the views read from a LiveTranscriber that keeps up."""

    delay_seconds = STT_DELAY_STEPS * FRAME_S

    def status(self) -> SttStatus:
        return SttStatus(lag_frames=0, dropped_frames=0, step_ms=10.0, error=None)


class SimulatedClock:
    """Conversation time as the UI's clock (elapsed, status-line period)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def audio_stats(step: int) -> AudioStats:
    """What DuplexAudio.stats() reports in a healthy chat."""
    return AudioStats(
        active=True,
        input_callbacks=step,
        output_callbacks=step,
        sample_rate=RATE,
        input_latency_s=0.02,
        output_latency_s=0.04,
        input_fill_frames=0.5,
        input_capacity_frames=50,
        output_fill_frames=1.5,
        output_capacity_frames=25,
    )


def soak(hours: float, points: int, directory: Path) -> list[dict]:
    """Run the conversation, returning one measurement per checkpoint."""
    chat = Conversation()
    clock = SimulatedClock()
    state = ChatState(FRAME_S, CONTEXT_STEPS, clock=clock)
    view = ChatView(state)
    lines = 0

    def count_line(_: str) -> None:
        nonlocal lines
        lines += 1

    plain = PlainView(state, count_line)
    state.stt = KeepingUpStt()
    console = Console(file=open(os.devnull, "w"), width=100)
    recorder = Recorder(directory, RATE, FRAME, user_words=True)
    total = round(hours * 3600 / FRAME_S)
    marks = [round(total * (k + 1) / points) for k in range(points)]
    results: list[dict] = []
    flush_max = flush_cpu_max = ui_max = write_max = 0.0
    start = time.perf_counter()
    for step in range(total):
        event = chat.event(step)
        clock.now = event.time
        t0, cpu0 = time.perf_counter(), time.thread_time()
        recorder.add(
            event.step,
            event.user_pcm,
            event.moshi_pcm,
            event.text_token,
            event.text,
            event.audio_codes,
        )
        words = chat.user_words(step)
        for word in words:
            recorder.add_user_word(word.time, word.text)
        t1, cpu1 = time.perf_counter(), time.thread_time()
        state.on_frame(event)
        state.add_user_words(words)
        plain.on_frame(event)
        stats = audio_stats(step)
        plain.tick(stats)
        if step % RENDER_EVERY == 0:
            console.print(view.render(stats))
        t2 = time.perf_counter()
        flush_max = max(flush_max, (t1 - t0) * 1000)
        flush_cpu_max = max(flush_cpu_max, (cpu1 - cpu0) * 1000)
        ui_max = max(ui_max, (t2 - t1) * 1000)
        if step % RENDER_EVERY == 0:
            # fast-forward no faster than the disk: at most WRITE_BACKLOG seconds wait
            while recorder.backlog > WRITE_BACKLOG:
                time.sleep(0.001)
            write_max = max(write_max, *recorder.recent_write_ms, 0.0)
        if step + 1 == marks[len(results)]:
            point = {
                "hours": round((step + 1) * FRAME_S / 3600, 4),
                "flush_ms_max": round(flush_max, 2),
                "flush_cpu_ms_max": round(flush_cpu_max, 2),
                "ui_ms_max": round(ui_max, 2),
                "write_ms_max": round(write_max, 2),
                "rss_mib": round(rss_mib(), 1),
                "recorded_mib": round(recorded_bytes(directory) / 2**20, 1),
                "wall_s": round(time.perf_counter() - start, 1),
            }
            results.append(point)
            print(
                f"{point['hours']:.2f} h: flush max {point['flush_ms_max']:.1f} ms "
                f"(cpu {point['flush_cpu_ms_max']:.1f}), "
                f"ui max {point['ui_ms_max']:.1f} ms, "
                f"write max {point['write_ms_max']:.1f} ms, "
                f"rss {point['rss_mib']:.0f} MiB "
                f"({point['wall_s']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            flush_max = flush_cpu_max = ui_max = write_max = 0.0
    t0 = time.perf_counter()
    recorder.close()
    results[-1]["close_s"] = round(time.perf_counter() - t0, 2)
    results[-1]["lines_printed"] = lines
    return results


def recorded_bytes(directory: Path) -> int:
    """Bytes of the recording's files so far."""
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def plot(points: list[dict], path: Path, title: str) -> None:
    """flush_ms_max and rss_mib against hours, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [p["hours"] for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
    top.plot(hours, [p["flush_ms_max"] for p in points], "o-", label="wall")
    top.plot(hours, [p["flush_cpu_ms_max"] for p in points], "s--", label="CPU")
    top.set_ylabel("longest recorder call (ms)")
    top.axhline(20, color="grey", linestyle=":", linewidth=1, label="target")
    top.set_ylim(bottom=0)
    top.legend(loc="upper right")
    rss = [p["rss_mib"] for p in points]
    bottom.plot(hours, rss, "o-", color="tab:orange")
    bottom.axhline(rss[0] + 60, color="grey", linestyle=":", linewidth=1)
    bottom.set_ylim(rss[0] - 10, rss[0] + 70)
    bottom.set_ylabel("RSS (MiB)")
    bottom.set_xlabel("hours of conversation")
    top.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=3.0, help="conversation length")
    parser.add_argument("--points", type=int, default=12, help="checkpoints (≥ 10)")
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks/out/soak.json", help="results"
    )
    parser.add_argument("--plot", type=Path, help="PNG (default: beside the JSON)")
    parser.add_argument(
        "--dir", type=Path, help="record here (default: a temporary folder, removed)"
    )
    args = parser.parse_args()
    if args.points < 10:
        parser.error("--points: at least 10 checkpoints")
    if args.dir is not None:
        points = soak(args.hours, args.points, args.dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            points = soak(args.hours, args.points, Path(tmp) / "rec")
    print_table(
        f"Soak: {args.hours:g} h of conversation through the recorder and UI",
        ["hours", "flush ms max", "flush CPU ms", "write ms max", "ui ms max"]
        + ["RSS MiB", "recorded MiB", "wall s"],
        [
            [
                p["hours"],
                p["flush_ms_max"],
                p["flush_cpu_ms_max"],
                p["write_ms_max"],
                p["ui_ms_max"],
                p["rss_mib"],
                p["recorded_mib"],
                p["wall_s"],
            ]
            for p in points
        ],
    )
    write_json(
        args.json,
        {
            "command": " ".join(["uv run python benchmarks/soak.py", *sys.argv[1:]]),
            "hours": args.hours,
            "load_average": os.getloadavg(),
            "points": points,
        },
    )
    plot(points, args.plot or args.json.with_suffix(".png"), f"soak {args.hours:g} h")


if __name__ == "__main__":
    main()
