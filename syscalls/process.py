"""Processes: exec, ids of processes, wait, clone checks, prctl, rlimits, uname."""
from __future__ import annotations

import os
import sys

from pysc.core.abi import consts as C
from pysc.core.abi.structs import RLIMIT, pack_utsname
from pysc.core.dispatch import CONTINUE, s32, syscall
from pysc.core.errors import SyscallError
from pysc.core.file import File
from pysc.core.exec import ExecInfo, exec_fd, resolve_image
from pysc.core.hookspecs import hookimpl
from pysc.core.pathutil import read_path, resolve
from pysc.core.task import CAP_SYS_ADMIN

CAP_SYS_RESOURCE = 24


@hookimpl
def pysc_syscalls(table, platform):
    table.register_module(sys.modules[__name__])


# --- exec ---
@syscall()
def execve(t, path, argv, envp, *_):
    return do_execve(t, C.AT_FDCWD, path, argv, envp, 0)


@syscall()
def execveat(t, dirfd, path, argv, envp, flags, *_):
    if flags & ~(C.AT_EMPTY_PATH | C.AT_SYMLINK_NOFOLLOW):
        raise SyscallError(C.EINVAL)
    return do_execve(t, dirfd, path, argv, envp, flags)


def do_execve(t, dirfd, path_addr, argv, envp, flags):
    path = read_path(t, path_addr) if path_addr or not flags & C.AT_EMPTY_PATH else b""
    d = resolve(t, dirfd, path, follow=not flags & C.AT_SYMLINK_NOFOLLOW,
                empty_path=bool(flags & C.AT_EMPTY_PATH))
    argv_ptrs = t.mem.read_ptr_array(argv) if argv else []
    if envp:
        t.mem.read_ptr_array(envp)  # EFAULT now rather than from the host
    elf, new_argv, chain = resolve_image(t, d, path or d.path(), argv_ptrs)
    if new_argv is None and not argv_ptrs:
        new_argv = []  # execve with an empty argv: the host fills nothing in either
    fd = exec_fd(elf)
    try:
        name = (path or elf.name).rsplit(b"/", 1)[-1][:15]
        info = ExecInfo(elf, name, chain, s32(dirfd), flags, path)
        return t.ctx.exec_image(fd, new_argv, argv, envp, info)
    finally:
        os.close(fd)


# --- clone: only calls the filter did not allow reach here ---
@syscall()
def clone(t, flags, *_):
    flags &= 0xFFFFFFFF
    if flags & C.CLONE_NEW_ANY:
        raise SyscallError(C.EPERM)
    if flags & (C.CLONE_UNTRACED | C.CLONE_PTRACE):
        return t.ctx.clone_flags(flags)
    return CONTINUE


@syscall("exit", "exit_group")
def exit(t, *_):
    """Only where the platform wants to see a process end before it does
    (seccomp: to adopt children it forked natively); the host exits it."""
    return CONTINUE


@syscall("unshare", "setns")
def unshare(t, *_):
    raise SyscallError(C.EPERM)


# --- ids of processes ---
@syscall()
def getpid(t, *_):
    return t.pidns.id_of(t.tg.pid)


@syscall()
def gettid(t, *_):
    return t.pidns.id_of(t.tid)


@syscall()
def getppid(t, *_):
    return t.pidns.pid_of(t.tg.parent)


@syscall()
def setsid(t, *_):
    if t.tg.pgid == t.tg.pid:
        raise SyscallError(C.EPERM)
    t.tg.sid = t.tg.pgid = t.tg.pid
    return CONTINUE


@syscall()
def setpgid(t, pid, pgid, *_):
    pid, pgid = s32(pid), s32(pgid)
    tg = t.tg if pid == 0 else t.pidns.tg(pid)
    if tg is None or pgid < 0:
        raise SyscallError(C.ESRCH if tg is None else C.EINVAL)
    group = tg.pid if pgid == 0 else t.pidns.kernel_id(pgid)
    if group is None:  # no such process group in the caller's namespace
        raise SyscallError(C.EPERM)
    tg.pgid = group
    return CONTINUE


@syscall("getpgid", "getsid", "getpgrp", "wait4", "kill", "tkill", "tgkill", "rt_sigqueueinfo",
         "rt_tgsigqueueinfo", "getrusage", "times", "getpriority", "setpriority",
         "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
         "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
         "sched_get_priority_min", "sched_rr_get_interval", "sched_getattr", "sched_setattr",
         "ioprio_get", "ioprio_set", "getcpu", "personality")
def host_scoped(t, *_):
    """Calls about processes of the sandbox's own pid namespace: the host
    kernel answers them there, where pids are sandbox pids."""
    return CONTINUE


@syscall()
def waitid(t, idtype, id_, infop, options, rusage, *_):
    if s32(idtype) == C.P_PIDFD:
        f = t.fdtable.get(s32(id_))
        tg = getattr(f, "thread_group", None)
        if tg is None:
            raise SyscallError(C.EBADF)
        return t.ctx.wait_pidfd(s32(id_), tg)
    return CONTINUE


class PidFD(File):
    """A pidfd: readable once its process has exited."""

    def __init__(self, tg, flags):
        super().__init__(C.O_RDWR | (flags & C.O_NONBLOCK))
        self.thread_group = tg
        self.wq = tg.exited_wq

    def poll(self):
        return C.POLLIN | C.POLLRDNORM if self.thread_group.exit_status is not None else 0

    def read(self, task, count):
        raise SyscallError(C.EINVAL)

    def path_for_proc(self):
        return b"anon_inode:[pidfd]"


