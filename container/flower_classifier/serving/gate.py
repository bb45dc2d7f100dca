"""Decoding and a CPU forward take turns on the cores, so the model's threads never share them.
Decoders run side by side (at most one per core); a forward waits only for earlier arrivals.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CpuGate:
    """decoding(): shared, at most `width` at once. forward(): exclusive when `exclusive`.
    alone(): nothing else at all (the background precision check's timed forwards).

    A forward that asks for the gate lets every decoder that arrived before it finish (their
    images can join its batch), and holds back later ones until it is done. On a GPU the
    forward leaves the cores free, so the gate is not exclusive there."""

    def __init__(self, width: int, exclusive: bool) -> None:
        self.width = width
        self.exclusive = exclusive
        self._cond = threading.Condition()
        self._arrived = 0  # tickets handed out
        self._unfinished: set[int] = set()
        self._active = 0  # decoders running
        self._forwarding = 0  # forwards running
        self._cutoff: int | None = None  # while a forward waits or runs: its first later ticket
        self._alone = False  # while alone() waits or runs: nothing new starts

    @contextmanager
    def decoding(self) -> Iterator[None]:
        with self._cond:
            ticket = self._arrived
            self._arrived += 1
            self._unfinished.add(ticket)
            self._cond.wait_for(lambda: self._active < self.width and not self._alone
                                and (self._cutoff is None or ticket < self._cutoff))
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._unfinished.discard(ticket)
                self._cond.notify_all()

    @contextmanager
    def forward(self) -> Iterator[None]:
        with self._cond:
            if self.exclusive:
                cutoff = self._cutoff = self._arrived
                self._cond.wait_for(lambda: not self._alone
                                    and all(t >= cutoff for t in self._unfinished))
            else:
                self._cond.wait_for(lambda: not self._alone)
            self._forwarding += 1
        try:
            yield
        finally:
            with self._cond:
                self._forwarding -= 1
                if self.exclusive:
                    self._cutoff = None
                self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """The cores to the caller alone: decoders and forwards under way finish, and new ones
        wait until it is done (so a forward timed inside is timed as it runs unshared)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._alone)
            self._alone = True
            self._cond.wait_for(lambda: self._active == 0 and self._forwarding == 0)
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()
