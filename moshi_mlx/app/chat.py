"""A live conversation: devices → frame loop → UI and recorder, exiting cleanly."""

from __future__ import annotations

import queue
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rich.console import Console
from rich.live import Live

from ..audio.devices import DeviceChoice
from ..audio.stats import AudioStats
from ..checkpoints import WeightRequest, resolve_checkpoint
from ..errors import AudioError, MoshiError
from ..lm.generate import DEFAULT_ALIGNMENT
from ..lm.sampling import SamplingSettings
from ..memory import CompanionModel
from ..mimi import MimiConfig
from ..stt.checkpoint import SttCheckpoint, SttRequest, resolve_stt_checkpoint
from ..stt.live import LiveTranscriber, load_chat_stt, user_transcriber
from ..words import format_time
from .engine import MoshiEngine, load_engine
from .loop import FrameEvent, FrameLoop, FrameSource, LoopStopped, MicFilter
from .recorder import Recorder
from .signals import stop_on_signals
from .ui import (
    ECHO_HINT,
    HEADPHONES_HINT,
    QUIT_HINT,
    ChatState,
    ChatView,
    KeyReader,
    PlainView,
    print_plain,
)
from .watchdog import CallbackWatchdog

if TYPE_CHECKING:
    from ..audio.echo import EchoCanceller

# UI refresh / event wait period
REFRESH_S = 0.1
# how long to wait for the worker to finish its frame on exit
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ChatOptions:
    """Everything about a chat that is not weights or sampling."""

    devices: DeviceChoice = field(default_factory=DeviceChoice)
    record_dir: Path | None = None
    ui: bool = True
    # a mic-frame step run before Moshi hears each frame (replaces echo cancellation)
    mic_filter: MicFilter | None = None
    # echo cancellation (the mic filter unless `mic_filter` is given)
    aec: bool = True
    noise_suppression: bool = False
    # also record the mic as Moshi heard it (after filtering)
    record_processed: bool = False


class ChatAudio(FrameSource, Protocol):
    """Started duplex audio as the chat uses it (moshi_mlx.audio.duplex.DuplexAudio)."""

    def stats(self) -> AudioStats: ...


def run_chat(
    request: WeightRequest,
    sampling: SamplingSettings,
    options: ChatOptions,
    console: Console | None = None,
    stt: SttRequest | None = None,
    alignment: str = DEFAULT_ALIGNMENT,
) -> None:
    """Talk with Moshi through the sound devices until Ctrl-C, `q` or an error.

    With `stt`, the user's words are transcribed too (--user-transcript);
    `alignment`: when Moshi reads the user's frames (see `load_engine`).
    """
    from ..audio.duplex import DuplexAudio

    console = console or Console()
    mimi_config = MimiConfig.from_json_or_official(request.mimi_config)
    # the devices first: a wrong one is reported before the long load
    audio = DuplexAudio(
        sample_rate=mimi_config.sample_rate,
        frame_size=mimi_config.frame_size,
        input_device=options.devices.input,
        output_device=options.devices.output,
    )
    engine, transcriber = _load_models(request, sampling, alignment, stt, console)
    with audio:
        echo = _echo_with_hint(options, audio, engine.sample_rate, console)
        recorder = _recorder(options, engine, user_words=transcriber is not None)
        session = ChatSession(
            engine,
            audio,
            console,
            ui=options.ui,
            recorder=recorder,
            mic_filter=options.mic_filter,
            echo=echo,
            transcriber=transcriber,
        )
        session.run()


def _echo_with_hint(
    options: ChatOptions, audio: ChatAudio, sample_rate: int, console: Console
) -> EchoCanceller | None:
    """The echo canceller of the options, after printing the echo/headphones hint;
    None, and no hint, when the caller's own mic filter replaces it."""
    if options.mic_filter is not None:
        return None
    echo = make_echo_canceller(options, audio.stats(), sample_rate)
    hint = ECHO_HINT if echo is not None and echo.active else HEADPHONES_HINT
    console.print(hint, style="yellow", soft_wrap=True)
    return echo


def _recorder(
    options: ChatOptions, engine: MoshiEngine, user_words: bool
) -> Recorder | None:
    """The recorder of `options.record_dir` (None: not recording)."""
    if options.record_dir is None:
        return None
    return Recorder(
        options.record_dir,
        engine.sample_rate,
        engine.frame_size,
        processed=options.record_processed,
        user_words=user_words,
    )


def _load_models(
    request: WeightRequest,
    sampling: SamplingSettings,
    alignment: str,
    stt: SttRequest | None,
    console: Console,
) -> tuple[MoshiEngine, LiveTranscriber | None]:
    """Moshi, warmed up, and (with `stt`) the user's transcriber."""
    stt_checkpoint = None
    companions = ()
    # first: the memory check counts it beside Moshi
    if stt is not None:
        # Moshi's Mimi encodes for it
        stt_checkpoint = resolve_stt_checkpoint(stt, with_mimi=False)
        companions = (stt_companion(stt_checkpoint),)
    checkpoint = resolve_checkpoint(request, companions=companions)
    with console.status("loading Moshi and warming up…"):
        stt_model = None
        if stt_checkpoint is not None:
            stt_model = load_chat_stt(stt_checkpoint, checkpoint.mimi_config)
        codebooks = stt_model.codebooks if stt_model is not None else None
        engine = load_engine(checkpoint, sampling, alignment, mimi_codebooks=codebooks)
        engine.warmup()
        if stt_model is None:
            return engine, None
        return engine, user_transcriber(stt_model, engine.frame_seconds)


