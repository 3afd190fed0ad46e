"""Open file descriptions: what an fd points at."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pysc.core.abi import consts as C
from pysc.core.abi.structs import Stat
from pysc.core.errors import SyscallError
from pysc.core.waitqueue import WaitQueue

if TYPE_CHECKING:
    from pysc.core.task import Task
    from pysc.core.vfs import Dentry, Inode


class File:
    """An open file description (Linux ``struct file``).

    Shared by every fd that dup() made of it and by forked children; holds the
    status flags and the offset.  Subclasses implement the operations their
    kind of file supports; the defaults fail as Linux does for a file that
    does not support the operation.
    """
    seekable = False
    poll_host_fd: int | None = None  # a host fd whose readiness the main loop must watch

    def __init__(self, flags: int, dentry: "Dentry | None" = None, inode: "Inode | None" = None):
        self.flags = flags & ~(C.O_CREAT | C.O_EXCL | C.O_NOCTTY | C.O_TRUNC | C.O_CLOEXEC)
        self.dentry = dentry
        self.inode = inode if inode is not None else (dentry.inode if dentry is not None else None)
        self.offset = 0
        self.refs = 1
        self.wq = WaitQueue()  # notified whenever readiness may have changed
        self.locks_owner = id(self)

    # --- reference counting (the last close releases) ---
    def incref(self) -> None:
        self.refs += 1

    def decref(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.release()
            for cb in self.__dict__.pop("_on_release", ()):
                cb(self)

    def on_release(self, cb) -> None:
        """Run ``cb(file)`` when the last reference goes (locks, epoll interest)."""
        self.__dict__.setdefault("_on_release", []).append(cb)

    def release(self) -> None:
        pass

    # --- access mode ---
    @property
    def readable(self) -> bool:
        return (self.flags & C.O_ACCMODE) in (C.O_RDONLY, C.O_RDWR) and not self.flags & C.O_PATH

    @property
    def writable(self) -> bool:
        return (self.flags & C.O_ACCMODE) in (C.O_WRONLY, C.O_RDWR) and not self.flags & C.O_PATH

    @property
    def nonblocking(self) -> bool:
        return bool(self.flags & C.O_NONBLOCK)

    # --- I/O ---
    def read(self, task: "Task", count: int) -> bytes:
        if not self.seekable:
            raise SyscallError(C.EINVAL)
        data = self.pread(count, self.offset)
        self.offset += len(data)
        return data

    def write(self, task: "Task", data: bytes) -> int:
        if not self.seekable:
            raise SyscallError(C.EINVAL)
        if self.flags & C.O_APPEND:
            self.offset = self.stat().size
        n = self.pwrite(data, self.offset)
        self.offset += n
        return n

    def pread(self, count: int, offset: int) -> bytes:
        raise SyscallError(C.ESPIPE if not self.seekable else C.EINVAL)

    def pwrite(self, data: bytes, offset: int) -> int:
        raise SyscallError(C.ESPIPE if not self.seekable else C.EINVAL)

    def seek(self, offset: int, whence: int) -> int:
        if not self.seekable:
            raise SyscallError(C.ESPIPE)
        if whence == C.SEEK_SET:
            new = offset
        elif whence == C.SEEK_CUR:
            new = self.offset + offset
        elif whence == C.SEEK_END:
            new = self.stat().size + offset
        elif whence in (C.SEEK_DATA, C.SEEK_HOLE):
            size = self.stat().size
            if offset < 0 or offset >= size:
                raise SyscallError(C.ENXIO)
            new = offset if whence == C.SEEK_DATA else size
        else:
            raise SyscallError(C.EINVAL)
        if new < 0:
            raise SyscallError(C.EINVAL)
        self.offset = new
        return new

    def stat(self) -> Stat:
        if self.inode is not None:
            return self.inode.stat()
        raise SyscallError(C.EBADF)

    def truncate(self, size: int) -> None:
        raise SyscallError(C.EINVAL)

    def fsync(self) -> None:
        pass

    def getdents(self) -> list[tuple[bytes, int, int]]:
        raise SyscallError(C.ENOTDIR)

    def ioctl(self, task: "Task", cmd: int, arg: int) -> int:
        raise SyscallError(C.ENOTTY)

    def poll(self) -> int:
        """Current readiness as a POLL* mask."""
        return C.POLLIN | C.POLLOUT | C.POLLRDNORM | C.POLLWRNORM

    def host_fd(self) -> int | None:
        """A host fd with this file's contents, for mmap and exec; None if there is none."""
        return None

    def path_for_proc(self) -> bytes:
        """What /proc/PID/fd/N reads as."""
        if "proc_name" in self.__dict__:
            return self.proc_name
        if self.dentry is not None:
            return self.dentry.path()
        return b"anon_inode:[unknown]"