@syscall()
def pidfd_open(t, pid, flags, *_):
    pid = s32(pid)
    if flags & ~C.O_NONBLOCK or pid <= 0:
        raise SyscallError(C.EINVAL)
    tg = t.pidns.tg(pid)
    if tg is None:
        raise SyscallError(C.ESRCH)
    return t.fdtable.install(PidFD(tg, flags), True)


# --- prctl ---
@syscall(partial=True)
def prctl(t, option, a2, a3, a4, a5, *_):
    option = s32(option)
    if option == C.PR_SET_NAME:
        t.tg.comm = t.mem.read_cstr(a2, 16)[:15]
        return CONTINUE
    if option == C.PR_GET_NAME:
        t.mem.write(a2, t.tg.comm[:15].ljust(16, b"\0"))
        return 0
    if option in (C.PR_SET_PDEATHSIG, C.PR_GET_PDEATHSIG, C.PR_GET_DUMPABLE, C.PR_SET_DUMPABLE,
                  C.PR_SET_CHILD_SUBREAPER, C.PR_GET_CHILD_SUBREAPER, C.PR_GET_NO_NEW_PRIVS,
                  C.PR_SET_THP_DISABLE, C.PR_GET_THP_DISABLE, C.PR_SET_VMA, C.PR_GET_TID_ADDRESS,
                  8, 14, 13, 12, 19, 20, 24, 25, 26, 29, 30):
        # keepcaps, timing, endian, fpemu, timerslack... are per-process host state
        return CONTINUE
    if option == C.PR_SET_NO_NEW_PRIVS:
        if a2 != 1 or a3 or a4 or a5:
            raise SyscallError(C.EINVAL)
        t.creds.no_new_privs = True
        return 0
    if option == C.PR_GET_SECCOMP:
        return 0
    if option == C.PR_CAPBSET_READ:
        if a2 > 40:
            raise SyscallError(C.EINVAL)
        return (t.creds.cap_bounding >> a2) & 1
    if option == C.PR_CAP_AMBIENT:
        if a2 == 1:  # IS_SET
            return (t.creds.cap_ambient >> a3) & 1
        if a2 == 4:  # CLEAR_ALL
            t.creds.cap_ambient = 0
            return 0
        raise SyscallError(C.EPERM)
    raise SyscallError(C.EINVAL)


# --- rlimits ---
def _target_tg(t, pid):
    pid = s32(pid)
    if pid == 0:
        return t.tg
    tg = t.pidns.tg(pid)
    if tg is None:
        raise SyscallError(C.ESRCH)
    return tg


def do_prlimit(t, tg, resource: int, new: int, old: int, host_enforced: bool = True):
    """prlimit for ``tg``.  RLIMIT_NOFILE is always the Sentry's; the others
    are the host kernel's where app threads are host processes
    (``host_enforced``: the call then continues there)."""
    if not 0 <= resource < C.RLIM_NLIMITS:
        raise SyscallError(C.EINVAL)
    if resource != C.RLIMIT_NOFILE and host_enforced:
        return CONTINUE  # enforced by the host kernel on the app process
    cur = tg.rlimits.get(resource)
    if new:
        soft, hard = RLIMIT.unpack(t.mem.read(new, 16))
        if soft > hard:
            raise SyscallError(C.EINVAL)
        if hard > cur[1] and not t.creds.has_cap(CAP_SYS_RESOURCE):
            raise SyscallError(C.EPERM)
        if resource == C.RLIMIT_NOFILE and hard > 1 << 20:
            raise SyscallError(C.EPERM)
    if old:
        t.mem.write(old, RLIMIT.pack(*cur))
    if new:
        tg.rlimits.set(resource, soft, hard)
        if resource == C.RLIMIT_NOFILE:
            for task in tg.tasks:
                task.fdtable.limit = min(soft, 1 << 20)
    return 0


@syscall()
def prlimit64(t, pid, resource, new, old, *_):
    return do_prlimit(t, _target_tg(t, pid), s32(resource), new, old)


@syscall()
def getrlimit(t, resource, old, *_):
    return do_prlimit(t, t.tg, s32(resource), 0, old)


@syscall()
def setrlimit(t, resource, new, *_):
    return do_prlimit(t, t.tg, s32(resource), new, 0)


# --- the sandbox's kernel identity ---
@syscall()
def uname(t, buf, *_):
    k = t.kernel
    t.mem.write(buf, pack_utsname("Linux", k.hostname, k.release, k.version, "x86_64", k.domainname))
    return 0


def _set_name(t, addr, length, attr):
    if not t.creds.has_cap(CAP_SYS_ADMIN):
        raise SyscallError(C.EPERM)
    length = s32(length)
    if length < 0 or length > 64:
        raise SyscallError(C.EINVAL)
    setattr(t.kernel, attr, t.mem.read(addr, length).decode("utf-8", "replace"))
    return 0


@syscall()
def sethostname(t, name, length, *_):
    return _set_name(t, name, length, "hostname")


@syscall()
def setdomainname(t, name, length, *_):
    return _set_name(t, name, length, "domainname")
