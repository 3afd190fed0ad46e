"""Futexes kept by the Sentry (where it owns the address space).

A waiter parks like any blocked call (WouldBlock) on its own FutexWait,
which the Kernel adds to and removes from the futex word's queue; a requeue
moves the FutexWait to another word.  A wake must wake exactly the chosen
waiters even though their handlers re-run from the start, so the waker marks
each chosen wait ``woken`` and the re-run returns 0 instead of comparing the
value again.
"""
from __future__ import annotations

from typing import Callable

ALL_BITS = 0xFFFFFFFF


def futex_key(mm, addr: int, private: bool):
    """The key of the futex word at ``addr``: (address space, address), or
    for a non-private futex in memory shared between address spaces the
    memory manager's key of that shared page."""
    if not private:
        shared = getattr(mm, "shared_futex_key", None)
        key = shared(addr) if shared is not None else None
        if key is not None:
            return key
    return (mm, addr)


class FutexWait:
    """One task waiting on one futex word (the WouldBlock queue of futex_wait)."""
    __slots__ = ("table", "key", "bitset", "wake_cb", "woken")

    def __init__(self, table: "FutexTable", key, bitset: int):
        self.table = table
        self.key = key
        self.bitset = bitset
        self.wake_cb: Callable[[], None] | None = None
        self.woken = False

    def add(self, task, wake: Callable[[], None]) -> None:
        self.wake_cb = wake
        self.table.queues.setdefault(self.key, {})[self] = None

    def remove(self, task) -> None:
        self.table._drop(self)


class FutexTable:
    """Futex words by key: (address space, address) for private futexes,
    ("shared", frame address + offset) for ones shared between address spaces."""

    def __init__(self) -> None:
        self.queues: dict[object, dict[FutexWait, None]] = {}

    def _drop(self, w: FutexWait) -> None:
        q = self.queues.get(w.key)
        if q is not None:
            q.pop(w, None)
            if not q:
                del self.queues[w.key]

    def wake(self, key, n: int, bitset: int = ALL_BITS) -> int:
        q = self.queues.get(key)
        if not q:
            return 0
        woken = 0
        for w in list(q):
            if woken >= n:
                break
            if w.bitset & bitset:
                w.woken = True
                self._drop(w)
                if w.wake_cb is not None:
                    w.wake_cb()
                woken += 1
        return woken

    def requeue(self, key, key2, nwake: int, nrequeue: int) -> int:
        """Wake ``nwake`` waiters of ``key`` and move up to ``nrequeue`` others to ``key2``."""
        woken = self.wake(key, nwake)
        moved = 0
        q = self.queues.get(key)
        if q and key2 != key:
            for w in list(q):
                if moved >= nrequeue:
                    break
                self._drop(w)
                w.key = key2
                self.queues.setdefault(key2, {})[w] = None
                moved += 1
        return woken + moved
