"""RingBuffer: wrap-around, exact capacity, overflow/underrun counts, SPSC threads."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from moshi_mlx.audio.ring_buffer import RingBuffer


def ramp(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)


def test_empty_ring():
    rb = RingBuffer(8)
    assert (rb.capacity, rb.available, rb.free) == (8, 0, 8)
    assert rb.read(1) is None
    assert rb.read(0).shape == (0,)
    assert rb.discard(3) == 0
    assert (rb.overflows, rb.underruns) == (0, 0)


@pytest.mark.parametrize("capacity", [0, -4])
def test_capacity_must_be_positive(capacity):
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(capacity)


def test_fill_to_exact_capacity_then_drain():
    rb = RingBuffer(8)
    assert rb.write(ramp(0, 8)) == 8
    assert (rb.available, rb.free, rb.overflows) == (8, 0, 0)
    np.testing.assert_array_equal(rb.read(8), ramp(0, 8))
    assert (rb.available, rb.free) == (0, 8)


def test_overflow_drops_the_newest_and_counts_samples():
    rb = RingBuffer(8)
    assert rb.write(ramp(0, 5)) == 5
    assert rb.write(ramp(5, 6)) == 3
    assert rb.overflows == 3
    assert rb.write(ramp(100, 2)) == 0
    assert rb.overflows == 5
    np.testing.assert_array_equal(rb.read(8), ramp(0, 8))


def test_write_larger_than_capacity():
    rb = RingBuffer(4)
    assert rb.write(ramp(0, 10)) == 4
    assert rb.overflows == 6
    np.testing.assert_array_equal(rb.read(4), ramp(0, 4))


def test_wrap_around_keeps_order():
    rb = RingBuffer(8)
    rb.write(ramp(0, 6))
    np.testing.assert_array_equal(rb.read(5), ramp(0, 5))
    # 1 left at index 5; the next 7 samples wrap past the end of storage.
    assert rb.write(ramp(6, 7)) == 7
    assert rb.available == 8
    np.testing.assert_array_equal(rb.read(8), ramp(5, 8))
    # and many laps later it still reads in order
    expected = 13
    for lap in range(50):
        rb.write(ramp(expected, 3 + lap % 5))
        got = rb.read(rb.available)
        np.testing.assert_array_equal(got, ramp(expected, got.size))
        expected += got.size


def test_read_returns_none_and_consumes_nothing_when_short():
    rb = RingBuffer(8)
    rb.write(ramp(0, 3))
    assert rb.read(4) is None
    assert rb.available == 3
    assert rb.underruns == 0
    np.testing.assert_array_equal(rb.read(3), ramp(0, 3))


def test_read_returns_a_copy():
    rb = RingBuffer(4)
    rb.write(ramp(0, 4))
    first = rb.read(4)
    rb.write(ramp(10, 4))
    np.testing.assert_array_equal(first, ramp(0, 4))


def test_read_into_partial_counts_underrun_samples():
    rb = RingBuffer(8)
    rb.write(ramp(0, 3))
    out = np.full(5, -1.0, dtype=np.float32)
    assert rb.read_into(out) == 3
    np.testing.assert_array_equal(out[:3], ramp(0, 3))
    np.testing.assert_array_equal(out[3:], [-1.0, -1.0])  # caller handles the shortfall
    assert rb.underruns == 2
    assert rb.read_into(out) == 0
    assert rb.underruns == 7
    rb.write(ramp(3, 5))
    assert rb.read_into(out) == 5
    assert rb.underruns == 7


def test_read_into_a_strided_view_across_the_wrap():
    rb = RingBuffer(6)
    rb.write(ramp(0, 4))
    rb.discard(4)
    rb.write(ramp(4, 6))  # starts at index 4, wraps
    out = np.zeros((6, 2), dtype=np.float32)
    assert rb.read_into(out[:, 0]) == 6
    np.testing.assert_array_equal(out[:, 0], ramp(4, 6))
    np.testing.assert_array_equal(out[:, 1], np.zeros(6))


def test_discard_drops_the_oldest():
    rb = RingBuffer(8)
    rb.write(ramp(0, 6))
    assert rb.discard(4) == 4
    assert rb.available == 2
    np.testing.assert_array_equal(rb.read(2), ramp(4, 2))
    rb.write(ramp(6, 3))
    assert rb.discard(10) == 3
    assert rb.discard(-1) == 0
    assert (rb.available, rb.free) == (0, 8)


def test_write_converts_dtype():
    rb = RingBuffer(4)
    rb.write(np.array([0.5, -0.25], dtype=np.float64))
    got = rb.read(2)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [0.5, -0.25])


def test_concurrent_producer_consumer_preserves_the_sequence():
    """A producer and a consumer thread push 100k known samples through 97 slots."""
    total, capacity = 100_000, 97
    rb = RingBuffer(capacity)
    accepted: list[np.ndarray] = []
    received: list[np.ndarray] = []
    shortfall = [0]
    producer_done = threading.Event()
    rng = np.random.default_rng(0)
    chunk_sizes = rng.integers(1, 40, size=total).tolist()
    read_sizes = rng.integers(1, 50, size=total).tolist()

    def produce():
        start = 0
        for i, size in enumerate(chunk_sizes):
            if start >= total:
                break
            chunk = ramp(start, min(size, total - start))
            # First half: paced so it never overflows; second half: only yielding now
            # and then, so what the consumer cannot keep up with is dropped.
            while start < total // 2 and rb.free < chunk.size:
                time.sleep(0)
            n = rb.write(chunk)
            accepted.append(chunk[:n])
            start += chunk.size
            if i % 4 == 0:
                time.sleep(0)
        producer_done.set()

    def consume():
        out = np.empty(64, dtype=np.float32)
        i = 0
        while True:
            finished = producer_done.is_set()
            size = read_sizes[i % len(read_sizes)]
            i += 1
            if i % 3 == 0:
                n = rb.read_into(out[:size])
                received.append(out[:n].copy())
                shortfall[0] += size - n
            else:
                got = rb.read(min(size, capacity))
                if got is not None:
                    received.append(got)
            if finished and rb.available == 0:
                break

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # preempt often, also in the middle of write/read
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(switch_interval)
    assert not any(t.is_alive() for t in threads)

    sent = np.concatenate(accepted)
    got = np.concatenate(received)
    # What was accepted arrives once, in order; everything else was counted as dropped.
    np.testing.assert_array_equal(got, sent)
    assert sent.size + rb.overflows == total
    assert rb.underruns == shortfall[0]
    assert rb.available == 0
    # Samples are unique and increasing: nothing duplicated or reordered.
    assert np.all(np.diff(got) > 0)
    assert got.size >= total // 2
