"""hostinet: AF_INET/AF_INET6 sockets that are host sockets owned by the Sentry
(``--network=host``, and ``none`` until the netstack lands).

Every host socket is non-blocking on the host; a call that would block
raises ``WouldBlock(host_fds=((fd, POLLIN|POLLOUT),), restart="sys")`` and
the kernel's main loop polls that fd.  Addresses and option values go to the
host as the app's raw bytes (through libc), so the host kernel does the
validation and the errno is its own.  Socket options pass through only from
an allowlist; SO_RCVTIMEO/SO_SNDTIMEO are emulated here (the host socket
never blocks).
"""
from __future__ import annotations

import ctypes
import os
import select
import struct
from typing import TYPE_CHECKING

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.eventpoll import call_deadline, clear_deadline, expired
from pysc.core import unix
from pysc.core.unix import RecvResult, SocketFile, clip

if TYPE_CHECKING:
    from pysc.core.task import Task

_libc = ctypes.CDLL(None, use_errno=True)
_socklen = ctypes.c_uint32


def _fn(name, restype, *argtypes):
    f = getattr(_libc, name)
    f.restype = restype
    f.argtypes = argtypes
    return f


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", _socklen),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


_c_int, _vp = ctypes.c_int, ctypes.c_void_p
_h_socket = _fn("socket", _c_int, _c_int, _c_int, _c_int)
_h_bind = _fn("bind", _c_int, _c_int, ctypes.c_char_p, _socklen)
_h_connect = _fn("connect", _c_int, _c_int, ctypes.c_char_p, _socklen)
_h_listen = _fn("listen", _c_int, _c_int, _c_int)
_h_accept4 = _fn("accept4", _c_int, _c_int, _vp, ctypes.POINTER(_socklen), _c_int)
_h_getsockname = _fn("getsockname", _c_int, _c_int, _vp, ctypes.POINTER(_socklen))
_h_getpeername = _fn("getpeername", _c_int, _c_int, _vp, ctypes.POINTER(_socklen))
_h_sendmsg = _fn("sendmsg", ctypes.c_ssize_t, _c_int, ctypes.POINTER(_Msghdr), _c_int)
_h_recvmsg = _fn("recvmsg", ctypes.c_ssize_t, _c_int, ctypes.POINTER(_Msghdr), _c_int)
_h_setsockopt = _fn("setsockopt", _c_int, _c_int, _c_int, _c_int, ctypes.c_char_p, _socklen)
_h_getsockopt = _fn("getsockopt", _c_int, _c_int, _c_int, _c_int, _vp, ctypes.POINTER(_socklen))
_h_shutdown = _fn("shutdown", _c_int, _c_int, _c_int)
_h_ioctl = _fn("ioctl", _c_int, _c_int, ctypes.c_ulong, _vp)


def _check(ret: int) -> int:
    if ret < 0:
        raise SyscallError(ctypes.get_errno())
    return ret


IPPROTO_IP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_IPV6 = 0, 6, 17, 41
MAX_ADDR = 128
RECV_CAP = 1 << 20  # largest single host read of a stream socket
DGRAM_CAP = 1 << 18

# Options that go to the host socket as they are.
SOL_SOCKET_OPTS = {
    C.SO_DEBUG, C.SO_REUSEADDR, C.SO_TYPE, C.SO_ERROR, C.SO_DONTROUTE, C.SO_BROADCAST,
    C.SO_SNDBUF, C.SO_RCVBUF, C.SO_KEEPALIVE, C.SO_OOBINLINE, 11, 12, C.SO_LINGER,
    C.SO_REUSEPORT, C.SO_PASSCRED, C.SO_RCVLOWAT, C.SO_SNDLOWAT, C.SO_SNDBUFFORCE,
    C.SO_RCVBUFFORCE, 25, 29, C.SO_ACCEPTCONN, 35, 37, C.SO_PROTOCOL, C.SO_DOMAIN, 40, 42,
    46, 47, 49, 57,
}  # 11 NO_CHECK, 12 PRIORITY, 25 BINDTODEVICE, 29 TIMESTAMP, 35 TIMESTAMPNS, 37 TIMESTAMPING,
# 40 RXQ_OVFL, 42 PEEK_OFF, 46 BUSY_POLL, 47 MAX_PACING_RATE, 49 INCOMING_CPU, 57 COOKIE
TCP_OPTS = set(range(1, 15)) | {16, 17, 18, 19, 23, 25, 30, 34}
# NODELAY MAXSEG CORK KEEPIDLE KEEPINTVL KEEPCNT SYNCNT LINGER2 DEFER_ACCEPT WINDOW_CLAMP
# INFO QUICKACK CONGESTION MD5SIG(14 is refused below) ...
TCP_OPTS.discard(14)
IP_OPTS = {1, 2, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14, 15, 24, 32, 33, 34, 35, 36, 49, 50}
# TOS TTL HDRINCL OPTIONS RECVOPTS RETOPTS PKTINFO MTU_DISCOVER RECVERR RECVTTL RECVTOS MTU
# FREEBIND BIND_ADDRESS_NO_PORT MULTICAST_IF/TTL/LOOP ADD/DROP_MEMBERSHIP MULTICAST_ALL NODEFRAG
IPV6_OPTS = {16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 49, 50, 51, 52, 66, 67}
# UNICAST_HOPS MULTICAST_IF/HOPS/LOOP JOIN/LEAVE_GROUP MTU_DISCOVER MTU RECVERR V6ONLY
# RECVPKTINFO PKTINFO RECVHOPLIMIT HOPLIMIT RECVTCLASS TCLASS
UDP_OPTS = {1, 103}  # UDP_CORK, UDP_SEGMENT
ALLOWED_OPTS = {C.SOL_SOCKET: SOL_SOCKET_OPTS, IPPROTO_TCP: TCP_OPTS, IPPROTO_IP: IP_OPTS,
                IPPROTO_IPV6: IPV6_OPTS, IPPROTO_UDP: UDP_OPTS}
