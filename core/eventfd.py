"""eventfd objects (Linux's fs/eventfd.c): a 64-bit counter behind an fd."""
from __future__ import annotations

import itertools
import struct

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.eventpoll import anon_stat
from pysc.core.file import File

ULLONG_MAX = (1 << 64) - 1
EFD_MAX = ULLONG_MAX - 1  # the largest value the counter may hold
_U64 = struct.Struct("<Q")
_ino = itertools.count(1 << 21)


class EventFD(File):
    """read() takes the counter (or 1 with EFD_SEMAPHORE) and blocks while it
    is 0; write() adds and blocks while the sum would pass 2^64-2."""
    poll_host_fd = None
    pollable = True

    def __init__(self, initval: int, flags: int, ino: int | None = None):
        super().__init__(C.O_RDWR | (flags & C.O_NONBLOCK))
        self.count = initval
        self.semaphore = bool(flags & C.EFD_SEMAPHORE)
        self.ino = ino if ino is not None else next(_ino)

    def read(self, task, count: int) -> bytes:
        if count < 8:
            raise SyscallError(C.EINVAL)
        if self.count == 0:
            if self.nonblocking:
                raise SyscallError(C.EAGAIN)
            raise WouldBlock(queues=[self.wq], restart="sys")
        value = 1 if self.semaphore else self.count
        self.count -= value
        self.wq.notify()
        return _U64.pack(value)

    def write(self, task, data: bytes) -> int:
        if len(data) < 8:
            raise SyscallError(C.EINVAL)
        value = _U64.unpack_from(data)[0]
        if value == ULLONG_MAX:
            raise SyscallError(C.EINVAL)
        if value > EFD_MAX - self.count:
            if self.nonblocking:
                raise SyscallError(C.EAGAIN)
            raise WouldBlock(queues=[self.wq], restart="sys")
        if value:
            self.count += value
            self.wq.notify()
        return 8

    def poll(self) -> int:
        mask = 0
        if self.count > 0:
            mask |= C.POLLIN | C.POLLRDNORM
        if self.count == ULLONG_MAX:
            mask |= C.POLLERR
        if self.count < EFD_MAX:
            mask |= C.POLLOUT | C.POLLWRNORM
        return mask

    def ioctl(self, task, cmd, arg):
        raise SyscallError(C.ENOTTY)

    def stat(self):
        return anon_stat(self.ino)

    def path_for_proc(self) -> bytes:
        return b"anon_inode:[eventfd]"

    def fdinfo(self) -> bytes:
        return b"eventfd-count: %16x\neventfd-id: %d\n" % (self.count, self.ino)
