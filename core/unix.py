"""AF_UNIX sockets (Linux's net/unix/af_unix.c), as Sentry objects.

Also the base class every socket File derives from (:class:`SocketFile`):
the operations ``syscalls/net.py`` calls, the socket options every family
shares, timeouts, fstat and /proc naming.

A unix socket never touches a host socket.  Data sits in the *receiver's*
queue as :class:`Segment` records (bytes, the sender, its credentials, any
SCM_RIGHTS files); the sender is charged for the bytes until they are read
(``wmem`` against ``sndbuf``), which is what makes writers block when the
reader falls behind.  Every state change notifies the ``wq`` of both ends
(and of listeners for new connections), so poll/epoll and blocked calls
see it.

Names: abstract names (leading NUL) live in ``kernel.objects["unix_abstract"]``;
path names are socket inodes created in the VFS, with the socket kept in the
inode's ``special`` attribute (or, for filesystems whose inodes have none,
in ``kernel.objects["unix_paths"]`` by (dev, ino)).
"""
from __future__ import annotations

import itertools
import signal
import struct
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from pysc.core.abi import consts as C
from pysc.core.abi.structs import CMSGHDR, TIMEVAL, UCRED, Stat, cmsg_space
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.eventpoll import call_deadline, clear_deadline, expired
from pysc.core.file import File

if TYPE_CHECKING:
    from pysc.core.task import Task

SOCKFS_DEV = 0x08  # sockfs is anonymous device 0:8 on Linux
SOMAXCONN = 4096
SCM_MAX_FD = 253
WMEM_DEFAULT = 212992
WMEM_MAX = 212992
RMEM_MAX = 212992
SOCK_MIN_SNDBUF = 4608
SOCK_MIN_RCVBUF = 2304
MAX_DGRAM_QLEN = 512  # net.unix.max_dgram_qlen as systemd sets it
DGRAM_OVERHEAD = 768  # what a queued datagram costs its sender beyond its bytes (skb truesize)
SUN_PATH_OFFSET = 2
SOCKADDR_UN_SIZE = 110
UNIX_AUTOBIND_MAX = 0xFFFFF

SHUT_RCV, SHUT_SEND = 1, 2
SHUT_BOTH = SHUT_RCV | SHUT_SEND

SO_PEEK_OFF, SO_PASSSEC = 42, 34
SO_PRIORITY, SO_NO_CHECK, SO_BSDCOMPAT = 12, 11, 14
SO_TIMESTAMP, SO_TIMESTAMPNS, SO_RXQ_OVFL, SO_BINDTODEVICE = 29, 35, 40, 25
SO_INCOMING_CPU, SO_COOKIE, SO_MEMINFO = 49, 57, 55

_INT = struct.Struct("<i")
_ino = itertools.count(1 << 22)


def send_sigpipe(t: "Task") -> None:
    """SIGPIPE for a write to a broken connection, through the platform
    (the host kernel delivers it where app threads are host threads)."""
    platform = getattr(t.kernel, "platform", None)
    if platform is not None:
        platform.signal_thread(t, signal.SIGPIPE)


def new_ino(kernel) -> int:
    counter = getattr(kernel, "anon_ino", None)
    return next(counter) if counter is not None else next(_ino)


def task_ucred(t: "Task", effective: bool = True) -> tuple[int, int, int]:
    """(pid, uid, gid) as SO_PEERCRED (effective ids) or SCM_CREDENTIALS (real ids) give them."""
    c = t.creds
    pid = t.pidns.id_of(t.tg.pid)
    if effective:
        return (pid, c.euid, c.egid)
    return (pid, c.uid, c.gid)


def pack_int(v: int) -> bytes:
    return _INT.pack(v)


def opt_int(val: bytes) -> int:
    if len(val) < 4:
        raise SyscallError(C.EINVAL)
    return _INT.unpack_from(val)[0]


def clip(data: bytes, optlen: int) -> bytes:
    """getsockopt copies at most optlen bytes of the value."""
    return data[:max(0, optlen)]


class RecvResult(NamedTuple):
    data: bytes  # the bytes to copy into the buffers
    length: int  # the return value (the datagram's full length with MSG_TRUNC)
    addr: bytes | None  # sockaddr of the sender, or None (msg_namelen 0)
    control: bytes  # the cmsg area to write back
    flags: int  # msg_flags (MSG_TRUNC, MSG_CTRUNC, ...)


class ControlWriter:
    """Builds the control (cmsg) area of recvmsg the way Linux's put_cmsg
    and scm_detach_fds do: truncation sets MSG_CTRUNC."""

    def __init__(self, space: int):
        self.space = max(0, space)
        self.buf = bytearray()
        self.flags = 0

    @property
    def room(self) -> int:
        return self.space - len(self.buf)

    def put(self, level: int, typ: int, payload: bytes) -> None:
        room = self.room
        if room < CMSGHDR.size:
            self.flags |= C.MSG_CTRUNC
            return
        clen = CMSGHDR.size + len(payload)
        if clen > room:
            self.flags |= C.MSG_CTRUNC
            clen = room
        self.buf += (CMSGHDR.pack(clen, level, typ) + payload)[:clen]
        self.buf += b"\0" * (min(cmsg_space(len(payload)), room) - clen)

    def put_files(self, t: "Task", files: list[File], cloexec: bool) -> None:
        """Install ``files`` (each carrying one reference we own) into the
        task's fd table; those that do not fit are released."""
        room = self.room
        fdmax = (room - CMSGHDR.size) // 4 if room > CMSGHDR.size else 0
        fds: list[int] = []
        rest = list(files)
        while rest and len(fds) < fdmax:
            f = rest[0]
            try:
                fds.append(t.fdtable.install(f, cloexec))
            except SyscallError:
                break
            rest.pop(0)
        if fds:
            payload = struct.pack(f"<{len(fds)}i", *fds)
            clen = CMSGHDR.size + len(payload)
            self.buf += CMSGHDR.pack(clen, C.SOL_SOCKET, C.SCM_RIGHTS) + payload
            self.buf += b"\0" * (min(cmsg_space(len(payload)), room) - clen)
        if rest:
            self.flags |= C.MSG_CTRUNC
            for f in rest:
                f.decref()

    def bytes(self) -> bytes:
        return bytes(self.buf)