# Control messages sendmsg may pass on.
ALLOWED_CMSGS = {(IPPROTO_IP, 1), (IPPROTO_IP, 2), (IPPROTO_IP, 8), (IPPROTO_IPV6, 50),
                 (IPPROTO_IPV6, 52), (IPPROTO_IPV6, 67), (IPPROTO_UDP, 103)}
SEND_FLAGS = (C.MSG_OOB | C.MSG_DONTROUTE | C.MSG_EOR | 0x800 | 0x8000 | 0x20000000)
# MSG_CONFIRM, MSG_MORE, MSG_FASTOPEN
RECV_FLAGS = C.MSG_OOB | C.MSG_PEEK | C.MSG_TRUNC | C.MSG_WAITALL | 0x2000  # MSG_ERRQUEUE

SIOCATMARK, SIOCGSTAMP, SIOCGSTAMPNS, SIOCOUTQNSD = 0x8905, 0x8906, 0x8907, 0x894B
SIOCGIFCONF = 0x8912
IFREQ_GETTERS = {0x8910, 0x8913, 0x8915, 0x8917, 0x8919, 0x891B, 0x891D, 0x8921, 0x8927,
                 0x8933, 0x8942}
# SIOCGIF{NAME,FLAGS,ADDR,DSTADDR,BRDADDR,NETMASK,METRIC,MTU,HWADDR,INDEX,TXQLEN}
IFREQ_SIZE = 40


