"""A wall-time bound for emulator runs: a polling thread that calls `stop` once a run overstays.

Why polling (unicorn-perf.md, section 8): `emu_start(timeout=)` spawns a timer thread per call
(~130 us a run) and `count=` is 21x slower; a thread that wakes every `interval` and compares a
deadline costs two attribute stores per run. The thread holds only a weak reference, so it ends
with its owner (or at `closed.set()`).

Owns: the thread and the arm/disarm protocol. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Callable


class Watchdog:
    """Stops a run that overstays its wall-time limit, from a polling thread.

    Arming costs two attribute stores. The thread reads the run serial before the deadline, so
    a stop it sends late can only land on a *later* run, which sees `fired != its serial` and
    resumes (see unicorn-perf.md section 8)."""

    def __init__(self, stop: Callable[[], None], interval: float):
        self.stop, self.interval = stop, interval
        self.serial, self.deadline, self.fired = 0, None, -1
        self.closed = threading.Event()
        threading.Thread(target=_watch, args=(weakref.ref(self),), daemon=True,
                         name="bpf-kasan-watchdog").start()

    def arm(self, seconds: float) -> int:
        self.serial += 1
        self.deadline = time.monotonic() + seconds
        return self.serial

    def disarm(self) -> None:
        self.deadline = None

    def poll(self) -> None:
        serial, deadline = self.serial, self.deadline
        if deadline is not None and time.monotonic() > deadline:
            self.fired = serial
            self.stop()


def _watch(ref: "weakref.ref[Watchdog]") -> None:
    while True:
        dog = ref()
        if dog is None or dog.closed.is_set():
            return
        interval, closed = dog.interval, dog.closed
        dog.poll()
        del dog                      # hold no reference while sleeping, so the machine can die
        if closed.wait(interval):
            return
