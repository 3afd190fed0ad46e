"""AF_UNIX sockets: the syscall handlers of syscalls/net.py on Sentry unix sockets."""
from __future__ import annotations

import struct
import time

import pytest

from pysc.core import unix
from pysc.core.abi import consts as C
from fakes import make_kernel, make_task, sc
from pysc.core.abi.structs import CMSGHDR, IOVEC, MSGHDR, UCRED, cmsg_space
from pysc.core.errors import WouldBlock
from pysc.core.eventfd import EventFD
from pysc.syscalls import net


# --- a minimal fake task ---------------------------------------------------------------------

@pytest.fixture
def sigpipes(monkeypatch):
    sent = []
    monkeypatch.setattr(unix, "send_sigpipe", lambda t: sent.append(t))
    return sent


def pair(t, stype=C.SOCK_STREAM, flags=0):
    sv = t.mem.alloc(8)
    assert sc(net.socketpair, t, C.AF_UNIX, stype | flags, 0, sv) == 0
    return struct.unpack("<ii", t.mem.read(sv, 8))


def send(t, fd, data, flags=0):
    return sc(net.sendto, t, fd, t.mem.put(data), len(data), flags, 0, 0)


def recv(t, fd, n, flags=0):
    buf = t.mem.alloc(max(n, 1))
    r = sc(net.recvfrom, t, fd, buf, n, flags, 0, 0)
    return t.mem.read(buf, min(r, n)) if r >= 0 else r


def sun(name: bytes) -> bytes:
    return struct.pack("<H", C.AF_UNIX) + name


def addr_arg(t, name: bytes):
    a = sun(name)
    return t.mem.put(a), len(a)


def getname(t, fn, fd):
    buf, lp = t.mem.alloc(128), t.mem.alloc(4)
    t.mem.write_u32(lp, 128)
    r = sc(fn, t, fd, buf, lp)
    if r < 0:
        return r
    n = t.mem.read_u32(lp)
    return t.mem.read(buf, n)


def sockopt_int(t, fd, name, level=C.SOL_SOCKET):
    buf, lp = t.mem.alloc(16), t.mem.alloc(4)
    t.mem.write_u32(lp, 16)
    r = sc(net.getsockopt, t, fd, level, name, buf, lp)
    if r < 0:
        return r
    return t.mem.read(buf, t.mem.read_u32(lp))


def park(wb):
    """What the kernel does with WouldBlock: one waiter on every queue."""
    woken = []
    for q in wb.queues:
        q.add("task", lambda: woken.append(1))
    return woken


def unpark(wb):
    for q in wb.queues:
        q.remove("task")


# --- stream basics ----------------------------------------------------------------------------

def test_socketpair_stream_roundtrip_and_read_write():
    t = make_task()
    a, b = pair(t)
    assert send(t, a, b"hello") == 5
    assert recv(t, b, 100) == b"hello"
    fa = t.fdtable.get(a)
    assert fa.write(t, b"xyz") == 3
    assert t.fdtable.get(b).read(t, 10) == b"xyz"
    assert fa.path_for_proc() == b"socket:[%d]" % fa.ino
    st = fa.stat()
    assert st.mode & C.S_IFMT == C.S_IFSOCK


def test_stream_poll_bits():
    t = make_task()
    a, b = pair(t)
    fa, fb = t.fdtable.get(a), t.fdtable.get(b)
    assert fa.poll() & C.POLLOUT and not fa.poll() & C.POLLIN
    send(t, a, b"x")
    assert fb.poll() & C.POLLIN
    sc(net.shutdown, t, a, C.SHUT_WR)
    assert fb.poll() & C.POLLRDHUP
    assert not fb.poll() & C.POLLHUP
    recv(t, b, 10)
    assert recv(t, b, 10) == b""  # EOF after SHUT_WR
    # an unconnected stream socket polls OUT|HUP, as Linux
    fd = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    assert t.fdtable.get(fd).poll() & (C.POLLOUT | C.POLLHUP) == C.POLLOUT | C.POLLHUP


def test_blocking_read_waits_and_wakes():
    t = make_task()
    a, b = pair(t)
    with pytest.raises(WouldBlock) as ei:
        recv(t, b, 10)
    wb = ei.value
    assert wb.restart == "sys"
    woken = park(wb)
    send(t, a, b"data")
    assert woken
    assert recv(t, b, 10) == b"data"