class HostSocket(SocketFile):
    """An inet socket of the app that is a host socket of the Sentry."""

    def __init__(self, kernel, fd: int, family: int, stype: int, protocol: int, flags: int):
        super().__init__(kernel, stype, protocol, flags)
        self.family = family
        self.fd = fd
        self.poll_host_fd = fd
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN | select.POLLOUT | select.POLLPRI | select.POLLRDHUP)
        self.connecting = False  # a blocking connect is waiting for the handshake
        self.pushback = b""  # bytes taken from the host but not yet given to the app
        self.tx: tuple | None = None  # progress of a blocking stream send: (key, sent)

    def __repr__(self) -> str:
        return f"HostSocket(fd={self.fd}, family={self.family}, type={self.stype})"

    @property
    def is_stream(self) -> bool:
        return self.stype == C.SOCK_STREAM

    def _host_poll(self) -> int:
        res = self._poller.poll(0)
        return res[0][1] if res else 0

    def poll(self) -> int:
        mask = self._host_poll()
        if self.pushback:
            mask |= C.POLLIN | C.POLLRDNORM
        return mask

    def _block(self, t, key, timeo, events, nonblock: bool):
        if nonblock:
            raise SyscallError(C.EAGAIN)
        self.wait(t, key, timeo, queues=[self.wq], host_fds=((self.fd, events),))

    # --- names and connections ---
    def bind(self, t, addr):
        _check(_h_bind(self.fd, addr, len(addr)))

    def listen(self, t, backlog):
        _check(_h_listen(self.fd, backlog))
        self.wq.notify()

    def is_listening(self):
        return bool(self._sockopt_int(C.SOL_SOCKET, C.SO_ACCEPTCONN))

    def connect(self, t, addr):
        key = ("connect", id(self))
        if self.connecting:
            if self._host_poll() & (C.POLLOUT | C.POLLERR | C.POLLHUP):
                self.connecting = False
                clear_deadline(t, key)
                err = self._sockopt_int(C.SOL_SOCKET, C.SO_ERROR)
                self.wq.notify()
                if err:
                    raise SyscallError(err)
                return
            deadline = call_deadline(t, key, self.sndtimeo)
            if expired(deadline):
                self.connecting = False
                clear_deadline(t, key)
                raise SyscallError(C.EINPROGRESS)
            raise WouldBlock(queues=[self.wq], deadline=deadline, restart="sys",
                             host_fds=((self.fd, C.POLLOUT),))
        try:
            _check(_h_connect(self.fd, addr, len(addr)))
        except SyscallError as e:
            if e.errno == C.EINPROGRESS and not self.nonblocking:
                self.connecting = True
                deadline = call_deadline(t, key, self.sndtimeo)
                raise WouldBlock(queues=[self.wq], deadline=deadline, restart="sys",
                                 host_fds=((self.fd, C.POLLOUT),)) from None
            raise
        finally:
            self.wq.notify()

    def accept(self, t, flags):
        buf = ctypes.create_string_buffer(MAX_ADDR)
        ln = _socklen(MAX_ADDR)
        fd = _h_accept4(self.fd, buf, ctypes.byref(ln), os.O_NONBLOCK | os.O_CLOEXEC)
        key = ("accept", id(self))
        if fd < 0:
            err = ctypes.get_errno()
            if err == C.EAGAIN:
                self._block(t, key, self.rcvtimeo, C.POLLIN, self.nonblocking)
            raise SyscallError(err)
        clear_deadline(t, key)
        new = HostSocket(self.kernel, fd, self.family, self.stype, self.protocol, flags)
        new.uid, new.gid = self.uid, self.gid
        return new, buf.raw[:min(ln.value, MAX_ADDR)]

    def _name(self, fn) -> bytes:
        buf = ctypes.create_string_buffer(MAX_ADDR)
        ln = _socklen(MAX_ADDR)
        _check(fn(self.fd, buf, ctypes.byref(ln)))
        return buf.raw[:min(ln.value, MAX_ADDR)]

    def getsockname(self, t):
        return self._name(_h_getsockname)

    def getpeername(self, t):
        return self._name(_h_getpeername)

    def shutdown(self, t, how):
        try:
            _check(_h_shutdown(self.fd, how))
        finally:
            self.wq.notify()

    # --- data ---
    def _host_send(self, data: bytes, flags: int, addr: bytes | None, control: bytes) -> int:
        iov = _Iovec(ctypes.cast(ctypes.c_char_p(data), _vp), len(data))
        msg = _Msghdr()
        if addr:
            abuf = ctypes.create_string_buffer(addr, len(addr))
            msg.name, msg.namelen = ctypes.cast(abuf, _vp), len(addr)
        msg.iov, msg.iovlen = ctypes.pointer(iov), 1
        if control:
            cbuf = ctypes.create_string_buffer(control, len(control))
            msg.control, msg.controllen = ctypes.cast(cbuf, _vp), len(control)
        return _check(_h_sendmsg(self.fd, ctypes.byref(msg), flags | C.MSG_DONTWAIT | C.MSG_NOSIGNAL))

    def sendmsg(self, t, data, flags, addr, cmsgs):
        control = _encode_cmsgs(cmsgs)
        nonblock = bool(self.nonblocking or flags & C.MSG_DONTWAIT)
        hflags = flags & SEND_FLAGS
        key = ("send", id(self))
        data = bytes(data)
        progressive = self.is_stream and not nonblock and not addr and len(data) > 0
        txkey = (getattr(t, "tid", None), len(data), hash(data)) if progressive else None
        sent = self.tx[1] if (txkey is not None and self.tx and self.tx[0] == txkey) else 0
        while True:
            try:
                n = self._host_send(data[sent:], hflags, addr, control if not sent else b"")
            except SyscallError as e:
                if e.errno == C.EAGAIN and not nonblock:
                    deadline = call_deadline(t, key, self.sndtimeo)
                    if expired(deadline):
                        clear_deadline(t, key)
                        self.tx = None
                        if sent:
                            return sent
                        raise
                    self.tx = (txkey, sent) if txkey is not None else None
                    raise WouldBlock(queues=[self.wq], deadline=deadline, restart=_restart(self.sndtimeo),
                                     host_fds=((self.fd, C.POLLOUT),)) from None
                self.tx = None
                clear_deadline(t, key)
                if sent:
                    return sent
                if e.errno == C.EPIPE and self.is_stream and not flags & C.MSG_NOSIGNAL:
                    unix.send_sigpipe(t)
                raise
            sent += n
            if not progressive or sent >= len(data):
                break
        self.tx = None
        clear_deadline(t, key)
        return sent

    def _host_recv(self, n: int, flags: int, controllen: int):
        buf = ctypes.create_string_buffer(max(n, 1))
        abuf = ctypes.create_string_buffer(MAX_ADDR)
        cbuf = ctypes.create_string_buffer(controllen) if controllen > 0 else None
        iov = _Iovec(ctypes.cast(buf, _vp), n)
        msg = _Msghdr()
        msg.name, msg.namelen = ctypes.cast(abuf, _vp), MAX_ADDR
        msg.iov, msg.iovlen = ctypes.pointer(iov), 1
        if cbuf is not None:
            msg.control, msg.controllen = ctypes.cast(cbuf, _vp), controllen
        got = _check(_h_recvmsg(self.fd, ctypes.byref(msg), flags | C.MSG_DONTWAIT))
        data = buf.raw[:min(got, n)]
        addr = abuf.raw[:min(msg.namelen, MAX_ADDR)] if msg.namelen else None
        control = cbuf.raw[:msg.controllen] if cbuf is not None else b""
        return data, got, addr, control, msg.flags

    def recvmsg(self, t, n, flags, controllen):
        nonblock = bool(self.nonblocking or flags & C.MSG_DONTWAIT)
        hflags = flags & RECV_FLAGS
        key = ("recv", id(self))
        controllen = max(0, min(controllen, 1 << 16))
        if self.is_stream:
            cap = min(n, RECV_CAP)
            if hflags & C.MSG_WAITALL and not hflags & C.MSG_PEEK and not nonblock and n > 0:
                return self._recv_waitall(t, n, flags, key)
            if self.pushback and not hflags & (C.MSG_OOB | 0x2000):
                return self._recv_pushback(t, n, flags, key, nonblock)
        else:
            cap = min(n, DGRAM_CAP)
        try:
            data, got, addr, control, mflags = self._host_recv(cap, hflags & ~C.MSG_WAITALL, controllen)
        except SyscallError as e:
            if e.errno == C.EAGAIN:
                self._block(t, key, self.rcvtimeo, C.POLLIN, nonblock)
            clear_deadline(t, key)
            raise
        clear_deadline(t, key)
        if not hflags & C.MSG_PEEK:
            self.wq.notify()
        return RecvResult(data, got, addr, control, mflags)

    def _recv_pushback(self, t, n, flags, key, nonblock) -> RecvResult:
        clear_deadline(t, key)
        data = self.pushback[:n]
        if not flags & C.MSG_PEEK:
            self.pushback = self.pushback[len(data):]
            self.wq.notify()
        return RecvResult(data, len(data), None, b"", 0)

    def _recv_waitall(self, t, n, flags, key) -> RecvResult:
        """A blocking MSG_WAITALL read: gather into ``pushback`` across
        wake-ups until n bytes, EOF or an error."""
        while len(self.pushback) < n:
            try:
                data, got, _, _, _ = self._host_recv(min(n - len(self.pushback), RECV_CAP), 0, 0)
            except SyscallError as e:
                if e.errno == C.EAGAIN:
                    deadline = call_deadline(t, key, self.rcvtimeo)
                    if not expired(deadline):
                        raise WouldBlock(queues=[self.wq], deadline=deadline, restart=_restart(self.rcvtimeo),
                                         host_fds=((self.fd, C.POLLIN),)) from None
                    if not self.pushback:
                        clear_deadline(t, key)
                        raise
                    break
                if not self.pushback:
                    clear_deadline(t, key)
                    raise
                break
            if got == 0:
                break
            self.pushback += data
        return self._recv_pushback(t, n, flags, key, False)

    # --- options ---
    def _sockopt_int(self, level: int, name: int) -> int:
        buf = ctypes.create_string_buffer(4)
        ln = _socklen(4)
        _check(_h_getsockopt(self.fd, level, name, buf, ctypes.byref(ln)))
        return struct.unpack("<i", buf.raw)[0]

    def setsockopt(self, t, level, name, val):
        if level == C.SOL_SOCKET and name in (C.SO_RCVTIMEO, C.SO_SNDTIMEO):
            self.set_common(t, name, val)
            return
        if name not in ALLOWED_OPTS.get(level, ()):
            raise SyscallError(C.ENOPROTOOPT)
        _check(_h_setsockopt(self.fd, level, name, bytes(val), len(val)))
        self.wq.notify()

    def getsockopt(self, t, level, name, optlen):
        if optlen < 0:
            raise SyscallError(C.EINVAL)
        if level == C.SOL_SOCKET and name in (C.SO_RCVTIMEO, C.SO_SNDTIMEO):
            return clip(self.get_common(t, name, optlen), optlen)
        if name not in ALLOWED_OPTS.get(level, ()):
            raise SyscallError(C.ENOPROTOOPT)
        size = min(optlen, 4096)
        buf = ctypes.create_string_buffer(max(size, 1))
        ln = _socklen(size)
        _check(_h_getsockopt(self.fd, level, name, buf, ctypes.byref(ln)))
        return buf.raw[:min(ln.value, size)]

    def take_error(self):
        return self._sockopt_int(C.SOL_SOCKET, C.SO_ERROR)

    # --- ioctl ---
    def ioctl(self, task, cmd, arg):
        if cmd in (C.FIONREAD, C.TIOCOUTQ, SIOCATMARK, SIOCOUTQNSD):
            buf = ctypes.create_string_buffer(4)
            _check(_h_ioctl(self.fd, cmd, buf))
            v = struct.unpack("<i", buf.raw)[0]
            if cmd == C.FIONREAD:
                v += len(self.pushback)
            task.mem.write(arg, struct.pack("<i", v))
            return 0
        if cmd in (SIOCGSTAMP, SIOCGSTAMPNS):
            buf = ctypes.create_string_buffer(16)
            _check(_h_ioctl(self.fd, cmd, buf))
            task.mem.write(arg, buf.raw)
            return 0
        if cmd in IFREQ_GETTERS:
            buf = ctypes.create_string_buffer(task.mem.read(arg, IFREQ_SIZE), IFREQ_SIZE)
            _check(_h_ioctl(self.fd, cmd, buf))
            task.mem.write(arg, buf.raw)
            return 0
        if cmd == SIOCGIFCONF:
            length, ptr = struct.unpack("<i4xQ", task.mem.read(arg, 16))
            if length < 0:
                raise SyscallError(C.EINVAL)
            length = min(length, 1 << 16)
            data = ctypes.create_string_buffer(max(length, 1))
            req = struct.pack("<i4xQ", length, ctypes.addressof(data) if ptr else 0)
            ifc = ctypes.create_string_buffer(req, 16)
            _check(_h_ioctl(self.fd, cmd, ifc))
            got = struct.unpack_from("<i", ifc.raw)[0]
            if ptr:
                task.mem.write(ptr, data.raw[:got])
            task.mem.write(arg, struct.pack("<i", got))
            return 0
        return super().ioctl(task, cmd, arg)

    def release(self):
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.wq.notify()


