"""``--strace``: print every syscall an app makes, decoded, strace style.

The dispatcher calls ``enter`` before a handler runs, ``exit`` with its
result, and ``blocked`` when the handler raised WouldBlock (the handler is
then run again from the start once the task is woken, so ``enter`` is called
again for the same call).  Lines look like::

    [   1] openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3
    [   1] read(3, "root:x:0:0:root:/root:/bin/bash\\n"..., 4096) = 1234
    [   1] stat("/nope", 0x7ffc12345678) = -1 ENOENT (No such file or directory)
    [   2] read(0, 0x7ffc1000, 4096) <blocked>
    [   2] <... read resumed> read(0, "hi\\n", 4096) = 3

Arguments are decoded from ``SIGNATURES``, a table of syscall name -> tuple
of argument kinds; each kind names a formatter in ``_FORMATTERS``.  Inputs
are decoded on entry (memory may change, execve replaces it), outputs on
exit.  Nothing here may raise into the dispatcher: every failure falls back
to printing the raw value in hex.
"""
from __future__ import annotations

import errno as _errno
import logging
import os
import socket
import struct
import sys
from typing import Callable, TextIO

from pysc.core.abi import consts as C
from pysc.core.abi.sysnums import NAMES, SYSCALLS

DEFAULT_LOG_SIZE = 32
MAX_ARRAY = 16  # elements of argv / iovec / pollfd arrays shown before "..."

