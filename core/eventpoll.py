"""epoll instances (Linux's fs/eventpoll.c), and the timing helpers that
blocking calls share.

An :class:`EpollFile` keeps an interest list keyed by (fd number, File) as
Linux does (by file description *and* fd).  Readiness always comes from
``File.poll()``; to learn when it may have changed, every watched file's
``wq`` carries a persistent watcher of the epoll instance (it re-arms itself
each time it fires, because wait-queue waiters are one-shot).  The watcher
marks the entry for edge-triggered reporting and notifies the epoll's own
``wq``, so a task blocked in epoll_wait — or in poll() on the epoll fd, or in
an outer epoll — waits on that one queue.

Files backed by host fds (hostinet sockets, host pipes) are not notified by
anyone when the host fd becomes ready; their host fds are handed to the main
loop instead (:meth:`EpollFile.poll_host_fds`).

A File leaves the interest list when its last reference goes (Linux removes
an epitem when the file description is released, not when one fd is
closed).  We notice that lazily: an entry whose file has ``refs == 0`` is
dropped at the next scan.
"""
from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

from pysc.core.abi import consts as C
from pysc.core.abi.structs import Stat
from pysc.core.errors import SyscallError
from pysc.core.file import File

if TYPE_CHECKING:
    from pysc.core.task import Task

_anon_ino = itertools.count(1 << 20)

# Bits a host fd is polled for (POLLERR/POLLHUP are always reported).
_HOST_BITS = C.POLLIN | C.POLLOUT | C.POLLPRI | C.POLLRDHUP
EPOLLEXCLUSIVE_OK_BITS = (C.EPOLLIN | C.EPOLLOUT | C.EPOLLERR | C.EPOLLHUP | C.EPOLLWAKEUP
                          | C.EPOLLET | C.EPOLLEXCLUSIVE)
EP_MAX_NESTS = 4
EP_PRIVATE_BITS = C.EPOLLWAKEUP | C.EPOLLONESHOT | C.EPOLLET | C.EPOLLEXCLUSIVE


# --- deadlines of blocking calls -------------------------------------------------------

def call_deadline(t: "Task", key: object, timeout: float | None) -> float | None:
    """The absolute deadline (``time.monotonic()``) of a blocking call.

    A blocked call's handler is re-run from the start each time its task is
    woken, so the deadline must be computed once, the first time, and reused
    by the re-runs of the same call: it is kept on the task as
    ``t.restart_deadline = (key, deadline)``.  ``key`` identifies the call
    (e.g. ``("poll", fds, nfds, timeout)``).  ``timeout`` is in seconds,
    None for no timeout.
    """
    if timeout is None:
        return None
    saved = getattr(t, "restart_deadline", None)
    if saved is not None and saved[0] == key:
        return saved[1]
    deadline = time.monotonic() + max(0.0, timeout)
    t.restart_deadline = (key, deadline)
    return deadline


def clear_deadline(t: "Task", key: object) -> None:
    """The call identified by ``key`` completed: forget its deadline."""
    saved = getattr(t, "restart_deadline", None)
    if saved is not None and saved[0] == key:
        t.restart_deadline = None


def expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def remaining(deadline: float | None) -> float:
    if deadline is None:
        return 0.0
    return max(0.0, deadline - time.monotonic())


# --- readiness plumbing shared with poll/select ----------------------------------------

def host_waits(f: File, events: int) -> tuple:
    """(host fd, events) pairs the main loop must watch to learn that ``f``
    may have become ready for ``events``."""
    fn = getattr(f, "poll_host_fds", None)
    if fn is not None:
        return tuple(fn(events))
    fd = getattr(f, "poll_host_fd", None)
    if fd is None:
        from pysc.core.file import HostFDFile
        if isinstance(f, HostFDFile):
            fd = f.fd
    if fd is None:
        return ()
    return ((fd, events & _HOST_BITS),)


