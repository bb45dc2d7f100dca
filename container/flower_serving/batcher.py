# Dynamic batching: requests queue up, and one thread runs them as true batched forwards.
# A batch closes when it is full or when the oldest request has waited max_delay (plus, on CPU,
# whatever the decoders already under way add while the forward waits for the cores).
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from .errors import InferenceFailed
from .gate import CpuGate
from .predictor import Predictor

log = logging.getLogger(__name__)


@dataclass
class _Item:
    images: torch.Tensor  # n x C x H x W, preprocessed
    future: Future


class Batcher:
    """submit() returns a Future of an n x classes probability tensor for the n images."""

    def __init__(self, predictor: Predictor, max_batch: int, max_delay_ms: float,
                 gate: CpuGate | None = None) -> None:
        self.predictor = predictor
        self.gate = gate or CpuGate(1, exclusive=False)
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self.batches = 0
        self.images = 0
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, images: torch.Tensor) -> Future:
        future: Future = Future()
        self._queue.put(_Item(images, future))
        return future

    def _collect(self, items: list[_Item], deadline: float) -> list[_Item]:
        """Add queued requests until max_batch images or `deadline` (monotonic seconds)."""
        count = sum(len(item.images) for item in items)
        while count < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            items.append(item)
            count += len(item.images)
        return items

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            items = self._collect([first], time.monotonic() + self.max_delay)
            with self.gate.forward():
                items = self._collect(items, 0.0)  # what the finished decoders just queued
                items = [item for item in items if item.future.set_running_or_notify_cancel()]
                if items:
                    self._forward(items)

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
        self.batches += 1
        self.images += len(batch)
        for item, rows in zip(items, probs.split([len(i.images) for i in items]), strict=True):
            item.future.set_result(rows)