# ---------------------------------------------------------------------------
# Signatures: syscall -> argument kinds.  Kinds ending in "_out" are decoded
# on exit (they are outputs of the call); all others on entry.
#
#   d      signed int (32 bit)        u     unsigned long      l  signed long
#   x      hex                         p     pointer (NULL or hex)
#   fd     file descriptor             dirfd fd or AT_FDCWD
#   path   NUL-terminated string (never truncated)
#   str    NUL-terminated string (truncated to the log size)
#   buf    input buffer, length = next argument
#   buf_out  output buffer, length = result      cstr_out  output C string
#   iov / iov_out   iovec array, count = next argument
#   ... and the flag / enum kinds listed in _FORMATTERS below.
# ---------------------------------------------------------------------------
SIGNATURES: dict[str, tuple[str, ...]] = {
    # --- file I/O ---
    "read": ("fd", "buf_out", "u"),
    "write": ("fd", "buf", "u"),
    "pread64": ("fd", "buf_out", "u", "l"),
    "pwrite64": ("fd", "buf", "u", "l"),
    "readv": ("fd", "iov_out", "d"),
    "writev": ("fd", "iov", "d"),
    "preadv": ("fd", "iov_out", "d", "l"),
    "pwritev": ("fd", "iov", "d", "l"),
    "preadv2": ("fd", "iov_out", "d", "l", "x"),
    "pwritev2": ("fd", "iov", "d", "l", "x"),
    "open": ("path", "oflags", "cmode"),
    "openat": ("dirfd", "path", "oflags", "cmode"),
    "openat2": ("dirfd", "path", "open_how", "u"),
    "creat": ("path", "mode"),
    "close": ("fd",),
    "close_range": ("fd", "fd", "x"),
    "lseek": ("fd", "l", "whence"),
    "dup": ("fd",),
    "dup2": ("fd", "fd"),
    "dup3": ("fd", "fd", "fdflags"),
    "pipe": ("fds_out",),
    "pipe2": ("fds_out", "fdflags"),
    "fcntl": ("fd", "fcntl_cmd", "x"),
    "ioctl": ("fd", "ioctl_cmd", "p"),
    "flock": ("fd", "d"),
    "fsync": ("fd",),
    "fdatasync": ("fd",),
    "syncfs": ("fd",),
    "sync": (),
    "sendfile": ("fd", "fd", "p", "u"),
    "splice": ("fd", "p", "fd", "p", "u", "x"),
    "tee": ("fd", "fd", "u", "x"),
    "copy_file_range": ("fd", "p", "fd", "p", "u", "x"),
    "fadvise64": ("fd", "l", "l", "d"),
    "fallocate": ("fd", "d", "l", "l"),
    "truncate": ("path", "l"),
    "ftruncate": ("fd", "l"),
    "getdents": ("fd", "p", "u"),
    "getdents64": ("fd", "p", "u"),
    "memfd_create": ("str", "x"),
    "eventfd": ("u",),
    "eventfd2": ("u", "fdflags"),
    "inotify_init": (),
    "inotify_init1": ("fdflags",),
    "inotify_add_watch": ("fd", "path", "x"),
    "inotify_rm_watch": ("fd", "d"),
    # --- filesystem ---
    "stat": ("path", "stat_out"),
    "lstat": ("path", "stat_out"),
    "fstat": ("fd", "stat_out"),
    "newfstatat": ("dirfd", "path", "stat_out", "atflags"),
    "statx": ("dirfd", "path", "atflags", "x", "statx_out"),
    "statfs": ("path", "p"),
    "fstatfs": ("fd", "p"),
    "access": ("path", "amode"),
    "faccessat": ("dirfd", "path", "amode"),
    "faccessat2": ("dirfd", "path", "amode", "atflags"),
    "getcwd": ("cstr_out", "u"),
    "chdir": ("path",),
    "fchdir": ("fd",),
    "chroot": ("path",),
    "pivot_root": ("path", "path"),
    "rename": ("path", "path"),
    "renameat": ("dirfd", "path", "dirfd", "path"),
    "renameat2": ("dirfd", "path", "dirfd", "path", "x"),
    "mkdir": ("path", "mode"),
    "mkdirat": ("dirfd", "path", "mode"),
    "rmdir": ("path",),
    "link": ("path", "path"),
    "linkat": ("dirfd", "path", "dirfd", "path", "atflags"),
    "unlink": ("path",),
    "unlinkat": ("dirfd", "path", "atflags"),
    "symlink": ("path", "path"),
    "symlinkat": ("path", "dirfd", "path"),
    "readlink": ("path", "buf_out", "u"),
    "readlinkat": ("dirfd", "path", "buf_out", "u"),
    "mknod": ("path", "fmode", "x"),
    "mknodat": ("dirfd", "path", "fmode", "x"),
    "chmod": ("path", "mode"),
    "fchmod": ("fd", "mode"),
    "fchmodat": ("dirfd", "path", "mode"),
    "chown": ("path", "d", "d"),
    "lchown": ("path", "d", "d"),
    "fchown": ("fd", "d", "d"),
    "fchownat": ("dirfd", "path", "d", "d", "atflags"),
    "umask": ("mode",),
    "utime": ("path", "p"),
    "utimes": ("path", "p"),
    "futimesat": ("dirfd", "path", "p"),
    "utimensat": ("dirfd", "path", "p", "atflags"),
    "mount": ("path", "path", "str", "x", "p"),
    "umount2": ("path", "x"),
    "getxattr": ("path", "str", "p", "u"),
    "lgetxattr": ("path", "str", "p", "u"),
    "fgetxattr": ("fd", "str", "p", "u"),
    "setxattr": ("path", "str", "buf", "u", "x"),
    "lsetxattr": ("path", "str", "buf", "u", "x"),
    "fsetxattr": ("fd", "str", "buf", "u", "x"),
    "listxattr": ("path", "p", "u"),
    "llistxattr": ("path", "p", "u"),
    "flistxattr": ("fd", "p", "u"),
    "removexattr": ("path", "str"),
    "lremovexattr": ("path", "str"),
    "fremovexattr": ("fd", "str"),
    # --- process ---
    "clone": ("clone_flags", "p", "p", "p", "p"),
    "clone3": ("p", "u"),
    "fork": (),
    "vfork": (),
    "execve": ("path", "argv", "envp"),
    "execveat": ("dirfd", "path", "argv", "envp", "atflags"),
    "exit": ("d",),
    "exit_group": ("d",),
    "wait4": ("d", "wstatus_out", "wait_opts", "p"),
    "waitid": ("d", "d", "p", "wait_opts", "p"),
    "getpid": (), "getppid": (), "gettid": (), "getpgrp": (), "setsid": (),
    "getpgid": ("d",),
    "setpgid": ("d", "d"),
    "getsid": ("d",),
    "set_tid_address": ("p",),
    "set_robust_list": ("p", "u"),
    "get_robust_list": ("d", "p", "p"),
    "rseq": ("p", "u", "x", "x"),
    "arch_prctl": ("arch_prctl_code", "x"),
    "prctl": ("prctl_option", "x", "x", "x", "x"),
    "uname": ("p",),
    "sethostname": ("buf", "u"),
    "setdomainname": ("buf", "u"),
    "getrlimit": ("rlimit", "p"),
    "setrlimit": ("rlimit", "p"),
    "prlimit64": ("d", "rlimit", "p", "p"),
    "getrusage": ("d", "p"),
    "sysinfo": ("p",),
    "times": ("p",),
    "personality": ("x",),
    "getpriority": ("d", "d"),
    "setpriority": ("d", "d", "d"),
    "sched_yield": (),
    "sched_getaffinity": ("d", "u", "p"),
    "sched_setaffinity": ("d", "u", "p"),
    "sched_getscheduler": ("d",),
    "sched_setscheduler": ("d", "d", "p"),
    "sched_getparam": ("d", "p"),
    "sched_setparam": ("d", "p"),
    "sched_get_priority_max": ("d",),
    "sched_get_priority_min": ("d",),
    "getcpu": ("p", "p", "p"),
    "unshare": ("clone_flags",),
    "setns": ("fd", "clone_flags"),
    "seccomp": ("d", "x", "p"),
    "ptrace": ("d", "d", "p", "p"),
    "syslog": ("d", "p", "d"),
    "getrandom": ("buf_out", "u", "x"),
    "pidfd_open": ("d", "x"),
    "pidfd_send_signal": ("fd", "sig", "p", "x"),
    "restart_syscall": (),
    # --- identity ---
    "getuid": (), "geteuid": (), "getgid": (), "getegid": (),
    "setuid": ("d",), "setgid": ("d",),
    "setreuid": ("d", "d"), "setregid": ("d", "d"),
    "setresuid": ("d", "d", "d"), "setresgid": ("d", "d", "d"),
    "getresuid": ("p", "p", "p"), "getresgid": ("p", "p", "p"),
    "setfsuid": ("d",), "setfsgid": ("d",),
    "getgroups": ("d", "p"), "setgroups": ("d", "p"),
    "capget": ("p", "p"), "capset": ("p", "p"),
    # --- signals ---
    "rt_sigaction": ("sig", "sigaction", "sigaction_out", "u"),
    "rt_sigprocmask": ("sighow", "sigset", "sigset_out", "u"),
    "rt_sigreturn": (),
    "rt_sigpending": ("sigset_out", "u"),
    "rt_sigsuspend": ("sigset", "u"),
    "rt_sigtimedwait": ("sigset", "p", "timespec", "u"),
    "rt_sigqueueinfo": ("d", "sig", "p"),
    "rt_tgsigqueueinfo": ("d", "d", "sig", "p"),
    "sigaltstack": ("p", "p"),
    "kill": ("d", "sig"),
    "tkill": ("d", "sig"),
    "tgkill": ("d", "d", "sig"),
    "pause": (),
    "alarm": ("u",),
    "signalfd": ("fd", "sigset", "u"),
    "signalfd4": ("fd", "sigset", "u", "fdflags"),
    # --- memory ---
    "mmap": ("p", "u", "prot", "map_flags", "fd", "x"),
    "munmap": ("p", "u"),
    "mprotect": ("p", "u", "prot"),
    "mremap": ("p", "u", "u", "mremap_flags", "p"),
    "brk": ("p",),
    "madvise": ("p", "u", "d"),
    "msync": ("p", "u", "x"),
    "mincore": ("p", "u", "p"),
    "mlock": ("p", "u"), "munlock": ("p", "u"),
    "mlockall": ("x",), "munlockall": (),
    "membarrier": ("d", "x"),
    "shmget": ("d", "u", "x"),
    "shmat": ("d", "p", "x"),
    "shmdt": ("p",),
    "shmctl": ("d", "d", "p"),
    "semget": ("d", "d", "x"),
    "semop": ("d", "p", "u"),
    "semctl": ("d", "d", "d", "x"),
    "msgget": ("d", "x"),
    # --- net ---
    "socket": ("domain", "socktype", "d"),
    "socketpair": ("domain", "socktype", "d", "fds_out"),
    "bind": ("fd", "sockaddr", "u"),
    "connect": ("fd", "sockaddr", "u"),
    "listen": ("fd", "d"),
    "accept": ("fd", "p", "p"),
    "accept4": ("fd", "p", "p", "sockflags"),
    "getsockname": ("fd", "p", "p"),
    "getpeername": ("fd", "p", "p"),
    "sendto": ("fd", "buf", "u", "msg_flags", "sockaddr", "u"),
    "recvfrom": ("fd", "buf_out", "u", "msg_flags", "p", "p"),
    "sendmsg": ("fd", "p", "msg_flags"),
    "recvmsg": ("fd", "p", "msg_flags"),
    "sendmmsg": ("fd", "p", "u", "msg_flags"),
    "recvmmsg": ("fd", "p", "u", "msg_flags", "p"),
    "shutdown": ("fd", "d"),
    "setsockopt": ("fd", "sock_level", "d", "p", "u"),
    "getsockopt": ("fd", "sock_level", "d", "p", "p"),
    # --- poll / epoll ---
    "poll": ("pollfds", "u", "d"),
    "ppoll": ("pollfds", "u", "timespec", "sigset", "u"),
    "select": ("d", "p", "p", "p", "timeval"),
    "pselect6": ("d", "p", "p", "p", "timespec", "p"),
    "epoll_create": ("d",),
    "epoll_create1": ("fdflags",),
    "epoll_ctl": ("fd", "epoll_op", "fd", "epoll_event"),
    "epoll_wait": ("fd", "p", "d", "d"),
    "epoll_pwait": ("fd", "p", "d", "d", "sigset", "u"),
    "epoll_pwait2": ("fd", "p", "d", "timespec", "sigset", "u"),
    # --- time ---
    "nanosleep": ("timespec", "p"),
    "clock_nanosleep": ("clockid", "x", "timespec", "p"),
    "clock_gettime": ("clockid", "p"),
    "clock_settime": ("clockid", "timespec"),
    "clock_getres": ("clockid", "p"),
    "gettimeofday": ("p", "p"),
    "settimeofday": ("timeval", "p"),
    "time": ("p",),
    "getitimer": ("d", "p"),
    "setitimer": ("d", "p", "p"),
    "timer_create": ("clockid", "p", "p"),
    "timer_settime": ("d", "x", "p", "p"),
    "timer_gettime": ("d", "p"),
    "timer_getoverrun": ("d",),
    "timer_delete": ("d",),
    "timerfd_create": ("clockid", "fdflags"),
    "timerfd_settime": ("fd", "x", "p", "p"),
    "timerfd_gettime": ("fd", "p"),
    # --- futex ---
    "futex": ("p", "futex_op", "d", "p", "p", "d"),
}