def stt_companion(checkpoint: SttCheckpoint) -> CompanionModel:
    """The user transcript's STT model, as the memory check counts it beside Moshi."""
    return CompanionModel(
        "speech-to-text",
        "--user-transcript",
        checkpoint.weight,
        checkpoint.config,
        checkpoint.dtype,
    )


def make_echo_canceller(
    options: ChatOptions, audio_stats: AudioStats, sample_rate: int
) -> EchoCanceller | None:
    """The EchoCanceller the options ask for (None: --aec off, no noise suppression)."""
    if not (options.aec or options.noise_suppression):
        return None
    from ..audio.echo import EchoCanceller, reference_delay_for

    # The played reference of a mic frame is what the speaker had been handed by the
    # time that frame was complete, so its echo reaches the mic about the two device
    # latencies later.
    latency = audio_stats.device_latency_s
    return EchoCanceller(
        sample_rate,
        noise_suppression=options.noise_suppression,
        echo_cancellation=options.aec,
        reference_delay_ms=reference_delay_for(latency) if options.aec else 0.0,
    )


class ChatSession:
    """One conversation on started audio: the frame loop feeding the screen, the
    user's transcriber and the recorder until stopped, then one ordered shutdown.

    `echo` (an EchoCanceller) becomes the mic filter and shows in the status panel.
    `transcriber` gets the codes of every heard frame and writes the user's words
    into the view and the recording ("user_words").
    """

    def __init__(
        self,
        engine: MoshiEngine,
        audio: ChatAudio,
        console: Console,
        *,
        ui: bool = True,
        recorder: Recorder | None = None,
        mic_filter: MicFilter | None = None,
        echo: EchoCanceller | None = None,
        transcriber: LiveTranscriber | None = None,
    ) -> None:
        self.audio = audio
        self.console = console
        self.recorder = recorder
        self.transcriber = transcriber
        self.state = ChatState(
            engine.frame_seconds,
            engine.context_steps,
            answer_delay_frames=engine.answer_delay_frames,
        )
        self.state.echo = echo
        self.state.stt = transcriber
        self.state.recorder = recorder
        if ui:
            self.screen: LiveScreen | PlainScreen = LiveScreen(self.state, console)
        else:
            self.screen = PlainScreen(self.state, console)
        self.loop = _frame_loop(engine, audio, mic_filter, echo, transcriber)
        self.stopped: LoopStopped | None = None
        # why the audio stream was lost, if it was
        self.lost: str | None = None
        self._watchdog = CallbackWatchdog()
        self._started = False
        self._closed = False

    def run(self) -> None:
        """Converse until Ctrl-C, `q`, a model crash or a lost device; always closes.

        Raises MoshiError on a model crash or a recording error, AudioError on a lost
        device (each saying where the recording is).
        """
        stop = threading.Event()
        try:
            with stop_on_signals(stop), KeyReader() as keys:
                self._start()
                while not stop.is_set() and self.stopped is None:
                    if self._step() or "q" in keys.pressed().lower():
                        stop.set()
                # within the signal handlers: a Ctrl-C now only asks to stop again
                self.close()
        finally:
            self.close()
        self._report()

    def close(self) -> None:
        """Shut down once, in order: stop the frame loop, take in the frames still
        queued, stop the transcriber and take its last words, show the end, close the
        recording. Each step runs even if one before it failed; idempotent."""
        if self._closed:
            return
        self._closed = True
        with ExitStack() as steps:
            # registered last step first: they run in the reverse order
            if self.recorder is not None:
                steps.callback(self.recorder.close)
            steps.callback(self._show_end)
            steps.callback(self._stop_transcriber)
            self._stop_loop()

    def _start(self) -> None:
        self.screen.open(self.audio.stats())
        if self.transcriber is not None:
            self.transcriber.start()
        self._started = True
        self.loop.start()

    def _step(self) -> bool:
        """One pass of the main loop: frames, words, screen, device check.

        True when the audio stream was lost."""
        self.stopped = self._drain(REFRESH_S)
        self._take_user_words()
        stats = self.audio.stats()
        self.screen.refresh(stats)
        self.lost = _stream_lost(stats, self._watchdog)
        return self.lost is not None

    def _stop_loop(self) -> None:
        self.loop.stop(STOP_TIMEOUT_S)
        if self._started and self.stopped is None:
            # take in the frames still queued
            self.stopped = self._drain(STOP_TIMEOUT_S, until_stopped=True)

    def _stop_transcriber(self) -> None:
        if self.transcriber is not None:
            self.transcriber.stop(STOP_TIMEOUT_S)
            # the words of the last frames
            self._take_user_words()

    def _show_end(self) -> None:
        self.screen.close(self.audio.stats())

    def _on_frame(self, event: FrameEvent) -> None:
        self.state.on_frame(event)
        self.screen.on_frame(event)
        if self.recorder is not None:
            # the recording keeps the microphone as it was
            raw = event.user_pcm if event.raw_user_pcm is None else event.raw_user_pcm
            self.recorder.add(
                event.step,
                raw,
                event.moshi_pcm,
                event.text_token,
                event.text,
                event.audio_codes,
                processed_pcm=event.user_pcm,
            )

    def _take_user_words(self) -> None:
        """Show and record the user's new words."""
        if self.transcriber is None:
            return
        # first: every word taken after this reading starts at or after it
        settled = self.transcriber.settled_seconds
        words = self.transcriber.words()
        self.state.add_user_words(words, settled)
        if self.recorder is not None:
            for word in words:
                self.recorder.add_user_word(word.time, word.text)

    def _drain(self, timeout: float, until_stopped: bool = False) -> LoopStopped | None:
        """Handle queued events (waiting up to `timeout` for the first); any LoopStopped."""
        while True:
            try:
                event = self.loop.events.get(timeout=timeout)
            except queue.Empty:
                return None
            if isinstance(event, LoopStopped):
                return event
            self._on_frame(event)
            if not until_stopped:
                timeout = 0.0

    def _report(self) -> None:
        """Say where the recording is; raise on a model crash, lost device or disk error."""
        transcriber, recorder, stopped = self.transcriber, self.recorder, self.stopped
        if transcriber is not None and transcriber.error is not None:
            print_plain(
                self.console, f"the user transcript stopped early: {transcriber.error}"
            )
        crashed = stopped is not None and stopped.error is not None
        saved = ""
        if recorder is not None:
            seconds = recorder.seconds_saved
            saved = f"recording saved in {recorder.directory} ({seconds:.1f} s)"
            if recorder.errors:
                saved = f"recording: {'; '.join(recorder.errors)}; {saved}"
            elif not crashed and self.lost is None:
                print_plain(self.console, saved)
        suffix = f"; {saved}" if saved else ""
        if crashed:
            raise MoshiError(
                f"the model stopped after {self.state.steps} frames: "
                f"{stopped.error}{suffix}"
            )
        if self.lost is not None:
            raise AudioError(
                f"the audio stream stopped after {format_time(self.state.elapsed)}: "
                f"{self.lost} (see `python cli.py devices`){suffix}"
            )
        if recorder is not None and recorder.errors:
            raise MoshiError(saved)


