"""Memory: on the host-process platforms anonymous mappings run natively;
file-backed mmap reaches the Sentry, which gives the app process a host fd of
the file and lets the host map it."""
from __future__ import annotations

import sys

from pysc.core.abi import consts as C
from pysc.core.dispatch import CONTINUE, s32, syscall
from pysc.core.errors import SyscallError
from pysc.core.hookspecs import hookimpl


@hookimpl
def pysc_syscalls(table, platform):
    if platform in ("ptrace", "seccomp"):
        table.register_module(sys.modules[__name__])


@syscall()
def mmap(t, addr, length, prot, flags, fd, offset):
    if flags & C.MAP_ANONYMOUS:
        return CONTINUE
    if length == 0:
        raise SyscallError(C.EINVAL)
    f = t.fdtable.get(s32(fd))
    if getattr(f, "anonymous_mmap", False):  # /dev/zero
        return t.ctx.map_anonymous(s32(fd), f, flags)
    if not f.readable:
        raise SyscallError(C.EACCES)
    if flags & 0x3 in (C.MAP_SHARED, C.MAP_SHARED_VALIDATE) and prot & C.PROT_WRITE and not f.writable:
        raise SyscallError(C.EACCES)
    if f.inode is not None and f.inode.is_dir():
        raise SyscallError(C.ENODEV)
    return t.ctx.map_file(s32(fd), f)
