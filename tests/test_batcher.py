"""Dynamic batching: concurrent submits become one true batched forward, answers stay in order.
Uses a real (small) model through the real Predictor; no mocks.
"""
from __future__ import annotations

import threading

import torch

from conftest import CountingPredictor
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.predictor import Predictor
from flower_classifier.serving.batcher import Batcher, os_thread_names


def make(small_model_dir, max_batch=8, delay_ms=50.0):
    predictor = CountingPredictor(load_classifier(small_model_dir), torch.device("cpu"), "fp32")
    return predictor, Batcher(predictor, max_batch, delay_ms)


def test_concurrent_requests_share_one_forward_and_match_single_results(small_model_dir):
    predictor, batcher = make(small_model_dir)
    inputs = [torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(i))
              for i in range(6)]
    futures = [batcher.submit(x) for x in inputs]
    predictor.release.set()
    results = [f.result(timeout=60) for f in futures]
    assert predictor.sizes == [6]  # one true batch, not six batch-1 forwards
    for x, result in zip(inputs, results, strict=True):
        assert torch.allclose(result, predictor.forward(x), atol=1e-5)


def test_batches_never_exceed_max_and_multi_image_requests_stay_whole(small_model_dir):
    predictor, batcher = make(small_model_dir, max_batch=4, delay_ms=20)
    futures = [batcher.submit(torch.randn(n, 3, 224, 224)) for n in (3, 3, 5)]
    predictor.release.set()
    shapes = [f.result(timeout=60).shape for f in futures]
    assert shapes == [(3, 102), (3, 102), (5, 102)]
    assert max(predictor.sizes) <= 4 and sum(predictor.sizes) == 11


def test_a_failed_forward_fails_its_requests_and_the_next_batch_works(small_model_dir):
    predictor, batcher = make(small_model_dir, delay_ms=0)
    predictor.release.set()
    bad = batcher.submit(torch.randn(1, 5, 224, 224))  # wrong channel count
    try:
        bad.result(timeout=60)
        raise AssertionError("expected an error")
    except Exception as error:  # noqa: BLE001
        assert type(error).__name__ == "InferenceFailed" and "Traceback" not in str(error)
    assert batcher.submit(torch.randn(1, 3, 224, 224)).result(timeout=60).shape == (1, 102)


def test_cancelled_requests_are_skipped(small_model_dir):
    predictor, batcher = make(small_model_dir, delay_ms=0)
    first = batcher.submit(torch.randn(1, 3, 224, 224))
    second = batcher.submit(torch.randn(1, 3, 224, 224))
    assert second.cancel() or second.running()
    predictor.release.set()
    assert first.result(timeout=60).shape == (1, 102)


class MeetingPredictor(Predictor):
    """The real predictor, whose forwards must meet in groups of `parties`: with 2 it only
    answers if two lanes are inside forward() at the same time. Records each forward's torch
    thread count."""

    def __init__(self, *args, parties: int = 2):
        super().__init__(*args)
        self.meeting = threading.Barrier(parties, timeout=30)
        self.threads: list[int] = []

    def forward(self, batch):
        self.meeting.wait()
        self.threads.append(torch.get_num_threads())
        return super().forward(batch)


def test_lanes_run_forwards_side_by_side_on_their_own_threads(small_model_dir):
    predictor = MeetingPredictor(load_classifier(small_model_dir), torch.device("cpu"), "fp32")
    batcher = Batcher(predictor, max_batch=2, max_delay_ms=20, lanes=2, torch_threads=1)
    inputs = [torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(i))
              for i in range(4)]
    futures = [batcher.submit(x) for x in inputs]
    results = [f.result(timeout=60) for f in futures]
    assert predictor.threads == [1, 1, 1, 1] and batcher.batches == 4 and batcher.images == 8
    assert len({thread.name for thread in batcher._lane_threads}) == 2
    for x, result in zip(inputs, results, strict=True):
        assert torch.allclose(result, Predictor.forward(predictor, x), atol=1e-5)


def test_a_lone_request_gets_every_lanes_threads(small_model_dir):
    predictor = MeetingPredictor(load_classifier(small_model_dir), torch.device("cpu"), "fp32",
                                 parties=1)
    batcher = Batcher(predictor, max_batch=2, max_delay_ms=0, lanes=2, torch_threads=1)
    for seed in range(3):
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
        assert batcher.submit(x).result(timeout=60).shape == (1, 102)
    assert predictor.threads == [2, 2, 2]


def test_lane_threads_carry_their_names_in_the_os(small_model_dir):
    """top -H, ps and the benchmark's CPU accounting see the lanes as batcher-N."""
    predictor, batcher = make(small_model_dir)
    predictor.release.set()
    batcher.submit(torch.randn(1, 3, 224, 224)).result(timeout=60)  # the lanes are running
    os_names = os_thread_names()
    names = {os_names[thread.native_id] for thread in batcher._lane_threads}
    assert names == {"batcher-0"}
