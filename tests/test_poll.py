"""poll/select/epoll/eventfd handlers (syscalls/poll.py) on Sentry files."""
from __future__ import annotations

import os
import struct
import time

import pytest

from pysc.core import unix
from pysc.core.abi import consts as C
from fakes import make_task, sc
from pysc.core.abi.structs import EPOLL_EVENT, POLLFD, TIMESPEC, TIMEVAL
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.eventfd import EventFD
from pysc.core.file import HostFDFile
from pysc.core.fs.tmpfs import MemFile
from pysc.syscalls import poll as P


def sockpair(t, stype=C.SOCK_STREAM):
    a, b = unix.socketpair(t.kernel, t, stype, 0)
    return t.fdtable.install(a), t.fdtable.install(b)


def park(wb):
    woken = []
    for q in wb.queues:
        q.add("task", lambda: woken.append(1))
    return woken


U64 = struct.Struct("<Q")


# --- eventfd ---------------------------------------------------------------------------------

def test_eventfd_counter():
    t = make_task()
    fd = sc(P.eventfd2, t, 3, C.EFD_CLOEXEC)
    assert fd >= 0 and t.fdtable.cloexec(fd)
    f = t.fdtable.get(fd)
    assert f.path_for_proc() == b"anon_inode:[eventfd]"
    assert f.poll() & C.POLLIN and f.poll() & C.POLLOUT
    assert f.read(t, 8) == U64.pack(3)
    assert not f.poll() & C.POLLIN
    with pytest.raises(SyscallError) as ei:
        f.read(t, 4)
    assert ei.value.errno == C.EINVAL
    with pytest.raises(WouldBlock) as ei:
        f.read(t, 8)
    woken = park(ei.value)
    assert f.write(t, U64.pack(5)) == 8
    assert woken
    assert f.read(t, 16) == U64.pack(5)
    with pytest.raises(SyscallError) as ei:
        f.write(t, U64.pack((1 << 64) - 1))
    assert ei.value.errno == C.EINVAL
    assert sc(P.eventfd2, t, 0, 0x8) == -C.EINVAL
    assert sc(P.eventfd, t, 0) >= 0


def test_eventfd_semaphore_nonblock_overflow():
    t = make_task()
    f = t.fdtable.get(sc(P.eventfd2, t, 2, C.EFD_SEMAPHORE | C.EFD_NONBLOCK))
    assert f.read(t, 8) == U64.pack(1)
    assert f.read(t, 8) == U64.pack(1)
    with pytest.raises(SyscallError) as ei:
        f.read(t, 8)
    assert ei.value.errno == C.EAGAIN
    f.write(t, U64.pack((1 << 64) - 2))
    assert not f.poll() & C.POLLOUT
    with pytest.raises(SyscallError) as ei:
        f.write(t, U64.pack(1))
    assert ei.value.errno == C.EAGAIN
    g = EventFD((1 << 64) - 3, 0)
    with pytest.raises(WouldBlock) as ei:
        g.write(t, U64.pack(5))  # blocking overflow waits for a reader
    woken = park(ei.value)
    g.read(t, 8)
    assert woken
    assert g.write(t, U64.pack(5)) == 8


# --- poll / ppoll ----------------------------------------------------------------------------

def pollfds(t, entries):
    return t.mem.put(b"".join(POLLFD.pack(fd, ev, 0) for fd, ev in entries))


def revents(t, addr, n):
    return [POLLFD.unpack(t.mem.read(addr + 8 * i, 8))[2] & 0xFFFF for i in range(n)]


def test_poll_ready_nval_and_negative_fd():
    t = make_task()
    a, b = sockpair(t)
    arr = pollfds(t, [(a, C.POLLIN | C.POLLOUT), (b, C.POLLIN), (77, C.POLLIN), (-1, C.POLLIN)])
    assert sc(P.poll, t, arr, 4, 0) == 2
    assert revents(t, arr, 4) == [C.POLLOUT, 0, C.POLLNVAL, 0]


