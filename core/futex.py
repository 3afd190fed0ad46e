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

from pysc.core.errors import SyscallError

ALL_BITS = 0xFFFFFFFF
# The futex word of a robust (or PI) lock: owner tid and two flags.
FUTEX_WAITERS = 0x80000000
FUTEX_OWNER_DIED = 0x40000000
FUTEX_TID_MASK = 0x3FFFFFFF
ROBUST_LIST_LIMIT = 2048  # as Linux: a cyclic list in app memory must not hang the Sentry


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


def release_robust_list(mem, head: int, tid: int, wake: Callable[[int], None]) -> int:
    """A thread that registered ``head`` with set_robust_list is gone: each
    robust lock it still holds gets FUTEX_OWNER_DIED, and one waiter is
    woken to take it over (Linux's exit_robust_list).  ``tid`` is the
    thread's id as it saw it; ``wake(addr)`` wakes one waiter of the futex
    at ``addr``.  Returns how many locks were released.

    The word is rewritten without an atomic compare-and-swap (Python has
    none for app memory): a waiter that sets FUTEX_WAITERS just then could
    lose that bit, so a waiter is woken whether or not the bit is set."""
    try:
        entry = mem.read_u64(head)
        offset = int.from_bytes(mem.read(head + 8, 8), "little", signed=True)
        pending = mem.read_u64(head + 16)
    except SyscallError:
        return 0

    def release(entry: int) -> int:
        addr = (entry & ~1) + offset
        try:
            val = mem.read_u32(addr)
            if val & FUTEX_TID_MASK != tid:
                return 0
            mem.write_u32(addr, (val & FUTEX_WAITERS) | FUTEX_OWNER_DIED)
        except SyscallError:
            return 0
        wake(addr)
        return 1

    released = 0
    for _ in range(ROBUST_LIST_LIMIT):
        if entry == head or not entry:
            break
        try:
            following = mem.read_u64(entry & ~1)  # read before the lock word changes hands
        except SyscallError:
            break
        if entry != pending:
            released += release(entry)
        entry = following
    if pending:
        released += release(pending)
    return released
