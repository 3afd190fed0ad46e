"""Socket syscalls: socket, bind, connect, send/recv and friends.

Handlers decode the app's arguments (sockaddrs, msghdrs, iovecs, cmsgs)
and call the socket File's operations (``pysc.core.unix.SocketFile``):
AF_UNIX sockets are Sentry objects (``pysc.core.unix``); AF_INET/AF_INET6
are host sockets owned by the Sentry (``pysc.netstack.hostinet``) when
``--network`` is ``host`` or ``none``.  A plugin (the netstack) may serve
inet sockets instead by putting a factory ``f(kernel, task, family, type,
protocol, flags) -> SocketFile`` in ``kernel.objects["inet_socket_factory"]``.
"""
from __future__ import annotations

import struct
import sys

from pysc.core.abi import consts as C
from pysc.core.abi.structs import CMSGHDR, IOVEC, MSGHDR, TIMESPEC, cmsg_align
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.hookspecs import hookimpl
from pysc.core import unix

AF_MAX = 46
UIO_MAXIOV = 1024
MAX_RW_COUNT = 0x7FFFF000
SOCKADDR_STORAGE = 128
MMSGHDR_SIZE = 64  # struct mmsghdr: msghdr (56) + msg_len (4) + padding
MSG_WAITFORONE = 0x10000
OPTMEM_MAX = 1 << 17
MAX_OPTLEN = 1 << 16
TYPE_FLAGS = C.SOCK_NONBLOCK | C.SOCK_CLOEXEC


# --- helpers -------------------------------------------------------------------------------

def get_socket(t, fd) -> "unix.SocketFile":
    f = t.fdtable.get(s32(fd))
    if not getattr(f, "is_socket", False):
        raise SyscallError(C.ENOTSOCK)
    return f


def read_sockaddr(t, ptr: int, length: int) -> bytes:
    length = s32(length)
    if length < 0 or length > SOCKADDR_STORAGE:
        raise SyscallError(C.EINVAL)
    if length == 0:
        return b""
    return t.mem.read(ptr, length)


def addrlen_in(t, len_ptr: int) -> int:
    """The buffer size an app passes for an address it gets back."""
    n = s32(t.mem.read_u32(len_ptr))
    if n < 0:
        raise SyscallError(C.EINVAL)
    return n


def write_sockaddr(t, ptr: int, len_ptr: int, addr: bytes | None, room: int | None = None) -> None:
    """Copy an address out as move_addr_to_user does: truncated to the
    caller's buffer, the full length written back."""
    if not ptr or not len_ptr:
        return
    if room is None:
        room = addrlen_in(t, len_ptr)
    addr = addr or b""
    if room and addr:
        t.mem.write(ptr, addr[:room])
    t.mem.write_u32(len_ptr, len(addr))


def read_iovecs(t, ptr: int, count: int) -> list[tuple[int, int]]:
    if count > UIO_MAXIOV:
        raise SyscallError(C.EMSGSIZE)
    if count == 0:
        return []
    raw = t.mem.read(ptr, IOVEC.size * count)
    out = []
    total = 0
    for i in range(count):
        base, length = IOVEC.unpack_from(raw, i * IOVEC.size)
        if length >= 1 << 63:
            raise SyscallError(C.EINVAL)
        length = min(length, MAX_RW_COUNT - total)
        total += length
        out.append((base, length))
    return out


def gather(t, iovs) -> bytes:
    return b"".join(t.mem.read(base, length) for base, length in iovs if length)


def scatter(t, iovs, data: bytes) -> None:
    off = 0
    for base, length in iovs:
        if off >= len(data):
            break
        if length:
            chunk = data[off:off + length]
            t.mem.write(base, chunk)
            off += len(chunk)