def test_nonblocking_and_dontwait():
    t = make_task()
    a, b = pair(t, flags=C.SOCK_NONBLOCK)
    assert recv(t, b, 10) == -C.EAGAIN
    a2, b2 = pair(t)
    assert recv(t, b2, 10, C.MSG_DONTWAIT) == -C.EAGAIN


def test_peek_and_waitall():
    t = make_task()
    a, b = pair(t)
    send(t, a, b"ab")
    send(t, a, b"cd")
    assert recv(t, b, 10, C.MSG_PEEK) == b"abcd"
    assert recv(t, b, 1) == b"a"
    assert recv(t, b, 10, C.MSG_PEEK) == b"bcd"
    with pytest.raises(WouldBlock):
        recv(t, b, 5, C.MSG_WAITALL)
    send(t, a, b"ef")
    assert recv(t, b, 5, C.MSG_WAITALL) == b"bcdef"


def test_buffer_full_blocks_writer():
    t = make_task()
    a, b = pair(t)
    fa = t.fdtable.get(a)
    big = b"x" * 100000
    assert send(t, a, big) == 100000
    assert send(t, a, big) == 100000
    assert not fa.poll() & C.POLLOUT or fa.wmem < fa.sndbuf
    with pytest.raises(WouldBlock) as ei:
        send(t, a, big)
    woken = park(ei.value)
    got = recv(t, b, 150000)
    assert len(got) == 150000
    assert woken
    assert send(t, a, big) == 100000
    # non-blocking writers take what fits
    c, d = pair(t, flags=C.SOCK_NONBLOCK)
    n = send(t, c, b"y" * 300000)
    assert 0 < n < 300000
    assert send(t, c, b"y") == -C.EAGAIN


def test_epipe_sigpipe_and_nosignal(sigpipes):
    t = make_task()
    a, b = pair(t)
    sc(net.shutdown, t, a, C.SHUT_WR)
    assert send(t, a, b"x") == -C.EPIPE
    assert len(sigpipes) == 1
    assert send(t, a, b"x", C.MSG_NOSIGNAL) == -C.EPIPE
    assert len(sigpipes) == 1
    c, d = pair(t)
    t.fdtable.close(d)
    assert send(t, c, b"x") == -C.EPIPE
    assert len(sigpipes) == 2
    fc = t.fdtable.get(c)
    assert fc.poll() & C.POLLHUP and fc.poll() & C.POLLRDHUP
    assert recv(t, c, 5) == b""


def test_econnreset_when_peer_closes_with_unread_data():
    t = make_task()
    a, b = pair(t)
    send(t, a, b"unread")
    t.fdtable.close(b)
    fa = t.fdtable.get(a)
    assert fa.poll() & C.POLLERR
    assert recv(t, a, 5) == -C.ECONNRESET
    assert recv(t, a, 5) == b""


def test_shutdown_rd_makes_peer_writes_fail(sigpipes):
    t = make_task()
    a, b = pair(t)
    assert sc(net.shutdown, t, a, C.SHUT_RD) == 0
    assert send(t, b, b"x") == -C.EPIPE
    assert recv(t, a, 3) == b""
    assert sc(net.shutdown, t, a, 7) == -C.EINVAL


def test_unconnected_stream_errors():
    t = make_task()
    fd = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    assert recv(t, fd, 1) == -C.EINVAL
    assert send(t, fd, b"x") == -C.ENOTCONN
    assert sc(net.listen, t, fd, 5) == -C.EINVAL  # unbound
    assert getname(t, net.getpeername, fd) == -C.ENOTCONN
    assert getname(t, net.getsockname, fd) == struct.pack("<H", C.AF_UNIX)


def test_socket_argument_errors():
    t = make_task()
    assert sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM | 0x100, 0) == -C.EINVAL
    assert sc(net.socket, t, C.AF_UNIX, 4, 0) == -C.ESOCKTNOSUPPORT
    assert sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 7) == -C.EPROTONOSUPPORT
    assert sc(net.socket, t, C.AF_NETLINK, C.SOCK_DGRAM, 0) == -C.EAFNOSUPPORT
    assert sc(net.socket, t, 99, C.SOCK_DGRAM, 0) == -C.EAFNOSUPPORT
    fd = sc(net.socket, t, C.AF_UNIX, C.SOCK_RAW, 0)
    assert sockopt_int(t, fd, C.SO_TYPE) == struct.pack("<i", C.SOCK_DGRAM)
    fd = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK, 0)
    assert t.fdtable.cloexec(fd) and t.fdtable.get(fd).nonblocking
    efd = t.fdtable.install(EventFD(0, 0))
    assert send(t, efd, b"x") == -C.ENOTSOCK
    assert sc(net.socketpair, t, C.AF_INET, C.SOCK_STREAM, 0, t.mem.alloc(8)) == -C.EOPNOTSUPP


