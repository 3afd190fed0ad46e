"""The rest: sysinfo, syslog (dmesg), and calls refused to every sandbox."""
from __future__ import annotations

import os
import sys

from pysc.core.abi import consts as C
from pysc.core.abi.structs import SYSINFO
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError
from pysc.core.hookspecs import hookimpl


@hookimpl
def pysc_syscalls(table, platform):
    table.register_module(sys.modules[__name__])


@syscall()
def sysinfo(t, buf, *_):
    k = t.kernel
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1:]}
    except (OSError, ValueError, IndexError):
        info = {}
    load = [int(x * 65536) for x in os.getloadavg()]
    t.mem.write(buf, SYSINFO.pack(int(k.uptime()), *load, info.get("MemTotal", 0),
                                  info.get("MemFree", 0), info.get("Shmem", 0),
                                  info.get("Buffers", 0), 0, 0, len(k.thread_groups), 0, 0, 0, 1))
    return 0


@syscall()
def syslog(t, typ, buf, length, *_):
    typ, length = s32(typ), s32(length)
    text = "".join(f"<6>{line}\n" for line in t.kernel.syslog_lines).encode()  # KERN_INFO records
    if typ in (2, 3, 4):  # READ, READ_ALL, READ_CLEAR
        if length < 0:
            raise SyscallError(C.EINVAL)
        data = text[-length:] if length else b""
        t.mem.write(buf, data)
        return len(data)
    if typ == C.SYSLOG_ACTION_SIZE_BUFFER:
        return 1 << 14
    if typ == C.SYSLOG_ACTION_SIZE_UNREAD:
        return len(text)
    if typ in (0, 1, 5, 6, 7, 8):  # close, open, clear, console off/on/level
        return 0
    raise SyscallError(C.EINVAL)


@syscall("ptrace", "bpf", "perf_event_open", "kexec_load", "kexec_file_load", "init_module",
         "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl",
         "iopl", "ioperm", "lookup_dcookie", "open_by_handle_at", "name_to_handle_at",
         "fanotify_init", "userfaultfd", "process_vm_readv", "process_vm_writev", "kcmp",
         "pidfd_getfd", "seccomp", "vhangup", "nfsservctl", "setns", "mount_setattr",
         "fsopen", "fsmount", "fspick", "open_tree", "move_mount", "keyctl", "add_key",
         "request_key")
def refused(t, *_):
    """Privileged or host-reaching calls a sandbox never gets."""
    raise SyscallError(C.EPERM)