def test_poll_blocks_and_wakes_and_times_out():
    t = make_task()
    a, b = sockpair(t)
    arr = pollfds(t, [(b, C.POLLIN)])
    with pytest.raises(WouldBlock) as ei:
        sc(P.poll, t, arr, 1, 1000)
    wb = ei.value
    assert wb.restart == "nohand"
    assert wb.deadline is not None and wb.deadline > time.monotonic() + 0.5
    woken = park(wb)
    t.fdtable.get(a).write(t, b"x")
    assert woken
    assert sc(P.poll, t, arr, 1, 1000) == 1
    assert revents(t, arr, 1) == [C.POLLIN]
    # timeout: the deadline is kept across re-runs, then it returns 0
    arr2 = pollfds(t, [(a, C.POLLIN)])
    with pytest.raises(WouldBlock) as ei:
        sc(P.poll, t, arr2, 1, 20)
    d1 = ei.value.deadline
    with pytest.raises(WouldBlock) as ei:
        sc(P.poll, t, arr2, 1, 20)
    assert ei.value.deadline == d1
    time.sleep(0.03)
    assert sc(P.poll, t, arr2, 1, 20) == 0
    assert t.restart_deadline is None
    # infinite timeout
    with pytest.raises(WouldBlock) as ei:
        sc(P.poll, t, arr2, 1, -1)
    assert ei.value.deadline is None


def test_poll_hup_always_reported():
    t = make_task()
    a, b = sockpair(t)
    t.fdtable.close(a)
    arr = pollfds(t, [(b, 0)])
    assert sc(P.poll, t, arr, 1, 0) == 1
    assert revents(t, arr, 1)[0] & C.POLLHUP


def test_poll_host_fd_backed_file():
    t = make_task()
    r, w = os.pipe()
    try:
        f = HostFDFile(r, C.O_RDONLY, owns=False)
        fd = t.fdtable.install(f)
        arr = pollfds(t, [(fd, C.POLLIN)])
        with pytest.raises(WouldBlock) as ei:
            sc(P.poll, t, arr, 1, -1)
        assert (r, C.POLLIN) in ei.value.host_fds
        os.write(w, b"x")
        assert sc(P.poll, t, arr, 1, -1) == 1
    finally:
        os.close(r)
        os.close(w)


def test_ppoll_timeout_writeback_and_sigmask():
    t = make_task()
    a, b = sockpair(t)
    arr = pollfds(t, [(a, C.POLLOUT)])
    ts = t.mem.put(TIMESPEC.pack(5, 0))
    assert sc(P.ppoll, t, arr, 1, ts, 0, 0) == 1
    sec, nsec = TIMESPEC.unpack(t.mem.read(ts, 16))
    assert 4 <= sec <= 5
    mask = t.mem.put(b"\0" * 8)
    assert sc(P.ppoll, t, arr, 1, 0, mask, 4) == -C.EINVAL
    assert sc(P.ppoll, t, arr, 1, 0, mask, 8) == 1
    bad = t.mem.put(TIMESPEC.pack(0, 2_000_000_000))
    assert sc(P.ppoll, t, arr, 1, bad, 0, 0) == -C.EINVAL
    zero = t.mem.put(TIMESPEC.pack(0, 0))
    arr2 = pollfds(t, [(b, C.POLLIN)])
    assert sc(P.ppoll, t, arr2, 1, zero, 0, 0) == 0
    assert sc(P.poll, t, arr2, 1 << 20, 0) == -C.EINVAL


# --- select / pselect6 -----------------------------------------------------------------------

def fdset(t, *fds):
    bits = 0
    for fd in fds:
        bits |= 1 << fd
    return t.mem.put(bits.to_bytes(128, "little"))


def getset(t, addr):
    bits = int.from_bytes(t.mem.read(addr, 8), "little")
    return [i for i in range(64) if bits >> i & 1]


def test_select():
    t = make_task()
    a, b = sockpair(t)
    r, w = fdset(t, a, b), fdset(t, a, b)
    assert sc(P.select, t, max(a, b) + 1, r, w, 0, 0) == 2
    assert getset(t, r) == [] and sorted(getset(t, w)) == sorted([a, b])
    t.fdtable.get(a).write(t, b"x")
    r = fdset(t, a, b)
    tv = t.mem.put(TIMEVAL.pack(0, 0))
    assert sc(P.select, t, max(a, b) + 1, r, 0, 0, tv) == 1
    assert getset(t, r) == [b]
    # EBADF for a closed fd in a set
    r = fdset(t, 50)
    assert sc(P.select, t, 51, r, 0, 0, 0) == -C.EBADF
    assert sc(P.select, t, -1, 0, 0, 0, 0) == -C.EINVAL
    # blocking, then a timeout with the remaining time written back
    r = fdset(t, a)
    tv = t.mem.put(TIMEVAL.pack(0, 20000))
    with pytest.raises(WouldBlock):
        sc(P.select, t, a + 1, r, 0, 0, tv)
    time.sleep(0.03)
    assert sc(P.select, t, a + 1, r, 0, 0, tv) == 0
    assert TIMEVAL.unpack(t.mem.read(tv, 16)) == (0, 0)
    assert getset(t, r) == []
    tv = t.mem.put(TIMEVAL.pack(0, -1))
    assert sc(P.select, t, a + 1, fdset(t, a), 0, 0, tv) == -C.EINVAL


