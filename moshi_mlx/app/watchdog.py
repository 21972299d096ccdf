"""Noticing a dead audio device that still reports its stream as running.

Some drivers (CoreAudio when a device goes away) keep the PortAudio stream "active"
but stop calling back: the meters freeze and nothing is heard. The watchdog reads the
stream's callback counter from its stats on every pass of the chat's main loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SILENCE_S = 1.0  # no audio callback for this long: the device is dead
# ... seen by at least this many checks, so that a process the machine did not run
# for a second (a busy CPU stops the callbacks and the checks alike) is not taken
# for a dead device
MIN_CHECKS = 5


class CallbackWatchdog:
    """`stalled(stats)` is True once `stats["callbacks"]` stopped advancing."""

    def __init__(
        self,
        silence_s: float = SILENCE_S,
        min_checks: int = MIN_CHECKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.silence_s = silence_s
        self.min_checks = min_checks
        self._clock = clock
        self._count: int | None = None
        self._since = 0.0
        self._checks = 0

    def stalled(self, stats: dict) -> bool:
        """Check the audio stats; a source without a callback count never stalls."""
        count = stats.get("callbacks")
        if count is None:
            return False
        now = self._clock()
        if count != self._count:
            self._count, self._since, self._checks = count, now, 0
            return False
        self._checks += 1
        return self._checks >= self.min_checks and now - self._since >= self.silence_s
