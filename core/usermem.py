"""App memory as syscall handlers see it: a base class whose subclasses
supply ``read`` and ``write`` (a host process's /proc/PID/mem, or the
Sentry's own memory manager on kvm) and inherit the typed helpers."""
from __future__ import annotations

import struct

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError

PAGE_SIZE = 4096
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class UserMemory:
    """``read(addr, n) -> bytes`` and ``write(addr, data) -> int`` raise
    SyscallError(EFAULT) for any byte they cannot access; everything else
    here is built on them."""

    def read(self, addr: int, n: int) -> bytes:
        raise NotImplementedError

    def write(self, addr: int, data: bytes) -> int:
        raise NotImplementedError

    def read_cstr(self, addr: int, limit: int = 4096) -> bytes:
        """A NUL-terminated string; ENAMETOOLONG past ``limit`` bytes.  Reads
        page by page, so a string ending just before an unmapped page works."""
        out = b""
        while True:
            chunk = PAGE_SIZE - (addr & (PAGE_SIZE - 1))  # to the end of the page
            try:
                data = self.read(addr, chunk)
            except SyscallError:
                data = b""
                for i in range(chunk):  # the string may end before a bad byte
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
