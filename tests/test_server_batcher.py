"""The dynamic batcher on the real encoder: coalescing, padding-optimal calls, priorities,
deadlines, cancellation, a full queue, shutdown."""

from __future__ import annotations

import itertools
import random
import threading
import time

import numpy as np
import pytest

from stilts.errors import ErrorCode, StiltsError
from stilts.server.batcher import BULK, INTERACTIVE, Batcher, plan_groups


def _cost(groups, lengths, overhead):
    return sum(overhead + (e - s) * lengths[s] for s, e in groups)


def test_plan_groups_is_optimal_and_covers_everything():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 8)
        lengths = sorted((rng.randint(1, 60) for _ in range(n)), reverse=True)
        overhead = rng.choice([0, 4, 16, 100])
        groups = plan_groups(lengths, overhead)
        assert groups[0][0] == 0 and groups[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(groups))
        best = min(  # brute force over every set of cut points
            _cost(list(itertools.pairwise([0, *cuts, n])), lengths, overhead)
            for r in range(n)
            for cuts in itertools.combinations(range(1, n), r)
        )
        assert _cost(groups, lengths, overhead) == pytest.approx(best)
    assert plan_groups([], 16) == []
    assert plan_groups([9, 9, 9, 9], 16) == [(0, 4)]  # equal lengths: one call


@pytest.fixture
def batcher(encoder_fp32):
    b = Batcher(encoder_fp32, max_wait_ms=5, max_queue_texts=200).start()
    yield b
    b.stop()


@pytest.fixture
def small(encoder_fp32):
    """4 texts per batch, 20 queued at most; ``BUSY`` keeps its worker busy for a while."""
    b = Batcher(encoder_fp32, max_wait_ms=1, max_batch_size=4, max_queue_texts=20).start()
    yield b
    b.stop()


BUSY = ["occupy the encoder for a moment " * 12] * 4


def test_concurrent_requests_are_coalesced_and_exact(batcher, encoder_fp32):
    texts = [f"request {i}: " + "word " * (i % 7) for i in range(24)]
    out: dict[int, np.ndarray] = {}
    gate = threading.Barrier(len(texts))

    def one(i):
        gate.wait()
        out[i] = batcher.embed([texts[i]])[0][0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert batcher.texts == len(texts)
    assert batcher.batches < len(texts) / 2, "requests were not coalesced"
    want = encoder_fp32.encode(texts)
    np.testing.assert_allclose(np.stack([out[i] for i in range(len(texts))]), want, atol=2e-5)


def test_interactive_jumps_ahead_of_bulk(encoder_fp32):
    b = Batcher(encoder_fp32, max_wait_ms=1, max_batch_size=8).start()
    try:
        bulk = b.submit([f"bulk text {i} " * 3 for i in range(40)], priority=BULK)  # 5 batches
        fast = b.submit(["an interactive query"], priority=INTERACTIVE)
        fast.result(60)
        assert not bulk.done.is_set(), "the interactive job waited for the whole bulk job"
        bulk.result(60)
    finally:
        b.stop()


def test_cancelled_and_expired_jobs_are_not_embedded(small):
    busy = small.submit(BUSY)
    time.sleep(0.02)
    cancelled = small.submit([f"never {i}" for i in range(8)])
    expired = small.submit([f"too late {i}" for i in range(8)], deadline=time.monotonic())
    cancelled.cancel()
    busy.result(60)
    with pytest.raises(StiltsError) as e:
        expired.result(60)
    assert e.value.code == ErrorCode.DEADLINE_EXCEEDED
    with pytest.raises(StiltsError) as e:
        cancelled.result(1)
    assert e.value.code == ErrorCode.UNAVAILABLE
    time.sleep(0.05)
    assert small.texts == len(BUSY)


def test_full_queue_is_resource_exhausted(small):
    busy = small.submit(BUSY)
    time.sleep(0.02)  # the worker holds BUSY; the queue is empty
    jobs = [small.submit([f"t{i}"] * 10) for i in range(2)]
    with pytest.raises(StiltsError) as e:
        small.submit(["one too many"])
    assert e.value.code == ErrorCode.RESOURCE_EXHAUSTED and e.value.field == "texts"
    for j in [busy, *jobs]:
        j.result(60)


def test_result_timeout_cancels(small):
    busy = small.submit(BUSY)
    job = small.submit(["waits"] * 3)
    with pytest.raises(StiltsError) as e:
        job.result(0.001)
    assert e.value.code == ErrorCode.DEADLINE_EXCEEDED and job.cancelled
    busy.result(60)


def test_stop_fails_queued_work_and_refuses_new(encoder_fp32):
    b = Batcher(encoder_fp32, max_wait_ms=1).start()
    b.stop()
    with pytest.raises(StiltsError) as e:
        b.submit(["after stop"])
    assert e.value.code == ErrorCode.UNAVAILABLE
    assert b.embed([])[0].shape == (0, encoder_fp32.dim)  # nothing to do needs no worker


def test_max_batch_tokens_must_fit_the_longest_text(encoder_fp32):
    with pytest.raises(StiltsError) as e:
        Batcher(encoder_fp32, max_batch_tokens=8)
    assert e.value.field == "max_batch_tokens"