class LiveScreen:
    """The rich live view (ChatView), redrawn on every refresh."""

    def __init__(self, state: ChatState, console: Console) -> None:
        self._view = ChatView(state)
        self._live = Live(console=console, auto_refresh=False)

    def open(self, stats: AudioStats) -> None:
        self._live.update(self._view.render(stats))
        self._live.start(refresh=True)

    def on_frame(self, event: FrameEvent) -> None:
        """Nothing: the view shows the state on the next refresh."""

    def refresh(self, stats: AudioStats) -> None:
        self._live.update(self._view.render(stats), refresh=True)

    def close(self, stats: AudioStats) -> None:
        """The last screen, left on the terminal."""
        if self._live.is_started:
            self.refresh(stats)
        self._live.stop()


class PlainScreen:
    """--no-ui: plain log lines (PlainView) on the console."""

    def __init__(self, state: ChatState, console: Console) -> None:
        self._console = console
        self._view = PlainView(state, lambda line: print_plain(console, line))

    def open(self, stats: AudioStats) -> None:
        print_plain(self._console, f"listening ({QUIT_HINT})")

    def on_frame(self, event: FrameEvent) -> None:
        self._view.on_frame(event)

    def refresh(self, stats: AudioStats) -> None:
        """New recording failures, and the periodic status line."""
        self._view.tick(stats)

    def close(self, stats: AudioStats) -> None:
        """The last lines and a final status line."""
        self._view.tick(stats)
        self._view.close(stats)


def _frame_loop(
    engine: MoshiEngine,
    audio: ChatAudio,
    mic_filter: MicFilter | None,
    echo: EchoCanceller | None,
    transcriber: LiveTranscriber | None,
) -> FrameLoop:
    """The chat's frame loop: `echo`, if any, is its mic filter."""
    if echo is None:
        return FrameLoop(
            engine, audio, mic_filter=mic_filter, user_transcriber=transcriber
        )
    from ..audio.echo import EchoFedAudio

    # frames the loop drops for lag are still cleaned
    fed = EchoFedAudio(audio, echo)
    return FrameLoop(engine, fed, mic_filter=echo.clean, user_transcriber=transcriber)


def _stream_lost(stats: AudioStats, watchdog: CallbackWatchdog) -> str | None:
    """Why the audio stream is gone (stopped, or silent while "active"), or None."""
    if not stats.active:
        return "a device was disconnected or failed"
    if watchdog.stalled(stats):
        return (
            f"no sound from the devices for {watchdog.limit_s:.0f} s although the "
            "stream runs (a device was disconnected or failed)"
        )
    return None
