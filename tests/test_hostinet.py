"""hostinet: inet sockets that are host sockets of the Sentry, driven through
the syscall handlers with real TCP and UDP on 127.0.0.1."""
from __future__ import annotations

import select
import socket as pysocket
import struct
import time

import pytest

from pysc.core import unix
from pysc.core.abi import consts as C
from fakes import make_task, sc
from pysc.core.abi.structs import IOVEC, MSGHDR, POLLFD
from pysc.core.errors import WouldBlock
from pysc.netstack.hostinet import HostSocket
from pysc.syscalls import net
from pysc.syscalls import poll as P

IPPROTO_TCP, TCP_NODELAY = 6, 1


@pytest.fixture
def t():
    task = make_task()
    yield task
    task.fdtable.close_all()


def run(fn, t, *args, timeout=3.0):
    """Run a handler the way the kernel would: on WouldBlock wait for its
    host fds (or a short while), then run it again."""
    end = time.monotonic() + timeout
    while True:
        try:
            return sc(fn, t, *args)
        except WouldBlock as wb:
            assert time.monotonic() < end, "still blocked"
            if wb.host_fds:
                p = select.poll()
                for fd, ev in wb.host_fds:
                    p.register(fd, ev)
                p.poll(50)
            else:
                time.sleep(0.005)


def sin(port=0, host="127.0.0.1") -> bytes:
    return struct.pack("<H", C.AF_INET) + struct.pack("!H4s8x", port, pysocket.inet_aton(host))


def sin6(port=0) -> bytes:
    loopback = pysocket.inet_pton(pysocket.AF_INET6, "::1")
    return struct.pack("<H", C.AF_INET6) + struct.pack("!HI16sI", port, 0, loopback, 0)


def getname(t, fn, fd):
    buf, lp = t.mem.alloc(128), t.mem.alloc(4)
    t.mem.write_u32(lp, 128)
    r = sc(fn, t, fd, buf, lp)
    return r if r < 0 else t.mem.read(buf, t.mem.read_u32(lp))


def port_of(addr: bytes) -> int:
    return struct.unpack("!H", addr[2:4])[0]


def send(t, fd, data, flags=0):
    return run(net.sendto, t, fd, t.mem.put(data), len(data), flags, 0, 0)


def recv(t, fd, n, flags=0):
    buf = t.mem.alloc(max(n, 1))
    r = run(net.recvfrom, t, fd, buf, n, flags, 0, 0)
    return t.mem.read(buf, min(r, n)) if r >= 0 else r


def tcp_pair(t):
    ls = sc(net.socket, t, C.AF_INET, C.SOCK_STREAM, 0)
    a = sin()
    assert sc(net.bind, t, ls, t.mem.put(a), len(a)) == 0
    assert sc(net.listen, t, ls, 8) == 0
    addr = getname(t, net.getsockname, ls)
    assert len(addr) == 16 and port_of(addr) != 0
    c = sc(net.socket, t, C.AF_INET, C.SOCK_STREAM, 0)
    assert run(net.connect, t, c, t.mem.put(addr), len(addr)) == 0
    s = run(net.accept4, t, ls, 0, 0, 0)
    assert s >= 0
    return ls, c, s, addr


def test_tcp_connect_accept_send_recv(t):
    ls, c, s, addr = tcp_pair(t)
    f = t.fdtable.get(c)
    assert isinstance(f, HostSocket) and f.host_fd() is None and f.poll_host_fd == f.fd
    assert f.path_for_proc().startswith(b"socket:[")
    assert getname(t, net.getpeername, c) == addr
    assert port_of(getname(t, net.getpeername, s)) == port_of(getname(t, net.getsockname, c))
    assert send(t, c, b"hello") == 5
    assert recv(t, s, 100) == b"hello"
    assert t.fdtable.get(s).write(t, b"back") == 4
    assert recv(t, c, 100) == b"back"


def test_tcp_blocking_accept_and_recv_raise_wouldblock_with_host_fds(t):
    ls = sc(net.socket, t, C.AF_INET, C.SOCK_STREAM, 0)
    a = sin()
    sc(net.bind, t, ls, t.mem.put(a), len(a))
    sc(net.listen, t, ls, 8)
    lf = t.fdtable.get(ls)
    with pytest.raises(WouldBlock) as ei:
        sc(net.accept, t, ls, 0, 0)
    assert ei.value.host_fds == ((lf.fd, C.POLLIN),) and ei.value.restart == "sys"
    ls2 = sc(net.socket, t, C.AF_INET, C.SOCK_STREAM | C.SOCK_NONBLOCK, 0)
    sc(net.bind, t, ls2, t.mem.put(a), len(a))
    sc(net.listen, t, ls2, 8)
    assert sc(net.accept, t, ls2, 0, 0) == -C.EAGAIN
    _, c, s, _ = tcp_pair(t)
    with pytest.raises(WouldBlock) as ei:
        sc(net.recvfrom, t, s, t.mem.alloc(8), 8, 0, 0, 0)
    assert ei.value.host_fds == ((t.fdtable.get(s).fd, C.POLLIN),)
    assert sc(net.recvfrom, t, s, t.mem.alloc(8), 8, C.MSG_DONTWAIT, 0, 0) == -C.EAGAIN


