"""seccomp user notification: the listener's ioctls and their structs
(include/uapi/linux/seccomp.h), from Python."""
from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from pysc.platforms.hostproc.native import libc

# struct seccomp_notif: id, pid, flags, then seccomp_data (nr, arch, ip, args[6])
NOTIF = struct.Struct("<QIIiIQ6Q")
# struct seccomp_notif_resp: id, val, error, flags
RESP = struct.Struct("<QqiI")
# struct seccomp_notif_addfd: id, flags, srcfd, newfd, newfd_flags
ADDFD = struct.Struct("<QIIII")
U64 = struct.Struct("<Q")


def _iowr(nr: int, size: int, read: bool = True) -> int:
    direction = 3 if read else 1  # _IOC_READ|_IOC_WRITE, or _IOC_WRITE
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


IOCTL_RECV = _iowr(0, NOTIF.size)
IOCTL_SEND = _iowr(1, RESP.size)
IOCTL_ID_VALID = _iowr(2, 8, read=False)
IOCTL_ADDFD = _iowr(3, ADDFD.size, read=False)
IOCTL_SET_FLAGS = _iowr(4, 8, read=False)

FILTER_FLAG_NEW_LISTENER = 1 << 3
FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
USER_NOTIF_FLAG_CONTINUE = 1
USER_NOTIF_FD_SYNC_WAKE_UP = 1
ADDFD_FLAG_SETFD = 1
ADDFD_FLAG_SEND = 2

SYS_pidfd_open = 434
SYS_pidfd_getfd = 438
SYS_kcmp = 312
KCMP_VM, KCMP_FILES, KCMP_FS = 1, 2, 3
PIDFD_THREAD = os.O_EXCL


class Listener:
    """A notification listener fd and the buffers its hot path reuses."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray(NOTIF.size)
        self._zero = bytes(NOTIF.size)
        try:
            fcntl.ioctl(fd, IOCTL_SET_FLAGS, USER_NOTIF_FD_SYNC_WAKE_UP)
        except OSError:
            pass  # an older kernel: correct, only slower

    def recv(self) -> tuple:
        """(id, pid, flags, nr, arch, ip, a0..a5) of the next notification."""
        buf = self.buf
        buf[:] = self._zero  # the kernel wants it zeroed
        fcntl.ioctl(self.fd, IOCTL_RECV, buf, True)
        return NOTIF.unpack_from(buf)

    def send(self, notif_id: int, val: int = 0, error: int = 0, flags: int = 0) -> bool:
        """Answer a notification; False if the task no longer waits for it
        (also when the listener was closed: every task of its filter is gone)."""
        if self.fd < 0:
            return False
        try:
            fcntl.ioctl(self.fd, IOCTL_SEND, RESP.pack(notif_id, val, error, flags))
            return True
        except OSError:
            return False

    def id_valid(self, notif_id: int) -> bool:
        if self.fd < 0:
            return False
        try:
            fcntl.ioctl(self.fd, IOCTL_ID_VALID, U64.pack(notif_id))
            return True
        except OSError:
            return False

    def addfd(self, notif_id: int, srcfd: int, newfd: int = 0, flags: int = 0,
              newfd_flags: int = os.O_CLOEXEC) -> int:
        """Install the Sentry's ``srcfd`` in the waiting task (at ``newfd``
        with SETFD); with SEND this also answers the call with the number."""
        buf = bytearray(ADDFD.pack(notif_id, flags, srcfd, newfd, newfd_flags))
        return fcntl.ioctl(self.fd, IOCTL_ADDFD, buf, True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _syscall(*args) -> int:
    res = libc.syscall(*[ctypes.c_long(a) for a in args])
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def pidfd_open(pid: int, flags: int = 0) -> int:
    return _syscall(SYS_pidfd_open, pid, flags)


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    return _syscall(SYS_pidfd_getfd, pidfd, targetfd, 0)


def kcmp_same(pid1: int, pid2: int, kind: int) -> bool:
    """Whether two host processes share one resource of ``kind`` (KCMP_*)."""
    try:
        return _syscall(SYS_kcmp, pid1, pid2, kind, 0, 0) == 0
    except OSError:
        return False
