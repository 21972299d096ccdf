"""How far ahead of the speaker each new frame is queued: an adaptive cushion.

The frame loop writes one model frame per step, each at its own lateness (from the
moment its microphone frame was complete to the write: the wait, the mic filter and
the model step), while the speaker drains the queue one device period at a time. A
frame's first sample plays after its lateness plus what is queued ahead of it; the
cushion is the part of that beyond the usual (median) lateness: too little and a
step slower than usual leaves the speaker dry (an underrun), too much and every word
comes later. As in WebRTC's NetEQ, its target follows measurements:

    cushion = one device period + (p98 - p50 of the lateness over the last 10 s)
              + the output resampler's unevenness + 2 ms + growth, bounded

Each write that finds new underruns adds a device period of growth (counted); 10 s
without one takes a period back. Until 2 s of steps have been measured (the first
steps after the streams open are the least regular) the target is at least 40 ms. `plan` then holds every frame to

    lateness + queued = median lateness + cushion:

- the queue (nearly) ran dry: silence is put before the frame to restore it (or a
  period, if this frame is later than that already);
- more than half a frame too much for 3 writes in a row, or a frame and a half once
  (the loop caught up in a burst after a stall): the excess is skipped, oldest audio
  first, so latency is back on target with the next period played (a speaker whose
  callbacks come in bursts for a moment is left alone);
- more than a period too much for 2 s (the cushion shrank, steps got faster): the
  excess is trimmed off the start of the next quiet frame, or after another 4 s
  skipped regardless.

Pure bookkeeping in samples: the caller passes queue levels and the lateness it
measured, so the behaviour is deterministic under test.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

WINDOW_FRAMES = 125  # 10 s of 80 ms frames behind the jitter estimate
JITTER_QUANTILE = 98  # the lateness the cushion covers, beyond the median
MARGIN_S = 0.002
STEADY_FRAMES = 125  # 10 s without an underrun gives one period of growth back
LATE_FRAMES = 3  # writes over half a frame late in a row before they are skipped
EXCESS_FRAMES = 25  # 2 s beyond the target before the excess is trimmed
PATIENCE_FRAMES = 75  # after 6 s beyond it, skipped even if no frame was quiet
START_FRAMES = 25  # steps measured before the jitter alone sizes the target
START_S = 0.04  # the least target until then


def cushion_target(
    lateness_s, period: int, rate: int, minimum: int, maximum: int, burst: int = 0
) -> tuple[int, int]:
    """(target, jitter) in samples for these latenesses (seconds), before growth.

    The formula of the module docstring; also what `cli.py latency` expects for a
    model whose step times it measured.
    """
    jitter = 0
    if len(lateness_s):
        late = np.asarray(lateness_s, dtype=np.float64)
        jitter = round((np.percentile(late, JITTER_QUANTILE) - np.median(late)) * rate)
    base = period + jitter + burst + round(MARGIN_S * rate)
    return int(min(maximum, max(minimum, base))), jitter


@dataclass(frozen=True)
class CushionPlan:
    """For one frame written: silence before it, samples dropped from its start, or
    samples to skip at the front of the queue (the oldest, by the speaker)."""

    pad: int = 0
    trim: int = 0
    skip: int = 0


class OutputCushion:
    """The speaker cushion's adaptive target (device samples) and each write's plan.

    Args:
        period: the device period (samples per speaker callback).
        rate: the device rate (samples per second).
        minimum, maximum: bounds of the target, in samples.
    """

    def __init__(self, period: int, rate: int, minimum: int, maximum: int) -> None:
        if not 0 <= minimum <= maximum:
            raise ValueError("cushion bounds must satisfy 0 <= minimum <= maximum")
        self.period = period
        self.rate = rate
        self.minimum = minimum
        self.maximum = maximum
        self._lateness: deque[float] = deque(maxlen=WINDOW_FRAMES)
        self._deviations: deque[int] = deque(maxlen=WINDOW_FRAMES)
        self._underruns = 0
        self._steady = 0
        self._over = 0  # consecutive writes beyond target + a period
        self._late = 0  # consecutive writes over half a frame beyond it
        self._least_excess = 0
        self.growth = 0  # samples added after underruns
        self.jitter = 0  # p98 - p50 of the lateness, samples
        self.burst = 0  # how unevenly the resampler delivers frames, samples
        self.target = self._bounded(period)
        self.grown = 0  # times an underrun grew the target
        self.padded = 0  # samples of silence put before frames
        self.trimmed = 0  # samples dropped to shrink the queue back to target
        self.skipped = 0  # samples of late audio skipped after stalls

    def plan(
        self,
        queued: int,
        lateness_s: float | None,
        frame: int,
        underruns: int = 0,
        deviation: int = 0,
        quiet: bool = False,
    ) -> CushionPlan:
        """What to do with the frame being written.

        Args:
            queued: samples still queued for the speaker ahead of this frame.
            lateness_s: seconds from its microphone frame being complete to now
                (None: not known, e.g. a frame written without one read).
            frame: the length of this frame (samples).
            underruns: the speaker's underrun count so far (growth on new ones).
            deviation: the samples written so far minus whole frames' worth (a
                resampler's output lags and bursts; its range is what counts).
            quiet: the frame is near silence (trimming it is inaudible).
        """
        if lateness_s is not None:
            self._lateness.append(lateness_s)
        self._deviations.append(deviation)
        self._adapt(underruns)
        excess = self._excess(queued, lateness_s)
        # dry, or will be within this period
        if queued < self.period:
            return self._refill(queued, excess)
        self._late = self._late + 1 if excess > frame // 2 else 0
        if self._late >= LATE_FRAMES or excess > frame + frame // 2:
            return self._skip_late(queued, excess, frame)
        return self._shrink(excess, frame, quiet)

    def _excess(self, queued: int, lateness_s: float | None) -> int:
        """Samples queued beyond the target, counting this frame's lateness against
        the median lateness."""
        excess = queued - self.target
        if lateness_s is not None:
            excess += round((lateness_s - np.median(self._lateness)) * self.rate)
        return excess

    def _refill(self, queued: int, excess: int) -> CushionPlan:
        """The queue (nearly) ran dry: pad with silence back up to the cushion."""
        self._over = self._late = 0
        pad = max(self.period - queued, -excess)
        self.padded += pad
        return CushionPlan(pad=pad)

    def _skip_late(self, queued: int, excess: int, frame: int) -> CushionPlan:
        """Audio is late (after a stall): skip the excess at once."""
        self._over = self._late = 0
        skip = min(excess, queued + frame)
        self.skipped += skip
        return CushionPlan(skip=skip)

    def _shrink(self, excess: int, frame: int, quiet: bool) -> CushionPlan:
        """A queue held above target for a while shrinks by its least excess over
        that while: trimmed from a quiet frame, else skipped."""
        if excess <= self.period:
            self._over = 0
            return CushionPlan()
        self._least_excess = (
            excess if self._over == 0 else min(self._least_excess, excess)
        )
        self._over += 1
        if self._over < EXCESS_FRAMES or not (quiet or self._over >= PATIENCE_FRAMES):
            return CushionPlan()
        self._over = 0
        self.trimmed += self._least_excess
        if quiet:
            return CushionPlan(trim=min(self._least_excess, frame))
        return CushionPlan(skip=self._least_excess)

    def _adapt(self, underruns: int) -> None:
        if underruns > self._underruns:
            self._underruns = underruns
            self.growth = min(self.growth + self.period, self.maximum)
            self.grown += 1
            self._steady = 0
        else:
            self._steady += 1
            if self._steady >= STEADY_FRAMES and self.growth:
                self.growth = max(0, self.growth - self.period)
                self._steady = 0
        self.burst = max(self._deviations) - min(self._deviations)
        base, self.jitter = cushion_target(
            self._lateness, self.period, self.rate, 0, self.maximum, self.burst
        )
        if len(self._lateness) < START_FRAMES:
            base = max(base, round(START_S * self.rate))
        self.target = self._bounded(base + self.growth)

    def _bounded(self, samples: int) -> int:
        return int(min(self.maximum, max(self.minimum, samples)))
