"""The `transcribe` command's work: a recording's words and their times, written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from ..audio.files import read_audio
from ..errors import AudioError, MoshiError
from ..mimi import MimiStream
from ..stt.checkpoint import (
    SttRequest,
    load_stt,
    load_stt_mimi,
    resolve_stt_checkpoint,
)
from ..stt.file import FileTranscript, transcribe_pcm
from ..stt.stream import SttStep, SttStream
from ..words import word_lines
from .ui import print_plain


def transcribe_file(
    request: SttRequest,
    input_path: Path,
    json_path: Path | None = None,
    console: Console | None = None,
    on_step: Callable[[SttStep, int], None] | None = None,
) -> FileTranscript:
    """Transcribe an audio file (any format soundfile reads), and write its JSON.

    `console` shows the model loading; `on_step(step, total_frames)` reports the
    progress of the transcription.
    """
    console = console or Console(stderr=True)
    # fail before the slow model loading
    if not input_path.is_file():
        raise AudioError(f"audio file not found: {input_path}")
    checkpoint = resolve_stt_checkpoint(request)
    with console.status("loading the speech-to-text model…"):
        model = load_stt(checkpoint)
        mimi = load_stt_mimi(checkpoint, model.codebooks)
    pcm = read_audio(input_path, mimi.config.sample_rate)
    frame_seconds = mimi.frame_size / mimi.config.sample_rate
    stt = SttStream(
        model.lm,
        model.tokenizer,
        frame_seconds,
        lead_seconds=model.config.stt.audio_silence_prefix_seconds,
    )
    result = transcribe_pcm(
        stt, MimiStream(mimi), pcm, mimi.config.sample_rate, on_step
    )
    if json_path is not None:
        _write_json(json_path, result.to_json())
    return result


def _write_json(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise MoshiError(f"cannot write {path}: {exc.strerror or exc}") from None


def print_transcript(result: FileTranscript, console: Console) -> None:
    """The transcript as '[mm:ss.ss] words' lines."""
    for line in word_lines(result.words):
        print_plain(console, line)