# --- names, listen, accept ---------------------------------------------------------------------

def test_abstract_listen_connect_accept_names_and_peercred():
    k = make_kernel()
    server, client = make_task(k), make_task(k, uid=1000)
    ls = sc(net.socket, server, C.AF_UNIX, C.SOCK_STREAM, 0)
    ap, al = addr_arg(server, b"\0srv")
    assert sc(net.bind, server, ls, ap, al) == 0
    assert sc(net.listen, server, ls, 4) == 0
    assert getname(server, net.getsockname, ls) == sun(b"\0srv")
    assert len(getname(server, net.getsockname, ls)) == 6
    assert sockopt_int(server, ls, C.SO_ACCEPTCONN) == struct.pack("<i", 1)

    # blocking accept waits
    with pytest.raises(WouldBlock) as ei:
        sc(net.accept4, server, ls, 0, 0, 0)
    woken = park(ei.value)

    cs = sc(net.socket, client, C.AF_UNIX, C.SOCK_STREAM, 0)
    cp, cl = addr_arg(client, b"\0srv")
    assert sc(net.connect, client, cs, cp, cl) == 0
    assert woken
    assert t_poll(server, ls) & C.POLLIN
    assert sc(net.connect, client, cs, cp, cl) == -C.EISCONN
    # the client can write before the accept
    assert send(client, cs, b"early") == 5

    abuf, alen = server.mem.alloc(128), server.mem.alloc(4)
    server.mem.write_u32(alen, 128)
    conn = sc(net.accept4, server, ls, abuf, alen, C.SOCK_CLOEXEC)
    assert conn >= 0 and server.fdtable.cloexec(conn)
    assert server.mem.read_u32(alen) == 2  # the client is unbound: sun_family only
    assert recv(server, conn, 10) == b"early"
    assert getname(client, net.getpeername, cs) == sun(b"\0srv")
    assert getname(server, net.getsockname, conn) == sun(b"\0srv")
    assert getname(client, net.getsockname, cs) == struct.pack("<H", C.AF_UNIX)

    pid, uid, gid = UCRED.unpack(sockopt_int(server, conn, C.SO_PEERCRED))
    assert (pid, uid, gid) == (client.tg.pid, 1000, 1000)
    pid, uid, gid = UCRED.unpack(sockopt_int(client, cs, C.SO_PEERCRED))
    assert (pid, uid, gid) == (server.tg.pid, 0, 0)

    # the name is taken; once the listener is closed it is free and refused
    other = sc(net.socket, server, C.AF_UNIX, C.SOCK_STREAM, 0)
    assert sc(net.bind, server, other, ap, al) == -C.EADDRINUSE
    server.fdtable.close(ls)
    c2 = sc(net.socket, client, C.AF_UNIX, C.SOCK_STREAM, 0)
    assert sc(net.connect, client, c2, cp, cl) == -C.ECONNREFUSED
    assert sc(net.bind, server, other, ap, al) == 0


def t_poll(t, fd):
    return t.fdtable.get(fd).poll()


def test_connect_errors_and_backlog():
    t = make_task()
    ls = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    ap, al = addr_arg(t, b"\0bl")
    sc(net.bind, t, ls, ap, al)
    c = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    assert sc(net.connect, t, c, ap, al) == -C.ECONNREFUSED  # bound, not listening
    sc(net.listen, t, ls, 0)
    d = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    assert sc(net.connect, t, d, ap, al) == -C.EPROTOTYPE
    assert sc(net.connect, t, c, ap, al) == 0
    c2 = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK, 0)
    assert sc(net.connect, t, c2, ap, al) == -C.EAGAIN  # backlog 0 holds one
    c3 = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    with pytest.raises(WouldBlock) as ei:
        sc(net.connect, t, c3, ap, al)
    woken = park(ei.value)
    assert sc(net.accept, t, ls, 0, 0) >= 0
    assert woken
    assert sc(net.connect, t, c3, ap, al) == 0
    assert sc(net.connect, t, c, t.mem.put(b"\x01\x00"), 2) == -C.EINVAL
    assert sc(net.connect, t, c, t.mem.put(b"\x02\x00ab"), 4) == -C.EINVAL
    assert sc(net.bind, t, c, ap, 200) == -C.EINVAL