def test_nonblocking_connect_einprogress(t):
    ls = pysocket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    try:
        port = ls.getsockname()[1]
        c = sc(net.socket, t, C.AF_INET, C.SOCK_STREAM | C.SOCK_NONBLOCK, 0)
        a = sin(port)
        r = sc(net.connect, t, c, t.mem.put(a), len(a))
        assert r in (0, -C.EINPROGRESS)
        f = t.fdtable.get(c)
        p = select.poll()
        p.register(f.fd, select.POLLOUT)
        p.poll(1000)
        assert f.poll() & C.POLLOUT
        buf, lp = t.mem.alloc(4), t.mem.put(struct.pack("<i", 4))
        assert sc(net.getsockopt, t, c, C.SOL_SOCKET, C.SO_ERROR, buf, lp) == 0
        assert t.mem.read_u32(buf) == 0
    finally:
        ls.close()


def test_blocking_connect_refused(t):
    probe = pysocket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    c = sc(net.socket, t, C.AF_INET, C.SOCK_STREAM, 0)
    a = sin(port)
    assert run(net.connect, t, c, t.mem.put(a), len(a)) == -C.ECONNREFUSED


def test_peek_waitall_shutdown(t):
    _, c, s, _ = tcp_pair(t)
    send(t, c, b"abc")
    time.sleep(0.01)
    assert recv(t, s, 10, C.MSG_PEEK) == b"abc"
    # MSG_WAITALL gathers across arrivals
    with pytest.raises(WouldBlock):
        for _ in range(100):
            sc(net.recvfrom, t, s, t.mem.alloc(8), 6, C.MSG_WAITALL, 0, 0)
            break
    assert t.fdtable.get(s).poll() & C.POLLIN  # the pushback is readable
    send(t, c, b"def")
    assert recv(t, s, 6, C.MSG_WAITALL) == b"abcdef"
    assert sc(net.shutdown, t, c, C.SHUT_WR) == 0
    assert recv(t, s, 10) == b""


def test_sigpipe_on_broken_tcp(t, monkeypatch):
    sent = []
    monkeypatch.setattr(unix, "send_sigpipe", lambda task: sent.append(task))
    _, c, s, _ = tcp_pair(t)
    t.fdtable.close(s)
    results = set()
    for _ in range(50):
        r = sc(net.sendto, t, c, t.mem.put(b"x" * 1000), 1000, C.MSG_NOSIGNAL, 0, 0)
        results.add(r)
        if r < 0:
            break
        time.sleep(0.002)
    assert results & {-C.EPIPE, -C.ECONNRESET}
    assert not sent
    r = sc(net.sendto, t, c, t.mem.put(b"x"), 1, 0, 0, 0)
    if r == -C.EPIPE:
        assert sent


def test_sockopts(t):
    _, c, s, _ = tcp_pair(t)
    one = t.mem.put(struct.pack("<i", 1))
    assert sc(net.setsockopt, t, c, IPPROTO_TCP, TCP_NODELAY, one, 4) == 0
    buf, lp = t.mem.alloc(4), t.mem.put(struct.pack("<i", 4))
    assert sc(net.getsockopt, t, c, IPPROTO_TCP, TCP_NODELAY, buf, lp) == 0
    assert t.mem.read_u32(buf) != 0
    t.mem.write_u32(lp, 4)
    assert sc(net.getsockopt, t, c, C.SOL_SOCKET, C.SO_TYPE, buf, lp) == 0
    assert t.mem.read_u32(buf) == C.SOCK_STREAM
    t.mem.write_u32(lp, 4)
    assert sc(net.getsockopt, t, c, C.SOL_SOCKET, C.SO_DOMAIN, buf, lp) == 0
    assert t.mem.read_u32(buf) == C.AF_INET
    assert sc(net.setsockopt, t, c, C.SOL_SOCKET, 26, one, 4) == -C.ENOPROTOOPT  # SO_ATTACH_FILTER
    assert sc(net.setsockopt, t, c, 255, 1, one, 4) == -C.ENOPROTOOPT
    # SO_RCVTIMEO is emulated: the recv fails with EAGAIN once it passes
    tv = t.mem.put(struct.pack("<qq", 0, 20000))
    assert sc(net.setsockopt, t, s, C.SOL_SOCKET, C.SO_RCVTIMEO, tv, 16) == 0
    out, lp16 = t.mem.alloc(16), t.mem.put(struct.pack("<i", 16))
    assert sc(net.getsockopt, t, s, C.SOL_SOCKET, C.SO_RCVTIMEO, out, lp16) == 0
    assert struct.unpack("<qq", t.mem.read(out, 16)) == (0, 20000)
    start = time.monotonic()
    assert recv(t, s, 10) == -C.EAGAIN
    assert time.monotonic() - start >= 0.015
    fionread = t.mem.alloc(4)
    send(t, c, b"1234")
    time.sleep(0.01)
    assert t.fdtable.get(s).ioctl(t, C.FIONREAD, fionread) == 0
    assert t.mem.read_u32(fionread) == 4


