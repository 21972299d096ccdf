"""`--alignment` on chat, file and bench reaches the LmGen that Moshi runs with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import FRAME, RATE, TINY_FLAGS

import moshi_mlx.audio.duplex
from moshi_mlx.app.engine import MoshiEngine
from moshi_mlx.cli import main
from moshi_mlx.lm import LmGen


class Loaded(Exception):
    """Raised once the engine is built, to stop a command before it does more."""


@pytest.fixture
def alignments(monkeypatch) -> list[str]:
    """The alignment of every LmGen built while the test runs."""
    seen: list[str] = []
    init = LmGen.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append(self.alignment)

    monkeypatch.setattr(LmGen, "__init__", spy)
    return seen


@pytest.fixture
def stop_after_loading(monkeypatch) -> None:
    def warmup(self, *args, **kwargs):
        raise Loaded

    monkeypatch.setattr(MoshiEngine, "warmup", warmup)


@pytest.mark.parametrize(
    "flag,want", [([], "pytorch"), (["--alignment", "mlx"], "mlx")]
)
def test_file_alignment(alignments, tmp_path, flag, want):
    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros(4 * FRAME, np.float32), RATE)
    out = tmp_path / "out.wav"
    assert main(["file", str(wav), str(out), *TINY_FLAGS, *flag]) == 0
    assert alignments == [want] and sf.info(str(out)).frames == 4 * FRAME


def test_chat_alignment(alignments, stop_after_loading, monkeypatch):
    # no sound devices: the chat stops once Moshi is loaded, before they open
    monkeypatch.setattr(moshi_mlx.audio.duplex, "DuplexAudio", lambda *a, **k: None)
    with pytest.raises(Loaded):
        main(["chat", *TINY_FLAGS, "--no-ui", "--alignment", "mlx"])
    assert alignments == ["mlx"]


def test_bench_alignment(alignments, tmp_path):
    wav, out = tmp_path / "clip.wav", tmp_path / "bench.json"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 3 * FRAME), RATE)
    args = ["bench", *TINY_FLAGS, "--levels", "bf16", "--warmup", "0", "--wav", wav]
    assert main([*map(str, args), "--alignment", "mlx", "--json", str(out)]) == 0
    # the float reference, then the level's timed run and its teacher-forced replay
    assert alignments == ["mlx"] * 3
    assert json.loads(out.read_text())["sampling"]["alignment"] == "mlx"


def test_bad_alignment_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["file", "in.wav", "out.wav", "--alignment", "torch"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --alignment: invalid choice: 'torch'" in err
    assert "'pytorch', 'mlx'" in err
