"""A live conversation: devices → frame loop → UI and recorder, exiting cleanly."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live

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
from .loop import FrameEvent, FrameLoop, LoopStopped, MicFilter
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
)
from .watchdog import CallbackWatchdog

REFRESH_S = 0.1  # UI refresh / event wait period
STOP_TIMEOUT_S = 10.0  # how long to wait for the worker to finish its frame on exit


@dataclass(frozen=True)
class ChatOptions:
    """Everything about a chat that is not weights or sampling."""

    input_device: int | str | None = None
    output_device: int | str | None = None
    record_dir: Path | None = None
    ui: bool = True
    # a mic-frame step run before Moshi hears each frame (replaces echo cancellation)
    mic_filter: MicFilter | None = None
    aec: bool = True  # echo cancellation (the mic filter unless `mic_filter` is given)
    noise_suppression: bool = False
    # also record the mic as Moshi heard it (after filtering)
    record_processed: bool = False


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
    audio = DuplexAudio(
        sample_rate=mimi_config.sample_rate,
        frame_size=mimi_config.frame_size,
        input_device=options.input_device,
        output_device=options.output_device,
    )
    stt_checkpoint = None
    companions = ()
    if stt is not None:  # first: the memory check counts it beside Moshi
        stt_checkpoint = resolve_stt_checkpoint(stt, with_mimi=False)  # Moshi's Mimi
        companions = (stt_companion(stt_checkpoint),)
    checkpoint = resolve_checkpoint(request, companions=companions)
    transcriber = None
    with console.status("loading Moshi and warming up…"):
        stt_model = None
        if stt_checkpoint is not None:
            stt_model = load_chat_stt(stt_checkpoint, checkpoint.mimi_config)
        codebooks = stt_model.codebooks if stt_model is not None else None
        engine = load_engine(checkpoint, sampling, alignment, mimi_codebooks=codebooks)
        engine.warmup()
        if stt_model is not None:
            transcriber = user_transcriber(stt_model, engine.frame_seconds)
    with audio:
        echo = None
        # a caller's own filter replaces echo cancellation
        if options.mic_filter is None:
            echo = make_echo_canceller(options, audio.stats(), engine.sample_rate)
        if echo is not None and echo.active:
            console.print(ECHO_HINT, style="yellow", soft_wrap=True)
        elif options.mic_filter is None:
            console.print(HEADPHONES_HINT, style="yellow", soft_wrap=True)
        recorder = (
            Recorder(
                options.record_dir,
                engine.sample_rate,
                engine.frame_size,
                processed=options.record_processed,
                user_words=transcriber is not None,
            )
            if options.record_dir is not None
            else None
        )
        converse(
            engine,
            audio,
            recorder,
            options.ui,
            console,
            options.mic_filter,
            echo,
            transcriber,
        )


def stt_companion(checkpoint: SttCheckpoint) -> CompanionModel:
    """The user transcript's STT model, as the memory check counts it beside Moshi."""
    return CompanionModel(
        "speech-to-text",
        "--user-transcript",
        checkpoint.weight,
        checkpoint.config,
        checkpoint.dtype,
    )


def make_echo_canceller(options: ChatOptions, audio_stats: dict, sample_rate: int):
    """The EchoCanceller the options ask for (None: --aec off, no noise suppression)."""
    if not (options.aec or options.noise_suppression):
        return None
    from ..audio.echo import EchoCanceller, reference_delay_for

    # The played reference of a mic frame is what the speaker had been handed by the
    # time that frame was complete, so its echo reaches the mic about the two device
    # latencies later.
    latency = (audio_stats.get("input_latency_s") or 0.0) + (
        audio_stats.get("output_latency_s") or 0.0
    )
    return EchoCanceller(
        sample_rate,
        noise_suppression=options.noise_suppression,
        echo_cancellation=options.aec,
        reference_delay_ms=reference_delay_for(latency) if options.aec else 0.0,
    )


