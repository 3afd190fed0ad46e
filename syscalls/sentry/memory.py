"""Memory calls on an address space the Sentry owns (core/mm)."""
from __future__ import annotations

import sys

from pysc.core.abi import consts as C
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError
from pysc.core.hookspecs import hookimpl


@hookimpl
def pysc_syscalls(table, platform):
    if table.sentry_owned:
        table.register_module(sys.modules[__name__])


@syscall()
def mmap(t, addr, length, prot, flags, fd, offset):
    f = None
    if not flags & C.MAP_ANONYMOUS:
        f = t.fdtable.get(s32(fd))
        if getattr(f, "anonymous_mmap", False):  # /dev/zero
            f = None
            flags |= C.MAP_ANONYMOUS
        else:
            if not f.readable:
                raise SyscallError(C.EACCES)
            if flags & 0x3 in (C.MAP_SHARED, C.MAP_SHARED_VALIDATE) and prot & C.PROT_WRITE \
                    and not f.writable:
                raise SyscallError(C.EACCES)
            if f.inode is not None and f.inode.is_dir():
                raise SyscallError(C.ENODEV)
    return t.mem.mmap(addr, length, prot, flags, f, offset)


@syscall()
def munmap(t, addr, length, *_):
    t.mem.munmap(addr, length)
    return 0


@syscall()
def mprotect(t, addr, length, prot, *_):
    t.mem.mprotect(addr, length, prot)
    return 0


@syscall()
def brk(t, addr, *_):
    return t.mem.brk(addr)


@syscall()
def mremap(t, old_addr, old_len, new_len, flags, new_addr, *_):
    return t.mem.mremap(old_addr, old_len, new_len, flags, new_addr)


@syscall()
def madvise(t, addr, length, advice, *_):
    t.mem.madvise(addr, length, s32(advice))
    return 0


@syscall()
def mincore(t, addr, length, vec, *_):
    return t.mem.mincore(addr, length, vec)


@syscall()
def msync(t, addr, length, flags, *_):
    return t.mem.msync(addr, length, s32(flags))


@syscall("mlock", "munlock", "mlock2", "mlockall", "munlockall")
def mlock(t, *_):
    """Guest memory is never swapped out by the Sentry: locking changes nothing."""
    return 0
