"""Reading and writing the memory of an app host process."""
from __future__ import annotations

import os

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.usermem import UserMemory
from pysc.platforms.hostproc import native

LARGE = 16 * 1024  # above this, process_vm_* beats /proc/PID/mem


class ProcMemory(UserMemory):
    """App memory through /proc/PID/mem (small transfers) and
    process_vm_readv/writev (large ones).  Faults become EFAULT."""

    def __init__(self, pid: int):
        self.pid = pid
        self.fd = -1
        self.reopen()

    def reopen(self) -> None:
        """After an exec the old fd reads EOF: open the new address space.
        A process that has already exited has none (every access then fails)."""
        self.close()
        try:
            self.fd = os.open(f"/proc/{self.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            self.fd = -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, addr: int, n: int) -> bytes:
        if n == 0:
            return b""
        if addr <= 0 or addr + n > 1 << 47:
            raise SyscallError(C.EFAULT)
        try:
            if n > LARGE:
                data = native.process_vm_readv(self.pid, addr, n)
            else:
                data = os.pread(self.fd, n, addr)
        except OSError:
            raise SyscallError(C.EFAULT) from None
        if len(data) != n:
            raise SyscallError(C.EFAULT)
        return data

    def write(self, addr: int, data: bytes) -> int:
        n = len(data)
        if n == 0:
            return 0
        if addr <= 0 or addr + n > 1 << 47:
            raise SyscallError(C.EFAULT)
        try:
            if n > LARGE:
                got = native.process_vm_writev(self.pid, addr, data)
                if got != n:  # read-only pages: /proc/PID/mem writes through them
                    got += os.pwrite(self.fd, data[got:], addr + got)
            else:
                got = os.pwrite(self.fd, data, addr)
        except OSError:
            raise SyscallError(C.EFAULT) from None
        if got != n:
            raise SyscallError(C.EFAULT)
        return n
