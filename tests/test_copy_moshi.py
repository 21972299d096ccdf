"""The copying Moshi (moshi_mlx.benchmark.copy_moshi) and the click probe's analysis,
offline: what the latency tests and benchmarks/latency.py measure with."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FRAME, RATE, load_tiny_engine

from moshi_mlx.benchmark import click_probe
from moshi_mlx.benchmark.copy_moshi import write_copy_moshi
from moshi_mlx.lm import SamplingSettings
from moshi_mlx.lm.config import LmConfig


@pytest.fixture(scope="module")
def copy_engine(tmp_path_factory, lm_fixtures):
    weight = tmp_path_factory.mktemp("copy") / "copy_moshi.safetensors"
    write_copy_moshi(lm_fixtures / "config.json", weight)
    # default sampling: the copy does not depend on the temperature
    return load_tiny_engine(SamplingSettings(), moshi_weight=weight)


def test_moshi_copies_the_users_semantic_code(copy_engine, lm_fixtures):
    cfg = LmConfig.from_json(lm_fixtures / "config.json")
    rng = np.random.default_rng(0)
    pcm = (0.1 * rng.standard_normal(20 * FRAME)).astype(np.float32)
    copy_engine.reset()
    steps = [copy_engine.step(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(20)]
    assert {s.text_token for s in steps} == {cfg.existing_text_padding_id}
    assert copy_engine.answer_delay_frames == 1
    user = np.array([s.user_codes[0] for s in steps])
    moshi = np.array([s.audio_codes for s in steps[1:]])  # frame t - 1 after step t
    # (the user's first frame is never read: PyTorch's alignment starts with padding)
    np.testing.assert_array_equal(moshi[1:, 0], user[1:-1])
    assert len(set(user)) > 5  # noise: the codes do vary
    np.testing.assert_array_equal(moshi[:, 1:], 0)  # the rest: always code 0


def test_a_click_changes_the_voice_from_its_answer_frame_on(copy_engine):
    """Zero device latency: the answer to mic frame f is played from frame f + 2.
    The probe finds the first change at or a little after the first frame whose
    semantic code changed, and nothing before."""
    run, steps = click_probe.ideal_run(copy_engine, 13.0, seed=3)
    codes = np.array([s.user_codes[0] for s in steps])
    latencies = click_probe.latencies(run)
    assert len(latencies) >= 3 and None not in latencies
    for burst, latency in zip(run.bursts, latencies, strict=True):
        frame = burst // FRAME
        changed = next(
            f for f in range(frame, frame + 4) if codes[f] != codes[frame - 1]
        )
        answer_starts = ((changed + 2) * FRAME - burst) / RATE
        assert answer_starts - 0.003 <= latency <= answer_starts + 0.09