def converse(
    engine: MoshiEngine,
    audio,
    recorder: Recorder | None,
    ui: bool,
    console: Console,
    mic_filter: MicFilter | None = None,
    echo=None,
    transcriber: LiveTranscriber | None = None,
) -> None:
    """Run the frame loop on started `audio` until stopped; always closes the recording.

    `echo` (an EchoCanceller) becomes the mic filter and shows in the status panel.
    `transcriber` gets the codes of every heard frame and writes the user's words
    into the view and the recording ("user_words").
    """
    state = ChatState(
        engine.frame_seconds,
        engine.context_steps,
        answer_delay_frames=engine.answer_delay_frames,
    )
    loop_audio = audio
    if echo is not None:
        from ..audio.echo import EchoFedAudio

        state.echo = echo
        mic_filter = echo.clean
        loop_audio = EchoFedAudio(audio, echo)  # frames dropped for lag: still cleaned
    if transcriber is not None:
        state.stt = transcriber
    state.recorder = recorder
    plain = None if ui else PlainView(state, lambda line: _print_plain(console, line))
    loop = FrameLoop(
        engine, loop_audio, mic_filter=mic_filter, user_transcriber=transcriber
    )
    stop = threading.Event()
    stopped: LoopStopped | None = None

    def on_frame(event: FrameEvent) -> None:
        state.on_frame(event)
        if plain is not None:
            plain.on_frame(event)
        if recorder is not None:
            raw = event.user_pcm if event.raw_user_pcm is None else event.raw_user_pcm
            recorder.add(
                event.step,
                raw,  # the recording keeps the microphone as it was
                event.moshi_pcm,
                event.text_token,
                event.text,
                event.audio_codes,
                processed_pcm=event.user_pcm,
            )

    def take_user_words() -> None:
        if transcriber is None:
            return
        settled = transcriber.settled_seconds  # first: the words are taken after
        words = transcriber.words()
        state.add_user_words(words, settled)
        if recorder is not None:
            for word in words:
                recorder.add_user_word(word.time, word.text)

    if ui:
        display = _live(ChatView(state), audio, console)
    else:
        display = _plain(plain, audio, console)
    lost: str | None = None  # why the audio stream was lost
    watchdog = CallbackWatchdog()
    try:
        with stop_on_signals(stop), KeyReader() as keys, display as refresh:
            if transcriber is not None:
                transcriber.start()
            loop.start()
            while not stop.is_set() and stopped is None:
                stopped = _drain(loop, on_frame, REFRESH_S)
                take_user_words()
                stats = audio.stats()
                refresh(stats)
                lost = _stream_lost(stats, watchdog)
                if lost is not None or "q" in keys.pressed().lower():
                    stop.set()
            loop.stop(STOP_TIMEOUT_S)
            if stopped is None:  # take in the frames still queued
                stopped = _drain(loop, on_frame, STOP_TIMEOUT_S, until_stopped=True)
            if transcriber is not None:  # the words of the last frames
                transcriber.stop(STOP_TIMEOUT_S)
                take_user_words()
            refresh(audio.stats())
    finally:
        loop.stop(STOP_TIMEOUT_S)
        if transcriber is not None:
            transcriber.stop(STOP_TIMEOUT_S)
            take_user_words()
        if recorder is not None:
            recorder.close()
    if transcriber is not None and transcriber.error is not None:
        _print_plain(console, f"the user transcript stopped early: {transcriber.error}")
    _report(state, recorder, stopped, console, lost)


def _stream_lost(stats: dict, watchdog: CallbackWatchdog) -> str | None:
    """Why the audio stream is gone (stopped, or silent while "active"), or None."""
    if not stats.get("active", True):
        return "a device was disconnected or failed"
    if watchdog.stalled(stats):
        return (
            f"no sound from the devices for {watchdog.limit_s:.0f} s although the "
            "stream runs (a device was disconnected or failed)"
        )
    return None


@contextmanager
def _live(view: ChatView, audio, console: Console) -> Iterator[Callable[[dict], None]]:
    """The rich live screen; yields its refresh function (taking the audio stats)."""
    with Live(view.render(audio.stats()), console=console, auto_refresh=False) as live:
        yield lambda stats: live.update(view.render(stats), refresh=True)


@contextmanager
def _plain(
    view: PlainView, audio, console: Console
) -> Iterator[Callable[[dict], None]]:
    """Plain log lines; yields the function printing the periodic status line."""
    _print_plain(console, f"listening ({QUIT_HINT})")
    try:
        yield view.tick
    finally:
        view.close(audio.stats())


def _print_plain(console: Console, line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _drain(
    loop: FrameLoop,
    on_frame: Callable[[FrameEvent], None],
    timeout: float,
    until_stopped: bool = False,
) -> LoopStopped | None:
    """Handle queued events (waiting up to `timeout` for the first); any LoopStopped."""
    while True:
        try:
            event = loop.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(event, LoopStopped):
            return event
        on_frame(event)
        if not until_stopped:
            timeout = 0.0


def _report(
    state: ChatState,
    recorder: Recorder | None,
    stopped: LoopStopped | None,
    console: Console,
    lost: str | None = None,
) -> None:
    """Say where the recording is; raise on a model crash, lost device or disk error."""
    crashed = stopped is not None and stopped.error is not None
    saved = ""
    if recorder is not None:
        seconds = recorder.seconds_saved
        saved = f"recording saved in {recorder.directory} ({seconds:.1f} s)"
        if recorder.errors:
            saved = f"recording: {'; '.join(recorder.errors)}; {saved}"
        elif not crashed and lost is None:
            _print_plain(console, saved)
    suffix = f"; {saved}" if saved else ""
    if crashed:
        raise MoshiError(
            f"the model stopped after {state.steps} frames: {stopped.error}{suffix}"
        )
    if lost is not None:
        raise AudioError(
            f"the audio stream stopped after {format_time(state.elapsed)}: {lost} "
            f"(see `python cli.py devices`){suffix}"
        )
    if recorder is not None and recorder.errors:
        raise MoshiError(saved)