def copy_to_fd(src: File, dst_fd: int, chunk: int = 1 << 20) -> int:
    """Copy a whole file into a host fd (copy-up, memfd images); returns the size."""
    off = 0
    while True:
        data = src.pread(chunk, off)
        if not data:
            return off
        os.pwrite(dst_fd, data, off)
        off += len(data)


class HostFDFile(File):
    """A file whose operations go straight to a host fd the Sentry owns
    (the caller's stdio, a host file opened by the Sentry)."""

    def __init__(self, hostfd: int, flags: int, dentry=None, inode=None, name: bytes = b"",
                 owns: bool = True, shared_offset: bool = False, seekable: bool | None = None,
                 is_tty: bool | None = None):
        super().__init__(flags, dentry, inode)
        self.fd = hostfd
        self.shared_offset = shared_offset  # the offset is the host file's (the caller's stdio)
        self.name = name
        self.owns = owns
        if seekable is None:
            seekable = (os.fstat(hostfd).st_mode & C.S_IFMT) in (C.S_IFREG, C.S_IFBLK)
        self.seekable = seekable
        self.is_tty = os.isatty(hostfd) if is_tty is None else is_tty
        if not self.seekable:
            self.poll_host_fd = hostfd

    def read(self, task, count):
        if self.seekable and not self.shared_offset:
            return super().read(task, count)
        try:
            return os.read(self.fd, count)
        except BlockingIOError:
            if self.nonblocking:
                raise SyscallError(C.EAGAIN) from None
            from pysc.core.errors import WouldBlock
            raise WouldBlock(host_fds=((self.fd, C.POLLIN),)) from None
        except OSError as e:
            raise SyscallError(e.errno) from None

    def write(self, task, data):
        if self.seekable and not self.shared_offset:
            return super().write(task, data)
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            if self.nonblocking:
                raise SyscallError(C.EAGAIN) from None
            from pysc.core.errors import WouldBlock
            raise WouldBlock(host_fds=((self.fd, C.POLLOUT),)) from None
        except OSError as e:
            raise SyscallError(e.errno) from None

    def seek(self, offset, whence):
        if not self.shared_offset:
            return super().seek(offset, whence)
        try:
            return os.lseek(self.fd, offset, whence)
        except OSError as e:
            raise SyscallError(e.errno) from None

    def pread(self, count, offset):
        try:
            return os.pread(self.fd, count, offset)
        except OSError as e:
            raise SyscallError(e.errno) from None

    def pwrite(self, data, offset):
        try:
            return os.pwrite(self.fd, data, offset)
        except OSError as e:
            raise SyscallError(e.errno) from None

    def stat(self):
        if self.inode is not None:
            return self.inode.stat()
        return Stat.from_host(os.fstat(self.fd))

    def truncate(self, size):
        try:
            os.ftruncate(self.fd, size)
        except OSError as e:
            raise SyscallError(e.errno) from None

    def fsync(self):
        try:
            os.fsync(self.fd)
        except OSError as e:
            if e.errno != C.EINVAL:
                raise SyscallError(e.errno) from None

    def poll(self):
        import select
        p = select.poll()
        p.register(self.fd, select.POLLIN | select.POLLOUT | select.POLLPRI)
        res = p.poll(0)
        return res[0][1] if res else 0

    def host_fd(self):
        return self.fd

    def ioctl(self, task, cmd, arg):
        from pysc.core import tty
        return tty.host_tty_ioctl(self, task, cmd, arg)

    def release(self):
        if self.owns:
            try:
                os.close(self.fd)
            except OSError:
                pass

    def path_for_proc(self):
        if self.dentry is not None:
            return self.dentry.path()
        return self.name or b"host:[%d]" % self.fd