def _restart(timeo) -> str:
    """Linux restarts a socket call after a signal only when it has no timeout."""
    return "sys" if timeo is None else "nohand"


def _encode_cmsgs(cmsgs) -> bytes:
    from pysc.core.abi.structs import CMSGHDR, cmsg_align
    out = bytearray()
    for level, typ, payload in cmsgs:
        if level == C.SOL_SOCKET and typ in (C.SCM_RIGHTS, C.SCM_CREDENTIALS):
            continue  # Linux ignores these on inet sockets
        if (level, typ) not in ALLOWED_CMSGS:
            raise SyscallError(C.EINVAL)
        clen = CMSGHDR.size + len(payload)
        out += CMSGHDR.pack(clen, level, typ) + payload
        out += b"\0" * (cmsg_align(clen) - clen)
    return bytes(out)


def create(kernel, t: "Task", family: int, stype: int, protocol: int, flags: int) -> HostSocket:
    if family not in (C.AF_INET, C.AF_INET6):
        raise SyscallError(C.EAFNOSUPPORT)
    if stype not in (C.SOCK_STREAM, C.SOCK_DGRAM, C.SOCK_RAW):
        raise SyscallError(C.ESOCKTNOSUPPORT)
    if stype == C.SOCK_RAW and not _net_raw(kernel):
        raise SyscallError(C.EPERM)
    fd = _check(_h_socket(family, stype | os.O_NONBLOCK | os.O_CLOEXEC, protocol))
    try:
        s = HostSocket(kernel, fd, family, stype, protocol, flags)
    except Exception:
        os.close(fd)
        raise
    s.uid, s.gid = t.creds.fsuid, t.creds.fsgid
    if protocol == 0:
        try:
            s.protocol = s._sockopt_int(C.SOL_SOCKET, C.SO_PROTOCOL)
        except SyscallError:
            pass
    return s


def _net_raw(kernel) -> bool:
    config = getattr(kernel, "config", None)
    return bool(config is not None and config.get("net-raw", False))