def pollable(f: File) -> bool:
    """Whether ``f`` supports poll (Linux: f_op->poll).  Regular files and
    directories do not: epoll_ctl refuses them with EPERM."""
    explicit = getattr(f, "pollable", None)
    if explicit is not None:
        return bool(explicit)
    if f.inode is None:
        return True
    try:
        fmt = f.stat().mode & C.S_IFMT
    except SyscallError:
        return True
    return fmt not in (C.S_IFREG, C.S_IFDIR)


# --- epoll --------------------------------------------------------------------------------

class EpollEntry:
    __slots__ = ("ep", "fd", "file", "events", "data", "edge", "last", "disabled", "live")

    def __init__(self, ep: "EpollFile", fd: int, file: File, events: int, data: int):
        self.ep = ep
        self.fd = fd
        self.file = file
        self.events = events
        self.data = data
        self.edge = True  # an edge is pending (a newly added ready file reports once)
        self.last = 0  # the readiness seen at the last scan
        self.disabled = False  # EPOLLONESHOT fired
        self.live = True

    def arm(self) -> None:
        self.file.wq.add(self, self.fired)

    def fired(self) -> None:
        if not self.live:
            return
        self.edge = True
        self.file.wq.add(self, self.fired)  # waiters are one-shot: stay subscribed
        self.ep.wq.notify()

    def unsubscribe(self) -> None:
        self.live = False
        self.file.wq.remove(self)


