"""What the terminal shows during a chat: a rich live view, or plain lines (--no-ui)."""

from __future__ import annotations

import math
import os
import select
import sys
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..audio.stats import AudioStats
from ..words import LINE_PAUSE_S, SpeechLines, Word, WordJoiner, format_time
from .loop import FrameEvent

HEADPHONES_HINT = (
    "Use headphones: echo cancellation is off (--aec off), so through speakers Moshi "
    "would hear itself."
)
ECHO_HINT = (
    "Echo cancellation is on: speakers work. Headphones are still better with very "
    "loud speakers or a Bluetooth (long-delay) output."
)
QUIT_HINT = "q or Ctrl-C to quit"
SPEAKING_HOLD_S = 0.8  # Moshi counts as speaking this long after its last text token
STEP_WINDOW = 125  # frames (10 s) behind the step-time percentiles
LEVEL_FLOOR_DB = -60.0
METER_WIDTH = 12
TRANSCRIPT_CHARS = 600  # tail of the transcript kept on screen
# finished lines remembered per speaker: enough for TRANSCRIPT_CHARS of the shortest
KEEP_LINES = TRANSCRIPT_CHARS // len("[00:00.00] x\n") + 1
STATUS_EVERY_S = 5.0  # --no-ui status line period


def level_db(pcm: np.ndarray) -> float:
    """RMS level of a frame in dBFS, floored at LEVEL_FLOOR_DB."""
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if pcm.size else 0.0
    return max(LEVEL_FLOOR_DB, 20 * math.log10(rms) if rms > 0 else LEVEL_FLOOR_DB)


def meter(db: float) -> str:
    """A fixed-width bar for a dBFS level."""
    filled = round(METER_WIDTH * (db - LEVEL_FLOOR_DB) / -LEVEL_FLOOR_DB)
    return "█" * filled + "·" * (METER_WIDTH - filled)


