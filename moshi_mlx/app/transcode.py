"""The `codec` command's work: an audio file streamed through Mimi, and written back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..audio.files import read_audio, write_audio
from ..checkpoints import official_mimi_file
from ..errors import MoshiError
from ..mimi import MimiConfig, open_mimi
from ..mimi.transcode import Transcoded, transcode


def transcode_file(
    source: Path,
    target: Path,
    weight: Path | None = None,
    config: Path | None = None,
    num_codebooks: int | None = None,
    codes_path: Path | None = None,
    offline: bool = False,
    on_frame: Callable[[int, int], None] | None = None,
) -> Transcoded:
    """Read any WAV/FLAC, stream it through Mimi, write the reconstruction (and the codes)."""
    cfg = MimiConfig.from_json_or_official(config)
    pcm = read_audio(source, cfg.sample_rate)
    mimi = open_mimi(weight or official_mimi_file(offline), cfg, num_codebooks)
    result = transcode(mimi, pcm, on_frame)
    write_audio(target, result.pcm, mimi.config.sample_rate)
    if codes_path:
        try:
            codes_path.parent.mkdir(parents=True, exist_ok=True)
            with open(codes_path, "wb") as f:
                np.save(f, result.codes)
        except OSError as exc:
            raise MoshiError(
                f"cannot write codes to {codes_path}: {exc.strerror or exc}"
            ) from None
    return result
