"""Helpers shared by the tests: fixture paths and frames, the fixture models, the CLI.

Test modules import from here (and get fixtures from conftest.py), never from another
test module.
"""

from __future__ import annotations  # noqa: I001

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

# first, so that MLX uses the system OpenBLAS as the app does (moshi_mlx/blas.py)
import moshi_mlx  # noqa: F401
import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.app.engine import MoshiEngine, load_engine
from moshi_mlx.lm import SamplingSettings
from moshi_mlx.checkpoints import WeightRequest, resolve_checkpoint
from moshi_mlx.mimi import MimiStream
from moshi_mlx.stt import (
    SttRequest,
    SttStream,
    load_stt,
    load_stt_mimi,
    resolve_stt_checkpoint,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def _mimi_frames(config_name: str) -> tuple[int, int]:
    """(sample rate, samples per frame) of a Mimi config in tests/fixtures/mimi."""
    config = json.loads((FIXTURES / "mimi" / config_name).read_text())
    return config["sample_rate"], round(config["sample_rate"] / config["frame_rate"])


# Mimi's frames, as the app passes them: the small fixture Mimi's are the official ones
RATE, FRAME = _mimi_frames("mimi_small.json")
assert _mimi_frames("mimi_official.json") == (RATE, FRAME)
FRAME_S = FRAME / RATE

GREEDY = SamplingSettings(text_temperature=0, audio_temperature=0)
TINY_FLAGS = [
    "--moshi-weight", str(FIXTURES / "lm" / "model.safetensors"),
    "--lm-config", str(FIXTURES / "lm" / "config.json"),
    "--tokenizer", str(FIXTURES / "lm" / "tokenizer.model"),
    "--mimi-weight", str(FIXTURES / "mimi" / "mimi_small.safetensors"),
    "--mimi-config", str(FIXTURES / "mimi" / "mimi_small.json"),
]  # fmt: skip
# steps in the LM goldens (tests/fixtures/lm/ref*.safetensors)
LM_GOLDEN_STEPS = 24
# `chat` model loading + warm-up on a busy 2-core machine
START_TIMEOUT_S = 90


def tiny_request(**changes) -> WeightRequest:
    """The fixture Moshi (small Mimi + small LM) as local overrides."""
    lm, mimi = FIXTURES / "lm", FIXTURES / "mimi"
    fields = {
        "moshi_weight": lm / "model.safetensors",
        "lm_config": lm / "config.json",
        "tokenizer": lm / "tokenizer.model",
        "mimi_weight": mimi / "mimi_small.safetensors",
        "mimi_config": mimi / "mimi_small.json",
        "offline": True,
    }
    return WeightRequest(**{**fields, **changes})


def load_tiny_engine(
    sampling: SamplingSettings = GREEDY,
    mimi_codebooks: int | None = None,
    **changes,
) -> MoshiEngine:
    """A freshly loaded fixture Moshi (`changes` as in tiny_request)."""
    checkpoint = resolve_checkpoint(tiny_request(**changes))
    return load_engine(checkpoint, sampling, mimi_codebooks=mimi_codebooks)


def fixture_request(**changes) -> SttRequest:
    """The fixture STT (config + files beside it) with the small Mimi, float32 compute."""
    fields = {
        "config": FIXTURES / "stt" / "config.json",
        "mimi_weight": FIXTURES / "mimi" / "mimi_small.safetensors",
        "mimi_config": FIXTURES / "mimi" / "mimi_small.json",
        "offline": True,
        "dtype": "float32",
    }
    return SttRequest(**{**fields, **changes})


def stt_words(frames: Iterable[np.ndarray]) -> list[dict]:
    """The fixture STT (bfloat16) run directly on the small Mimi's codes of `frames`."""
    checkpoint = resolve_stt_checkpoint(fixture_request(dtype="bfloat16"))
    model = load_stt(checkpoint)
    mimi = MimiStream(load_stt_mimi(checkpoint, model.codebooks))
    stt = SttStream(model.lm, model.tokenizer, FRAME_S)
    words = []
    for frame in frames:
        words += stt.step(mimi.encode(mx.array(frame))[0]).words
    return [w.to_json() for w in words + stt.flush()]


def espeak_clip() -> np.ndarray:
    """1.52 s of espeak speech at RATE: the Mimi fixture's input, (samples,) float32."""
    pcm = mx.load(str(FIXTURES / "mimi" / "mimi_small_ref.safetensors"))["pcm"]
    return np.array(pcm).reshape(-1)


def run_cli(
    *args, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`python cli.py ARGS` in the repository root (`env`: the whole environment,
    None to inherit this one), its output captured as text."""
    return subprocess.run(
        [sys.executable, "cli.py", *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The one line a CLI run failing on a user error prints: exit status 2, that one
    line on stderr ("error: ..."), no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def recover_with_cli(directory: Path) -> str:
    """`cli.py recover DIR`, which must succeed; its output."""
    result = run_cli("recover", directory, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


class App:
    """`cli.py chat --no-ui` on the fixture Moshi as a subprocess, its stdout read line
    by line meanwhile."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "cli.py", "chat", "--no-ui", *args, *TINY_FLAGS],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float) -> None:
        """Read stdout until a line starting with `prefix` (the test fails after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                pytest.fail(f"no {prefix!r} line; stderr: {self.process.stderr.read()}")
            self.stdout.append(line)
            if line.startswith(prefix):
                return

    def finish(self, timeout: float = 30) -> tuple[int, list[str], str]:
        """Wait for the exit: its status, every stdout line, the stderr."""
        code = self.process.wait(timeout)
        stderr = self.process.stderr.read()
        # let the reader thread take the last lines
        time.sleep(0.1)
        while not self.lines.empty():
            self.stdout.append(self.lines.get())
        return code, self.stdout, stderr


def teacher_forced(model, ref) -> dict[str, np.ndarray]:
    """Run the model on the golden inputs/tokens; return its float outputs per step."""
    cache = model.make_cache(1)
    outs, text, audio = [], [], []
    for t in range(LM_GOLDEN_STEPS):
        h = model.temporal(
            ref["model_input_text"][t : t + 1],
            ref["model_input_audio"][t : t + 1],
            cache,
        )
        forced = mx.concatenate(
            [ref["text_tokens"][t : t + 1], ref["audio_tokens_raw"][t, :-1]]
        )
        outs.append(h.astype(mx.float32))
        text.append(model.text_logits(h))
        audio.append(model.depformer_logits(h, forced[None]))
    return {
        "transformer_out": np.array(mx.concatenate(outs)),
        "text_logits": np.array(mx.concatenate(text)),
        "audio_logits": np.array(mx.concatenate(audio)),
    }