# How a successful result is shown (default: signed decimal).
RESULT_KINDS: dict[str, str] = {
    "mmap": "x", "mremap": "x", "brk": "x", "shmat": "x", "umask": "mode",
}

# Calls that do not return on success: their line is printed on entry.
NORETURN = frozenset({"exit", "exit_group"})

_ERESTART = {
    C.ERESTARTSYS: ("ERESTARTSYS", "To be restarted if SA_RESTART is set"),
    C.ERESTARTNOINTR: ("ERESTARTNOINTR", "To be restarted"),
    C.ERESTARTNOHAND: ("ERESTARTNOHAND", "To be restarted if no handler"),
    C.ERESTART_RESTARTBLOCK: ("ERESTART_RESTARTBLOCK", "Interrupted by signal"),
}


# ---------------------------------------------------------------------------
# Flag and enum tables
# ---------------------------------------------------------------------------
def _bits(names: list[tuple[str, int]], value: int, zero: str = "0", rest_hex: bool = True) -> str:
    """``A|B|0x40`` for ``value`` from (name, mask) pairs, composites first."""
    out = []
    for name, mask in names:
        if mask and value & mask == mask:
            out.append(name)
            value &= ~mask
    if value:
        out.append(hex(value) if rest_hex else str(value))
    return "|".join(out) if out else zero


_OPEN_FLAGS = [
    ("O_TMPFILE", C.O_TMPFILE), ("O_SYNC", C.O_SYNC), ("O_CREAT", C.O_CREAT), ("O_EXCL", C.O_EXCL),
    ("O_NOCTTY", C.O_NOCTTY), ("O_TRUNC", C.O_TRUNC), ("O_APPEND", C.O_APPEND),
    ("O_NONBLOCK", C.O_NONBLOCK), ("O_DSYNC", C.O_DSYNC), ("O_ASYNC", C.O_ASYNC),
    ("O_DIRECT", C.O_DIRECT), ("O_LARGEFILE", C.O_LARGEFILE), ("O_DIRECTORY", C.O_DIRECTORY),
    ("O_NOFOLLOW", C.O_NOFOLLOW), ("O_NOATIME", C.O_NOATIME), ("O_CLOEXEC", C.O_CLOEXEC),
    ("O_PATH", C.O_PATH),
]
_FD_FLAGS = [("O_NONBLOCK", C.O_NONBLOCK), ("O_CLOEXEC", C.O_CLOEXEC), ("O_DIRECT", C.O_DIRECT)]
_AT_FLAGS = [
    ("AT_SYMLINK_NOFOLLOW", C.AT_SYMLINK_NOFOLLOW), ("AT_REMOVEDIR", C.AT_REMOVEDIR),
    ("AT_SYMLINK_FOLLOW", C.AT_SYMLINK_FOLLOW), ("AT_NO_AUTOMOUNT", C.AT_NO_AUTOMOUNT),
    ("AT_EMPTY_PATH", C.AT_EMPTY_PATH), ("AT_RECURSIVE", C.AT_RECURSIVE),
    ("AT_STATX_FORCE_SYNC", 0x2000), ("AT_STATX_DONT_SYNC", 0x4000),
]
_PROT = [("PROT_READ", C.PROT_READ), ("PROT_WRITE", C.PROT_WRITE), ("PROT_EXEC", C.PROT_EXEC),
         ("PROT_SEM", 0x8), ("PROT_GROWSDOWN", 0x01000000), ("PROT_GROWSUP", 0x02000000)]
