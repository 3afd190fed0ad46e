"""Time: reading clocks and sleeping run natively; setting the host's clock is refused."""
from __future__ import annotations

import sys

from pysc.core.abi import consts as C
from pysc.core.dispatch import CONTINUE, syscall
from pysc.core.errors import SyscallError
from pysc.core.hookspecs import hookimpl


@hookimpl
def pysc_syscalls(table, platform):
    table.register_module(sys.modules[__name__])


@syscall("settimeofday", "clock_settime", "adjtimex", "clock_adjtime")
def settimeofday(t, *_):
    """The sandbox shares the host's clock and may not set it."""
    raise SyscallError(C.EPERM)


@syscall("timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete")
def posix_timer(t, *_):
    """POSIX timers of the calling process: the host kernel runs them in the
    sandbox's pid namespace, where the thread ids they name are the app's
    own, and delivers their signals as it delivers every other."""
    return CONTINUE
