"""Readiness syscalls: poll, ppoll, select, pselect6, the epoll family, and eventfd.

Readiness always comes from ``File.poll()``.  A call that has nothing to
report and may wait raises ``WouldBlock(restart="nohand")`` on the files'
wait queues, with the host fds of host-backed files for the main loop to
watch; the handler re-runs from the start when woken.  The absolute
deadline is computed on the first run and kept across re-runs
(``t.restart_deadline``, see :func:`pysc.core.eventpoll.call_deadline`).

The signal-mask arguments of ppoll, pselect6 and epoll_pwait(2) are
validated but not applied: the Sentry cannot atomically swap the mask of
the host thread around the wait (those handlers are marked partial).
"""
from __future__ import annotations

import struct
import sys

from pysc.core.abi import consts as C
from pysc.core.abi.structs import EPOLL_EVENT, POLLFD, TIMESPEC, TIMEVAL
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.eventfd import EventFD
from pysc.core.eventpoll import (EpollFile, call_deadline, clear_deadline, expired, host_waits,
                                 pollable, remaining)
from pysc.core.hookspecs import hookimpl

POLLIN_SET = C.POLLRDNORM | C.POLLRDBAND | C.POLLIN | C.POLLHUP | C.POLLERR
POLLOUT_SET = C.POLLWRBAND | C.POLLWRNORM | C.POLLOUT | C.POLLERR
POLLEX_SET = C.POLLPRI
EP_MAX_EVENTS = 0x7FFFFFFF // EPOLL_EVENT.size
SIGSET_SIZE = 8


# --- helpers -------------------------------------------------------------------------------

def _nofile(t) -> int:
    try:
        return t.tg.rlimits.get(C.RLIMIT_NOFILE)[0]
    except AttributeError:
        return t.fdtable.limit


def _timespec(t, ptr: int) -> float | None:
    """A relative timeout given as a struct timespec pointer (NULL: none)."""
    if not ptr:
        return None
    sec, nsec = TIMESPEC.unpack(t.mem.read(ptr, TIMESPEC.size))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise SyscallError(C.EINVAL)
    return sec + nsec / 1e9


def _timeval(t, ptr: int) -> float | None:
    if not ptr:
        return None
    sec, usec = TIMEVAL.unpack(t.mem.read(ptr, TIMEVAL.size))
    if sec < 0 or not 0 <= usec < 1_000_000:
        raise SyscallError(C.EINVAL)
    return sec + usec / 1e6


def _ms(timeout: int) -> float | None:
    timeout = s32(timeout)
    return None if timeout < 0 else timeout / 1000.0


def _check_sigmask(t, ptr: int, size: int) -> None:
    if ptr and size != SIGSET_SIZE:
        raise SyscallError(C.EINVAL)


class _Waits:
    """Queues and host fds to wait on, deduplicated."""

    def __init__(self) -> None:
        self.queues: dict[int, object] = {}
        self.host: dict[int, int] = {}

    def add(self, f, events: int) -> None:
        self.queues[id(f.wq)] = f.wq
        for fd, ev in host_waits(f, events):
            self.host[fd] = self.host.get(fd, 0) | ev

    def block(self, deadline: float | None):
        raise WouldBlock(queues=list(self.queues.values()), deadline=deadline, restart="nohand",
                         host_fds=tuple(self.host.items()))


def _start(t, key, timeout: float | None) -> float | None:
    """The deadline of a call that may wait (None: forever)."""
    if timeout is None or timeout == 0:
        return None
    return call_deadline(t, key, timeout)


# --- poll ----------------------------------------------------------------------------------

def do_poll(t, key, fds: int, nfds: int, timeout: float | None) -> int:
    if nfds > _nofile(t):
        raise SyscallError(C.EINVAL)
    raw = t.mem.read(fds, POLLFD.size * nfds) if nfds else b""
    deadline = _start(t, key, timeout)
    out = bytearray(raw)
    count = 0
    waits = _Waits()
    table = t.fdtable
    for i in range(nfds):
        fd, events, _ = POLLFD.unpack_from(raw, i * POLLFD.size)
        events &= 0xFFFF
        rev = 0
        if fd >= 0:
            try:
                f = table.get(fd)
            except SyscallError:
                rev = C.POLLNVAL
            else:
                rev = f.poll() & (events | C.POLLERR | C.POLLHUP)
                if not rev:
                    waits.add(f, events)
        if rev:
            count += 1
        struct.pack_into("<H", out, i * POLLFD.size + 6, rev & 0xFFFF)
    if count or timeout == 0 or expired(deadline):
        clear_deadline(t, key)
        if nfds:
            t.mem.write(fds, bytes(out))
        return count
    waits.block(deadline)