def test_listener_close_resets_pending_connections():
    t = make_task()
    ls = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    ap, al = addr_arg(t, b"\0gone")
    sc(net.bind, t, ls, ap, al)
    sc(net.listen, t, ls, 5)
    c = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    sc(net.connect, t, c, ap, al)
    t.fdtable.close(ls)
    assert t_poll(t, c) & C.POLLHUP
    assert recv(t, c, 5) == -C.ECONNRESET
    assert recv(t, c, 5) == b""
    assert t.kernel.objects["unix_abstract"] == {}


def test_autobind():
    t = make_task()
    fd = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    assert sc(net.bind, t, fd, t.mem.put(struct.pack("<H", C.AF_UNIX)), 2) == 0
    name = getname(t, net.getsockname, fd)
    assert len(name) == 8 and name[2:3] == b"\0"
    int(name[3:], 16)
    assert sc(net.bind, t, fd, *addr_arg(t, b"\0again")) == -C.EINVAL  # already bound


def test_path_bind_connect_in_vfs():
    k = make_kernel()
    t = make_task(k)
    t.fs.umask = 0o022
    ls = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    ap, al = addr_arg(t, b"/sock\0")
    assert sc(net.bind, t, ls, ap, al) == 0
    inode = k.vfs.walk(t, t.fs.cwd, b"/sock").inode
    assert inode.stat().mode == C.S_IFSOCK | 0o755
    assert inode.special is t.fdtable.get(ls)
    assert getname(t, net.getsockname, ls) == sun(b"/sock\0")
    other = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    assert sc(net.bind, t, other, ap, al) == -C.EADDRINUSE
    c = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    assert sc(net.connect, t, c, *addr_arg(t, b"/missing")) == -C.ENOENT
    assert sc(net.connect, t, c, ap, al) == -C.ECONNREFUSED  # not listening yet
    sc(net.listen, t, ls, 5)
    assert sc(net.connect, t, c, ap, al) == 0
    s = sc(net.accept, t, ls, 0, 0)
    send(t, c, b"over the path")
    assert recv(t, s, 100) == b"over the path"
    # a relative name is resolved from the cwd
    k.vfs.root.inode.mkdir(b"d", 0o755, t.creds)
    t.fs.cwd = k.vfs.walk(t, t.fs.root, b"/d")
    rel = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    assert sc(net.bind, t, rel, *addr_arg(t, b"rel")) == 0
    assert k.vfs.walk(t, k.vfs.root, b"/d/rel").inode.special is t.fdtable.get(rel)
    # a stale socket file refuses
    t.fdtable.close(ls)
    c2 = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    assert sc(net.connect, t, c2, ap, al) == -C.ECONNREFUSED
    # a regular file is no socket
    k.vfs.root.inode.create(b"reg", 0o644, t.creds)
    assert sc(net.connect, t, c2, *addr_arg(t, b"/reg")) == -C.ECONNREFUSED


# --- datagrams --------------------------------------------------------------------------------

def test_dgram_sendto_recvfrom_addresses_and_trunc():
    t = make_task()
    srv = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    sp, sl = addr_arg(t, b"\0dg")
    sc(net.bind, t, srv, sp, sl)
    cli = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    data = b"0123456789"
    assert sc(net.sendto, t, cli, t.mem.put(data), len(data), 0, sp, sl) == 10
    buf, ab, alen = t.mem.alloc(16), t.mem.alloc(128), t.mem.alloc(4)
    t.mem.write_u32(alen, 128)
    assert sc(net.recvfrom, t, srv, buf, 4, C.MSG_TRUNC, ab, alen) == 10  # real length
    assert t.mem.read(buf, 4) == b"0123"
    assert t.mem.read_u32(alen) == 0  # unbound sender
    # bound sender: its address comes back
    sc(net.bind, t, cli, *addr_arg(t, b"\0cli"))
    sc(net.sendto, t, cli, t.mem.put(b"hi"), 2, 0, sp, sl)
    t.mem.write_u32(alen, 128)
    assert sc(net.recvfrom, t, srv, buf, 16, 0, ab, alen) == 2
    assert t.mem.read(ab, t.mem.read_u32(alen)) == sun(b"\0cli")
    # no address, not connected
    assert send(t, cli, b"x") == -C.ENOTCONN
    # sendto a name nobody holds
    assert sc(net.sendto, t, cli, t.mem.put(b"x"), 1, 0, *addr_arg(t, b"\0nobody")) == -C.ECONNREFUSED