def test_udp_sendto_recvfrom_and_msgs(t):
    a = sc(net.socket, t, C.AF_INET, C.SOCK_DGRAM, 0)
    b = sc(net.socket, t, C.AF_INET, C.SOCK_DGRAM | C.SOCK_CLOEXEC, 0)
    assert t.fdtable.cloexec(b)
    lo = sin()
    sc(net.bind, t, a, t.mem.put(lo), len(lo))
    sc(net.bind, t, b, t.mem.put(lo), len(lo))
    aaddr, baddr = getname(t, net.getsockname, a), getname(t, net.getsockname, b)
    assert sc(net.sendto, t, b, t.mem.put(b"datagram"), 8, 0, t.mem.put(aaddr), len(aaddr)) == 8
    buf, ab, alen = t.mem.alloc(16), t.mem.alloc(32), t.mem.put(struct.pack("<i", 32))
    assert run(net.recvfrom, t, a, buf, 4, C.MSG_TRUNC, ab, alen) == 8
    assert t.mem.read(buf, 4) == b"data"
    assert t.mem.read(ab, t.mem.read_u32(alen)) == baddr
    # sendmsg with two iovecs, recvmsg into two buffers with the name
    iov = t.mem.alloc(32)
    t.mem.write(iov, IOVEC.pack(t.mem.put(b"ab"), 2) + IOVEC.pack(t.mem.put(b"cde"), 3))
    name = t.mem.put(aaddr)
    msg = t.mem.put(MSGHDR.pack(name, len(aaddr), iov, 2, 0, 0, 0))
    assert sc(net.sendmsg, t, b, msg, 0) == 5
    b1, b2 = t.mem.alloc(3), t.mem.alloc(8)
    riov = t.mem.put(IOVEC.pack(b1, 3) + IOVEC.pack(b2, 8))
    rname = t.mem.alloc(32)
    rmsg = t.mem.put(MSGHDR.pack(rname, 32, riov, 2, 0, 0, 0))
    assert run(net.recvmsg, t, a, rmsg, 0) == 5
    assert t.mem.read(b1, 3) + t.mem.read(b2, 2) == b"abcde"
    hdr = MSGHDR.unpack(t.mem.read(rmsg, MSGHDR.size))
    assert t.mem.read(rname, hdr[1]) == baddr
    # connected UDP and poll on the host fd
    assert sc(net.connect, t, b, t.mem.put(aaddr), len(aaddr)) == 0
    arr = t.mem.put(POLLFD.pack(a, C.POLLIN, 0))
    with pytest.raises(WouldBlock) as ei:
        sc(P.poll, t, arr, 1, -1)
    assert ei.value.host_fds == ((t.fdtable.get(a).fd, C.POLLIN),)
    assert send(t, b, b"z") == 1
    assert run(P.poll, t, arr, 1, -1) == 1
    assert recv(t, a, 10) == b"z"


def test_ipv6_loopback(t):
    try:
        probe = pysocket.socket(pysocket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    a = sc(net.socket, t, C.AF_INET6, C.SOCK_DGRAM, 0)
    addr = sin6()
    assert sc(net.bind, t, a, t.mem.put(addr), len(addr)) == 0
    name = getname(t, net.getsockname, a)
    assert len(name) == 28 and port_of(name)
    assert sc(net.sendto, t, a, t.mem.put(b"six"), 3, 0, t.mem.put(name), len(name)) == 3
    assert recv(t, a, 10) == b"six"


def test_network_modes_and_families():
    t = make_task(network="sandbox")
    assert sc(net.socket, t, C.AF_INET, C.SOCK_STREAM, 0) == -C.EAFNOSUPPORT
    t = make_task(network="none")
    fd = sc(net.socket, t, C.AF_INET, C.SOCK_STREAM, 0)
    assert fd >= 0
    assert sc(net.socket, t, C.AF_INET, C.SOCK_SEQPACKET, 0) == -C.ESOCKTNOSUPPORT
    assert sc(net.socket, t, C.AF_INET, C.SOCK_RAW, 1) == -C.EPERM
    assert sc(net.socket, t, C.AF_NETLINK, C.SOCK_RAW, 0) == -C.EAFNOSUPPORT
    t.fdtable.close_all()


def test_release_closes_host_socket(t):
    fd = sc(net.socket, t, C.AF_INET, C.SOCK_DGRAM, 0)
    hostfd = t.fdtable.get(fd).fd
    t.fdtable.close(fd)
    with pytest.raises(OSError):
        import os
        os.fstat(hostfd)
