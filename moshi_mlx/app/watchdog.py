"""Noticing a dead audio device that still reports its stream as running.

Some drivers (CoreAudio when a device goes away) keep the PortAudio stream "active"
but stop calling back: the meters freeze and nothing is heard. The watchdog reads the
streams' callback counters (microphone and speaker) from its stats on every pass
of the chat's main loop.

A machine that keeps its audio on time calls back every few tens of milliseconds, so
a second without a callback means a dead device. A heavily loaded machine can hold
the audio thread up for a second or more now and then (the sound server itself
waits for a CPU); so the silence must also last GAP_FACTOR times the longest wait
seen while the stream was alive, and span MIN_CHECKS checks (a process the machine
did not run at all, or that was suspended, misses its checks too: such a wait is not
the audio's and is not counted). Sound servers may also hold a new stream for a second
or two before its callbacks flow evenly (PulseAudio on an idle sink does), so until
the callbacks have run for STARTUP_S only a silence of STARTUP_SILENCE_S counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..audio.stats import AudioStats

# no audio callback for this long: the device is dead
SILENCE_S = 1.0
GAP_FACTOR = 3.0
MIN_CHECKS = 5
# checks further apart than this: the process itself did not run in between
CHECK_GAP_S = 0.5
# a new stream is trusted to call back evenly once it has run this long
STARTUP_S = 3.0
STARTUP_SILENCE_S = 5.0


class CallbackWatchdog:
    """`stalled(stats)` is True once either stream's callback count stopped advancing
    (the microphone's or the speaker's: either device may be the one that went)."""

    def __init__(
        self,
        silence_s: float = SILENCE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.silence_s = silence_s
        self._streams = (_Callbacks(silence_s, clock), _Callbacks(silence_s, clock))
        self._stalled: _Callbacks | None = None

    @property
    def limit_s(self) -> float:
        """How long a silence must last to count as a dead device, now (the stalled
        stream's once one stalled, else the longest of the streams counted)."""
        if self._stalled is not None:
            return self._stalled.limit_s
        counted = [s.limit_s for s in self._streams if s.counted]
        return max(counted, default=self._streams[0].limit_s)

    def stalled(self, stats: AudioStats) -> bool:
        """Check the audio stats; a stream without a callback count never stalls."""
        counts = (stats.input_callbacks, stats.output_callbacks)
        stalled = [
            stream
            for stream, count in zip(self._streams, counts, strict=True)
            if count is not None and stream.stalled(count)
        ]
        if stalled:
            self._stalled = stalled[0]
        return bool(stalled)


class _Callbacks:
    """One stream's callback count: when it last advanced, and the silence allowed."""

    def __init__(self, silence_s: float, clock: Callable[[], float]) -> None:
        self.silence_s = silence_s
        self._clock = clock
        self._count: int | None = None
        self._since = 0.0
        self._checks = 0
        self._last_check = 0.0
        # since the last callback
        self._missed_checks = False
        self._longest_gap = 0.0
        self._first_callback: float | None = None
        self._started = False

    @property
    def counted(self) -> bool:
        """A count has been seen."""
        return self._count is not None

    @property
    def limit_s(self) -> float:
        """How long a silence must last to count as a dead device, now."""
        limit = max(self.silence_s, GAP_FACTOR * self._longest_gap)
        return limit if self._started else max(limit, STARTUP_SILENCE_S)

    def stalled(self, count: int) -> bool:
        """Take in the count now; True once it has not moved for `limit_s`."""
        now = self._clock()
        self._missed_checks |= now - self._last_check > CHECK_GAP_S
        self._last_check = now
        if count != self._count:
            if self._count is not None and not self._missed_checks:
                self._longest_gap = max(self._longest_gap, now - self._since)
            if self._count is not None and self._first_callback is None:
                self._first_callback = now
            if self._first_callback is not None:
                self._started |= now - self._first_callback >= STARTUP_S
            self._count, self._since, self._checks = count, now, 0
            self._missed_checks = False
            return False
        self._checks += 1
        return self._checks >= MIN_CHECKS and now - self._since >= self.limit_s