class ChatState:
    """Everything the views show, updated from frame events and the audio stats.

    Bounded: the recent lines of each side and the recent step times, not the history.
    """

    def __init__(
        self,
        frame_seconds: float,
        context_steps: int,
        clock: Callable[[], float] = time.monotonic,
        answer_delay_frames: int = 1,
    ) -> None:
        self.frame_seconds = frame_seconds
        self.context_steps = context_steps
        # steps between hearing a frame and completing Moshi's frame of that time
        self.answer_delay_frames = answer_delay_frames
        self.moshi_lines = SpeechLines(keep=KEEP_LINES)
        self._moshi_words = WordJoiner()
        self.step_ms: deque[float] = deque(maxlen=STEP_WINDOW)
        self.steps = 0
        self.dropped_frames = 0
        self.mic_db = LEVEL_FLOOR_DB
        self.moshi_db = LEVEL_FLOOR_DB
        self.last_text_time: float | None = None
        self.time = 0.0
        self._clock = clock
        self._start = clock()
        # the EchoCanceller cleaning the mic (moshi_mlx.audio.echo), if any
        self.echo = None
        # the LiveTranscriber writing the user's words (moshi_mlx.stt.live), if any
        self.stt = None
        self.user_lines = SpeechLines(keep=KEEP_LINES)
        # every user word still to come starts at or after this time (s)
        self.user_settled = 0.0
        # the Recorder saving the chat (moshi_mlx.app.recorder), if any
        self.recorder = None

    def on_frame(self, event: FrameEvent) -> None:
        """Take in one processed frame."""
        self.steps = event.step + 1
        self.time = event.time
        self.step_ms.append(event.step_ms)
        self.dropped_frames = event.dropped_frames
        self.mic_db = level_db(event.user_pcm)
        self.moshi_db = level_db(event.moshi_pcm)
        joined = self._moshi_words.push(round(event.time, 3), event.text)
        if joined is not None:
            word, started = joined
            if started:
                self.moshi_lines.add(word)
            else:
                self.moshi_lines.replace_last(word)
        if event.text:
            self.last_text_time = event.time

    def add_user_words(self, words: list[Word], settled: float = 0.0) -> None:
        """Take in the user's new words (times in conversation seconds).

        `settled`: the transcriber's `settled_seconds`, read before these words were
        taken (a line that ended a pause before it can no longer grow).
        """
        for word in words:
            self.user_lines.add(word)
        self.user_settled = max(self.user_settled, settled)

    @property
    def speaking(self) -> bool:
        """Moshi is speaking: its text stream carried a word recently (not padding)."""
        return self.last_text_time is not None and (
            self.time - self.last_text_time <= SPEAKING_HOLD_S
        )

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    def percentile_ms(self, q: float) -> float | None:
        return float(np.percentile(self.step_ms, q)) if self.step_ms else None

    def latency_parts(self, audio: AudioStats) -> dict[str, float] | None:
        """The mic → speaker time of Moshi's answer, in measured parts (ms).

        A sound waits half a frame on average for its frame to end (frame); Moshi's
        audio of that moment is complete `answer_delay_frames` steps later (model);
        that step's frame then took `processing` from being complete to being queued
        (wait, mic filter, step), waited `queue` behind the speaker cushion, and
        passed the devices' own buffers (PortAudio's input + output latency).
        """
        p50 = self.percentile_ms(50)
        if p50 is None:
            return None
        frame_ms = self.frame_seconds * 1000
        processing = audio.processing_ms
        return {
            "frame": frame_ms / 2,
            "model": self.answer_delay_frames * frame_ms,
            "processing": p50 if processing is None else processing,
            "queue": audio.speaker_queue_ms or 0.0,
            "devices": audio.device_latency_s * 1000,
        }

    def latency_ms(self, audio: AudioStats) -> float | None:
        """Expected mic → speaker time of Moshi's answer: the sum of its parts."""
        parts = self.latency_parts(audio)
        return None if parts is None else sum(parts.values())

    def context_text(self) -> str:
        """History the LM attends to: grows until the window is full, then rolls."""
        window = self.context_steps * self.frame_seconds
        seen = min(self.steps, self.context_steps) * self.frame_seconds
        if self.steps >= self.context_steps:
            return f"{window:.0f} s window full (oldest forgotten)"
        return f"{seen:.1f}/{window:.0f} s ({window - seen:.0f} s left)"

    def status_fields(self, audio: AudioStats) -> list[tuple[str, str]]:
        """(label, value) rows of the status panel."""
        return [
            *self._speed_fields(audio),
            *self._buffer_fields(audio),
            *self._session_fields(),
        ]

    def _speed_fields(self, audio: AudioStats) -> list[tuple[str, str]]:
        """The step time, real-time factor and expected latency rows."""
        p50, p95 = self.percentile_ms(50), self.percentile_ms(95)
        frame_ms = self.frame_seconds * 1000
        step = "—" if p50 is None else f"p50 {p50:.1f} ms · p95 {p95:.1f} ms"
        rtf = "—" if p50 is None else f"{p50 / frame_ms:.2f}"
        parts = self.latency_parts(audio)
        return [
            ("step", step),
            (
                "real-time factor",
                rtf + ("  (too slow)" if p50 and p50 > frame_ms else ""),
            ),
            (
                "latency",
                "—"
                if parts is None
                else f"≈ {sum(parts.values()):.0f} ms mic → speaker",
            ),
            ("  made of", latency_parts_text(parts)),
        ]

    def _buffer_fields(self, audio: AudioStats) -> list[tuple[str, str]]:
        """The speaker cushion, buffer fill and lost-audio rows."""
        return [
            ("speaker cushion", cushion_text(audio)),
            (
                "buffers",
                (
                    f"mic {audio.input_fill_frames:.1f}/"
                    f"{audio.input_capacity_frames} · speaker "
                    f"{audio.output_fill_frames:.1f}/"
                    f"{audio.output_capacity_frames} frames"
                ),
            ),
            (
                "dropped / underruns / overflows",
                (
                    f"{self.dropped_frames} frames · "
                    f"{audio.output_underrun_callbacks} ({audio.underrun_s:.2f} s) · "
                    f"{audio.overflows} samples"
                ),
            ),
            (
                "skipped (late)",
                (
                    f"{audio.output_skipped_frames} frames "
                    f"({audio.output_skipped_s:.2f} s)"
                ),
            ),
        ]

    def _session_fields(self) -> list[tuple[str, str]]:
        """The echo, speech-to-text, recording, level, time and context rows."""
        return [
            ("echo cancellation", echo_status(self.echo)),
            *(
                [("you (speech-to-text)", stt_status(self.stt, self.frame_seconds))]
                if self.stt is not None
                else []
            ),
            *(
                [("recording", recording_status(self.recorder))]
                if self.recorder is not None
                else []
            ),
            ("mic level", f"{meter(self.mic_db)} {self.mic_db:5.0f} dB"),
            ("moshi level", f"{meter(self.moshi_db)} {self.moshi_db:5.0f} dB"),
            ("elapsed", format_time(self.elapsed)),
            ("context", self.context_text()),
        ]


