"""The CPU gate: decoders share the cores up to one per core, a CPU forward has them alone,
earlier decoders finish before a forward and later ones wait for it. Real threads throughout.
"""
from __future__ import annotations

import threading
import time

import torch

from conftest import CountingPredictor
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.serving.batcher import Batcher
from flower_classifier.serving.gate import CpuGate

WAIT = 10.0  # generous bound for any single hand-off between threads


def wait_until(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_decoders_run_side_by_side_up_to_width():
    gate = CpuGate(2, exclusive=True)
    inside, peak, release = [0], [0], threading.Event()
    lock = threading.Lock()

    def decode():
        with gate.decoding():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            release.wait(WAIT)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=decode) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: inside[0] == 2)
    time.sleep(0.1)
    assert inside[0] == 2  # the other two wait for a core
    release.set()
    for thread in threads:
        thread.join(WAIT)
    assert peak[0] == 2 and inside[0] == 0


def test_forward_waits_for_earlier_decoders_and_holds_back_later_ones():
    gate = CpuGate(2, exclusive=True)
    order: list[str] = []
    first_done, forward_done = threading.Event(), threading.Event()
    first_inside = threading.Event()

    def first():
        with gate.decoding():
            first_inside.set()
            first_done.wait(WAIT)
            order.append("first decode")

    def forward():
        with gate.forward():
            order.append("forward")
            forward_done.wait(WAIT)

    def later():
        with gate.decoding():
            order.append("later decode")

    a = threading.Thread(target=first)
    a.start()
    assert first_inside.wait(WAIT)
    f = threading.Thread(target=forward)
    f.start()
    wait_until(lambda: gate._cutoff is not None)  # the forward has asked
    b = threading.Thread(target=later)
    b.start()
    time.sleep(0.1)
    assert order == []  # forward waits for `first`; `later` waits for the forward
    first_done.set()
    wait_until(lambda: order == ["first decode", "forward"])
    time.sleep(0.1)
    assert order == ["first decode", "forward"]
    forward_done.set()
    for thread in (a, f, b):
        thread.join(WAIT)
    assert order == ["first decode", "forward", "later decode"]


def test_not_exclusive_on_gpu_forward_overlaps_decoding():
    gate = CpuGate(1, exclusive=False)
    entered = threading.Event()
    with gate.decoding():

        def forward():
            with gate.forward():
                entered.set()

        thread = threading.Thread(target=forward)
        thread.start()
        assert entered.wait(WAIT)  # no waiting on the decoder
    thread.join(WAIT)


def test_images_decoded_while_a_forward_waits_join_its_batch(small_model_dir):
    predictor = CountingPredictor(load_classifier(small_model_dir), torch.device("cpu"), "fp32")
    predictor.release.set()
    gate = CpuGate(2, exclusive=True)
    batcher = Batcher(predictor, max_batch=8, max_delay_ms=0.0, gate=gate)
    decoding, finish = threading.Event(), threading.Event()
    futures = []

    def decoder():
        with gate.decoding():
            decoding.set()
            finish.wait(WAIT)
            futures.append(batcher.submit(torch.randn(2, 3, 224, 224)))

    thread = threading.Thread(target=decoder)
    thread.start()
    assert decoding.wait(WAIT)
    futures.append(batcher.submit(torch.randn(1, 3, 224, 224)))  # starts a batch at once
    wait_until(lambda: gate._cutoff is not None)  # ... whose forward waits for the decoder
    finish.set()
    thread.join(WAIT)
    assert [f.result(timeout=60).shape[0] for f in futures] == [1, 2]
    assert predictor.sizes == [3]  # one forward for both requests


def test_alone_waits_for_everything_under_way_and_holds_everything_back():
    """alone() (the background precision check's timed forwards) shares the cores with
    nothing: it waits for a decoder and a forward under way, and later ones wait for it."""
    for exclusive in (True, False):
        gate = CpuGate(2, exclusive=exclusive)
        order: list[str] = []
        decoding, forwarding = threading.Event(), threading.Event()
        finish_decode, finish_forward, finish_alone = (threading.Event() for _ in range(3))

        def inside(turn, name, started=None, finish=None):
            """Take the gate's `turn` (decoding or forward), optionally hold it until
            `finish`, and record `name` when done."""
            with turn():
                if started:
                    started.set()
                    finish.wait(WAIT)
                order.append(name)

        def decode(*args):
            inside(gate.decoding, *args)

        def forward(*args):
            inside(gate.forward, *args)

        def alone():
            with gate.alone():
                order.append("alone")
                finish_alone.wait(WAIT)

        threads = [threading.Thread(target=decode, args=("decode", decoding, finish_decode))]
        threads[0].start()
        assert decoding.wait(WAIT)
        if not exclusive:  # an exclusive forward would wait for the decoder itself
            threads.append(threading.Thread(target=forward,
                                            args=("forward", forwarding, finish_forward)))
            threads[-1].start()
            assert forwarding.wait(WAIT)
        threads.append(threading.Thread(target=alone))
        threads[-1].start()
        wait_until(lambda: gate._alone)
        later = [threading.Thread(target=decode, args=("later decode",)),
                 threading.Thread(target=forward, args=("later forward",))]
        for thread in later:
            thread.start()
        time.sleep(0.1)
        assert order == []  # alone() waits for what is under way; the later ones for alone()
        finish_decode.set()
        finish_forward.set()
        wait_until(lambda: "alone" in order)
        time.sleep(0.1)
        assert order[-1] == "alone" and "later decode" not in order
        assert "later forward" not in order
        finish_alone.set()
        for thread in threads + later:
            thread.join(WAIT)
        assert set(order[order.index("alone") + 1:]) == {"later decode", "later forward"}