@syscall()
def poll(t, fds, nfds, timeout, *_):
    nfds &= 0xFFFFFFFF
    return do_poll(t, ("poll", fds, nfds, timeout), fds, nfds, _ms(timeout))


@syscall(partial=True)
def ppoll(t, fds, nfds, tsp, sigmask, sigsetsize, *_):
    """Partial: a signal mask is validated but not applied during the wait."""
    nfds &= 0xFFFFFFFF
    timeout = _timespec(t, tsp)
    _check_sigmask(t, sigmask, sigsetsize)
    key = ("ppoll", fds, nfds, tsp, sigmask)
    deadline = _start(t, key, timeout)
    n = do_poll(t, key, fds, nfds, timeout)
    if tsp and timeout:
        left = remaining(deadline)
        t.mem.write(tsp, TIMESPEC.pack(int(left), int((left % 1) * 1e9)))
    return n


# --- select --------------------------------------------------------------------------------

def do_select(t, key, nfds: int, ptrs: tuple[int, int, int], timeout: float | None) -> int:
    n = s32(nfds)
    if n < 0:
        raise SyscallError(C.EINVAL)
    n = min(n, max(t.fdtable.limit, _nofile(t)))
    nbytes = (n + 63) // 64 * 8
    sets = []
    for p in ptrs:
        if p and nbytes:
            bits = int.from_bytes(t.mem.read(p, nbytes), "little") & ((1 << n) - 1)
        else:
            bits = 0
        sets.append(bits)
    rin, win, ein = sets
    deadline = _start(t, key, timeout)
    allbits = rin | win | ein
    rout = wout = eout = 0
    waits = _Waits()
    table = t.fdtable
    fd = 0
    while allbits >> fd:
        if not (allbits >> fd) & 1:
            fd += 1
            continue
        bit = 1 << fd
        f = table.get(fd)  # EBADF for a closed fd in any set
        mask = f.poll()
        ready = False
        if rin & bit and mask & POLLIN_SET:
            rout |= bit
            ready = True
        if win & bit and mask & POLLOUT_SET:
            wout |= bit
            ready = True
        if ein & bit and mask & POLLEX_SET:
            eout |= bit
            ready = True
        if not ready:
            ev = (C.POLLIN if rin & bit else 0) | (C.POLLOUT if win & bit else 0) | (
                C.POLLPRI if ein & bit else 0)
            waits.add(f, ev)
        fd += 1
    count = bin(rout).count("1") + bin(wout).count("1") + bin(eout).count("1")
    if count or timeout == 0 or expired(deadline):
        clear_deadline(t, key)
        for p, res in zip(ptrs, (rout, wout, eout)):
            if p and nbytes:
                t.mem.write(p, res.to_bytes(nbytes, "little"))
        return count
    waits.block(deadline)


