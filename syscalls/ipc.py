"""System V IPC: the app processes live in an IPC namespace of their own, so
the host kernel serves shm/sem/msg there, isolated from the host's objects."""
from __future__ import annotations

import sys

from pysc.core.dispatch import CONTINUE, syscall
from pysc.core.hookspecs import hookimpl


@hookimpl
def pysc_syscalls(table, platform):
    if platform in ("ptrace", "seccomp"):
        table.register_module(sys.modules[__name__])


@syscall("shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl",
         "msgget", "msgsnd", "msgrcv", "msgctl")
def sysv_ipc(t, *_):
    return CONTINUE
