"""Signals.  Delivery, handlers, masks and sigreturn run natively on the
host-process platforms (signals reach app processes through the host kernel
inside the sandbox's pid namespace); what needs the Sentry is here."""
from __future__ import annotations

import sys

from pysc.core.abi import consts as C
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError
from pysc.core.hookspecs import hookimpl

import os


@hookimpl
def pysc_syscalls(table, platform):
    table.register_module(sys.modules[__name__])


@syscall()
def pidfd_send_signal(t, pidfd, sig, info, flags, *_):
    f = t.fdtable.get(s32(pidfd))
    tg = getattr(f, "thread_group", None)
    if tg is None:
        raise SyscallError(C.EBADF)
    if flags or info:
        raise SyscallError(C.EINVAL)
    sig = s32(sig)
    if not 0 <= sig <= C.NSIG:
        raise SyscallError(C.EINVAL)
    if not tg.alive or not tg.tasks:
        raise SyscallError(C.ESRCH)
    if sig:
        try:
            os.kill(tg.tasks[0].ctx.tid, sig)
        except ProcessLookupError:
            raise SyscallError(C.ESRCH) from None
    return 0