# --- the socket base class ------------------------------------------------------------

class SocketFile(File):
    """An open socket of any family.  ``syscalls/net.py`` calls these methods;
    a family overrides what it supports (the defaults fail as Linux's
    sock_no_* operations do)."""
    is_socket = True
    pollable = True
    poll_host_fd: int | None = None
    family = C.AF_UNSPEC

    def __init__(self, kernel, stype: int, protocol: int, flags: int):
        super().__init__(C.O_RDWR | (flags & C.O_NONBLOCK))
        self.kernel = kernel
        self.stype = stype
        self.protocol = protocol
        self.ino = new_ino(kernel)
        self.uid = 0
        self.gid = 0
        self.rcvtimeo: float | None = None  # seconds; None blocks forever
        self.sndtimeo: float | None = None
        self.opts: dict[tuple[int, int], bytes] = {}  # stored options that do nothing here

    # --- operations (defaults) ---
    def bind(self, t: "Task", addr: bytes) -> None:
        raise SyscallError(C.EOPNOTSUPP)

    def listen(self, t: "Task", backlog: int) -> None:
        raise SyscallError(C.EOPNOTSUPP)

    def accept(self, t: "Task", flags: int) -> tuple["SocketFile", bytes | None]:
        raise SyscallError(C.EOPNOTSUPP)

    def connect(self, t: "Task", addr: bytes) -> None:
        raise SyscallError(C.EOPNOTSUPP)

    def getsockname(self, t: "Task") -> bytes:
        raise SyscallError(C.EOPNOTSUPP)

    def getpeername(self, t: "Task") -> bytes:
        raise SyscallError(C.ENOTCONN)

    def sendmsg(self, t: "Task", data: bytes, flags: int, addr: bytes | None,
                cmsgs: list[tuple[int, int, bytes]]) -> int:
        raise SyscallError(C.EOPNOTSUPP)

    def recvmsg(self, t: "Task", n: int, flags: int, controllen: int) -> RecvResult:
        raise SyscallError(C.EOPNOTSUPP)

    def shutdown(self, t: "Task", how: int) -> None:
        raise SyscallError(C.EOPNOTSUPP)

    def setsockopt(self, t: "Task", level: int, name: int, val: bytes) -> None:
        if level != C.SOL_SOCKET:
            raise SyscallError(C.EOPNOTSUPP)
        self.set_common(t, name, val)

    def getsockopt(self, t: "Task", level: int, name: int, optlen: int) -> bytes:
        if level != C.SOL_SOCKET:
            raise SyscallError(C.EOPNOTSUPP)
        return clip(self.get_common(t, name, optlen), optlen)

    # --- read/write are recv/send without flags ---
    def read(self, task, count):
        return self.recvmsg(task, count, 0, 0).data

    def write(self, task, data):
        return self.sendmsg(task, data, 0, None, [])

    # --- SOL_SOCKET options every family shares ---
    def set_common(self, t: "Task", name: int, val: bytes) -> None:
        if name in (C.SO_RCVTIMEO, C.SO_SNDTIMEO):
            timeo = parse_timeo(val)
            if name == C.SO_RCVTIMEO:
                self.rcvtimeo = timeo
            else:
                self.sndtimeo = timeo
            return
        v = opt_int(val)
        if name == C.SO_SNDBUF:
            self.set_sndbuf(max(SOCK_MIN_SNDBUF, min(v & 0xFFFFFFFF, WMEM_MAX) * 2))
        elif name == C.SO_RCVBUF:
            self.set_rcvbuf(max(SOCK_MIN_RCVBUF, min(v & 0xFFFFFFFF, RMEM_MAX) * 2))
        elif name in (C.SO_SNDBUFFORCE, C.SO_RCVBUFFORCE):
            if not t.creds.has_cap(12):  # CAP_NET_ADMIN
                raise SyscallError(C.EPERM)
            size = max(0, v) * 2
            if name == C.SO_SNDBUFFORCE:
                self.set_sndbuf(max(SOCK_MIN_SNDBUF, size))
            else:
                self.set_rcvbuf(max(SOCK_MIN_RCVBUF, size))
        elif name == C.SO_LINGER:
            if len(val) < 8:
                raise SyscallError(C.EINVAL)
            self.opts[(C.SOL_SOCKET, name)] = bytes(val[:8])
        elif name == C.SO_SNDLOWAT:
            raise SyscallError(C.ENOPROTOOPT)
        elif name in (C.SO_DEBUG, C.SO_REUSEADDR, C.SO_REUSEPORT, C.SO_KEEPALIVE, C.SO_DONTROUTE,
                      C.SO_BROADCAST, C.SO_OOBINLINE, SO_PRIORITY, SO_NO_CHECK, C.SO_RCVLOWAT,
                      SO_TIMESTAMP, SO_TIMESTAMPNS, SO_RXQ_OVFL, SO_BSDCOMPAT, SO_PASSSEC,
                      SO_PEEK_OFF, SO_INCOMING_CPU):
            if name == C.SO_RCVLOWAT and v < 0:
                v = 0x7FFFFFFF
            if name == C.SO_RCVLOWAT and v == 0:
                v = 1
            valued = name in (C.SO_RCVLOWAT, SO_PRIORITY, SO_PEEK_OFF, SO_INCOMING_CPU)
            self.opts[(C.SOL_SOCKET, name)] = pack_int(v if valued else int(bool(v)))
        else:
            raise SyscallError(C.ENOPROTOOPT)

    def get_common(self, t: "Task", name: int, optlen: int) -> bytes:
        if optlen < 0:
            raise SyscallError(C.EINVAL)
        if name == C.SO_TYPE:
            return pack_int(self.stype)
        if name == C.SO_DOMAIN:
            return pack_int(self.family)
        if name == C.SO_PROTOCOL:
            return pack_int(self.protocol)
        if name == C.SO_ERROR:
            return pack_int(self.take_error())
        if name == C.SO_ACCEPTCONN:
            return pack_int(int(self.is_listening()))
        if name == C.SO_SNDBUF:
            return pack_int(self.get_sndbuf())
        if name == C.SO_RCVBUF:
            return pack_int(self.get_rcvbuf())
        if name in (C.SO_RCVTIMEO, C.SO_SNDTIMEO):
            timeo = self.rcvtimeo if name == C.SO_RCVTIMEO else self.sndtimeo
            if timeo is None:
                return TIMEVAL.pack(0, 0)
            usec = int(round(timeo * 1e6))
            return TIMEVAL.pack(usec // 1000000, usec % 1000000)
        if name == C.SO_LINGER:
            return self.opts.get((C.SOL_SOCKET, name), b"\0" * 8)
        if name == C.SO_RCVLOWAT:
            return self.opts.get((C.SOL_SOCKET, name), pack_int(1))
        if name == C.SO_SNDLOWAT:
            return pack_int(1)
        if name == SO_PEEK_OFF:
            return self.opts.get((C.SOL_SOCKET, name), pack_int(-1))
        if name == SO_COOKIE:
            return struct.pack("<Q", self.ino)
        if name in (C.SO_DEBUG, C.SO_REUSEADDR, C.SO_REUSEPORT, C.SO_KEEPALIVE, C.SO_DONTROUTE,
                    C.SO_BROADCAST, C.SO_OOBINLINE, SO_PRIORITY, SO_NO_CHECK, SO_TIMESTAMP,
                    SO_TIMESTAMPNS, SO_RXQ_OVFL, SO_BSDCOMPAT, SO_PASSSEC, SO_INCOMING_CPU):
            return self.opts.get((C.SOL_SOCKET, name), pack_int(0))
        raise SyscallError(C.ENOPROTOOPT)

    # hooks of the shared options
    def take_error(self) -> int:
        return 0

    def is_listening(self) -> bool:
        return False

    def set_sndbuf(self, v: int) -> None:
        self.opts[(C.SOL_SOCKET, C.SO_SNDBUF)] = pack_int(v)

    def set_rcvbuf(self, v: int) -> None:
        self.opts[(C.SOL_SOCKET, C.SO_RCVBUF)] = pack_int(v)

    def get_sndbuf(self) -> int:
        return _INT.unpack(self.opts.get((C.SOL_SOCKET, C.SO_SNDBUF), pack_int(WMEM_DEFAULT)))[0]

    def get_rcvbuf(self) -> int:
        return _INT.unpack(self.opts.get((C.SOL_SOCKET, C.SO_RCVBUF), pack_int(WMEM_DEFAULT)))[0]

    # --- blocking helpers ---
    def wait(self, t: "Task", key: object, timeo: float | None, queues=(), host_fds=()):
        """Block (raise WouldBlock) unless the socket's timeout has passed,
        in which case fail with EAGAIN as Linux does."""
        deadline = call_deadline(t, key, timeo)
        if expired(deadline):
            clear_deadline(t, key)
            raise SyscallError(C.EAGAIN)
        # Linux restarts a socket call only when it has no timeout (sock_intr_errno).
        raise WouldBlock(queues=queues, deadline=deadline, restart="sys" if timeo is None else "nohand",
                         host_fds=host_fds)

    # --- file ---
    def stat(self) -> Stat:
        return Stat(mode=C.S_IFSOCK | 0o777, ino=self.ino, dev=SOCKFS_DEV, nlink=1,
                    uid=self.uid, gid=self.gid, blksize=4096)

    def path_for_proc(self) -> bytes:
        return b"socket:[%d]" % self.ino

    def ioctl(self, task, cmd, arg):
        if cmd == C.FIONBIO:
            on = task.mem.read_u32(arg)
            if on:
                self.flags |= C.O_NONBLOCK
            else:
                self.flags &= ~C.O_NONBLOCK
            return 0
        raise SyscallError(C.ENOTTY)


def parse_timeo(val: bytes) -> float | None:
    """A struct timeval socket timeout: None blocks forever, 0.0 never blocks."""
    if len(val) < TIMEVAL.size:
        raise SyscallError(C.EINVAL)
    sec, usec = TIMEVAL.unpack_from(val)
    if usec < 0 or usec >= 1000000:
        raise SyscallError(C.EDOM)
    if sec < 0:
        return 0.0
    if sec == 0 and usec == 0:
        return None
    return sec + usec / 1e6


# --- unix addresses ---------------------------------------------------------------------

def parse_unix_addr(addr: bytes, autobind_ok: bool = False) -> bytes | None:
    """The name in a sockaddr_un: abstract names keep their leading NUL and
    every byte; path names end at the first NUL.  None means 'autobind'
    (bind with only sun_family)."""
    if len(addr) < SUN_PATH_OFFSET or len(addr) > SOCKADDR_UN_SIZE:
        raise SyscallError(C.EINVAL)
    family = struct.unpack_from("<H", addr)[0]
    if family != C.AF_UNIX:
        raise SyscallError(C.EINVAL)
    name = addr[SUN_PATH_OFFSET:]
    if not name:
        if autobind_ok:
            return None
        raise SyscallError(C.EINVAL)
    if name[0] == 0:
        return bytes(name)
    return bytes(name.split(b"\0", 1)[0])


def unix_sockaddr(name: bytes | None) -> bytes:
    """The sockaddr_un getsockname/getpeername/accept report for ``name``."""
    fam = struct.pack("<H", C.AF_UNIX)
    if name is None:
        return fam
    if name[:1] == b"\0":
        return fam + name
    return fam + name + b"\0"


class Segment:
    """Bytes queued on a receiver, with what came along with them."""
    __slots__ = ("data", "off", "sender", "creds", "files", "cost")

    def __init__(self, data: bytes, sender: "UnixSocket", creds, files, cost: int):
        self.data = data
        self.off = 0
        self.sender = sender
        self.creds = creds
        self.files = files
        self.cost = cost  # what the sender is still charged for (wmem)

    @property
    def left(self) -> int:
        return len(self.data) - self.off


# --- unix sockets -------------------------------------------------------------------------

class UnixSocket(SocketFile):
    family = C.AF_UNIX

    def __init__(self, kernel, stype: int, flags: int = 0):
        super().__init__(kernel, stype, 0, flags)
        self.addr: bytes | None = None
        self.bound_inode = None
        self.bound_key = None  # (table, key) the name is registered under
        self.peer: UnixSocket | None = None
        self.connected = False  # stream/seqpacket: ever connected (peer may be gone since)
        self.listening = False
        self.backlog: deque[UnixSocket] = deque()
        self.max_backlog = 0
        self.rq: deque[Segment] = deque()
        self.rq_bytes = 0
        self.wmem = 0
        self.sndbuf = WMEM_DEFAULT
        self.rcvbuf = WMEM_DEFAULT
        self.shut = 0
        self.err = 0
        self.closed = False
        self.embryo = False  # created by connect, not yet accepted
        self.passcred = False
        self.peercred: tuple[int, int, int] | None = None
        self.connected_from: set[UnixSocket] = set()  # dgram sockets whose peer we are

    @property
    def is_stream(self) -> bool:
        return self.stype == C.SOCK_STREAM

    @property
    def conn_oriented(self) -> bool:
        return self.stype in (C.SOCK_STREAM, C.SOCK_SEQPACKET)

    def notify(self) -> None:
        self.wq.notify()
        if self.peer is not None:
            self.peer.wq.notify()

    def __repr__(self) -> str:
        return f"UnixSocket(type={self.stype}, ino={self.ino}, addr={self.addr!r})"

    # --- names ---
    def _abstract_table(self) -> dict:
        return self.kernel.objects.setdefault("unix_abstract", {})

    def _register_abstract(self, name: bytes) -> None:
        table = self._abstract_table()
        other = table.get(name)
        if other is not None and not other.closed:
            raise SyscallError(C.EADDRINUSE)
        table[name] = self
        self.addr = name
        self.bound_key = (table, name)

    def autobind(self) -> None:
        if self.addr is not None:
            return
        table = self._abstract_table()
        counter = self.kernel.objects.setdefault("unix_autobind", itertools.count(1))
        for _ in range(UNIX_AUTOBIND_MAX + 1):
            name = b"\0%05x" % (next(counter) & UNIX_AUTOBIND_MAX)
            other = table.get(name)
            if other is None or other.closed:
                self._register_abstract(name)
                return
        raise SyscallError(C.ENOSPC)

    def bind(self, t, addr):
        name = parse_unix_addr(addr, autobind_ok=True)
        if self.addr is not None:
            raise SyscallError(C.EINVAL)
        if name is None:
            self.autobind()
            return
        if name[:1] == b"\0":
            self._register_abstract(name)
            return
        self._bind_path(t, name)

    def _bind_path(self, t, path: bytes) -> None:
        from pysc.core.vfs import may_access
        vfs = t.vfs
        parent, last = vfs.walk_parent(t, _start_dentry(t), path)
        if last in (b".", b"..") or path.endswith(b"/"):
            raise SyscallError(C.EADDRINUSE if last in (b".", b"..") else C.EINVAL)
        if getattr(parent.mount, "readonly", False):
            raise SyscallError(C.EROFS)
        if not may_access(t.creds, parent.inode.stat(), C.W_OK | C.X_OK):
            raise SyscallError(C.EACCES)
        mode = C.S_IFSOCK | (0o777 & ~t.fs.umask)
        try:
            inode = parent.inode.mknod(last, mode, 0, t.creds)
        except SyscallError as e:
            if e.errno == C.EEXIST:
                raise SyscallError(C.EADDRINUSE) from None
            raise
        parent.invalidate(last) if hasattr(parent, "invalidate") else None
        self.addr = path
        self.bound_inode = inode
        if hasattr(inode, "special"):
            inode.special = self
        else:
            st = inode.stat()
            table = self.kernel.objects.setdefault("unix_paths", {})
            table[(st.dev, st.ino)] = self
            self.bound_key = (table, (st.dev, st.ino))

    def lookup(self, t, name: bytes) -> "UnixSocket":
        """The socket a connect/sendto names (ECONNREFUSED if none listens there)."""
        if name[:1] == b"\0":
            other = self._abstract_table().get(name)
            if other is None or other.closed:
                raise SyscallError(C.ECONNREFUSED)
            return other
        from pysc.core.vfs import may_access
        dentry = t.vfs.walk(t, _start_dentry(t), name)
        inode = dentry.inode
        st = inode.stat()
        if st.mode & C.S_IFMT != C.S_IFSOCK:
            raise SyscallError(C.ECONNREFUSED)
        if not may_access(t.creds, st, C.W_OK):
            raise SyscallError(C.EACCES)
        other = getattr(inode, "special", None)
        if not isinstance(other, UnixSocket):
            other = self.kernel.objects.get("unix_paths", {}).get((st.dev, st.ino))
        if other is None or other.closed:
            raise SyscallError(C.ECONNREFUSED)
        return other

    def getsockname(self, t):
        return unix_sockaddr(self.addr)

    def getpeername(self, t):
        if self.peer is None:
            raise SyscallError(C.ENOTCONN)
        return unix_sockaddr(self.peer.addr)

    # --- connections ---
    def listen(self, t, backlog):
        if not self.conn_oriented:
            raise SyscallError(C.EOPNOTSUPP)
        if self.addr is None or self.connected:
            raise SyscallError(C.EINVAL)
        if backlog < 0 or backlog > SOMAXCONN:
            backlog = SOMAXCONN
        self.max_backlog = backlog
        if not self.listening:
            self.listening = True
            self.peercred = task_ucred(t)
        self.wq.notify()

    def is_listening(self):
        return self.listening

    def connect(self, t, addr):
        if len(addr) >= 2 and struct.unpack_from("<H", addr)[0] == C.AF_UNSPEC and not self.conn_oriented:
            self._dgram_disconnect()
            return
        name = parse_unix_addr(addr)
        if self.conn_oriented:
            self._stream_connect(t, name)
        else:
            self._dgram_connect(t, name)

    def _stream_connect(self, t, name: bytes) -> None:
        if self.listening:
            raise SyscallError(C.EINVAL)
        if self.connected:
            raise SyscallError(C.EISCONN)
        other = self.lookup(t, name)
        if other.stype != self.stype:
            raise SyscallError(C.EPROTOTYPE)
        if not other.listening:
            raise SyscallError(C.ECONNREFUSED)
        if len(other.backlog) > other.max_backlog:
            if self.nonblocking:
                raise SyscallError(C.EAGAIN)
            self.wait(t, ("connect", id(self)), self.sndtimeo, queues=[other.wq, self.wq])
        clear_deadline(t, ("connect", id(self)))
        if self.passcred and self.addr is None:
            self.autobind()
        child = UnixSocket(self.kernel, self.stype)
        child.embryo = True
        child.addr = other.addr
        child.uid, child.gid = other.uid, other.gid
        child.passcred = other.passcred
        child.sndbuf = other.sndbuf
        child.peercred = task_ucred(t)
        child.connected = True
        child.peer = self
        self.peer = child
        self.connected = True
        self.peercred = other.peercred
        other.backlog.append(child)
        other.wq.notify()
        self.wq.notify()

    def accept(self, t, flags):
        if not self.conn_oriented:
            raise SyscallError(C.EOPNOTSUPP)
        if not self.listening:
            raise SyscallError(C.EINVAL)
        if not self.backlog:
            if self.nonblocking:
                raise SyscallError(C.EAGAIN)
            self.wait(t, ("accept", id(self)), self.rcvtimeo, queues=[self.wq])
        clear_deadline(t, ("accept", id(self)))
        child = self.backlog.popleft()
        child.embryo = False
        child.flags = C.O_RDWR | (flags & C.O_NONBLOCK)
        self.wq.notify()  # a connect waiting for room may go on
        peer_addr = child.peer.addr if child.peer is not None else None
        return child, unix_sockaddr(peer_addr)

    def _dgram_connect(self, t, name: bytes) -> None:
        other = self.lookup(t, name)
        if other.stype != self.stype:
            raise SyscallError(C.EPROTOTYPE)
        if other.peer is not None and other.peer is not self and not other.peer.closed:
            raise SyscallError(C.EPERM)
        if self.passcred and self.addr is None:
            self.autobind()
        self._dgram_disconnect()
        self.peer = other
        other.connected_from.add(self)
        self.wq.notify()

    def _dgram_disconnect(self) -> None:
        if self.peer is not None:
            self.peer.connected_from.discard(self)
            self.peer.wq.notify()
            self.peer = None
            self.wq.notify()

    def shutdown(self, t, how):
        if how not in (C.SHUT_RD, C.SHUT_WR, C.SHUT_RDWR):
            raise SyscallError(C.EINVAL)
        mode = how + 1  # SHUT_RD -> RCV, SHUT_WR -> SEND, SHUT_RDWR -> both
        self.shut |= mode
        peer = self.peer
        if self.conn_oriented and peer is not None:
            peer_mode = 0
            if mode & SHUT_RCV:
                peer_mode |= SHUT_SEND
            if mode & SHUT_SEND:
                peer_mode |= SHUT_RCV
            peer.shut |= peer_mode
        self.notify()
        for s in list(self.connected_from):
            s.wq.notify()

    # --- readiness ---
    def poll(self) -> int:
        mask = 0
        if self.err:
            mask |= C.POLLERR
        if self.shut & SHUT_RCV:
            mask |= C.POLLRDHUP | C.POLLIN | C.POLLRDNORM
        if self.shut == SHUT_BOTH:
            mask |= C.POLLHUP
        if self.rq or self.backlog:
            mask |= C.POLLIN | C.POLLRDNORM
        if self.conn_oriented and not self.connected and not self.listening:
            mask |= C.POLLHUP
        writable = not self.listening and self.wmem * 4 <= self.sndbuf  # unix_writable()
        if writable and not self.is_stream:
            other = self.peer
            if other is not None and other.peer is not self and other.recvq_full():
                writable = False
        if writable:
            mask |= C.POLLOUT | C.POLLWRNORM | C.POLLWRBAND
        return mask

    def recvq_full(self) -> bool:
        return len(self.rq) > MAX_DGRAM_QLEN

    def take_error(self) -> int:
        err, self.err = self.err, 0
        return err

    # --- sending ---
    def sendmsg(self, t, data, flags, addr, cmsgs):
        if flags & C.MSG_OOB:
            raise SyscallError(C.EOPNOTSUPP)
        creds, files = self._scm(t, cmsgs)
        if self.is_stream:
            return self._stream_send(t, data, flags, addr, creds, files)
        return self._dgram_send(t, data, flags, addr, creds, files)

    def _scm(self, t, cmsgs) -> tuple[tuple[int, int, int], list[File] | None]:
        """SCM_RIGHTS and SCM_CREDENTIALS of a sendmsg; nothing is taken yet."""
        creds = task_ucred(t, effective=False)
        files: list[File] | None = None
        for level, typ, payload in cmsgs:
            if level != C.SOL_SOCKET:
                continue
            if typ == C.SCM_RIGHTS:
                n = len(payload) // 4
                if n <= 0:
                    continue
                have = files or []
                if len(have) + n > SCM_MAX_FD:
                    raise SyscallError(C.EINVAL)
                files = have + [t.fdtable.get(fd) for fd in struct.unpack_from(f"<{n}i", payload)]
            elif typ == C.SCM_CREDENTIALS:
                if len(payload) < UCRED.size:
                    raise SyscallError(C.EINVAL)
                pid, uid, gid = UCRED.unpack_from(payload)
                c = t.creds
                if pid != t.pidns.id_of(t.tg.pid) and not c.has_cap(21):
                    raise SyscallError(C.EPERM)
                if uid not in (c.uid, c.euid, c.suid) and not c.has_cap(7):
                    raise SyscallError(C.EPERM)
                if gid not in (c.gid, c.egid, c.sgid) and not c.has_cap(6):
                    raise SyscallError(C.EPERM)
                creds = (pid, uid, gid)
            else:
                raise SyscallError(C.EINVAL)
        return creds, files

    def _broken_pipe(self, t, flags):
        if not flags & C.MSG_NOSIGNAL:
            send_sigpipe(t)
        raise SyscallError(C.EPIPE)

    def _stream_send(self, t, data, flags, addr, creds, files) -> int:
        if addr:
            raise SyscallError(C.EISCONN if self.connected else C.EOPNOTSUPP)
        if not self.connected:
            raise SyscallError(C.ENOTCONN)
        if self.shut & SHUT_SEND:
            self._broken_pipe(t, flags)
        if not data:
            return 0
        other = self.peer
        if other is None or other.closed or other.shut & SHUT_RCV:
            self._broken_pipe(t, flags)
        n = len(data)
        room = self.sndbuf - self.wmem
        nonblock = self.nonblocking or flags & C.MSG_DONTWAIT
        key = ("send", id(self))
        if nonblock:
            if room <= 0:
                raise SyscallError(C.EAGAIN)
            n = min(n, room)
        elif self.wmem and n > room:
            # A blocking write waits until all of it fits (or the queue is
            # empty, for writes larger than the buffer): no short writes.
            self.wait(t, key, self.sndtimeo, queues=[self.wq, other.wq])
        clear_deadline(t, key)
        if files:
            for f in files:
                f.incref()
        other._enqueue(Segment(bytes(data[:n]), self, creds, files, n))
        self.wmem += n
        self.notify()
        return n

    def _dgram_send(self, t, data, flags, addr, creds, files) -> int:
        if self.stype == C.SOCK_SEQPACKET:
            if self.err:
                raise SyscallError(self.take_error())
            if not self.connected:
                raise SyscallError(C.ENOTCONN)
            addr = None
        if addr:
            other = self.lookup(t, parse_unix_addr(addr))
        else:
            other = self.peer
            if other is None:
                if self.stype == C.SOCK_SEQPACKET:
                    raise SyscallError(C.EPIPE)
                raise SyscallError(C.ENOTCONN)
        if self.shut & SHUT_SEND:
            raise SyscallError(C.EPIPE)  # no SIGPIPE for datagrams, as Linux
        n = len(data)
        if n > self.sndbuf - 32:
            raise SyscallError(C.EMSGSIZE)
        if other.closed:
            if self.stype == C.SOCK_SEQPACKET:
                raise SyscallError(C.EPIPE)
            if other is self.peer:
                self._dgram_disconnect()
            raise SyscallError(C.ECONNREFUSED)
        if other.stype != self.stype:
            raise SyscallError(C.EPROTOTYPE)
        if self.stype == C.SOCK_DGRAM:
            if other.peer is not None and other.peer is not self and not other.peer.closed:
                raise SyscallError(C.EPERM)
            if self.passcred and self.addr is None:
                self.autobind()
        if other.shut & SHUT_RCV:
            raise SyscallError(C.EPIPE)
        cost = n + DGRAM_OVERHEAD
        full = (self.wmem and self.wmem + cost > self.sndbuf) or (
            other.peer is not self and other.recvq_full())
        key = ("send", id(self))
        if full:
            if self.nonblocking or flags & C.MSG_DONTWAIT:
                raise SyscallError(C.EAGAIN)
            self.wait(t, key, self.sndtimeo, queues=[self.wq, other.wq])
        clear_deadline(t, key)
        if files:
            for f in files:
                f.incref()
        other._enqueue(Segment(bytes(data), self, creds, files, cost))
        self.wmem += cost
        self.wq.notify()
        return n

    def _enqueue(self, seg: Segment) -> None:
        self.rq.append(seg)
        self.rq_bytes += len(seg.data)
        self.wq.notify()

    def _uncharge(self, seg: Segment, amount: int) -> None:
        sender = seg.sender
        amount = min(amount, seg.cost)
        seg.cost -= amount
        sender.wmem -= amount
        sender.wq.notify()
        for s in list(sender.connected_from):
            s.wq.notify()

    # --- receiving ---
    def recvmsg(self, t, n, flags, controllen):
        if flags & C.MSG_OOB:
            raise SyscallError(C.EOPNOTSUPP)
        if self.is_stream:
            return self._stream_recv(t, n, flags, controllen)
        return self._dgram_recv(t, n, flags, controllen)

    def _recv_block(self, t, flags, key):
        if self.nonblocking or flags & C.MSG_DONTWAIT:
            raise SyscallError(C.EAGAIN)
        queues = [self.wq]
        self.wait(t, key, self.rcvtimeo, queues=queues)

    def _stream_recv(self, t, n, flags, controllen) -> RecvResult:
        if not self.connected:
            raise SyscallError(C.EINVAL)
        peek = bool(flags & C.MSG_PEEK)
        key = ("recv", id(self))
        avail = self.rq_bytes
        if avail == 0:
            if self.err:
                clear_deadline(t, key)
                raise SyscallError(self.take_error())
            if self.shut & SHUT_RCV:
                clear_deadline(t, key)
                return RecvResult(b"", 0, None, b"", 0)
            self._recv_block(t, flags, key)
        elif flags & C.MSG_WAITALL and not peek and avail < n and not self._waitall_done(t, key):
            if not (self.nonblocking or flags & C.MSG_DONTWAIT):
                self._recv_block(t, flags, key)
        clear_deadline(t, key)
        out: list[bytes] = []
        got = 0
        creds = None
        sender = None
        files: list[File] | None = None
        idx = 0
        rq = self.rq
        while got < n:
            if peek:
                if idx >= len(rq):
                    break
                seg = rq[idx]
                idx += 1
            else:
                if not rq:
                    break
                seg = rq[0]
            if creds is None:
                creds, sender = seg.creds, seg.sender
            elif self.passcred and seg.creds != creds:
                break  # never glue bytes of different writers
            take = min(seg.left, n - got)
            out.append(seg.data[seg.off:seg.off + take])
            got += take
            has_files = seg.files is not None
            if has_files:
                if peek:
                    files = list(seg.files)
                    for f in files:
                        f.incref()
                else:
                    files, seg.files = seg.files, None
            if not peek:
                seg.off += take
                self.rq_bytes -= take
                self._uncharge(seg, take)
                if seg.left == 0:
                    rq.popleft()
            if has_files:
                break  # a read stops after the bytes that carried files
        if not peek:
            self.notify()
        data = b"".join(out)
        control, cflags = self._control(t, controllen, flags, creds, files)
        return RecvResult(data, len(data), self._sender_addr(sender), control, cflags)

    def _waitall_done(self, t, key) -> bool:
        """Whether a MSG_WAITALL read should stop waiting with what is there:
        at EOF or error, or when the writer cannot add more (its buffer is full)."""
        if self.err or self.shut & SHUT_RCV:
            return True
        peer = self.peer
        if peer is None or peer.closed or peer.wmem >= peer.sndbuf:
            return True
        if any(seg.files is not None for seg in self.rq):
            return True
        saved = getattr(t, "restart_deadline", None)
        return saved is not None and saved[0] == key and expired(saved[1])

    def _dgram_recv(self, t, n, flags, controllen) -> RecvResult:
        if self.stype == C.SOCK_SEQPACKET and not self.connected:
            raise SyscallError(C.ENOTCONN)
        peek = bool(flags & C.MSG_PEEK)
        key = ("recv", id(self))
        if not self.rq:
            if self.err:
                clear_deadline(t, key)
                raise SyscallError(self.take_error())
            if self.shut & SHUT_RCV:
                nonblock = self.nonblocking or flags & C.MSG_DONTWAIT
                if self.stype == C.SOCK_SEQPACKET or not nonblock:
                    clear_deadline(t, key)
                    return RecvResult(b"", 0, None, b"", 0)
            self._recv_block(t, flags, key)
        clear_deadline(t, key)
        seg = self.rq[0]
        data = seg.data[:n]
        real = len(seg.data)
        msg_flags = C.MSG_TRUNC if real > n else 0
        if peek:
            files = list(seg.files) if seg.files else None
            for f in files or ():
                f.incref()
        else:
            self.rq.popleft()
            self.rq_bytes -= real
            files, seg.files = seg.files, None
            self._uncharge(seg, seg.cost)
            self.notify()
            for s in list(self.connected_from):
                s.wq.notify()
        control, cflags = self._control(t, controllen, flags, seg.creds, files)
        length = real if flags & C.MSG_TRUNC else len(data)
        return RecvResult(data, length, self._sender_addr(seg.sender), control, msg_flags | cflags)

    def _sender_addr(self, sender) -> bytes | None:
        if sender is None or sender.addr is None:
            return None
        return unix_sockaddr(sender.addr)

    def _control(self, t, controllen, flags, creds, files):
        """The cmsg area: SCM_CREDENTIALS (with SO_PASSCRED), then SCM_RIGHTS."""
        w = ControlWriter(controllen)
        if self.passcred and creds is not None:
            w.put(C.SOL_SOCKET, C.SCM_CREDENTIALS, UCRED.pack(*creds))
        if files:
            w.put_files(t, files, bool(flags & C.MSG_CMSG_CLOEXEC))
        return w.bytes(), w.flags

    # --- options ---
    def setsockopt(self, t, level, name, val):
        if level != C.SOL_SOCKET:
            raise SyscallError(C.EOPNOTSUPP)
        if name == C.SO_PASSCRED:
            self.passcred = bool(opt_int(val))
            return
        if name in (C.SO_PEERCRED, C.SO_TYPE, C.SO_DOMAIN, C.SO_PROTOCOL, C.SO_ERROR, C.SO_ACCEPTCONN):
            raise SyscallError(C.ENOPROTOOPT)
        self.set_common(t, name, val)

    def getsockopt(self, t, level, name, optlen):
        if level != C.SOL_SOCKET:
            raise SyscallError(C.EOPNOTSUPP)
        if optlen < 0:
            raise SyscallError(C.EINVAL)
        if name == C.SO_PASSCRED:
            return clip(pack_int(int(self.passcred)), optlen)
        if name == C.SO_PEERCRED:
            cred = self.peercred if self.peercred is not None else (0, 0xFFFFFFFF, 0xFFFFFFFF)
            return clip(UCRED.pack(cred[0], cred[1] & 0xFFFFFFFF, cred[2] & 0xFFFFFFFF), optlen)
        if name == C.SO_PEERSEC:
            raise SyscallError(C.ENOPROTOOPT)
        return clip(self.get_common(t, name, optlen), optlen)

    def set_sndbuf(self, v):
        self.sndbuf = v
        self.notify()

    def set_rcvbuf(self, v):
        self.rcvbuf = v

    def get_sndbuf(self):
        return self.sndbuf

    def get_rcvbuf(self):
        return self.rcvbuf

    def ioctl(self, task, cmd, arg):
        if cmd == C.FIONREAD:  # SIOCINQ
            if self.listening:
                raise SyscallError(C.EINVAL)
            if self.is_stream:
                v = self.rq_bytes
            else:
                v = len(self.rq[0].data) if self.rq else 0
            task.mem.write(arg, pack_int(v))
            return 0
        if cmd == C.TIOCOUTQ:  # SIOCOUTQ
            if self.listening:
                raise SyscallError(C.EINVAL)
            task.mem.write(arg, pack_int(self.wmem))
            return 0
        return super().ioctl(task, cmd, arg)

    # --- the end ---
    def release(self) -> None:
        self.closed = True
        if self.bound_key is not None:
            table, key = self.bound_key
            if table.get(key) is self:
                del table[key]
            self.bound_key = None
        inode = self.bound_inode
        if inode is not None and getattr(inode, "special", None) is self:
            inode.special = None
        for child in list(self.backlog):
            self.backlog.clear()
            child.decref()
        self.backlog.clear()
        self.listening = False
        peer = self.peer
        if peer is not None:
            if self.conn_oriented:
                peer.shut = SHUT_BOTH
                if self.rq or self.embryo:
                    peer.err = C.ECONNRESET
            else:
                peer.connected_from.discard(self)
            peer.wq.notify()
        self.shut = SHUT_BOTH
        for s in list(self.connected_from):
            s.wq.notify()
        rq, self.rq = self.rq, deque()
        self.rq_bytes = 0
        for seg in rq:
            self._uncharge(seg, seg.cost)
            if seg.files:
                files, seg.files = seg.files, None
                for f in files:
                    f.decref()
        self.wq.notify()


def _start_dentry(t):
    """Where a relative socket path starts: the task's cwd."""
    try:
        from pysc.core.pathutil import at_dentry
    except ImportError:
        return t.fs.cwd
    return at_dentry(t, C.AT_FDCWD)


def socketpair(kernel, t: "Task", stype: int, flags: int) -> tuple[UnixSocket, UnixSocket]:
    a = UnixSocket(kernel, stype, flags)
    b = UnixSocket(kernel, stype, flags)
    a.peer, b.peer = b, a
    cred = task_ucred(t)
    a.peercred = b.peercred = cred
    a.uid = b.uid = t.creds.fsuid
    a.gid = b.gid = t.creds.fsgid
    if stype == C.SOCK_DGRAM:
        a.connected_from.add(b)
        b.connected_from.add(a)
    else:
        a.connected = b.connected = True
    return a, b


def create(kernel, t: "Task", stype: int, protocol: int, flags: int) -> UnixSocket:
    if protocol not in (0, C.AF_UNIX):
        raise SyscallError(C.EPROTONOSUPPORT)
    if stype == C.SOCK_RAW:
        stype = C.SOCK_DGRAM
    if stype not in (C.SOCK_STREAM, C.SOCK_DGRAM, C.SOCK_SEQPACKET):
        raise SyscallError(C.ESOCKTNOSUPPORT)
    s = UnixSocket(kernel, stype, flags)
    s.uid, s.gid = t.creds.fsuid, t.creds.fsgid
    return s