def latency_parts_text(parts: dict[str, float] | None) -> str:
    """What the latency figure is the sum of (see ChatState.latency_parts)."""
    if parts is None:
        return "—"
    return " + ".join(f"{name} {ms:.0f}" for name, ms in parts.items()) + " ms"


def cushion_text(audio: AudioStats) -> str:
    """The speaker cushion row: its adaptive target and how it moved."""
    if audio.cushion_ms is None:
        return "—"
    return (
        f"{audio.cushion_ms:.0f} ms (step jitter {audio.cushion_jitter_ms:.0f} ms)"
        f" · grown {audio.cushion_grown}× · trimmed "
        f"{audio.cushion_trimmed_ms / 1000:.2f} s"
    )


def echo_status(echo) -> str:
    """The echo canceller's state and measured echo reduction, for the status panel."""
    suppress = (
        " · noise suppression" if echo is not None and echo.noise_suppression else ""
    )
    if echo is None or not echo.echo_cancellation:
        return "off (use headphones)" + suppress
    if echo.error is not None:
        return f"stopped, mic passes raw: {echo.error}"
    erle = echo.erle_db
    removed = (
        "measuring when Moshi speaks" if erle is None else f"{erle:.0f} dB echo removed"
    )
    return f"on · {removed}{suppress}"


def stt_status(stt, frame_seconds: float) -> str:
    """How the user transcript keeps up: step time, how far behind, what was skipped."""
    status = stt.status()
    if status.error is not None:
        return f"stopped (Moshi goes on): {status.error}"
    if status.step_ms is None:
        return f"ready · words come ≈ {stt.delay_seconds:.1f} s after they are said"
    slow = "  (slower than real time)" if status.step_ms > frame_seconds * 1000 else ""
    return (
        f"{status.step_ms:.1f} ms/step{slow} · "
        f"{status.lag_frames * frame_seconds:.1f} s behind · "
        f"{status.dropped_frames * frame_seconds:.1f} s skipped"
    )


def recording_status(recorder) -> str:
    """What is saved, how long the last writes took, and any file that failed."""
    slowest = max(recorder.recent_write_ms, default=0.0)
    saved = (
        f"{format_time(recorder.seconds_saved)} saved in {recorder.directory} · "
        f"writes ≤ {slowest:.1f} ms"
    )
    return "; ".join([*recorder.errors, saved])