def test_dgram_message_boundaries_and_connected_peer_close():
    t = make_task()
    a, b = pair(t, C.SOCK_DGRAM)
    send(t, a, b"one")
    send(t, a, b"two")
    assert recv(t, b, 100) == b"one"
    assert recv(t, b, 100) == b"two"
    t.fdtable.close(b)
    assert send(t, a, b"x") == -C.ECONNREFUSED
    assert send(t, a, b"x") == -C.ENOTCONN
    assert send(t, a, b"x" * 300000) in (-C.EMSGSIZE, -C.ENOTCONN)


def test_dgram_connect_to_connected_socket_is_eperm_and_unspec_disconnects():
    t = make_task()
    x = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    y = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    z = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    sc(net.bind, t, x, *addr_arg(t, b"\0x"))
    sc(net.bind, t, y, *addr_arg(t, b"\0y"))
    assert sc(net.connect, t, x, *addr_arg(t, b"\0y")) == 0
    assert sc(net.connect, t, z, *addr_arg(t, b"\0x")) == -C.EPERM
    assert sc(net.sendto, t, z, t.mem.put(b"q"), 1, 0, *addr_arg(t, b"\0x")) == -C.EPERM
    assert sc(net.connect, t, x, t.mem.put(struct.pack("<H", C.AF_UNSPEC)), 2) == 0
    assert sc(net.connect, t, z, *addr_arg(t, b"\0x")) == 0
    assert getname(t, net.getpeername, z) == sun(b"\0x")


def test_dgram_queue_full_blocks():
    t = make_task()
    a, b = pair(t, C.SOCK_DGRAM, C.SOCK_NONBLOCK)
    n = 0
    while send(t, a, b"m" * 100) == 100:
        n += 1
    assert 100 < n < 2000
    assert send(t, a, b"m") == -C.EAGAIN
    assert not t_poll(t, a) & C.POLLOUT
    recv(t, b, 200)
    assert send(t, a, b"m") == 1


def test_seqpacket():
    t = make_task()
    a, b = pair(t, C.SOCK_SEQPACKET)
    send(t, a, b"first")
    send(t, a, b"second")
    assert recv(t, b, 3) == b"fir"  # the rest of the record is dropped
    assert recv(t, b, 100) == b"second"
    fd = sc(net.socket, t, C.AF_UNIX, C.SOCK_SEQPACKET, 0)
    assert recv(t, fd, 1) == -C.ENOTCONN
    assert send(t, fd, b"x") == -C.ENOTCONN
    t.fdtable.close(b)
    assert send(t, a, b"x") == -C.EPIPE
    assert recv(t, a, 10) == b""
    # listen/accept work for seqpacket too
    ls = sc(net.socket, t, C.AF_UNIX, C.SOCK_SEQPACKET, 0)
    sc(net.bind, t, ls, *addr_arg(t, b"\0sp"))
    sc(net.listen, t, ls, 1)
    c = sc(net.socket, t, C.AF_UNIX, C.SOCK_SEQPACKET, 0)
    assert sc(net.connect, t, c, *addr_arg(t, b"\0sp")) == 0
    s = sc(net.accept, t, ls, 0, 0)
    send(t, s, b"rec")
    assert recv(t, c, 10) == b"rec"
    d = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    assert sc(net.listen, t, d, 1) == -C.EOPNOTSUPP


# --- sendmsg / recvmsg, SCM_RIGHTS, SCM_CREDENTIALS ------------------------------------------

def build_msg(t, chunks, control=b"", name=b""):
    iov = t.mem.alloc(16 * max(1, len(chunks)))
    for i, c in enumerate(chunks):
        t.mem.write(iov + 16 * i, IOVEC.pack(t.mem.put(c), len(c)))
    ctl = t.mem.put(control) if control else 0
    nm = t.mem.put(name) if name else 0
    msg = t.mem.alloc(MSGHDR.size)
    t.mem.write(msg, MSGHDR.pack(nm, len(name), iov, len(chunks), ctl, len(control), 0))
    return msg