@syscall()
def select(t, nfds, readfds, writefds, exceptfds, timeout, *_):
    tv = _timeval(t, timeout)
    key = ("select", nfds, readfds, writefds, exceptfds, timeout)
    deadline = _start(t, key, tv)
    n = do_select(t, key, nfds, (readfds, writefds, exceptfds), tv)
    if timeout and tv:
        left = remaining(deadline)
        usec = int(round(left * 1e6))
        t.mem.write(timeout, TIMEVAL.pack(usec // 1_000_000, usec % 1_000_000))
    return n


@syscall(partial=True)
def pselect6(t, nfds, readfds, writefds, exceptfds, tsp, sig):
    """Partial: a signal mask is validated but not applied during the wait."""
    timeout = _timespec(t, tsp)
    if sig:
        ss, ss_len = struct.unpack("<QQ", t.mem.read(sig, 16))
        _check_sigmask(t, ss, ss_len)
    key = ("pselect6", nfds, readfds, writefds, exceptfds, tsp, sig)
    deadline = _start(t, key, timeout)
    n = do_select(t, key, nfds, (readfds, writefds, exceptfds), timeout)
    if tsp and timeout:
        left = remaining(deadline)
        t.mem.write(tsp, TIMESPEC.pack(int(left), int((left % 1) * 1e9)))
    return n


# --- epoll ---------------------------------------------------------------------------------

@syscall()
def epoll_create(t, size, *_):
    if s32(size) <= 0:
        raise SyscallError(C.EINVAL)
    return _install(t, EpollFile(0, ino=_ino(t)), False)


@syscall()
def epoll_create1(t, flags, *_):
    flags = s32(flags)
    if flags & ~C.EPOLL_CLOEXEC:
        raise SyscallError(C.EINVAL)
    return _install(t, EpollFile(0, ino=_ino(t)), bool(flags & C.EPOLL_CLOEXEC))


@syscall()
def epoll_ctl(t, epfd, op, fd, event, *_):
    op = s32(op)
    events = data = 0
    if op != C.EPOLL_CTL_DEL:
        events, data = EPOLL_EVENT.unpack(t.mem.read(event, EPOLL_EVENT.size))
    ep = t.fdtable.get(s32(epfd))
    target = t.fdtable.get(s32(fd))
    if not pollable(target):
        raise SyscallError(C.EPERM)
    if not isinstance(ep, EpollFile) or ep is target:
        raise SyscallError(C.EINVAL)
    ep.ctl(op, s32(fd), target, events, data, creds=t.creds)
    return 0


def do_epoll_wait(t, key, epfd: int, events: int, maxevents: int, timeout: float | None) -> int:
    maxevents = s32(maxevents)
    if maxevents <= 0 or maxevents > EP_MAX_EVENTS:
        raise SyscallError(C.EINVAL)
    ep = t.fdtable.get(s32(epfd))
    if not isinstance(ep, EpollFile):
        raise SyscallError(C.EINVAL)
    deadline = _start(t, key, timeout)
    ready = ep.collect(maxevents)
    if ready or timeout == 0 or expired(deadline):
        clear_deadline(t, key)
        if ready:
            t.mem.write(events, b"".join(EPOLL_EVENT.pack(ev, data) for ev, data in ready))
        return len(ready)
    raise WouldBlock(queues=[ep.wq], deadline=deadline, restart="nohand",
                     host_fds=_merge(ep.poll_host_fds()))


def _merge(pairs) -> tuple:
    out: dict[int, int] = {}
    for fd, ev in pairs:
        out[fd] = out.get(fd, 0) | ev
    return tuple(out.items())


@syscall()
def epoll_wait(t, epfd, events, maxevents, timeout, *_):
    key = ("epoll_wait", epfd, events, maxevents, timeout)
    return do_epoll_wait(t, key, epfd, events, maxevents, _ms(timeout))


@syscall(partial=True)
def epoll_pwait(t, epfd, events, maxevents, timeout, sigmask, sigsetsize):
    """Partial: a signal mask is validated but not applied during the wait."""
    _check_sigmask(t, sigmask, sigsetsize)
    key = ("epoll_pwait", epfd, events, maxevents, timeout, sigmask)
    return do_epoll_wait(t, key, epfd, events, maxevents, _ms(timeout))


@syscall(partial=True)
def epoll_pwait2(t, epfd, events, maxevents, timeout, sigmask, sigsetsize):
    """Partial: a signal mask is validated but not applied during the wait."""
    tmo = _timespec(t, timeout)
    _check_sigmask(t, sigmask, sigsetsize)
    key = ("epoll_pwait2", epfd, events, maxevents, timeout, sigmask)
    return do_epoll_wait(t, key, epfd, events, maxevents, tmo)


# --- eventfd -------------------------------------------------------------------------------

@syscall()
def eventfd(t, initval, *_):
    return _eventfd(t, initval, 0)


@syscall()
def eventfd2(t, initval, flags, *_):
    return _eventfd(t, initval, s32(flags))


def _eventfd(t, initval: int, flags: int) -> int:
    if flags & ~(C.EFD_CLOEXEC | C.EFD_NONBLOCK | C.EFD_SEMAPHORE):
        raise SyscallError(C.EINVAL)
    f = EventFD(initval & 0xFFFFFFFF, flags, ino=_ino(t))
    return _install(t, f, bool(flags & C.EFD_CLOEXEC))


# --- misc ----------------------------------------------------------------------------------

def _ino(t) -> int | None:
    counter = getattr(t.kernel, "anon_ino", None)
    return next(counter) if counter is not None else None


def _install(t, f, cloexec: bool) -> int:
    try:
        return t.fdtable.install(f, cloexec)
    except BaseException:
        f.decref()
        raise


@hookimpl
def pysc_syscalls(table, platform):
    table.register_module(sys.modules[__name__])