def parse_cmsgs(raw: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    off = 0
    while off + CMSGHDR.size <= len(raw):
        clen, level, typ = CMSGHDR.unpack_from(raw, off)
        if clen < CMSGHDR.size or clen > len(raw) - off:
            raise SyscallError(C.EINVAL)
        out.append((s32(level), s32(typ), raw[off + CMSGHDR.size:off + clen]))
        off += cmsg_align(clen)
    return out


def install(t, f, cloexec: bool) -> int:
    try:
        return t.fdtable.install(f, cloexec)
    except BaseException:
        f.decref()
        raise


def new_socket(t, family: int, stype: int, protocol: int, flags: int):
    kernel = t.kernel
    if family < 0 or family >= AF_MAX:
        raise SyscallError(C.EAFNOSUPPORT)
    if family == C.AF_UNIX:
        return unix.create(kernel, t, stype, protocol, flags)
    if family in (C.AF_INET, C.AF_INET6):
        factory = kernel.objects.get("inet_socket_factory")
        if factory is not None:
            return factory(kernel, t, family, stype, protocol, flags)
        if getattr(kernel, "network", "none") in ("host", "none"):
            from pysc.netstack import hostinet
            return hostinet.create(kernel, t, family, stype, protocol, flags)
        raise SyscallError(C.EAFNOSUPPORT)
    raise SyscallError(C.EAFNOSUPPORT)


# --- creating and naming -------------------------------------------------------------------

@syscall()
def socket(t, family, stype, protocol, *_):
    family, stype, protocol = s32(family), s32(stype), s32(protocol)
    if stype & ~(TYPE_FLAGS | C.SOCK_TYPE_MASK):
        raise SyscallError(C.EINVAL)
    sock = new_socket(t, family, stype & C.SOCK_TYPE_MASK, protocol, stype & C.SOCK_NONBLOCK)
    return install(t, sock, bool(stype & C.SOCK_CLOEXEC))


@syscall()
def socketpair(t, family, stype, protocol, sv, *_):
    family, stype, protocol = s32(family), s32(stype), s32(protocol)
    if stype & ~(TYPE_FLAGS | C.SOCK_TYPE_MASK):
        raise SyscallError(C.EINVAL)
    base = stype & C.SOCK_TYPE_MASK
    if family in (C.AF_INET, C.AF_INET6):
        raise SyscallError(C.EOPNOTSUPP)
    if family != C.AF_UNIX:
        raise SyscallError(C.EAFNOSUPPORT)
    if protocol not in (0, C.AF_UNIX):
        raise SyscallError(C.EPROTONOSUPPORT)
    if base == C.SOCK_RAW:
        base = C.SOCK_DGRAM
    if base not in (C.SOCK_STREAM, C.SOCK_DGRAM, C.SOCK_SEQPACKET):
        raise SyscallError(C.ESOCKTNOSUPPORT)
    a, b = unix.socketpair(t.kernel, t, base, stype & C.SOCK_NONBLOCK)
    cloexec = bool(stype & C.SOCK_CLOEXEC)
    try:
        fa = t.fdtable.install(a, cloexec)
    except BaseException:
        a.decref()
        b.decref()
        raise
    try:
        fb = t.fdtable.install(b, cloexec)
    except BaseException:
        t.fdtable.close(fa)
        b.decref()
        raise
    try:
        t.mem.write(sv, struct.pack("<ii", fa, fb))
    except SyscallError:
        t.fdtable.close(fa)
        t.fdtable.close(fb)
        raise
    return 0


@syscall()
def bind(t, fd, addr, addrlen, *_):
    sock = get_socket(t, fd)
    sock.bind(t, read_sockaddr(t, addr, addrlen))
    return 0


@syscall()
def listen(t, fd, backlog, *_):
    get_socket(t, fd).listen(t, s32(backlog))
    return 0


def _accept(t, fd, addr, addrlen, flags):
    if flags & ~TYPE_FLAGS:
        raise SyscallError(C.EINVAL)
    sock = get_socket(t, fd)
    room = addrlen_in(t, addrlen) if addr and addrlen else None
    new, peer = sock.accept(t, flags)
    newfd = install(t, new, bool(flags & C.SOCK_CLOEXEC))
    try:
        write_sockaddr(t, addr, addrlen, peer, room)
    except SyscallError:
        t.fdtable.close(newfd)
        raise
    return newfd


@syscall()
def accept(t, fd, addr, addrlen, *_):
    return _accept(t, fd, addr, addrlen, 0)


@syscall()
def accept4(t, fd, addr, addrlen, flags, *_):
    return _accept(t, fd, addr, addrlen, s32(flags))


@syscall()
def connect(t, fd, addr, addrlen, *_):
    sock = get_socket(t, fd)
    sock.connect(t, read_sockaddr(t, addr, addrlen))
    return 0


@syscall()
def getsockname(t, fd, addr, addrlen, *_):
    sock = get_socket(t, fd)
    room = addrlen_in(t, addrlen)
    write_sockaddr(t, addr, addrlen, sock.getsockname(t), room)
    return 0


@syscall()
def getpeername(t, fd, addr, addrlen, *_):
    sock = get_socket(t, fd)
    room = addrlen_in(t, addrlen)
    write_sockaddr(t, addr, addrlen, sock.getpeername(t), room)
    return 0


@syscall()
def shutdown(t, fd, how, *_):
    get_socket(t, fd).shutdown(t, s32(how))
    return 0


# --- data ----------------------------------------------------------------------------------

@syscall()
def sendto(t, fd, buf, length, flags, addr, addrlen):
    sock = get_socket(t, fd)
    length = min(length, MAX_RW_COUNT)
    data = t.mem.read(buf, length) if length else b""
    name = read_sockaddr(t, addr, addrlen) if addr else None
    return sock.sendmsg(t, data, s32(flags), name or None, [])


@syscall()
def recvfrom(t, fd, buf, length, flags, addr, addrlen):
    sock = get_socket(t, fd)
    length = min(length, MAX_RW_COUNT)
    room = addrlen_in(t, addrlen) if addr and addrlen else None
    res = sock.recvmsg(t, length, s32(flags), 0)
    if res.data:
        t.mem.write(buf, res.data)
    if addr and addrlen:
        write_sockaddr(t, addr, addrlen, res.addr, room)
    return res.length


def _read_msghdr(t, msg: int):
    name, namelen, iov, iovlen, control, controllen, _flags = MSGHDR.unpack(t.mem.read(msg, MSGHDR.size))
    return name, s32(namelen), iov, iovlen, control, controllen


def _sendmsg_one(t, sock, msg: int, flags: int) -> int:
    name, namelen, iov, iovlen, control, controllen = _read_msghdr(t, msg)
    addr = None
    if name:
        if namelen < 0 or namelen > SOCKADDR_STORAGE:
            raise SyscallError(C.EINVAL)
        addr = t.mem.read(name, namelen) if namelen else None
    data = gather(t, read_iovecs(t, iov, iovlen))
    cmsgs = []
    if controllen:
        if controllen > 0x7FFFFFFF or controllen > OPTMEM_MAX:
            raise SyscallError(C.ENOBUFS)
        if controllen >= CMSGHDR.size:
            cmsgs = parse_cmsgs(t.mem.read(control, controllen))
    return sock.sendmsg(t, data, flags, addr, cmsgs)


def _recvmsg_one(t, sock, msg: int, flags: int) -> int:
    name, namelen, iov, iovlen, control, controllen = _read_msghdr(t, msg)
    if name and namelen < 0:
        raise SyscallError(C.EINVAL)
    iovs = read_iovecs(t, iov, iovlen)
    n = sum(length for _, length in iovs)
    if controllen > 0x7FFFFFFF:
        controllen = 0x7FFFFFFF
    res = sock.recvmsg(t, n, flags, controllen if control else 0)
    scatter(t, iovs, res.data)
    if name:
        addr = res.addr or b""
        room = min(namelen, SOCKADDR_STORAGE)
        if room and addr:
            t.mem.write(name, addr[:room])
        t.mem.write_u32(msg + 8, len(addr))
    if res.control and control:
        t.mem.write(control, res.control)
    t.mem.write_u64(msg + 40, len(res.control) if control else 0)
    t.mem.write_u32(msg + 48, res.flags)
    return res.length


@syscall()
def sendmsg(t, fd, msg, flags, *_):
    sock = get_socket(t, fd)
    return _sendmsg_one(t, sock, msg, s32(flags))


@syscall()
def recvmsg(t, fd, msg, flags, *_):
    sock = get_socket(t, fd)
    return _recvmsg_one(t, sock, msg, s32(flags))


@syscall(partial=True)
def sendmmsg(t, fd, msgvec, vlen, flags, *_):
    """Partial: after the first message, the rest are sent without blocking
    (a call that would block returns the count so far)."""
    sock = get_socket(t, fd)
    return _each_mmsg(t, sock, msgvec, vlen, s32(flags), _sendmsg_one)


def _each_mmsg(t, sock, msgvec, vlen, flags, one) -> int:
    """sendmmsg/recvmmsg: ``one`` per mmsghdr; only the first may block."""
    vlen = min(vlen & 0xFFFFFFFF, UIO_MAXIOV)
    done = 0
    for i in range(vlen):
        entry = msgvec + i * MMSGHDR_SIZE
        try:
            n = one(t, sock, entry, flags | (C.MSG_DONTWAIT if done else 0))
        except (SyscallError, WouldBlock):
            if done == 0:
                raise
            break
        t.mem.write_u32(entry + 56, n)  # msg_len
        done += 1
    return done


@syscall(partial=True)
def recvmmsg(t, fd, msgvec, vlen, flags, timeout, *_):
    """Partial: after the first message, only messages already queued are
    taken (Linux would wait for more until the timeout); the timeout is
    validated but not written back."""
    sock = get_socket(t, fd)
    flags = s32(flags) & ~MSG_WAITFORONE
    if timeout:
        sec, nsec = TIMESPEC.unpack(t.mem.read(timeout, TIMESPEC.size))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise SyscallError(C.EINVAL)
    return _each_mmsg(t, sock, msgvec, vlen, flags, _recvmsg_one)


# --- options -------------------------------------------------------------------------------

@syscall()
def setsockopt(t, fd, level, optname, optval, optlen, *_):
    sock = get_socket(t, fd)
    optlen = s32(optlen)
    if optlen < 0:
        raise SyscallError(C.EINVAL)
    val = t.mem.read(optval, min(optlen, MAX_OPTLEN)) if optlen else b""
    sock.setsockopt(t, s32(level), s32(optname), val)
    return 0


@syscall()
def getsockopt(t, fd, level, optname, optval, optlen, *_):
    sock = get_socket(t, fd)
    room = s32(t.mem.read_u32(optlen))
    if room < 0:
        raise SyscallError(C.EINVAL)
    val = sock.getsockopt(t, s32(level), s32(optname), room)
    val = val[:room]
    if val:
        t.mem.write(optval, val)
    t.mem.write_u32(optlen, len(val))
    return 0


@hookimpl
def pysc_syscalls(table, platform):
    table.register_module(sys.modules[__name__])