def recv_msg(t, fd, sizes, controllen, flags=0, namelen=0):
    iov = t.mem.alloc(16 * len(sizes))
    bufs = []
    for i, n in enumerate(sizes):
        b = t.mem.alloc(n)
        bufs.append((b, n))
        t.mem.write(iov + 16 * i, IOVEC.pack(b, n))
    ctl = t.mem.alloc(controllen) if controllen else 0
    nm = t.mem.alloc(namelen) if namelen else 0
    msg = t.mem.alloc(MSGHDR.size)
    t.mem.write(msg, MSGHDR.pack(nm, namelen, iov, len(sizes), ctl, controllen, 0))
    r = sc(net.recvmsg, t, fd, msg, flags)
    hdr = MSGHDR.unpack(t.mem.read(msg, MSGHDR.size))
    data = b"".join(t.mem.read(b, n) for b, n in bufs)
    control = t.mem.read(ctl, hdr[5]) if hdr[5] else b""
    return r, data, control, hdr[6], (t.mem.read(nm, hdr[1]) if nm and hdr[1] else b"")


def rights(*fds):
    payload = struct.pack(f"<{len(fds)}i", *fds)
    return CMSGHDR.pack(16 + len(payload), C.SOL_SOCKET, C.SCM_RIGHTS) + payload + b"\0" * (
        cmsg_space(len(payload)) - 16 - len(payload))


def parse_cmsgs(control):
    out, off = [], 0
    while off + 16 <= len(control):
        ln, level, typ = CMSGHDR.unpack_from(control, off)
        out.append((level, typ, control[off + 16:off + ln]))
        off += (ln + 7) & ~7
    return out


def test_sendmsg_recvmsg_iovecs():
    t = make_task()
    a, b = pair(t)
    msg = build_msg(t, [b"hel", b"", b"lo"])
    assert sc(net.sendmsg, t, a, msg, 0) == 5
    r, data, control, flags, _ = recv_msg(t, b, [2, 10], 0)
    assert r == 5 and data[:2] == b"he" and data[2:5] == b"llo"
    assert control == b"" and flags == 0


def test_scm_rights_passes_files():
    k = make_kernel()
    sender, receiver = make_task(k), make_task(k)
    sv = sender.mem.alloc(8)
    sc(net.socketpair, sender, C.AF_UNIX, C.SOCK_STREAM, 0, sv)
    a, b = struct.unpack("<ii", sender.mem.read(sv, 8))
    # move b to the receiver's table
    fb = sender.fdtable.get(b)
    fb.incref()
    rb = receiver.fdtable.install(fb)
    sender.fdtable.close(b)

    ev = EventFD(7, 0)
    efd = sender.fdtable.install(ev)
    msg = build_msg(sender, [b"F"], rights(efd, efd))
    assert sc(net.sendmsg, sender, a, msg, 0) == 1
    assert ev.refs == 3
    sender.fdtable.close(efd)
    assert ev.refs == 2

    r, data, control, flags, _ = recv_msg(receiver, rb, [10], 64, C.MSG_CMSG_CLOEXEC)
    assert r == 1 and data[:1] == b"F" and flags == 0
    [(level, typ, payload)] = parse_cmsgs(control)
    assert (level, typ) == (C.SOL_SOCKET, C.SCM_RIGHTS)
    fds = struct.unpack("<2i", payload)
    assert all(receiver.fdtable.get(fd) is ev for fd in fds)
    assert all(receiver.fdtable.cloexec(fd) for fd in fds)
    assert ev.refs == 2


def test_scm_rights_ctrunc_and_release_of_unreceived():
    t = make_task()
    a, b = pair(t, C.SOCK_DGRAM)
    ev = EventFD(0, 0)
    efd = t.fdtable.install(ev)
    sc(net.sendmsg, t, a, build_msg(t, [b"1"], rights(efd, efd, efd)), 0)
    assert ev.refs == 4
    # room for one fd only
    r, data, control, flags, _ = recv_msg(t, b, [4], 20)
    assert r == 1 and flags & C.MSG_CTRUNC
    [(_, _, payload)] = parse_cmsgs(control)
    assert len(payload) == 4
    assert ev.refs == 2  # one installed, two dropped
    # a message never received is released with its socket
    sc(net.sendmsg, t, a, build_msg(t, [b"2"], rights(efd)), 0)
    assert ev.refs == 3
    t.fdtable.close(b)
    assert ev.refs == 2
    # bad fds and bad cmsgs
    c, d = pair(t, C.SOCK_DGRAM)
    assert sc(net.sendmsg, t, c, build_msg(t, [b"x"], rights(999)), 0) == -C.EBADF
    bad = CMSGHDR.pack(64, C.SOL_SOCKET, C.SCM_RIGHTS) + b"\0" * 8
    assert sc(net.sendmsg, t, c, build_msg(t, [b"x"], bad), 0) == -C.EINVAL


