"""A fixed-capacity single-producer single-consumer ring buffer of float32 samples.

The producer (e.g. a sounddevice callback) only calls `write`; the consumer only calls
`read_into`, `read` and `discard`. Each side advances only its own position counter,
after copying the samples, so neither side ever takes a lock or waits: under the GIL
the consumer sees a sample only once it has been fully written. Storage is allocated
once; `write` and `read_into` copy into / out of it without allocating buffers.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """SPSC float32 ring: what does not fit is dropped and counted; nothing blocks."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"ring buffer capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, dtype=np.float32)
        # Total samples ever written / consumed; only the producer moves _written and
        # only the consumer moves _consumed, so `_written - _consumed` is the fill.
        self._written = 0
        self._consumed = 0
        self.overflows = 0  # samples dropped by `write` because the ring was full
        self.underruns = 0  # samples `read_into` could not provide

    @property
    def available(self) -> int:
        """Samples ready to read."""
        return self._written - self._consumed

    @property
    def written(self) -> int:
        """Samples written since the ring was made (what was dropped not counted)."""
        return self._written

    @property
    def consumed(self) -> int:
        """Samples read or discarded since the ring was made."""
        return self._consumed

    @property
    def free(self) -> int:
        """Samples that can be written without dropping any."""
        return self.capacity - self.available

    def write(self, samples: np.ndarray) -> int:
        """Producer: append what fits of 1-D `samples`; the rest adds to `overflows`."""
        count = samples.shape[0]
        written = self._written
        n = min(count, self.capacity - (written - self._consumed))
        if n > 0:
            start = written % self.capacity
            first = min(n, self.capacity - start)
            np.copyto(self._data[start : start + first], samples[:first])
            if n > first:
                np.copyto(self._data[: n - first], samples[first:n])
            self._written = written + n
        if n < count:
            self.overflows += count - n
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Consumer: fill `out[:n]` with the oldest samples; shortfall: `underruns`."""
        wanted = out.shape[0]
        n = self._copy_out(out, wanted)
        if n < wanted:
            self.underruns += wanted - n
        return n

    def read(self, n: int) -> np.ndarray | None:
        """Consumer: exactly `n` samples as a new array, or None (consuming nothing)."""
        if self.available < n:
            return None
        out = np.empty(n, dtype=np.float32)
        self._copy_out(out, n)
        return out

    def discard(self, n: int) -> int:
        """Consumer: drop up to `n` of the oldest samples; returns how many."""
        n = max(0, min(n, self.available))
        self._consumed += n
        return n

    def _copy_out(self, out: np.ndarray, wanted: int) -> int:
        consumed = self._consumed
        n = min(wanted, self._written - consumed)
        if n > 0:
            start = consumed % self.capacity
            first = min(n, self.capacity - start)
            np.copyto(out[:first], self._data[start : start + first])
            if n > first:
                np.copyto(out[first:n], self._data[: n - first])
            self._consumed = consumed + n
        return n
