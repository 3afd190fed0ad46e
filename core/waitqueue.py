"""Wait queues: a blocked call waits on one or more, anyone may notify them."""
from __future__ import annotations

from typing import Callable


class WaitQueue:
    """A set of waiters (callables) run when the queue is notified.

    Waiters are one-shot: notify() runs and removes every waiter, because a
    woken task re-runs its handler and waits again if it still has to.
    """
    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: dict[object, Callable[[], None]] = {}

    def add(self, key: object, callback: Callable[[], None]) -> None:
        self._waiters[key] = callback

    def remove(self, key: object) -> None:
        self._waiters.pop(key, None)

    def notify(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, {}
            for cb in waiters.values():
                cb()

    def __bool__(self) -> bool:
        return bool(self._waiters)