def test_scm_rights_peek_dups():
    t = make_task()
    a, b = pair(t)
    ev = EventFD(0, 0)
    efd = t.fdtable.install(ev)
    sc(net.sendmsg, t, a, build_msg(t, [b"ab"], rights(efd)), 0)
    send(t, a, b"cd")
    r, data, control, flags, _ = recv_msg(t, b, [10], 64, C.MSG_PEEK)
    assert r == 2  # the read stops after the bytes that carried files
    [(_, _, p1)] = parse_cmsgs(control)
    r, data, control, flags, _ = recv_msg(t, b, [10], 64)
    [(_, _, p2)] = parse_cmsgs(control)
    assert struct.unpack("<i", p1) != struct.unpack("<i", p2)
    assert t.fdtable.get(struct.unpack("<i", p2)[0]) is ev
    assert recv(t, b, 10) == b"cd"


def test_scm_credentials_with_passcred():
    t = make_task(uid=0)
    a, b = pair(t, C.SOCK_DGRAM)
    one = t.mem.put(struct.pack("<i", 1))
    assert sc(net.setsockopt, t, b, C.SOL_SOCKET, C.SO_PASSCRED, one, 4) == 0
    send(t, a, b"c")
    r, data, control, flags, _ = recv_msg(t, b, [4], 64)
    [(level, typ, payload)] = parse_cmsgs(control)
    assert (level, typ) == (C.SOL_SOCKET, C.SCM_CREDENTIALS)
    assert UCRED.unpack(payload) == (t.tg.pid, 0, 0)
    # explicit credentials are checked
    user = make_task(t.kernel, uid=1000)
    fa = t.fdtable.get(a)
    fa.incref()
    ua = user.fdtable.install(fa)
    cred = CMSGHDR.pack(28, C.SOL_SOCKET, C.SCM_CREDENTIALS) + UCRED.pack(user.tg.pid, 0, 0) + b"\0" * 4
    assert sc(net.sendmsg, user, ua, build_msg(user, [b"x"], cred), 0) == -C.EPERM
    # control too small: MSG_CTRUNC
    send(t, a, b"d")
    r, data, control, flags, _ = recv_msg(t, b, [4], 8)
    assert flags & C.MSG_CTRUNC and control == b""


def test_recvmsg_name_for_dgram():
    t = make_task()
    srv = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    sc(net.bind, t, srv, *addr_arg(t, b"\0n1"))
    cli = sc(net.socket, t, C.AF_UNIX, C.SOCK_DGRAM, 0)
    sc(net.bind, t, cli, *addr_arg(t, b"\0n2"))
    msg = build_msg(t, [b"hey"], name=sun(b"\0n1"))
    assert sc(net.sendmsg, t, cli, msg, 0) == 3
    r, data, control, flags, name = recv_msg(t, srv, [8], 0, namelen=64)
    assert r == 3 and name == sun(b"\0n2")


def test_sendmmsg_recvmmsg():
    t = make_task()
    a, b = pair(t, C.SOCK_DGRAM)
    vec = t.mem.alloc(64 * 3)
    for i, payload in enumerate([b"a", b"bb", b"ccc"]):
        m = build_msg(t, [payload])
        t.mem.write(vec + 64 * i, t.mem.read(m, MSGHDR.size))
    assert sc(net.sendmmsg, t, a, vec, 3, 0) == 3
    assert [t.mem.read_u32(vec + 64 * i + 56) for i in range(3)] == [1, 2, 3]
    rvec = t.mem.alloc(64 * 4)
    bufs = []
    for i in range(4):
        buf = t.mem.alloc(8)
        iov = t.mem.put(IOVEC.pack(buf, 8))
        bufs.append(buf)
        t.mem.write(rvec + 64 * i, MSGHDR.pack(0, 0, iov, 1, 0, 0, 0))
    assert sc(net.recvmmsg, t, b, rvec, 4, 0, 0) == 3  # the 4th is not waited for
    assert [t.mem.read_u32(rvec + 64 * i + 56) for i in range(3)] == [1, 2, 3]
    assert t.mem.read(bufs[2], 3) == b"ccc"


# --- options ----------------------------------------------------------------------------------

