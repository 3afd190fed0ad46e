"""The Sentry's side of the gofer protocol (``--directfs=false``); the gofer
process itself is started by ``pysc.fsproxy.gofer``.

* ``GoferClient`` is the request channel (a ZeroMQ REQ socket) with a timeout
  on every call: a gofer that died or stopped answering makes calls fail with
  ``SyscallError(EIO)``, never hang or crash the Sentry.
* ``GoferFS`` / ``GoferInode`` / ``GoferFile`` are a VFS filesystem whose
  every operation is a gofer message (``--directfs=false``).
"""
from __future__ import annotations

import fcntl
import os
import time
import weakref
from typing import TYPE_CHECKING

from pysc.core.abi import consts as C
from pysc.core.abi.structs import Stat
from pysc.core.errors import SyscallError
from pysc.core.file import File
from pysc.core.vfs import Filesystem, Inode
from pysc.fsproxy import protocol as P

if TYPE_CHECKING:
    from pysc.core.task import Credentials

DEFAULT_TIMEOUT = 10.0
IO_CHUNK = 4 << 20         # bytes per Read/Write message
CLOSE_BATCH = 64           # released handles are closed in batches of this many


class GoferClient:
    """A request channel to a gofer: ``call(request) -> reply``.

    Every call waits at most ``timeout`` seconds; when ``death_fd`` (a pidfd,
    or the donation socket) polls readable the gofer is gone and every call
    fails at once with EIO.  ErrorReply(errno) raises SyscallError(errno)."""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT,
                 death_fd: int | None = None, context=None):
        import zmq
        self._zmq = zmq
        self.address = address
        self.timeout = timeout
        self.ctx = context or zmq.Context.instance()
        self.death_fd = os.dup(death_fd) if death_fd is not None else None
        self.dead = False
        self.closed = False
        self.pending: list[int] = []      # handles released but not yet closed at the gofer
        self.calls = 0
        self.sock = None
        self._connect()

    def _connect(self) -> None:
        zmq = self._zmq
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.address)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        if self.death_fd is not None:
            self.poller.register(self.death_fd, zmq.POLLIN)

    def _drop_socket(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def _die(self) -> None:
        self.dead = True
        self._drop_socket()
        self.pending.clear()

    def close(self) -> None:
        """Close the channel (the gofer's handles stay until it exits)."""
        if self.closed:
            return
        self.closed = True
        self._drop_socket()
        if self.death_fd is not None:
            os.close(self.death_fd)
            self.death_fd = None

    def gofer_gone(self) -> bool:
        if self.dead:
            return True
        if self.death_fd is None:
            return False
        import select
        r, _, _ = select.select([self.death_fd], [], [], 0)
        if r:
            self._die()
        return self.dead

    def call(self, msg):
        """Send ``msg``, return its reply; SyscallError(errno) on ErrorReply,
        SyscallError(EIO) if the gofer is gone or silent for ``timeout`` s."""
        if len(self.pending) >= CLOSE_BATCH:
            self.flush()
        return self._call(msg)

    def _call(self, msg):
        if self.dead or self.closed:
            raise SyscallError(C.EIO)
        zmq = self._zmq
        raw = P.encode(msg)
        try:
            self.sock.send(raw, zmq.NOBLOCK)
        except zmq.ZMQError:
            self._drop_socket()
            self._connect()
            raise SyscallError(C.EIO) from None
        deadline = time.monotonic() + self.timeout
        while True:
            ms = max(0, int((deadline - time.monotonic()) * 1000))
            events = self.poller.poll(ms)
            if events:
                for what, _ev in events:
                    if what is self.sock:
                        break
                else:
                    # Only the death fd: the gofer exited without answering.
                    self._die()
                    raise SyscallError(C.EIO)
                reply_raw = self.sock.recv()
                break
            if time.monotonic() >= deadline:
                # Silent gofer: a REQ socket cannot be reused after a lost reply.
                self._drop_socket()
                if self.gofer_gone():
                    raise SyscallError(C.EIO)
                self._connect()
                raise SyscallError(C.EIO)
        self.calls += 1
        try:
            reply = P.decode(reply_raw)
        except P.ProtocolError:
            raise SyscallError(C.EIO) from None
        if type(reply) is P.ErrorReply:
            raise SyscallError(reply.errno)
        return reply

    def release(self, *handles: int) -> None:
        """Release handles lazily (safe from finalizers: no I/O here)."""
        if not self.dead and not self.closed:
            self.pending.extend(handles)

    def flush(self) -> None:
        """Close every released handle at the gofer now."""
        if self.pending and not self.dead and not self.closed:
            handles, self.pending = tuple(self.pending), []
            try:
                self._call(P.Close(handles))
            except SyscallError:
                pass

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ====================================================================== filesystem

class _Res:
    """Gofer resources of one inode, released by a finalizer when it dies."""
    __slots__ = ("handles", "memfd")

    def __init__(self, handle: int):
        self.handles = [handle]
        self.memfd = -1


def _release(client: GoferClient, res: _Res) -> None:
    client.release(*res.handles)
    res.handles = []
    if res.memfd >= 0:
        try:
            os.close(res.memfd)
        except OSError:
            pass
        res.memfd = -1


class GoferFS(Filesystem):
    """A mount served through gofer messages (``--directfs=false``).

    ``exclusive=True`` (``--file-access=exclusive``): the Sentry is the only
    writer, so inodes cache their stat."""
    name = "9p"

    def __init__(self, client: GoferClient, mount: str, *, readonly: bool = False,
                 exclusive: bool = False):
        super().__init__()
        self.client = client
        self.exclusive = exclusive
        r = client.call(P.Attach(str(mount), readonly))
        self.readonly = r.readonly
        self.supported = frozenset(r.messages)
        self.mount_name = str(mount)
        self.root = GoferInode(self, r.handle, r.stat)

    def call(self, msg):
        return self.client.call(msg)

    def statfs(self) -> tuple:
        return self.client.call(P.Statfs(self.root.handle)).as_tuple()


class GoferInode(Inode):
    """A file of a GoferFS: a gofer path handle plus (maybe) a cached stat."""

    def __init__(self, fs: GoferFS, handle: int, wire_stat: tuple):
        self.fs = fs
        self.handle = handle
        self.ftype = wire_stat[0] & C.S_IFMT
        self.ino = wire_stat[1]
        self._stat: Stat | None = P.wire_to_stat(wire_stat, fs.dev) if fs.exclusive else None
        self._target: bytes | None = None
        self._spare_fh: int | None = None     # the open handle Create returned, for the first open
        self._memkey = None
        self._children: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.special = None                   # a FIFO's Sentry pipe (pysc.core.pipe.open_fifo)
        self._res = _Res(handle)
        weakref.finalize(self, _release, fs.client, self._res)

    def __repr__(self) -> str:
        return f"GoferInode(h={self.handle}, ino={self.ino}, type={self.ftype >> 12:o})"

    # --- attributes ---
    def _call(self, msg):
        return self.fs.client.call(msg)

    def stat(self) -> Stat:
        st = self._stat
        if st is None:
            st = P.wire_to_stat(self._call(P.Stat(self.handle)).stat, self.fs.dev)
            if self.fs.exclusive:
                self._stat = st
            return st
        return st.copy()

    def _update(self, wire_stat: tuple | None = None) -> None:
        """The file changed: refresh (or drop) the cached stat."""
        if self.fs.exclusive:
            self._stat = P.wire_to_stat(wire_stat, self.fs.dev) if wire_stat is not None else None

    def is_dir(self) -> bool:
        return self.ftype == C.S_IFDIR

    def is_symlink(self) -> bool:
        return self.ftype == C.S_IFLNK

    def _child(self, handle: int, wire_stat: tuple, name: bytes | None = None) -> "GoferInode":
        ino = GoferInode(self.fs, handle, wire_stat)
        if name is not None:
            self._children[name] = ino
        return ino

    def _writable(self) -> None:
        if self.fs.readonly:
            raise SyscallError(C.EROFS)

    # --- directories ---
    def lookup(self, name: bytes) -> "GoferInode":
        if self.ftype != C.S_IFDIR:
            raise SyscallError(C.ENOTDIR)
        r = self._call(P.Walk(self.handle, (name,)))
        if not r.entries:
            raise SyscallError(r.errno or C.ENOENT)
        h, st = r.entries[0]
        return self._child(h, st, name)

    def walk(self, names: list[bytes]) -> tuple[list["GoferInode"], int]:
        """Walk several components in one message: (inodes walked, errno of
        the one that failed or 0).  Stops after a symlink."""
        r = self._call(P.Walk(self.handle, tuple(names)))
        out = []
        parent = self
        for (h, st), name in zip(r.entries, names):
            ino = parent._child(h, st, name)
            out.append(ino)
            parent = ino
        return out, r.errno

    def readdir(self):
        if self.ftype != C.S_IFDIR:
            raise SyscallError(C.ENOTDIR)
        return list(self._call(P.Readdir(self.handle)).entries)

    def create(self, name: bytes, mode: int, creds: "Credentials") -> "GoferInode":
        self._writable()
        r = self._call(P.Create(self.handle, name, C.O_RDWR, mode & 0o7777, creds.fsuid, creds.fsgid))
        self._update()
        ino = self._child(r.handle, r.stat, name)
        ino._spare_fh = r.fh
        ino._res.handles.append(r.fh)
        return ino

    def _entry(self, r: P.EntryReply, name: bytes) -> "GoferInode":
        self._update()
        return self._child(r.handle, r.stat, name)

    def mkdir(self, name, mode, creds):
        self._writable()
        return self._entry(self._call(P.Mkdir(self.handle, name, mode & 0o7777,
                                              creds.fsuid, creds.fsgid)), name)

    def mknod(self, name, mode, rdev, creds):
        self._writable()
        return self._entry(self._call(P.Mknod(self.handle, name, mode, rdev,
                                              creds.fsuid, creds.fsgid)), name)

    def symlink(self, name, target, creds):
        self._writable()
        return self._entry(self._call(P.Symlink(self.handle, name, target,
                                                creds.fsuid, creds.fsgid)), name)

    def link(self, name, target):
        self._writable()
        if not isinstance(target, GoferInode) or target.fs is not self.fs:
            raise SyscallError(C.EXDEV)
        if target.is_dir():
            raise SyscallError(C.EPERM)
        r = self._call(P.Link(self.handle, name, target.handle))
        self.fs.client.release(r.handle)  # the target inode stands for the new name
        self._update()
        target._update()

    def _gone(self, name: bytes) -> None:
        self._update()
        child = self._children.pop(name, None)
        if child is not None:
            child._update()

    def unlink(self, name):
        self._writable()
        self._call(P.Unlink(self.handle, name, 0))
        self._gone(name)

    def rmdir(self, name):
        self._writable()
        self._call(P.Unlink(self.handle, name, C.AT_REMOVEDIR))
        self._gone(name)

    def rename(self, oldname, newdir, newname, flags):
        self._writable()
        if not isinstance(newdir, GoferInode) or newdir.fs is not self.fs:
            raise SyscallError(C.EXDEV)
        self._call(P.Rename(self.handle, oldname, newdir.handle, newname, flags))
        moved = self._children.pop(oldname, None)
        replaced = newdir._children.pop(newname, None)
        self._update()
        newdir._update()
        if replaced is not None:
            replaced._update()
        if moved is not None:
            moved._update()
            newdir._children[newname] = moved
        if flags & C.RENAME_EXCHANGE and replaced is not None:
            self._children[oldname] = replaced

    # --- links and attributes ---
    def readlink(self) -> bytes:
        if self.ftype != C.S_IFLNK:
            raise SyscallError(C.EINVAL)
        if self._target is None:  # a symlink's text never changes
            self._target = self._call(P.Readlink(self.handle)).target
        return self._target

    def setattr(self, *, mode=None, uid=None, gid=None, size=None, atime_ns=None, mtime_ns=None):
        self._writable()
        if uid == -1:
            uid = None
        if gid == -1:
            gid = None
        r = self._call(P.Setattr(self.handle, mode, uid, gid, size, atime_ns, mtime_ns))
        self._update(r.stat)

    def listxattr(self):
        return list(self._call(P.Listxattr(self.handle)).names)

    def getxattr(self, name):
        return self._call(P.Getxattr(self.handle, name)).value

    def setxattr(self, name, value, flags):
        self._writable()
        self._call(P.Setxattr(self.handle, name, value, flags))
        self._update()

    def removexattr(self, name):
        self._writable()
        self._call(P.Removexattr(self.handle, name))
        self._update()

    # --- open ---
    def open(self, flags, dentry, task):
        if flags & C.O_PATH:
            return File(flags, dentry, self)
        fmt = self.ftype
        if fmt == C.S_IFDIR:
            from pysc.core.fs.tmpfs import DirFile
            if flags & C.O_ACCMODE != C.O_RDONLY:
                raise SyscallError(C.EISDIR)
            return DirFile(flags, dentry, self)
        if fmt == C.S_IFREG:
            acc = flags & C.O_ACCMODE
            if (acc != C.O_RDONLY or flags & C.O_TRUNC) and self.fs.readonly:
                raise SyscallError(C.EROFS)
            fh = self._spare_fh
            if fh is not None:  # just created: empty, opened O_RDWR
                self._spare_fh = None
                self._res.handles.remove(fh)
            else:
                r = self._call(P.Open(self.handle, flags & (C.O_ACCMODE | C.O_TRUNC | C.O_SYNC
                                                             | C.O_DSYNC)))
                fh = r.fh
                if flags & C.O_TRUNC:
                    self._update(r.stat)
            return GoferFile(flags, dentry, self, fh)
        if fmt == C.S_IFLNK:
            raise SyscallError(C.ELOOP)
        try:
            if fmt == C.S_IFIFO:  # a Sentry pipe, as on every filesystem
                from pysc.core.pipe import open_fifo
                return open_fifo(self, flags, dentry, task)
            if fmt in (C.S_IFCHR, C.S_IFBLK):  # the Sentry's device, never the host's
                from pysc.core.fs.devfs import open_device
                return open_device(self.stat().rdev, flags, dentry, task)
        except ImportError:
            pass
        raise SyscallError(C.ENXIO)

    # --- host copies, for mmap and exec ---
    def _read_all(self, fh: int, dst_fd: int) -> None:
        off = 0
        while True:
            data = self._call(P.Read(fh, off, IO_CHUNK)).data
            if data:
                os.pwrite(dst_fd, data, off)
                off += len(data)
            if len(data) < IO_CHUNK:
                return

    def memfd_copy(self, sealed: bool = True) -> int:
        """A new memfd holding the file's current content (sealed against
        writes and resizing when ``sealed``); the caller owns it."""
        memfd = os.memfd_create("pysc-gofer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            fh = self._call(P.Open(self.handle, C.O_RDONLY)).fh
            try:
                self._read_all(fh, memfd)
            finally:
                self.fs.client.release(fh)
            if sealed:
                fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                            | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(memfd)
            raise
        return memfd

    def sealed_copy(self) -> int:
        """A sealed memfd of the content, shared by every reader while the
        file's size and times are unchanged; owned by the inode (dup it)."""
        st = self.stat()
        key = (st.size, st.mtime_ns, st.ctime_ns)
        if self._res.memfd >= 0 and self._memkey == key:
            return self._res.memfd
        fd = self.memfd_copy(sealed=True)
        if self._res.memfd >= 0:
            os.close(self._res.memfd)
        self._res.memfd, self._memkey = fd, key
        return fd


class GoferFile(File):
    """An open regular file of a GoferFS: I/O through Read/Write messages."""
    seekable = True

    def __init__(self, flags: int, dentry, inode: GoferInode, fh: int):
        super().__init__(flags, dentry, inode)
        self.fh = fh
        self.memfd: int | None = None
        self._memfd_private = False

    def _call(self, msg):
        return self.inode.fs.client.call(msg)

    def pread(self, count: int, offset: int) -> bytes:
        if count <= 0:
            return b""
        if offset < 0:
            raise SyscallError(C.EINVAL)
        if count <= IO_CHUNK:
            return self._call(P.Read(self.fh, offset, count)).data
        exts = []
        off, left = offset, count
        while left > 0:
            n = min(left, IO_CHUNK)
            exts.append((off, n))
            off += n
            left -= n
        out = []
        for i in range(0, len(exts), 4):
            chunks = self._call(P.ReadV(self.fh, tuple(exts[i:i + 4]))).chunks
            for (_o, n), c in zip(exts[i:i + 4], chunks):
                out.append(c)
                if len(c) < n:
                    return b"".join(out)
        return b"".join(out)

    def pwrite(self, data: bytes, offset: int) -> int:
        if offset < 0:
            raise SyscallError(C.EINVAL)
        data = bytes(data)
        if len(data) <= IO_CHUNK:
            n = self._call(P.Write(self.fh, offset, data)).count
        else:
            exts = tuple((offset + i, data[i:i + IO_CHUNK]) for i in range(0, len(data), IO_CHUNK))
            n = sum(self._call(P.WriteV(self.fh, exts)).counts)
        self.inode._update()
        if self.memfd is not None and self._memfd_private and n:
            os.pwrite(self.memfd, data[:n], offset)
        return n

    def truncate(self, size: int) -> None:
        if not self.writable:
            raise SyscallError(C.EINVAL)
        self.inode.setattr(size=size)
        if self.memfd is not None and self._memfd_private:
            os.ftruncate(self.memfd, size)

    def fsync(self) -> None:
        self._call(P.Fsync(self.fh, False))

    def host_fd(self) -> int | None:
        """A memfd copy of the content, made once per open file: sealed and
        shared between readers for read-only files; a private, writable copy
        (kept in step with this file's own writes, not written back) otherwise."""
        if self.memfd is None:
            try:
                if self.writable:
                    self.memfd = self.inode.memfd_copy(sealed=False)
                    self._memfd_private = True
                else:
                    self.memfd = os.dup(self.inode.sealed_copy())
            except SyscallError:
                return None
        return self.memfd

    def release(self) -> None:
        self.inode.fs.client.release(self.fh)
        if self.memfd is not None:
            try:
                os.close(self.memfd)
            except OSError:
                pass
            self.memfd = None
