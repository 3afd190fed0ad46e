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


# membarrier: the commands served.  The rseq ones are not: rseq is ENOSYS here.
MEMBARRIER_SERVED = (C.MEMBARRIER_CMD_GLOBAL | C.MEMBARRIER_CMD_GLOBAL_EXPEDITED
                     | C.MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED | C.MEMBARRIER_CMD_PRIVATE_EXPEDITED
                     | C.MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED
                     | C.MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE
                     | C.MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE
                     | C.MEMBARRIER_CMD_GET_REGISTRATIONS)
# each expedited command, and the registration it needs
MEMBARRIER_NEEDS = {C.MEMBARRIER_CMD_PRIVATE_EXPEDITED: C.MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                    C.MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE:
                        C.MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE}


@syscall()
def membarrier(t, cmd, flags, cpu_id, *_):
    """Barriers between the app's threads: each thread running guest code
    is made to leave it once (a VM exit orders memory and serialises the
    core, so the SYNC_CORE commands are served too)."""
    cmd = s32(cmd)
    if flags:
        raise SyscallError(C.EINVAL)
    mm = t.mem
    registered = getattr(mm, "membarrier_registered", 0)
    if cmd == C.MEMBARRIER_CMD_QUERY:
        return MEMBARRIER_SERVED
    if cmd == C.MEMBARRIER_CMD_GET_REGISTRATIONS:
        return registered
    if cmd in (C.MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, C.MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
               C.MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE):
        mm.membarrier_registered = registered | cmd
        return 0
    platform = t.kernel.platform
    if cmd == C.MEMBARRIER_CMD_GLOBAL:
        platform.barrier(t.ctx)
    elif cmd == C.MEMBARRIER_CMD_GLOBAL_EXPEDITED:
        for tg in list(t.kernel.thread_groups.values()):
            if tg.mm is not None and getattr(tg.mm, "membarrier_registered", 0) \
                    & C.MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED:
                platform.barrier(t.ctx, tg.mm)
    elif cmd in MEMBARRIER_NEEDS:
        if not registered & MEMBARRIER_NEEDS[cmd]:
            raise SyscallError(C.EPERM)
        platform.barrier(t.ctx, mm)
    else:
        raise SyscallError(C.EINVAL)
    return 0