def test_sockopts():
    t = make_task()
    a, b = pair(t)
    i32 = lambda v: struct.pack("<i", v)
    assert sockopt_int(t, a, C.SO_TYPE) == i32(C.SOCK_STREAM)
    assert sockopt_int(t, a, C.SO_DOMAIN) == i32(C.AF_UNIX)
    assert sockopt_int(t, a, C.SO_PROTOCOL) == i32(0)
    assert sockopt_int(t, a, C.SO_ERROR) == i32(0)
    assert sockopt_int(t, a, C.SO_ACCEPTCONN) == i32(0)
    assert sockopt_int(t, a, C.SO_SNDBUF) == i32(212992)
    v = t.mem.put(i32(1000))
    assert sc(net.setsockopt, t, a, C.SOL_SOCKET, C.SO_SNDBUF, v, 4) == 0
    assert sockopt_int(t, a, C.SO_SNDBUF) == i32(4608)
    assert sc(net.setsockopt, t, a, C.SOL_SOCKET, C.SO_RCVBUF, v, 4) == 0
    assert sockopt_int(t, a, C.SO_RCVBUF) == i32(2304)
    assert sc(net.setsockopt, t, a, C.SOL_SOCKET, C.SO_REUSEADDR, v, 2) == -C.EINVAL
    assert sc(net.setsockopt, t, a, C.SOL_SOCKET, C.SO_TYPE, v, 4) == -C.ENOPROTOOPT
    assert sc(net.setsockopt, t, a, 6, 1, v, 4) == -C.EOPNOTSUPP
    assert sockopt_int(t, a, 1, level=6) == -C.EOPNOTSUPP
    assert sockopt_int(t, a, 9999) == -C.ENOPROTOOPT
    # short buffers get a truncated value
    buf, lp = t.mem.alloc(16), t.mem.alloc(4)
    t.mem.write_u32(lp, 4)
    assert sc(net.getsockopt, t, a, C.SOL_SOCKET, C.SO_PEERCRED, buf, lp) == 0
    assert t.mem.read_u32(lp) == 4
    t.mem.write_u32(lp, 0xFFFFFFFF)
    assert sc(net.getsockopt, t, a, C.SOL_SOCKET, C.SO_TYPE, buf, lp) == -C.EINVAL
    # unconnected SO_PEERCRED
    fd = sc(net.socket, t, C.AF_UNIX, C.SOCK_STREAM, 0)
    assert UCRED.unpack(sockopt_int(t, fd, C.SO_PEERCRED)) == (0, 0xFFFFFFFF, 0xFFFFFFFF)


def test_rcvtimeo_deadline():
    t = make_task()
    a, b = pair(t)
    tv = t.mem.put(struct.pack("<qq", 0, 20000))
    assert sc(net.setsockopt, t, b, C.SOL_SOCKET, C.SO_RCVTIMEO, tv, 16) == 0
    assert sockopt_int(t, b, C.SO_RCVTIMEO) == struct.pack("<qq", 0, 20000)
    with pytest.raises(WouldBlock) as ei:
        recv(t, b, 10)
    first = ei.value.deadline
    assert first is not None
    with pytest.raises(WouldBlock) as ei:
        recv(t, b, 10)  # the re-run keeps the deadline
    assert ei.value.deadline == first
    time.sleep(0.03)
    assert recv(t, b, 10) == -C.EAGAIN
    bad = t.mem.put(struct.pack("<qq", 0, 2000000))
    assert sc(net.setsockopt, t, b, C.SOL_SOCKET, C.SO_RCVTIMEO, bad, 16) == -C.EDOM


def test_fionread_and_fionbio():
    t = make_task()
    a, b = pair(t)
    send(t, a, b"12345")
    out = t.mem.alloc(4)
    fb = t.fdtable.get(b)
    assert fb.ioctl(t, C.FIONREAD, out) == 0
    assert t.mem.read_u32(out) == 5
    assert t.fdtable.get(a).ioctl(t, C.TIOCOUTQ, out) == 0 and t.mem.read_u32(out) == 5
    on = t.mem.put(struct.pack("<i", 1))
    fb.ioctl(t, C.FIONBIO, on)
    assert fb.nonblocking


def test_recvfrom_bad_addrlen_is_checked_before_data_is_taken():
    t = make_task()
    a, b = pair(t, C.SOCK_DGRAM)
    send(t, a, b"keep")
    lp = t.mem.put(struct.pack("<i", -1))
    assert sc(net.recvfrom, t, b, t.mem.alloc(8), 8, 0, t.mem.alloc(16), lp) == -C.EINVAL
    assert recv(t, b, 8) == b"keep"
