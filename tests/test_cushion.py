"""The adaptive speaker cushion, on made-up lateness and queue levels (no clock)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FRAME, RATE

from moshi_mlx.audio import cushion as cushion_module
from moshi_mlx.audio.cushion import CushionPlan, OutputCushion, cushion_target

PERIOD = 240
MARGIN = round(cushion_module.MARGIN_S * RATE)


def make(minimum=PERIOD, maximum=RATE // 5) -> OutputCushion:
    return OutputCushion(PERIOD, RATE, minimum, maximum)


def settled(cushion: OutputCushion, lateness: float = 0.02) -> OutputCushion:
    """Past the start, where the target is at least START_S: steady 20 ms steps."""
    for _ in range(cushion_module.START_FRAMES + 1):  # the last one on the new target
        cushion.plan(cushion.target, lateness, FRAME)
    return cushion


def steady(cushion: OutputCushion, lateness: list[float], start_queue: int) -> list:
    """Writes in real time: each frame finds what the speaker left of the last."""
    plans, queued = [], start_queue
    for late in lateness:
        plan = cushion.plan(queued, late, FRAME)
        plans.append(plan)
        queued = max(0, queued + plan.pad - plan.skip)
    return plans


def test_target_follows_the_step_jitter():
    cushion = make()
    rng = np.random.default_rng(0)
    # steps of 20 ms, 5 ms of jitter either way
    late = 0.020 + rng.uniform(-0.005, 0.005, 200)
    for lateness in late:
        cushion.plan(cushion.target, float(lateness), FRAME)
    jitter = np.percentile(late[-125:], 98) - np.median(late[-125:])
    assert cushion.jitter == round(jitter * RATE)
    assert cushion.target == PERIOD + cushion.jitter + MARGIN
    assert cushion.grown == cushion.padded == cushion.trimmed == cushion.skipped == 0


def test_the_formula_is_bounded():
    assert cushion_target([0.02] * 10, PERIOD, RATE, 0, 10_000) == (PERIOD + MARGIN, 0)
    assert cushion_target([0.0, 1.0] * 10, PERIOD, RATE, 0, 2400)[0] == 2400
    assert cushion_target([], PERIOD, RATE, 600, 2400) == (600, 0)


def test_a_dry_queue_is_refilled_to_the_target_phased_by_lateness():
    cushion = settled(make(minimum=4 * PERIOD))  # a 40 ms target
    target = cushion.target
    assert target == 4 * PERIOD
    assert cushion.plan(0, 0.020, FRAME) == CushionPlan(pad=target)
    # a frame 5 ms later than usual: the following ones will be 5 ms earlier
    assert cushion.plan(0, 0.025, FRAME) == CushionPlan(pad=target - 120)
    # very late: at least a period is queued
    assert cushion.plan(0, 0.500, FRAME) == CushionPlan(pad=PERIOD)
    plan = cushion.plan(100, 0.020, FRAME)
    assert plan == CushionPlan(pad=cushion.target - 100)


def test_underruns_grow_the_target_and_steady_time_shrinks_it(monkeypatch):
    cushion = settled(make())
    base = cushion.target
    for underruns in (3, 3, 7, 9):  # three writes found new underruns
        cushion.plan(0, 0.02, FRAME, underruns=underruns)
    assert cushion.grown == 3 and cushion.growth == 3 * PERIOD
    assert cushion.target == base + 3 * PERIOD
    for _ in range(cushion_module.STEADY_FRAMES):
        cushion.plan(cushion.target, 0.02, FRAME, underruns=9)
    assert cushion.growth == 2 * PERIOD  # one period back per 10 s without underruns
    for _ in range(2 * cushion_module.STEADY_FRAMES):
        cushion.plan(cushion.target, 0.02, FRAME, underruns=9)
    assert cushion.growth == 0 and cushion.target == base


def test_growth_stops_at_the_maximum():
    cushion = make(maximum=4 * PERIOD)
    for underruns in range(1, 20):
        cushion.plan(0, 0.02, FRAME, underruns=underruns)
    assert cushion.target == 4 * PERIOD


def test_late_audio_after_a_stall_is_skipped_down_to_the_target():
    cushion = settled(make())
    target = cushion.target
    # the loop caught up: two frames more than usual are queued
    assert cushion.plan(target + 2 * FRAME, 0.02, FRAME) == CushionPlan(skip=2 * FRAME)
    # half a frame too much: left alone for two writes (a burst of callbacks), then
    # skipped
    late = target + FRAME // 2 + 10
    assert cushion.plan(late, 0.02, FRAME) == CushionPlan()
    assert cushion.plan(late, 0.02, FRAME) == CushionPlan()
    assert cushion.plan(late, 0.02, FRAME) == CushionPlan(skip=FRAME // 2 + 10)
    # a frame written later than usual with the queue short by as much is on time
    assert cushion.plan(target - 48, 0.022, FRAME) == CushionPlan()
    assert cushion.skipped == 2 * FRAME + FRAME // 2 + 10


@pytest.mark.parametrize("quiet", [True, False])
def test_a_lasting_small_excess_is_trimmed(quiet):
    cushion = settled(make())
    excess = 3 * PERIOD  # the cushion was larger before; now a period is enough
    queued = cushion.target + excess
    waited = cushion_module.EXCESS_FRAMES if quiet else cushion_module.PATIENCE_FRAMES
    plans = [cushion.plan(queued, 0.02, FRAME, quiet=quiet) for _ in range(waited)]
    assert all(plan == CushionPlan() for plan in plans[:-1])
    # quiet frames lose their start; otherwise the oldest audio is skipped
    expected = CushionPlan(trim=excess) if quiet else CushionPlan(skip=excess)
    assert plans[-1] == expected and cushion.trimmed == excess


def test_resampler_bursts_widen_the_cushion():
    cushion = make()
    # a resampler that delivers frames 100 samples short, then 100 long, in turn
    for k in range(2 * cushion_module.START_FRAMES):
        cushion.plan(cushion.target, 0.02, FRAME, deviation=-100 * (k % 2))
    assert cushion.burst == 100
    assert cushion.target == PERIOD + 100 + MARGIN


def test_the_start_is_cautious_then_steady_writes_change_nothing():
    cushion = make()
    assert cushion.plan(0, 0.02, FRAME).pad == round(cushion_module.START_S * RATE)
    cushion = settled(make())
    plans = steady(cushion, [0.02] * 50, 0)
    assert plans[0].pad == cushion.target == PERIOD + MARGIN
    assert all(plan == CushionPlan() for plan in plans[1:])


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="cushion bounds"):
        OutputCushion(PERIOD, RATE, 500, 100)
