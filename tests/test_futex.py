"""Robust futex lists (core/futex.py): what the Sentry does, where it runs
the app's threads itself (kvm), with the locks a dying thread still holds."""
from __future__ import annotations

from fakes import FakeMem

from pysc.core.futex import (FUTEX_OWNER_DIED, FUTEX_WAITERS, ROBUST_LIST_LIMIT,
                             release_robust_list)

OFFSET = 8  # glibc's layout: the lock word lies after the list's next pointer


def robust_list(mem: FakeMem, words: list[int], pending_word: int | None = None):
    """A robust_list_head whose entries hold lock words ``words``; returns
    (head, lock word addresses, pending lock word address)."""
    head = mem.alloc(24)
    entries = [mem.alloc(16) for _ in words]
    for e, w in zip(entries, words):
        mem.write_u32(e + OFFSET, w)
    for e, nxt in zip(entries, entries[1:] + [head]):
        mem.write_u64(e, nxt)
    mem.write_u64(head, entries[0] if entries else head)
    mem.write_u64(head + 8, OFFSET)
    pending = 0
    if pending_word is not None:
        pending = mem.alloc(16)
        mem.write_u32(pending + OFFSET, pending_word)
    mem.write_u64(head + 16, pending)
    return head, [e + OFFSET for e in entries], pending + OFFSET if pending else None


def test_locks_of_the_dead_thread_get_owner_died_and_a_waiter_is_woken():
    mem = FakeMem()
    head, locks, _ = robust_list(mem, [42, 42 | FUTEX_WAITERS, 7])
    woken = []
    assert release_robust_list(mem, head, 42, woken.append) == 2
    assert mem.read_u32(locks[0]) == FUTEX_OWNER_DIED
    assert mem.read_u32(locks[1]) == FUTEX_OWNER_DIED | FUTEX_WAITERS
    assert mem.read_u32(locks[2]) == 7, "a lock another thread holds is left alone"
    assert woken == locks[:2]


def test_the_pending_lock_is_released_too():
    mem = FakeMem()
    head, _, pending = robust_list(mem, [], pending_word=42)
    assert release_robust_list(mem, head, 42, lambda addr: None) == 1
    assert mem.read_u32(pending) == FUTEX_OWNER_DIED


def test_a_cyclic_or_bad_list_ends_the_walk():
    mem = FakeMem()
    head, locks, _ = robust_list(mem, [42, 42])
    mem.write_u64(locks[1] - OFFSET, locks[0] - OFFSET)  # the second entry points back at the first
    woken = []
    release_robust_list(mem, head, 42, woken.append)
    assert len(woken) == 2, "each lock once; the cycle is cut after ROBUST_LIST_LIMIT entries"
    assert ROBUST_LIST_LIMIT == 2048
    assert release_robust_list(mem, 0x10, 42, woken.append) == 0, "an unreadable head: nothing"