_MAP_TYPES = {1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"}
_MAP_FLAGS = [
    ("MAP_FIXED", 0x10), ("MAP_ANONYMOUS", 0x20), ("MAP_32BIT", 0x40), ("MAP_GROWSDOWN", 0x100),
    ("MAP_DENYWRITE", 0x800), ("MAP_EXECUTABLE", 0x1000), ("MAP_LOCKED", 0x2000),
    ("MAP_NORESERVE", 0x4000), ("MAP_POPULATE", 0x8000), ("MAP_NONBLOCK", 0x10000),
    ("MAP_STACK", 0x20000), ("MAP_HUGETLB", 0x40000), ("MAP_SYNC", 0x80000),
    ("MAP_FIXED_NOREPLACE", 0x100000),
]
_MREMAP_FLAGS = [("MREMAP_MAYMOVE", 1), ("MREMAP_FIXED", 2), ("MREMAP_DONTUNMAP", 4)]
_CLONE_FLAGS = [(name, getattr(C, name)) for name in (
    "CLONE_VM", "CLONE_FS", "CLONE_FILES", "CLONE_SIGHAND", "CLONE_PIDFD", "CLONE_PTRACE",
    "CLONE_VFORK", "CLONE_PARENT", "CLONE_THREAD", "CLONE_NEWNS", "CLONE_SYSVSEM", "CLONE_SETTLS",
    "CLONE_PARENT_SETTID", "CLONE_CHILD_CLEARTID", "CLONE_DETACHED", "CLONE_UNTRACED",
    "CLONE_CHILD_SETTID", "CLONE_NEWCGROUP", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWUSER",
    "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_IO")]
_SA_FLAGS = [("SA_NOCLDSTOP", C.SA_NOCLDSTOP), ("SA_NOCLDWAIT", C.SA_NOCLDWAIT),
             ("SA_SIGINFO", C.SA_SIGINFO), ("SA_RESTORER", C.SA_RESTORER),
             ("SA_ONSTACK", C.SA_ONSTACK), ("SA_RESTART", C.SA_RESTART),
             ("SA_NODEFER", C.SA_NODEFER), ("SA_RESETHAND", C.SA_RESETHAND)]
_AMODE = [("R_OK", C.R_OK), ("W_OK", C.W_OK), ("X_OK", C.X_OK)]
_WAIT_OPTS = [("WNOHANG", C.WNOHANG), ("WUNTRACED", C.WUNTRACED), ("WEXITED", C.WEXITED),
              ("WCONTINUED", C.WCONTINUED), ("WNOWAIT", C.WNOWAIT),
              ("__WNOTHREAD", 0x20000000), ("__WALL", 0x40000000), ("__WCLONE", 0x80000000)]
_MSG_FLAGS = [(n, getattr(C, n)) for n in (
    "MSG_OOB", "MSG_PEEK", "MSG_DONTROUTE", "MSG_CTRUNC", "MSG_TRUNC", "MSG_DONTWAIT", "MSG_EOR",
    "MSG_WAITALL", "MSG_NOSIGNAL", "MSG_CMSG_CLOEXEC")]
_SOCK_FLAGS = [("SOCK_NONBLOCK", C.SOCK_NONBLOCK), ("SOCK_CLOEXEC", C.SOCK_CLOEXEC)]
_POLL_EVENTS = [(n, getattr(C, n)) for n in (
    "POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDNORM", "POLLRDBAND",
    "POLLWRNORM", "POLLWRBAND", "POLLRDHUP")]
_EPOLL_EVENTS = [(n, getattr(C, n)) for n in (
    "EPOLLIN", "EPOLLOUT", "EPOLLERR", "EPOLLHUP", "EPOLLRDHUP", "EPOLLEXCLUSIVE", "EPOLLWAKEUP",
    "EPOLLONESHOT", "EPOLLET")] + [("EPOLLPRI", 0x2)]
_S_TYPES = {C.S_IFREG: "S_IFREG", C.S_IFDIR: "S_IFDIR", C.S_IFLNK: "S_IFLNK", C.S_IFCHR: "S_IFCHR",
            C.S_IFBLK: "S_IFBLK", C.S_IFIFO: "S_IFIFO", C.S_IFSOCK: "S_IFSOCK"}


def _prefixed(prefix: str, *, exclude: tuple[str, ...] = ()) -> dict[int, str]:
    """value -> name for every constant in consts starting with ``prefix`` (first name wins)."""
    out: dict[int, str] = {}
    for name, value in vars(C).items():
        if name.startswith(prefix) and isinstance(value, int) and name not in exclude:
            out.setdefault(value, name)
    return out


_FCNTL_CMDS = _prefixed("F_", exclude=("F_OK", "F_RDLCK", "F_WRLCK", "F_UNLCK", "F_SEAL_SEAL",
                                       "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE"))
_IOCTL_CMDS = {v: n for n, v in vars(C).items()
               if isinstance(v, int) and n.startswith(("TC", "TIOC", "FIO")) and n != "TCGETS2"}
_IOCTL_CMDS[C.TCGETS2] = "TCGETS2"
_WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
_SIGHOW = {0: "SIG_BLOCK", 1: "SIG_UNBLOCK", 2: "SIG_SETMASK"}
_CLOCKS = {C.CLOCK_REALTIME: "CLOCK_REALTIME", C.CLOCK_MONOTONIC: "CLOCK_MONOTONIC",
           C.CLOCK_PROCESS_CPUTIME_ID: "CLOCK_PROCESS_CPUTIME_ID",
           C.CLOCK_THREAD_CPUTIME_ID: "CLOCK_THREAD_CPUTIME_ID",
           C.CLOCK_MONOTONIC_RAW: "CLOCK_MONOTONIC_RAW",
           C.CLOCK_REALTIME_COARSE: "CLOCK_REALTIME_COARSE",
           C.CLOCK_MONOTONIC_COARSE: "CLOCK_MONOTONIC_COARSE", C.CLOCK_BOOTTIME: "CLOCK_BOOTTIME",
           8: "CLOCK_REALTIME_ALARM", 9: "CLOCK_BOOTTIME_ALARM", 11: "CLOCK_TAI"}
_DOMAINS = {C.AF_UNSPEC: "AF_UNSPEC", C.AF_UNIX: "AF_UNIX", C.AF_INET: "AF_INET",
            C.AF_INET6: "AF_INET6", C.AF_NETLINK: "AF_NETLINK", C.AF_PACKET: "AF_PACKET"}
_SOCK_TYPES = {C.SOCK_STREAM: "SOCK_STREAM", C.SOCK_DGRAM: "SOCK_DGRAM", C.SOCK_RAW: "SOCK_RAW",
               4: "SOCK_RDM", C.SOCK_SEQPACKET: "SOCK_SEQPACKET", 10: "SOCK_PACKET"}
_SOCK_LEVELS = {0: "SOL_IP", C.SOL_SOCKET: "SOL_SOCKET", 6: "SOL_TCP", 17: "SOL_UDP",
                41: "SOL_IPV6", 270: "SOL_NETLINK"}
_EPOLL_OPS = {1: "EPOLL_CTL_ADD", 2: "EPOLL_CTL_DEL", 3: "EPOLL_CTL_MOD"}
_RLIMITS = {v: n for n, v in vars(C).items()
            if n.startswith("RLIMIT_") and isinstance(v, int)}
_PRCTL = _prefixed("PR_")
_ARCH_PRCTL = _prefixed("ARCH_")
_FUTEX_OPS = {0: "FUTEX_WAIT", 1: "FUTEX_WAKE", 2: "FUTEX_FD", 3: "FUTEX_REQUEUE",
              4: "FUTEX_CMP_REQUEUE", 5: "FUTEX_WAKE_OP", 6: "FUTEX_LOCK_PI", 7: "FUTEX_UNLOCK_PI",
              8: "FUTEX_TRYLOCK_PI", 9: "FUTEX_WAIT_BITSET", 10: "FUTEX_WAKE_BITSET",
              11: "FUTEX_WAIT_REQUEUE_PI", 12: "FUTEX_CMP_REQUEUE_PI", 13: "FUTEX_LOCK_PI2"}


def _enum(table: dict[int, str], value: int) -> str:
    name = table.get(value)
    return name if name is not None else str(value)


# ---------------------------------------------------------------------------
# Value formatting helpers
# ---------------------------------------------------------------------------
_ESCAPES = {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r", 0x0B: "\\v", 0x0C: "\\f",
            0x22: '\\"', 0x5C: "\\\\"}
_BYTE_STR = [_ESCAPES.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}") for b in range(256)]


def quote(data: bytes, limit: int | None = None, more: bool = False) -> str:
    """``data`` as a C string literal; ``...`` follows if it was cut at ``limit``."""
    if limit is not None and len(data) > limit:
        data, more = data[:limit], True
    return '"' + "".join([_BYTE_STR[b] for b in data]) + '"' + ("..." if more else "")


def _s32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _s64(x: int) -> int:
    x &= 0xFFFFFFFFFFFFFFFF
    return x - (1 << 64) if x & (1 << 63) else x


def _ptr(x: int) -> str:
    x &= 0xFFFFFFFFFFFFFFFF
    return "NULL" if x == 0 else hex(x)


def signame(sig: int) -> str:
    if 0 < sig < C.SIGRTMIN:
        return C.SIGNAL_NAMES.get(sig, str(sig))
    if sig == C.SIGRTMIN:
        return "SIGRTMIN"
    if C.SIGRTMIN < sig <= C.NSIG:
        return f"SIGRT_{sig - C.SIGRTMIN}"
    return str(sig)


def sigset_str(mask: int) -> str:
    """strace style ``[INT TERM]``, or ``~[...]`` for the complement of a mostly full set."""
    mask &= (1 << C.NSIG) - 1
    neg = bin(mask).count("1") > C.NSIG // 2
    if neg:
        mask = ~mask & ((1 << C.NSIG) - 1)
    names = [signame(i + 1).removeprefix("SIG") for i in range(C.NSIG) if mask >> i & 1]
    return ("~[" if neg else "[") + " ".join(names) + "]"


def errno_str(err: int) -> str:
    if err in _ERESTART:
        name, msg = _ERESTART[err]
    else:
        name = _errno.errorcode.get(err, f"E{err}")
        msg = os.strerror(err)
    return f"{name} ({msg})"


def format_result(name: str, result) -> str:
    if not isinstance(result, int):  # the host's to answer, or no value (rt_sigreturn on kvm)
        return "<host>" if repr(result) == "CONTINUE" else "?"
    r = _s64(result)
    if -C.MAX_ERRNO <= r < 0:
        return f"-1 {errno_str(-r)}"
    kind = RESULT_KINDS.get(name)
    if kind == "x":
        return hex(result & 0xFFFFFFFFFFFFFFFF)
    if kind == "mode":
        return f"0{r:o}"
    return str(r)


# ---------------------------------------------------------------------------
# Argument formatters.  Each is fn(ctx, i) -> str | None (None: omit the arg).
# ---------------------------------------------------------------------------
class _Ctx:
    """What a formatter may look at: the task, the raw args, the result (on exit)."""
    __slots__ = ("task", "args", "result", "log_size")

    def __init__(self, task, args, result, log_size):
        self.task, self.args, self.result, self.log_size = task, args, result, log_size

    def mem(self):
        return self.task.mem

    def ok(self) -> bool:
        r = self.result
        return isinstance(r, int) and not (-C.MAX_ERRNO <= _s64(r) < 0)


def _f_fd(c, i):
    return str(_s32(c.args[i]))


def _f_dirfd(c, i):
    fd = _s32(c.args[i])
    return "AT_FDCWD" if fd == C.AT_FDCWD else str(fd)


def _f_path(c, i):
    a = c.args[i]
    if not a:
        return "NULL"
    return quote(c.mem().read_cstr(a))


def _f_str(c, i):
    a = c.args[i]
    if not a:
        return "NULL"
    return quote(c.mem().read_cstr(a), c.log_size)


def _read_buf(c, addr, n):
    if not addr:
        return "NULL"
    if n <= 0:
        return '""'
    shown = min(n, c.log_size)
    return quote(c.mem().read(addr, shown), more=n > shown)


def _f_buf(c, i):
    return _read_buf(c, c.args[i], c.args[i + 1] & 0xFFFFFFFFFFFFFFFF)


def _f_buf_out(c, i):
    if not c.ok():
        return _ptr(c.args[i])
    return _read_buf(c, c.args[i], _s64(c.result))


def _f_cstr_out(c, i):
    if not c.ok():
        return _ptr(c.args[i])
    return quote(c.mem().read_cstr(c.args[i]))


def _iov(c, i, total):
    addr, cnt = c.args[i], _s32(c.args[i + 1])
    if not addr:
        return "NULL"
    if cnt < 0 or cnt > 1024:
        return _ptr(addr)
    mem = c.mem()
    budget = c.log_size
    parts = []
    for k in range(min(cnt, MAX_ARRAY)):
        base, length = struct.unpack("<QQ", mem.read(addr + 16 * k, 16))
        n = length if total is None else max(0, min(length, total))
        if total is not None:
            total -= n
        shown = min(n, budget)
        budget -= shown
        data = quote(mem.read(base, shown), more=n > shown) if base and n and shown else (
            '""' if not n else '""...')
        parts.append(f"{{iov_base={data}, iov_len={length}}}")
    if cnt > MAX_ARRAY:
        parts.append("...")
    return "[" + ", ".join(parts) + "]"


def _f_iov(c, i):
    return _iov(c, i, None)


def _f_iov_out(c, i):
    if not c.ok():
        return _ptr(c.args[i])
    return _iov(c, i, _s64(c.result))


def _f_oflags(c, i):
    v = c.args[i] & 0xFFFFFFFF
    acc = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR", 3: "O_ACCMODE"}[v & 3]
    rest = _bits(_OPEN_FLAGS, v & ~3, zero="")
    return acc + ("|" + rest if rest else "")


def _f_cmode(c, i):
    """The mode of open/openat: shown only when the call may create a file."""
    if c.args[i - 1] & (C.O_CREAT | C.O_TMPFILE) or c.args[i] & 0o7777:
        return _f_mode(c, i)
    return None


def _f_mode(c, i):
    return f"0{c.args[i] & 0o7777:o}" if c.args[i] & 0o7777 else "000"


def _f_fmode(c, i):
    v = c.args[i] & 0xFFFFFFFF
    t = _S_TYPES.get(v & C.S_IFMT)
    perm = f"0{v & 0o7777:o}" if v & 0o7777 else "000"
    return f"{t}|{perm}" if t else perm


def _f_fdflags(c, i):
    return _bits(_FD_FLAGS, c.args[i] & 0xFFFFFFFF)


def _f_atflags(c, i):
    return _bits(_AT_FLAGS, c.args[i] & 0xFFFFFFFF)


def _f_amode(c, i):
    return _bits(_AMODE, c.args[i] & 0xFFFFFFFF, zero="F_OK")


def _f_prot(c, i):
    return _bits(_PROT, c.args[i] & 0xFFFFFFFF, zero="PROT_NONE")


def _f_map_flags(c, i):
    v = c.args[i] & 0xFFFFFFFF
    typ = _MAP_TYPES.get(v & 3, hex(v & 3))
    rest = _bits(_MAP_FLAGS, v & ~3, zero="")
    return typ + ("|" + rest if rest else "")


def _f_mremap_flags(c, i):
    return _bits(_MREMAP_FLAGS, c.args[i] & 0xFFFFFFFF)


def _f_clone_flags(c, i):
    v = c.args[i] & 0xFFFFFFFFFFFFFFFF
    parts = _bits(_CLONE_FLAGS, v & ~C.CSIGNAL, zero="")
    sig = v & C.CSIGNAL
    if sig:
        parts = (parts + "|" if parts else "") + signame(sig)
    return parts or "0"


def _f_sig(c, i):
    return signame(_s32(c.args[i]))


def _f_sighow(c, i):
    return _enum(_SIGHOW, _s32(c.args[i]))


def _f_sigset(c, i):
    a = c.args[i]
    if not a:
        return "NULL"
    return sigset_str(c.mem().read_u64(a))


def _f_sigset_out(c, i):
    if not c.ok() or not c.args[i]:
        return _ptr(c.args[i])
    return _f_sigset(c, i)


def _sigaction(c, addr):
    if not addr:
        return "NULL"
    handler, flags, restorer, mask = struct.unpack("<QQQQ", c.mem().read(addr, 32))
    h = {C.SIG_DFL: "SIG_DFL", C.SIG_IGN: "SIG_IGN"}.get(handler, hex(handler))
    out = f"{{sa_handler={h}, sa_mask={sigset_str(mask)}, sa_flags={_bits(_SA_FLAGS, flags)}"
    if flags & C.SA_RESTORER:
        out += f", sa_restorer={_ptr(restorer)}"
    return out + "}"


def _f_sigaction(c, i):
    return _sigaction(c, c.args[i])


def _f_sigaction_out(c, i):
    if not c.ok():
        return _ptr(c.args[i])
    return _sigaction(c, c.args[i])


def _f_fds_out(c, i):
    if not c.ok():
        return _ptr(c.args[i])
    a, b = struct.unpack("<ii", c.mem().read(c.args[i], 8))
    return f"[{a}, {b}]"


def _stat_str(mode: int, size: int) -> str:
    t = _S_TYPES.get(mode & C.S_IFMT, f"{mode & C.S_IFMT:#o}")
    return f"{{st_mode={t}|0{mode & 0o7777:o}, st_size={size}, ...}}"


def _f_stat_out(c, i):
    if not c.ok():
        return _ptr(c.args[i])
    raw = c.mem().read(c.args[i], 56)
    mode, = struct.unpack_from("<I", raw, 24)
    size, = struct.unpack_from("<q", raw, 48)
    return _stat_str(mode, size)


def _f_statx_out(c, i):
    if not c.ok():
        return _ptr(c.args[i])
    raw = c.mem().read(c.args[i], 0x30)
    mode, = struct.unpack_from("<H", raw, 0x1C)
    size, = struct.unpack_from("<Q", raw, 0x28)
    return _stat_str(mode, size).replace("st_", "stx_")


def _f_wstatus_out(c, i):
    if not c.ok() or not c.args[i] or _s64(c.result) == 0:
        return _ptr(c.args[i])
    s = c.mem().read_u32(c.args[i])
    if s & 0x7F == 0:
        return f"[{{WIFEXITED(s) && WEXITSTATUS(s) == {(s >> 8) & 0xFF}}}]"
    if s & 0xFF == 0x7F:
        return f"[{{WIFSTOPPED(s) && WSTOPSIG(s) == {signame((s >> 8) & 0xFF)}}}]"
    if s == 0xFFFF:
        return "[{WIFCONTINUED(s)}]"
    core = " && WCOREDUMP(s)" if s & 0x80 else ""
    return f"[{{WIFSIGNALED(s) && WTERMSIG(s) == {signame(s & 0x7F)}{core}}}]"


def _f_wait_opts(c, i):
    return _bits(_WAIT_OPTS, c.args[i] & 0xFFFFFFFF)


def _f_argv(c, i):
    addr = c.args[i]
    if not addr:
        return "NULL"
    mem = c.mem()
    parts = []
    for k in range(MAX_ARRAY + 1):
        p = mem.read_u64(addr + 8 * k)
        if not p:
            break
        if k == MAX_ARRAY:
            parts.append("...")
            break
        parts.append(quote(mem.read_cstr(p), c.log_size))
    return "[" + ", ".join(parts) + "]"


def _f_envp(c, i):
    addr = c.args[i]
    if not addr:
        return "NULL"
    mem = c.mem()
    n = 0
    while n < 4096 and mem.read_u64(addr + 8 * n):
        n += 1
    return f"{hex(addr)} /* {n} var{'s' if n != 1 else ''} */"


def _f_domain(c, i):
    return _enum(_DOMAINS, _s32(c.args[i]))


def _f_socktype(c, i):
    v = c.args[i] & 0xFFFFFFFF
    base = _enum(_SOCK_TYPES, v & C.SOCK_TYPE_MASK)
    rest = _bits(_SOCK_FLAGS, v & ~C.SOCK_TYPE_MASK, zero="")
    return base + ("|" + rest if rest else "")


def _f_sockflags(c, i):
    return _bits(_SOCK_FLAGS, c.args[i] & 0xFFFFFFFF)


def _f_sock_level(c, i):
    return _enum(_SOCK_LEVELS, _s32(c.args[i]))


def _f_msg_flags(c, i):
    return _bits(_MSG_FLAGS, c.args[i] & 0xFFFFFFFF)


def _f_sockaddr(c, i):
    addr, n = c.args[i], c.args[i + 1] & 0xFFFFFFFF
    if not addr:
        return "NULL"
    if n < 2 or n > 128:
        return _ptr(addr)
    raw = c.mem().read(addr, n)
    fam, = struct.unpack_from("<H", raw)
    fname = _enum(_DOMAINS, fam)
    if fam == C.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":
            return f'{{sa_family={fname}, sun_path=@{quote(path[1:])}}}'
        path = path.split(b"\0", 1)[0]
        return f"{{sa_family={fname}, sun_path={quote(path)}}}"
    if fam == C.AF_INET and n >= 8:
        port, = struct.unpack_from(">H", raw, 2)
        ip = socket.inet_ntop(socket.AF_INET, raw[4:8])
        return f'{{sa_family={fname}, sin_port=htons({port}), sin_addr=inet_addr("{ip}")}}'
    if fam == C.AF_INET6 and n >= 24:
        port, = struct.unpack_from(">H", raw, 2)
        ip = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        return (f'{{sa_family={fname}, sin6_port=htons({port}), '
                f'sin6_addr=inet_pton(AF_INET6, "{ip}")}}')
    return f"{{sa_family={fname}, sa_data={quote(raw[2:], c.log_size)}}}"


def _f_pollfds(c, i):
    addr, n = c.args[i], c.args[i + 1] & 0xFFFFFFFF
    if not addr:
        return "NULL"
    if n > 4096:
        return _ptr(addr)
    raw = c.mem().read(addr, 8 * min(n, MAX_ARRAY))
    parts = []
    for k in range(min(n, MAX_ARRAY)):
        fd, ev, _ = struct.unpack_from("<ihh", raw, 8 * k)
        parts.append(f"{{fd={fd}, events={_bits(_POLL_EVENTS, ev & 0xFFFF)}}}")
    if n > MAX_ARRAY:
        parts.append("...")
    return "[" + ", ".join(parts) + "]"


def _f_epoll_op(c, i):
    return _enum(_EPOLL_OPS, _s32(c.args[i]))


def _f_epoll_event(c, i):
    addr = c.args[i]
    if not addr:
        return "NULL"
    ev, data = struct.unpack("<IQ", c.mem().read(addr, 12))
    return f"{{events={_bits(_EPOLL_EVENTS, ev)}, data={hex(data)}}}"


def _timepair(c, i, sub):
    addr = c.args[i]
    if not addr:
        return "NULL"
    sec, frac = struct.unpack("<qq", c.mem().read(addr, 16))
    return f"{{tv_sec={sec}, {sub}={frac}}}"


def _f_timespec(c, i):
    return _timepair(c, i, "tv_nsec")


def _f_timeval(c, i):
    return _timepair(c, i, "tv_usec")


def _f_open_how(c, i):
    addr = c.args[i]
    if not addr:
        return "NULL"
    flags, mode, resolve = struct.unpack("<QQQ", c.mem().read(addr, 24))
    fake = _Ctx(None, (flags, mode), None, c.log_size)
    return f"{{flags={_f_oflags(fake, 0)}, mode={_f_mode(fake, 1)}, resolve={hex(resolve)}}}"


def _f_futex_op(c, i):
    v = c.args[i] & 0xFFFFFFFF
    name = _FUTEX_OPS.get(v & 0x7F, str(v & 0x7F))
    if v & 128:
        name += "_PRIVATE"
    if v & 256:
        name = "FUTEX_CLOCK_REALTIME|" + name
    if v & ~0x17F:
        name += "|" + hex(v & ~0x17F)
    return name


def _enum_formatter(table: dict[int, str], signed: bool = True) -> Callable:
    def f(c, i):
        v = _s32(c.args[i]) if signed else c.args[i] & 0xFFFFFFFFFFFFFFFF
        return _enum(table, v)
    return f


_FORMATTERS: dict[str, Callable] = {
    "d": lambda c, i: str(_s32(c.args[i])),
    "u": lambda c, i: str(c.args[i] & 0xFFFFFFFFFFFFFFFF),
    "l": lambda c, i: str(_s64(c.args[i])),
    "x": lambda c, i: hex(c.args[i] & 0xFFFFFFFFFFFFFFFF),
    "p": lambda c, i: _ptr(c.args[i]),
    "fd": _f_fd, "dirfd": _f_dirfd, "path": _f_path, "str": _f_str,
    "buf": _f_buf, "buf_out": _f_buf_out, "cstr_out": _f_cstr_out,
    "iov": _f_iov, "iov_out": _f_iov_out,
    "oflags": _f_oflags, "cmode": _f_cmode, "mode": _f_mode, "fmode": _f_fmode,
    "fdflags": _f_fdflags, "atflags": _f_atflags, "amode": _f_amode,
    "prot": _f_prot, "map_flags": _f_map_flags, "mremap_flags": _f_mremap_flags,
    "clone_flags": _f_clone_flags,
    "sig": _f_sig, "sighow": _f_sighow, "sigset": _f_sigset, "sigset_out": _f_sigset_out,
    "sigaction": _f_sigaction, "sigaction_out": _f_sigaction_out,
    "fds_out": _f_fds_out, "stat_out": _f_stat_out, "statx_out": _f_statx_out,
    "wstatus_out": _f_wstatus_out, "wait_opts": _f_wait_opts,
    "argv": _f_argv, "envp": _f_envp,
    "domain": _f_domain, "socktype": _f_socktype, "sockflags": _f_sockflags,
    "sock_level": _f_sock_level, "msg_flags": _f_msg_flags, "sockaddr": _f_sockaddr,
    "pollfds": _f_pollfds, "epoll_op": _f_epoll_op, "epoll_event": _f_epoll_event,
    "timespec": _f_timespec, "timeval": _f_timeval, "open_how": _f_open_how,
    "futex_op": _f_futex_op,
    "whence": _enum_formatter(_WHENCE), "clockid": _enum_formatter(_CLOCKS),
    "fcntl_cmd": _enum_formatter(_FCNTL_CMDS),
    "ioctl_cmd": lambda c, i: _IOCTL_CMDS.get(c.args[i] & 0xFFFFFFFF, hex(c.args[i] & 0xFFFFFFFF)),
    "rlimit": _enum_formatter(_RLIMITS), "prctl_option": _enum_formatter(_PRCTL),
    "arch_prctl_code": _enum_formatter(_ARCH_PRCTL),
}

_OUT_KINDS = frozenset(k for k in _FORMATTERS if k.endswith("_out"))


def _check_table() -> None:
    for name, kinds in SIGNATURES.items():
        assert name in SYSCALLS, name
        for k in kinds:
            assert k in _FORMATTERS, (name, k)


_check_table()


def _fmt_arg(c: _Ctx, kind: str, i: int) -> str | None:
    try:
        return _FORMATTERS[kind](c, i)
    except Exception:  # bad pointer (SyscallError), short read, anything: raw value
        return _ptr(c.args[i]) if kind not in ("d", "u", "l", "fd") else str(c.args[i])


def _raw_args(args) -> list[str]:
    """Args of a call we have no signature for: hex, trailing zeros dropped."""
    vals = list(args)
    while vals and not vals[-1]:
        vals.pop()
    return [hex(a & 0xFFFFFFFFFFFFFFFF) for a in vals]


class _Call:
    """A call between enter and exit."""
    __slots__ = ("nr", "name", "args", "kinds", "parts", "blocked")

    def __init__(self, nr, name, args, kinds, parts):
        self.nr, self.name, self.args, self.kinds, self.parts = nr, name, args, kinds, parts
        self.blocked = False


class _LogStream:
    """A text stream whose lines go to a logger."""

    def __init__(self, log: logging.Logger):
        self.log = log

    def write(self, text: str) -> None:
        self.log.info(text.rstrip("\n"))

    def flush(self) -> None:
        pass


class Strace:
    """The syscall tracer behind ``--strace``."""

    def __init__(self, syscalls=None, log_size: int = DEFAULT_LOG_SIZE, out: TextIO | None = None):
        self.out = out if out is not None else sys.stderr
        self.log_size = max(0, int(log_size))
        self.all = not syscalls
        self.numbers: frozenset[int] = frozenset()
        if not self.all:
            nrs = set()
            bad = []
            for s in syscalls:
                s = str(s).strip()
                if not s:
                    continue
                if s in SYSCALLS:
                    nrs.add(SYSCALLS[s])
                elif s.isdigit():
                    nrs.add(int(s))
                else:
                    bad.append(s)
            if bad:
                raise ValueError(f"--strace-syscalls: unknown syscall(s): {', '.join(bad)}")
            self.numbers = frozenset(nrs)
            self.all = not nrs
        self._calls: dict[int, _Call] = {}

    @classmethod
    def from_config(cls, config, out: TextIO | None = None) -> "Strace":
        names = config.get("strace-syscalls") or ""
        if isinstance(names, str):
            names = [n for n in names.split(",") if n.strip()]
        size = config.get("strace-log-size")
        if out is None and config.get("debug-log"):  # as runsc: the trace goes to the debug log
            out = _LogStream(logging.getLogger("pysc.strace"))
        return cls(names, DEFAULT_LOG_SIZE if size is None else size, out)

    # --- dispatcher interface ---
    def wants(self, nr: int) -> bool:
        return self.all or nr in self.numbers

    def enter(self, task, nr: int, args) -> None:
        try:
            self._enter(task, nr, tuple(args))
        except Exception:
            pass

    def exit(self, task, nr: int, args, result) -> None:
        try:
            self._exit(task, nr, tuple(args), result)
        except Exception:
            try:
                self._emit(task, f"{NAMES.get(nr, nr)}({', '.join(_raw_args(args))}) = {result!r}")
            except Exception:
                pass

    def blocked(self, task, nr: int) -> None:
        try:
            self._blocked(task, nr)
        except Exception:
            pass

    def interrupted(self, task, result=None) -> None:
        """Optional: a parked call ended without its handler finishing (signal, kill)."""
        try:
            call = self._calls.pop(task.tid, None)
            if call is not None and call.blocked:
                res = "?" if result is None else format_result(call.name, result)
                self._emit(task, f"<... {call.name} resumed> = {res} <interrupted>")
        except Exception:
            pass

    # --- implementation ---
    def _emit(self, task, text: str) -> None:
        tid = getattr(task, "tid", "?")
        self.out.write(f"[{tid:>4}] {text}\n")
        try:
            self.out.flush()
        except Exception:
            pass

    def _decode(self, task, name, args, kinds, result, parts=None) -> list[str]:
        """Format every argument; inputs come from ``parts`` when decoded on entry."""
        c = _Ctx(task, args, result, self.log_size)
        out = []
        for i, kind in enumerate(kinds):
            if parts is not None and kind not in _OUT_KINDS:
                s = parts[i]
            else:
                s = _fmt_arg(c, kind, i)
            if s is not None:
                out.append(s)
        return out

    def _format_entry(self, task, nr, args):
        name = NAMES.get(nr, f"syscall_{nr}")
        kinds = SIGNATURES.get(name)
        if kinds is None:
            return _Call(nr, name, args, None, _raw_args(args))
        c = _Ctx(task, args, None, self.log_size)
        parts = [None if k in _OUT_KINDS else _fmt_arg(c, k, i) for i, k in enumerate(kinds)]
        return _Call(nr, name, args, kinds, parts)

    def _enter(self, task, nr, args) -> None:
        tid = task.tid
        call = self._calls.get(tid)
        if call is not None:
            if call.blocked and call.nr == nr and call.args == args:
                return  # the handler runs again after a wake-up
            if call.blocked:
                self._emit(task, f"<... {call.name} resumed> = ? <interrupted>")
        call = self._format_entry(task, nr, args)
        self._calls[tid] = call
        if call.name in NORETURN:
            self._emit(task, f"{call.name}({', '.join(self._entry_parts(call))}) = ?")

    @staticmethod
    def _entry_parts(call: _Call) -> list[str]:
        if call.kinds is None:
            return call.parts
        return [p if p is not None else _ptr(call.args[i])
                for i, p in enumerate(call.parts)
                if p is not None or call.kinds[i] in _OUT_KINDS]

    def _blocked(self, task, nr) -> None:
        call = self._calls.get(task.tid)
        if call is None or call.nr != nr:
            return
        if not call.blocked:
            call.blocked = True
            self._emit(task, f"{call.name}({', '.join(self._entry_parts(call))}) <blocked>")

    def _exit(self, task, nr, args, result) -> None:
        call = self._calls.pop(task.tid, None)
        if call is None or call.nr != nr or call.args != args:
            call = self._format_entry(task, nr, args)
        if call.name in NORETURN:
            return
        if call.kinds is None:
            parts = call.parts
        else:
            parts = self._decode(task, call.name, args, call.kinds, result, call.parts)
        res = format_result(call.name, result)
        text = f"{call.name}({', '.join(parts)}) = {res}"
        if call.blocked:
            has_out = call.kinds is not None and any(k in _OUT_KINDS for k in call.kinds)
            text = f"<... {call.name} resumed> " + (text if has_out else f"= {res}")
        self._emit(task, text)
