"""Reading and writing the memory of an app host process."""
from __future__ import annotations

import os
import struct

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.platforms.hostproc import native

LARGE = 16 * 1024  # above this, process_vm_* beats /proc/PID/mem
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class ProcMemory:
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

    def read_cstr(self, addr: int, limit: int = 4096) -> bytes:
        """A NUL-terminated string; ENAMETOOLONG past ``limit`` bytes."""
        out = b""
        while True:
            chunk = 4096 - (addr & 4095)  # to the end of the page: never cross into an unmapped one
            try:
                data = self.read(addr, chunk)
            except SyscallError:
                data = b""
                for i in range(chunk):  # the string may end before a bad page
                    try:
                        data += self.read(addr + i, 1)
                    except SyscallError:
                        break
                    if data.endswith(b"\0"):
                        break
                if not data.endswith(b"\0"):
                    raise
            nul = data.find(b"\0")
            if nul >= 0:
                out += data[:nul]
                if len(out) >= limit:
                    raise SyscallError(C.ENAMETOOLONG)
                return out
            out += data
            addr += chunk
            if len(out) >= limit:
                raise SyscallError(C.ENAMETOOLONG)

    def read_u32(self, addr: int) -> int:
        return _U32.unpack(self.read(addr, 4))[0]

    def read_u64(self, addr: int) -> int:
        return _U64.unpack(self.read(addr, 8))[0]

    def write_u32(self, addr: int, v: int) -> None:
        self.write(addr, _U32.pack(v & 0xFFFFFFFF))

    def write_u64(self, addr: int, v: int) -> None:
        self.write(addr, _U64.pack(v & 0xFFFFFFFFFFFFFFFF))

    def read_ptr_array(self, addr: int, limit: int = 1 << 16) -> list[int]:
        """A NULL-terminated array of pointers (argv, envp)."""
        out = []
        while addr:
            ptr = self.read_u64(addr)
            if ptr == 0:
                return out
            out.append(ptr)
            if len(out) > limit:
                raise SyscallError(C.E2BIG)
            addr += 8
        return out