def test_pselect6():
    t = make_task()
    a, b = sockpair(t)
    w = fdset(t, a)
    ts = t.mem.put(TIMESPEC.pack(1, 0))
    sig = t.mem.put(struct.pack("<QQ", t.mem.put(b"\0" * 8), 8))
    assert sc(P.pselect6, t, a + 1, 0, w, 0, ts, sig) == 1
    badsig = t.mem.put(struct.pack("<QQ", t.mem.put(b"\0" * 8), 3))
    assert sc(P.pselect6, t, a + 1, 0, w, 0, ts, badsig) == -C.EINVAL


# --- epoll -----------------------------------------------------------------------------------

def ctl(t, ep, op, fd, events=0, data=0):
    ev = t.mem.put(EPOLL_EVENT.pack(events, data))
    return sc(P.epoll_ctl, t, ep, op, fd, ev)


def wait(t, ep, maxevents=16, timeout=0):
    buf = t.mem.alloc(12 * maxevents)
    n = sc(P.epoll_wait, t, ep, buf, maxevents, timeout)
    if n < 0:
        return n
    return [EPOLL_EVENT.unpack(t.mem.read(buf + 12 * i, 12)) for i in range(n)]


def test_epoll_ctl_errors():
    t = make_task()
    ep = sc(P.epoll_create1, t, C.EPOLL_CLOEXEC)
    assert t.fdtable.cloexec(ep)
    assert t.fdtable.get(ep).path_for_proc() == b"anon_inode:[eventpoll]"
    assert sc(P.epoll_create1, t, 1) == -C.EINVAL
    assert sc(P.epoll_create, t, 0) == -C.EINVAL
    assert sc(P.epoll_create, t, 1) >= 0
    a, b = sockpair(t)
    assert ctl(t, ep, C.EPOLL_CTL_ADD, a, C.EPOLLIN) == 0
    assert ctl(t, ep, C.EPOLL_CTL_ADD, a, C.EPOLLIN) == -C.EEXIST
    assert ctl(t, ep, C.EPOLL_CTL_MOD, b, C.EPOLLIN) == -C.ENOENT
    assert ctl(t, ep, C.EPOLL_CTL_DEL, b) == -C.ENOENT
    assert ctl(t, ep, C.EPOLL_CTL_ADD, ep, C.EPOLLIN) == -C.EINVAL
    assert ctl(t, ep, C.EPOLL_CTL_ADD, 99, C.EPOLLIN) == -C.EBADF
    assert ctl(t, 99, C.EPOLL_CTL_ADD, a, C.EPOLLIN) == -C.EBADF
    assert ctl(t, a, C.EPOLL_CTL_ADD, b, C.EPOLLIN) == -C.EINVAL  # not an epoll fd
    assert ctl(t, ep, 9, b, C.EPOLLIN) == -C.EINVAL
    # regular files cannot be watched
    ino = t.kernel.vfs.root.inode.create(b"f", 0o644, t.creds)
    reg = t.fdtable.install(MemFile(C.O_RDWR, None, ino))
    assert ctl(t, ep, C.EPOLL_CTL_ADD, reg, C.EPOLLIN) == -C.EPERM
    # EPOLLEXCLUSIVE
    assert ctl(t, ep, C.EPOLL_CTL_ADD, b, C.EPOLLIN | C.EPOLLEXCLUSIVE) == 0
    assert ctl(t, ep, C.EPOLL_CTL_MOD, b, C.EPOLLIN) == -C.EINVAL
    assert ctl(t, ep, C.EPOLL_CTL_MOD, a, C.EPOLLIN | C.EPOLLEXCLUSIVE) == -C.EINVAL
    ep2 = sc(P.epoll_create1, t, 0)
    assert ctl(t, ep2, C.EPOLL_CTL_ADD, ep, C.EPOLLIN | C.EPOLLEXCLUSIVE) == -C.EINVAL
    assert ctl(t, ep2, C.EPOLL_CTL_ADD, a, C.EPOLLIN | C.EPOLLONESHOT | C.EPOLLEXCLUSIVE) == -C.EINVAL
    # loops
    assert ctl(t, ep2, C.EPOLL_CTL_ADD, ep, C.EPOLLIN) == 0
    assert ctl(t, ep, C.EPOLL_CTL_ADD, ep2, C.EPOLLIN) == -C.ELOOP
    assert wait(t, ep, maxevents=0) == -C.EINVAL
    assert wait(t, a) == -C.EINVAL