class ChatView:
    """The rich live view: Moshi's transcript, a speaking indicator, a status panel."""

    def __init__(self, state: ChatState) -> None:
        self.state = state

    def render(self, audio: AudioStats) -> RenderableType:
        """The whole screen for the current state and audio stats."""
        state = self.state
        if state.speaking:
            indicator = Text("● Moshi is speaking", style="bold green")
        else:
            indicator = Text("○ listening", style="dim")
        text = state.moshi_lines.tail(TRANSCRIPT_CHARS)
        body = Text(text) if text else Text("(Moshi's words appear here)", "dim")
        transcript = Panel(
            body, title="Moshi", subtitle=indicator, subtitle_align="left"
        )
        if state.stt is not None:  # the user's words beside Moshi's
            mine = state.user_lines.tail(TRANSCRIPT_CHARS)
            you = Panel(
                Text(mine) if mine else Text("(your words appear here)", "dim"),
                title="You",
            )
            moshi, transcript = transcript, Table.grid(expand=True, padding=(0, 1))
            transcript.add_column(ratio=1)
            transcript.add_column(ratio=1)
            transcript.add_row(you, moshi)
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", justify="right")
        table.add_column()
        for label, value in state.status_fields(audio):
            table.add_row(label, value)
        status = Panel(
            table, title="status", subtitle=QUIT_HINT, subtitle_align="right"
        )
        return Group(transcript, status)


def print_plain(console: Console, line: str) -> None:
    """Print `line` as plain text: no markup or highlighting, no line breaks added."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


class PlainView:
    """--no-ui: finished transcript lines and a periodic status line, as plain text."""

    def __init__(self, state: ChatState, write: Callable[[str], None]) -> None:
        self.state = state
        self.write = write
        self._printed_lines = 0
        self._printed_user_lines = 0
        self._printed_errors = 0
        self._next_status = STATUS_EVERY_S

    def on_frame(self, event: FrameEvent) -> None:
        """Print transcript lines that can no longer grow."""
        lines = self.state.moshi_lines
        done = lines.count - 1
        if lines.last_end is not None and event.time - lines.last_end > LINE_PAUSE_S:
            done = lines.count
        self._printed_lines = self._print("moshi", lines, self._printed_lines, done)
        self._print_user_lines()

    def _print_user_lines(self, final: bool = False) -> None:
        """Print the user's lines that can no longer grow (all if `final`)."""
        lines = self.state.user_lines
        done = lines.count
        if not final and lines.last_end is not None:
            # the next word may still continue the open line
            if self.state.user_settled - lines.last_end <= LINE_PAUSE_S:
                done -= 1
        self._printed_user_lines = self._print(
            "you", lines, self._printed_user_lines, done
        )

    def _print(self, who: str, lines: SpeechLines, printed: int, done: int) -> int:
        """Print the lines numbered `printed` to `done` - 1; returns how many are."""
        for line in lines.since(printed)[: done - printed]:
            self.write(f"{who} {line}")
        return max(printed, done)

    def _print_errors(self) -> None:
        """Print recording failures the moment they are known."""
        recorder = self.state.recorder
        if recorder is None:
            return
        new = recorder.errors[self._printed_errors :]
        for error in new:
            self.write(f"recording: {error}")
        self._printed_errors += len(new)

    def tick(self, audio: AudioStats) -> None:
        """Print new recording failures, and the status line when its period passed."""
        self._print_errors()
        if self.state.elapsed >= self._next_status:
            self._next_status += STATUS_EVERY_S
            self.write(self.status_line(audio))

    def status_line(self, audio: AudioStats) -> str:
        """All status fields on one line."""
        fields = "; ".join(f"{k} {v}" for k, v in self.state.status_fields(audio))
        return f"status steps {self.state.steps}; {fields}"

    def close(self, audio: AudioStats) -> None:
        """Print the last transcript lines and a final status line."""
        self._print_user_lines(final=True)
        lines = self.state.moshi_lines
        self._printed_lines = self._print(
            "moshi", lines, self._printed_lines, lines.count
        )
        self._print_errors()
        self.write(self.status_line(audio))


class KeyReader:
    """Key presses from the terminal without Enter (inactive when stdin is no TTY)."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._saved = None

    def __enter__(self) -> KeyReader:
        if sys.stdin.isatty():
            import termios
            import tty

            self._fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._fd = None

    def pressed(self) -> str:
        """Keys typed since the last call ("" if none)."""
        if self._fd is None or not select.select([self._fd], [], [], 0)[0]:
            return ""
        return os.read(self._fd, 64).decode(errors="ignore")
