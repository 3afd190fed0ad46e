"""devfs: the sandbox's /dev (a tmpfs holding device nodes and a few links)
and the character devices behind those nodes."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pysc.core.abi import consts as C
from pysc.core.abi.structs import makedev, os_major, os_minor
from pysc.core.errors import SyscallError
from pysc.core.file import File, HostFDFile
from pysc.core.fs.tmpfs import TmpFS
from pysc.core.task import Credentials

if TYPE_CHECKING:
    from pysc.core.task import Task
    from pysc.core.vfs import Dentry, Inode

# (name, major, minor) of every character device /dev holds.
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)

# (name, target) of the symlinks in /dev.
SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)

# (name, mode) of the directories in /dev (shm and mqueue get their own mounts).
DIRECTORIES = (
    ("shm", 0o1777),
    ("pts", 0o755),
    ("mqueue", 0o1777),
)

# Largest chunk one read of an endless device returns (a short read is legal
# for character devices and keeps a huge read from allocating gigabytes).
MAX_CHUNK = 4 << 20

_READY = C.POLLIN | C.POLLOUT | C.POLLRDNORM | C.POLLWRNORM


class DeviceFile(File):
    """An open memory-class character device: always ready, no offset."""
    seekable = False

    def read(self, task, count):
        if not self.readable:
            raise SyscallError(C.EBADF)
        return self.pread(count, 0)

    def write(self, task, data):
        if not self.writable:
            raise SyscallError(C.EBADF)
        return self.pwrite(data, 0)

    def pread(self, count, offset):
        return b""

    def pwrite(self, data, offset):
        return len(data)

    def seek(self, offset, whence):
        # Linux's null_lseek: always succeeds and leaves the offset at 0.
        self.offset = 0
        return 0

    def poll(self):
        return _READY

    def stat(self):
        if self.inode is not None:
            return self.inode.stat()
        raise SyscallError(C.EBADF)


class NullFile(DeviceFile):
    """/dev/null: reads give EOF, writes vanish."""


class ZeroFile(DeviceFile):
    """/dev/zero: reads give zeros, writes vanish.  Mappings of it are
    anonymous memory; ``host_fd`` offers the host's /dev/zero for that."""

    _host = -1

    def pread(self, count, offset):
        return bytes(max(0, min(count, MAX_CHUNK)))

    def host_fd(self):
        if self._host < 0:
            try:
                self._host = os.open("/dev/zero", os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                return None
        return self._host

    def release(self):
        if self._host >= 0:
            os.close(self._host)
            self._host = -1


class FullFile(ZeroFile):
    """/dev/full: reads give zeros, every write fails with ENOSPC."""

    def pwrite(self, data, offset):
        raise SyscallError(C.ENOSPC)


class RandomFile(DeviceFile):
    """/dev/random and /dev/urandom: the host's CSPRNG; writes are accepted."""

    def pread(self, count, offset):
        return os.urandom(max(0, min(count, MAX_CHUNK)))


_MEM_DEVICES = {
    (1, 3): NullFile,
    (1, 5): ZeroFile,
    (1, 7): FullFile,
    (1, 8): RandomFile,
    (1, 9): RandomFile,
}


def _controlling_tty(task: "Task | None") -> int | None:
    """The host fd of a terminal among the task's stdio, if any."""
    if task is None:
        return None
    for fd in (0, 1, 2):
        try:
            f = task.fdtable.get(fd)
        except SyscallError:
            continue
        if isinstance(f, HostFDFile):
            try:
                if os.isatty(f.fd):
                    return f.fd
            except OSError:
                continue
    return None


def _open_tty(flags: int, dentry: "Dentry | None", task: "Task | None") -> File:
    """/dev/tty: the sandbox's controlling terminal is the terminal the
    sandbox's stdio is attached to; without one, ENXIO as on Linux."""
    hostfd = _controlling_tty(task)
    if hostfd is None:
        raise SyscallError(C.ENXIO)
    hflags = (flags & (C.O_ACCMODE | C.O_NONBLOCK)) | C.O_NOCTTY | C.O_CLOEXEC
    fd = -1
    try:
        fd = os.open("/dev/tty", hflags)
    except OSError:
        # The Sentry may have no controlling terminal of its own: reopen the
        # terminal the app's stdio points at instead.
        try:
            fd = os.open(os.ttyname(hostfd), hflags)
        except OSError:
            raise SyscallError(C.ENXIO) from None
    try:
        return HostFDFile(fd, flags, dentry, None, name=b"/dev/tty")
    except Exception:
        os.close(fd)
        raise


def open_device(rdev: int, flags: int, dentry: "Dentry | None", task: "Task | None") -> File:
    """Open the character device ``rdev`` (a node of any filesystem)."""
    if flags & C.O_PATH:  # an O_PATH open does not reach the driver
        return File(flags, dentry)
    major, minor = os_major(rdev), os_minor(rdev)
    cls = _MEM_DEVICES.get((major, minor))
    if cls is not None:
        return cls(flags, dentry)
    if (major, minor) == (5, 0):
        return _open_tty(flags, dentry, task)
    hostfd = task.kernel.objects.get("host_ttys", {}).get(rdev) if task is not None else None
    if hostfd is not None:  # the caller's terminal, as /dev/pts/N
        return _reopen_host_tty(hostfd, flags, dentry)
    raise SyscallError(C.ENXIO)


def _reopen_host_tty(hostfd: int, flags: int, dentry) -> File:
    from pysc.core.file import HostFDFile
    try:
        fd = os.open(f"/proc/self/fd/{hostfd}", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError(e.errno) from None
    return HostFDFile(fd, flags & ~C.O_NONBLOCK | (flags & C.O_NONBLOCK), dentry, None,
                      name=dentry.path() if dentry is not None else b"", seekable=False, is_tty=True)


def make_devfs(kernel=None) -> "tuple[TmpFS, Inode]":
    """A fresh /dev: a tmpfs populated with the standard nodes and links."""
    fs = TmpFS(mode=0o755)
    root = fs.root
    creds = Credentials()
    for name, major, minor in DEVICES:
        root.mknod(name.encode(), C.S_IFCHR | 0o666, makedev(major, minor), creds)
    for name, target in SYMLINKS:
        root.symlink(name.encode(), target.encode(), creds)
    for name, mode in DIRECTORIES:
        root.mkdir(name.encode(), mode, creds)
    return fs, root
