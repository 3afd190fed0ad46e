"""How a handler says 'fail with errno' or 'this call must wait'."""
from __future__ import annotations

import errno as _errno
import os


class SyscallError(Exception):
    """Raised by a handler: the syscall fails with ``errno``."""

    def __init__(self, err: int, msg: str = ""):
        super().__init__(err, msg or os.strerror(err) if err < 512 else str(err))
        self.errno = err

    def __repr__(self) -> str:
        return f"SyscallError({_errno.errorcode.get(self.errno, self.errno)})"


class WouldBlock(Exception):
    """Raised by a handler whose call cannot complete yet.

    The task is parked until one of ``queues`` is notified or ``deadline``
    (a ``time.monotonic()`` value) passes; then the handler runs again from
    the start, so a handler must not change state before it raises this.
    ``restart`` tells how the call behaves when a signal interrupts it:
    ``"sys"`` restarts under SA_RESTART (read, write, wait4, ...), ``"nohand"``
    always fails with EINTR (poll, select, epoll_wait, ...).
    """

    def __init__(self, queues=(), deadline: float | None = None, restart: str = "sys",
                 host_fds: tuple = ()):
        super().__init__()
        self.queues = tuple(queues)
        self.deadline = deadline
        self.restart = restart
        self.host_fds = tuple(host_fds)  # (fd, poll events) pairs the main loop must watch


class TaskGone(Exception):
    """The app thread died while the Sentry was working on it (killed, or its
    process exited or exec'd under it); there is no one left to answer."""


def check(cond: bool, err: int) -> None:
    if not cond:
        raise SyscallError(err)