def test_epoll_level_triggered_and_wake():
    t = make_task()
    ep = sc(P.epoll_create1, t, 0)
    a, b = sockpair(t)
    assert ctl(t, ep, C.EPOLL_CTL_ADD, b, C.EPOLLIN, data=0xB) == 0
    assert wait(t, ep) == []
    buf = t.mem.alloc(12)
    with pytest.raises(WouldBlock) as ei:
        sc(P.epoll_wait, t, ep, buf, 1, -1)
    assert ei.value.restart == "nohand"
    woken = park(ei.value)
    t.fdtable.get(a).write(t, b"x")
    assert woken
    assert wait(t, ep) == [(C.EPOLLIN, 0xB)]
    assert wait(t, ep) == [(C.EPOLLIN, 0xB)]  # level-triggered: still there
    t.fdtable.get(b).read(t, 10)
    assert wait(t, ep) == []
    # MOD changes the interest and the data
    assert ctl(t, ep, C.EPOLL_CTL_MOD, b, C.EPOLLOUT, data=7) == 0
    assert wait(t, ep) == [(C.EPOLLOUT, 7)]
    assert ctl(t, ep, C.EPOLL_CTL_DEL, b) == 0
    assert wait(t, ep) == []


def test_epoll_edge_triggered_and_oneshot():
    t = make_task()
    ep = sc(P.epoll_create1, t, 0)
    a, b = sockpair(t)
    fa = t.fdtable.get(a)
    ctl(t, ep, C.EPOLL_CTL_ADD, b, C.EPOLLIN | C.EPOLLET, data=1)
    assert wait(t, ep) == []
    fa.write(t, b"x")
    assert wait(t, ep) == [(C.EPOLLIN, 1)]
    assert wait(t, ep) == []  # no new edge
    fa.write(t, b"y")
    assert wait(t, ep) == [(C.EPOLLIN, 1)]  # new data is a new edge
    # one-shot: reported once, then disabled until MOD
    ctl(t, ep, C.EPOLL_CTL_ADD, a, C.EPOLLOUT | C.EPOLLONESHOT, data=2)
    assert (C.EPOLLOUT, 2) in wait(t, ep)
    assert (C.EPOLLOUT, 2) not in wait(t, ep)
    ctl(t, ep, C.EPOLL_CTL_MOD, a, C.EPOLLOUT | C.EPOLLONESHOT, data=3)
    assert (C.EPOLLOUT, 3) in wait(t, ep)


def test_epoll_rdhup_and_hup():
    t = make_task()
    ep = sc(P.epoll_create1, t, 0)
    a, b = sockpair(t)
    ctl(t, ep, C.EPOLL_CTL_ADD, b, C.EPOLLIN | C.EPOLLRDHUP, data=5)
    t.fdtable.get(a).shutdown(t, C.SHUT_WR)
    [(ev, data)] = wait(t, ep)
    assert ev & C.EPOLLRDHUP and ev & C.EPOLLIN and not ev & C.EPOLLHUP
    t.fdtable.close(a)
    [(ev, data)] = wait(t, ep)
    assert ev & C.EPOLLHUP  # always reported