class EpollFile(File):
    """An epoll instance: what epoll_create returns."""
    poll_host_fd = None
    pollable = True

    def __init__(self, flags: int = 0, ino: int | None = None):
        super().__init__(C.O_RDWR | (flags & C.O_NONBLOCK))
        self.entries: dict[tuple[int, int], EpollEntry] = {}
        self.ino = ino if ino is not None else next(_anon_ino)

    # --- interest list ---
    def ctl(self, op: int, fd: int, file: File, events: int, data: int, creds=None) -> None:
        """EPOLL_CTL_ADD/MOD/DEL; validation of the fds is the caller's (EBADF)."""
        if not pollable(file):
            raise SyscallError(C.EPERM)
        if file is self:
            raise SyscallError(C.EINVAL)
        if op in (C.EPOLL_CTL_ADD, C.EPOLL_CTL_MOD):
            if events & C.EPOLLWAKEUP and creds is not None and not _has_block_suspend(creds):
                events &= ~C.EPOLLWAKEUP
            if events & C.EPOLLEXCLUSIVE:
                if op == C.EPOLL_CTL_MOD:
                    raise SyscallError(C.EINVAL)
                if isinstance(file, EpollFile) or events & ~EPOLLEXCLUSIVE_OK_BITS:
                    raise SyscallError(C.EINVAL)
        self._prune()
        key = (fd, id(file))
        e = self.entries.get(key)
        if op == C.EPOLL_CTL_ADD:
            if e is not None:
                raise SyscallError(C.EEXIST)
            if isinstance(file, EpollFile):
                if file._reaches(self) or file._depth() + 1 > EP_MAX_NESTS:
                    raise SyscallError(C.ELOOP)
            e = EpollEntry(self, fd, file, events | C.EPOLLERR | C.EPOLLHUP, data)
            self.entries[key] = e
            e.arm()
        elif op == C.EPOLL_CTL_DEL:
            if e is None:
                raise SyscallError(C.ENOENT)
            e.unsubscribe()
            del self.entries[key]
        elif op == C.EPOLL_CTL_MOD:
            if e is None:
                raise SyscallError(C.ENOENT)
            if e.events & C.EPOLLEXCLUSIVE:
                raise SyscallError(C.EINVAL)
            e.events = events | C.EPOLLERR | C.EPOLLHUP
            e.data = data
            e.disabled = False
            e.edge = True
            e.last = 0
        else:
            raise SyscallError(C.EINVAL)
        self.wq.notify()  # an outer poller may have a new answer

    def _prune(self) -> None:
        dead = [k for k, e in self.entries.items() if e.file.refs <= 0]
        for k in dead:
            self.entries.pop(k).unsubscribe()

    def _reaches(self, target: "EpollFile", depth: int = 0) -> bool:
        if self is target:
            return True
        if depth > EP_MAX_NESTS + 1:
            return True
        return any(isinstance(e.file, EpollFile) and e.file._reaches(target, depth + 1)
                   for e in self.entries.values())

    def _depth(self, depth: int = 0) -> int:
        if depth > EP_MAX_NESTS + 1:
            return depth
        sub = [e.file._depth(depth + 1) for e in self.entries.values() if isinstance(e.file, EpollFile)]
        return max(sub) if sub else depth

    # --- readiness ---
    def collect(self, maxevents: int, consume: bool = True) -> list[tuple[int, int]]:
        """The (events, data) pairs epoll_wait would report now.  With
        ``consume`` it does report them: edges are cleared, one-shot entries
        disabled."""
        self._prune()
        out: list[tuple[int, int]] = []
        reported = []
        for e in list(self.entries.values()):
            if len(out) >= maxevents:
                break
            if e.disabled:
                continue
            raw = e.file.poll()
            if e.events & C.EPOLLET:
                edge = e.edge or bool(raw & ~e.last & e.events)
                if consume:
                    e.edge = False
                    e.last = raw
                if not edge:
                    continue
            elif consume:
                e.last = raw
            mask = raw & e.events & ~EP_PRIVATE_BITS
            if not mask:
                continue
            out.append((mask, e.data))
            reported.append(e)
            if consume and e.events & C.EPOLLONESHOT:
                e.disabled = True
        if consume:  # round robin, as Linux requeues level-triggered items at the tail
            for e in reported:
                key = (e.fd, id(e.file))
                if self.entries.get(key) is e:
                    del self.entries[key]
                    self.entries[key] = e
        return out

    def poll(self) -> int:
        return C.POLLIN | C.POLLRDNORM if self.collect(1, consume=False) else 0

    def poll_host_fds(self, events: int = C.POLLIN) -> list[tuple[int, int]]:
        """Host fds of the watched files, with the events whose arrival would
        make an entry reportable.  Bits an edge-triggered entry has already
        reported are left out, or the main loop would wake at once forever."""
        out = []
        for e in self.entries.values():
            if e.disabled or e.file.refs <= 0:
                continue
            want = e.events & _HOST_BITS
            if e.events & C.EPOLLET:
                if e.last & (C.POLLHUP | C.POLLERR):
                    continue
                want &= ~e.last
                if not want:
                    continue
            for fd, ev in host_waits(e.file, want):
                out.append((fd, ev))
        return out

    def release(self) -> None:
        for e in self.entries.values():
            e.unsubscribe()
        self.entries.clear()

    # --- file ---
    def read(self, task, count):
        raise SyscallError(C.EINVAL)

    def write(self, task, data):
        raise SyscallError(C.EINVAL)

    def stat(self) -> Stat:
        return anon_stat(self.ino)

    def path_for_proc(self) -> bytes:
        return b"anon_inode:[eventpoll]"

    def fdinfo(self) -> bytes:
        """Lines of /proc/PID/fdinfo/N after pos/flags."""
        lines = []
        for e in self.entries.values():
            if e.file.refs > 0:
                lines.append(b"tfd: %8d events: %8x data: %16x  pos:0 ino:%x sdev:0\n"
                             % (e.fd, e.events, e.data, getattr(e.file, "ino", 0)))
        return b"".join(lines)


def _has_block_suspend(creds) -> bool:
    try:
        return creds.has_cap(36)  # CAP_BLOCK_SUSPEND
    except Exception:
        return False


def anon_stat(ino: int) -> Stat:
    """fstat of an anon_inode file (eventfd, epoll, ...): mode 0600, no type."""
    return Stat(mode=0o600, ino=ino, dev=ANON_DEV, nlink=1, blksize=4096)


ANON_DEV = 0x0D  # anon_inodefs is 0:13 on most kernels
