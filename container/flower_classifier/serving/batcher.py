"""Dynamic batching: requests queue up, and lane threads run them as true batched forwards.
A batch closes when it is full or when the oldest request has waited max_delay (plus, on CPU
with one lane, whatever the decoders under way add while the forward waits for the cores).
"""
from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InferenceFailed
from ..model.predictor import Predictor
from .gate import CpuGate

log = logging.getLogger(__name__)
PR_SET_NAME = 15  # Linux prctl: the calling thread's name, as ps, top -H and /proc show it


@dataclass
class _Item:
    images: torch.Tensor  # n x C x H x W, preprocessed
    future: Future


class Batcher:
    """submit() returns a Future of an n x classes probability tensor for the n images.

    `lanes` threads take batches from one queue and run their forwards side by side, each on
    `torch_threads` torch threads (None: leave torch's setting alone). On a CPU, two one-thread
    lanes beat one two-thread forward: no OpenMP barrier couples the cores, and one lane's responses
    and decodes overlap the other lane's forward."""

    def __init__(self, predictor: Predictor, max_batch: int, max_delay_ms: float,
                 gate: CpuGate | None = None, lanes: int = 1,
                 torch_threads: int | None = None) -> None:
        self.predictor = predictor
        self.gate = gate or CpuGate(1, exclusive=False)
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.lanes = lanes
        self.torch_threads = torch_threads
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._count = threading.Lock()
        self._busy = 0  # lanes holding a batch
        self._pending = 0  # requests submitted and not yet taken by a lane
        self.batches = 0
        self.images = 0
        self._lane_threads = [
            threading.Thread(target=self._run, name=f"batcher-{lane}", daemon=True)
            for lane in range(lanes)]
        for thread in self._lane_threads:
            thread.start()

    def submit(self, images: torch.Tensor) -> Future:
        future: Future = Future()
        with self._count:
            self._pending += 1
        self._queue.put(_Item(images, future))
        return future

    def _take(self, timeout: float | None = None, first: bool = False) -> _Item:
        """The next queued request (queue.Empty after `timeout`). Counting it off the pending
        ones and, for a batch's first, onto the busy lanes in one step keeps every request
        counted in one or the other."""
        item = self._queue.get(timeout=timeout)
        with self._count:
            self._pending -= 1
            self._busy += int(first)
        return item

    def _collect(self, items: list[_Item], deadline: float) -> list[_Item]:
        """Add queued requests until max_batch images or `deadline` (monotonic seconds)."""
        count = sum(len(item.images) for item in items)
        while count < self.max_batch:
            try:
                item = self._take(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            items.append(item)
            count += len(item.images)
        return items

    def _run(self) -> None:
        name_os_thread(threading.current_thread().name)
        while True:
            first = self._take(first=True)
            try:
                items = self._collect([first], time.monotonic() + self.max_delay)
                with self.gate.forward():
                    items = self._collect(items, 0.0)  # what the finished decoders just queued
                    items = [i for i in items if i.future.set_running_or_notify_cancel()]
                    if items:
                        self._set_threads()
                        self._forward(items)
            finally:
                with self._count:
                    self._busy -= 1

    def _set_threads(self) -> None:
        """This forward's torch threads: its lane's share, or every lane's share when no other
        lane has work and nothing waits (a lone request keeps the low latency of all cores)."""
        if self.torch_threads is None:
            return
        with self._count:
            alone = self._busy == 1 and self._pending == 0
        torch.set_num_threads(self.torch_threads * (self.lanes if alone else 1))

    def _forward(self, items: list[_Item]) -> None:
        try:
            batch = torch.cat([item.images for item in items])
            probs = torch.cat([self.predictor.forward(chunk)
                               for chunk in batch.split(self.max_batch)])
        except Exception:
            count = sum(len(i.images) for i in items)
            log.exception("batched forward of %d images failed", count)
            for item in items:
                item.future.set_exception(InferenceFailed("inference failed; see server logs"))
            return
        with self._count:
            self.batches += 1
            self.images += len(batch)
        for item, rows in zip(items, probs.split([len(i.images) for i in items]), strict=True):
            item.future.set_result(rows)


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` (15 bytes at most) in the OS too, so `top -H` and the
    benchmark tell the lanes' CPU from the request threads'; the OpenMP threads a lane starts
    inherit it. Does nothing where there is no prctl."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def os_thread_names(pid: int | str = "self") -> dict[int, str]:
    """The OS name (name_os_thread's) of each thread of process `pid`, by thread id; a thread
    that ends while they are read is left out. Empty where there is no /proc."""
    names = {}
    try:
        tasks = list((Path("/proc") / str(pid) / "task").iterdir())
    except OSError:
        return names
    for task in tasks:
        try:
            names[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread has ended
    return names