def test_epoll_close_removes_when_last_reference_goes():
    t = make_task()
    ep = sc(P.epoll_create1, t, 0)
    a, b = sockpair(t)
    t.fdtable.get(a).write(t, b"x")
    ctl(t, ep, C.EPOLL_CTL_ADD, b, C.EPOLLIN, data=1)
    f = t.fdtable.get(b)
    f.incref()
    dup = t.fdtable.install(f)
    t.fdtable.close(b)
    assert wait(t, ep) == [(C.EPOLLIN, 1)]  # the description lives on through the dup
    assert ctl(t, ep, C.EPOLL_CTL_DEL, dup) == -C.ENOENT  # keyed by (fd, file)
    t.fdtable.close(dup)
    assert wait(t, ep) == []
    assert t.fdtable.get(ep).entries == {}
    # the number can be reused for a new file
    c = t.fdtable.install(EventFD(1, 0))
    assert c == b
    assert ctl(t, ep, C.EPOLL_CTL_ADD, c, C.EPOLLIN, data=9) == 0
    assert wait(t, ep) == [(C.EPOLLIN, 9)]


def test_epoll_nested_and_in_poll():
    t = make_task()
    inner = sc(P.epoll_create1, t, 0)
    outer = sc(P.epoll_create1, t, 0)
    a, b = sockpair(t)
    ctl(t, inner, C.EPOLL_CTL_ADD, b, C.EPOLLIN, data=1)
    ctl(t, outer, C.EPOLL_CTL_ADD, inner, C.EPOLLIN, data=2)
    arr = pollfds(t, [(inner, C.POLLIN)])
    assert sc(P.poll, t, arr, 1, 0) == 0
    with pytest.raises(WouldBlock) as ei:
        sc(P.poll, t, arr, 1, -1)
    woken_poll = park(ei.value)
    buf = t.mem.alloc(12)
    with pytest.raises(WouldBlock) as ei:
        sc(P.epoll_wait, t, outer, buf, 1, -1)
    woken_outer = park(ei.value)
    t.fdtable.get(a).write(t, b"x")
    assert woken_poll and woken_outer
    assert sc(P.poll, t, arr, 1, 0) == 1
    assert wait(t, outer) == [(C.EPOLLIN, 2)]
    assert wait(t, inner) == [(C.EPOLLIN, 1)]


def test_epoll_round_robin():
    t = make_task()
    ep = sc(P.epoll_create1, t, 0)
    fds = [t.fdtable.install(EventFD(1, 0)) for _ in range(3)]
    for fd in fds:
        ctl(t, ep, C.EPOLL_CTL_ADD, fd, C.EPOLLIN, data=fd)
    seen = [wait(t, ep, maxevents=1)[0][1] for _ in range(3)]
    assert sorted(seen) == sorted(fds)


def test_epoll_host_fd_backed_file():
    t = make_task()
    r, w = os.pipe()
    try:
        fd = t.fdtable.install(HostFDFile(r, C.O_RDONLY, owns=False))
        ep = sc(P.epoll_create1, t, 0)
        ctl(t, ep, C.EPOLL_CTL_ADD, fd, C.EPOLLIN | C.EPOLLET, data=4)
        buf = t.mem.alloc(12)
        with pytest.raises(WouldBlock) as ei:
            sc(P.epoll_wait, t, ep, buf, 1, -1)
        assert ei.value.host_fds == ((r, C.POLLIN),)
        os.write(w, b"x")
        assert wait(t, ep) == [(C.EPOLLIN, 4)]
        # edge already reported: the fd is not watched for IN again (no busy loop)
        with pytest.raises(WouldBlock) as ei:
            sc(P.epoll_wait, t, ep, buf, 1, -1)
        assert ei.value.host_fds == ()
    finally:
        os.close(r)
        os.close(w)


def test_epoll_pwait_variants():
    t = make_task()
    ep = sc(P.epoll_create1, t, 0)
    e = t.fdtable.install(EventFD(1, 0))
    ctl(t, ep, C.EPOLL_CTL_ADD, e, C.EPOLLIN, data=1)
    buf = t.mem.alloc(12)
    mask = t.mem.put(b"\0" * 8)
    assert sc(P.epoll_pwait, t, ep, buf, 1, 0, mask, 8) == 1
    assert sc(P.epoll_pwait, t, ep, buf, 1, 0, mask, 7) == -C.EINVAL
    ts = t.mem.put(TIMESPEC.pack(0, 0))
    assert sc(P.epoll_pwait2, t, ep, buf, 1, ts, 0, 8) == 1
    ctl(t, ep, C.EPOLL_CTL_DEL, e)
    assert sc(P.epoll_pwait2, t, ep, buf, 1, ts, 0, 8) == 0
    with pytest.raises(WouldBlock) as ei:
        sc(P.epoll_pwait2, t, ep, buf, 1, 0, 0, 8)
    assert ei.value.deadline is None
