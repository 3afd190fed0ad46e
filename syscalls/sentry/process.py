"""Processes and threads run by the Sentry: clone, exit, wait, process
groups, scheduling, resource limits, futexes and the thread's own state
(arch_prctl, set_tid_address, robust lists)."""
from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
import time

from pysc.core.abi import consts as C
from pysc.core.abi.structs import CLONE_ARGS, RUSAGE, SCHED_ATTR, TIMESPEC, TMS
from pysc.core.dispatch import CONTINUE, s32, syscall
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.eventpoll import call_deadline, clear_deadline, expired
from pysc.core.futex import ALL_BITS, FutexWait, futex_key
from pysc.core.hookspecs import hookimpl
from pysc.core.sigframe import pack_siginfo
from pysc.syscalls.process import do_prlimit

WNOTHREAD, WCLONE, WALL = 0x20000000, 0x80000000, 0x40000000
WAIT4_OPTIONS = C.WNOHANG | C.WUNTRACED | C.WCONTINUED | WNOTHREAD | WCLONE | WALL
WAITID_OPTIONS = C.WNOHANG | C.WEXITED | C.WSTOPPED | C.WCONTINUED | C.WNOWAIT | WNOTHREAD | WCLONE | WALL
CLONE_UNSUPPORTED = C.CLONE_NEW_ANY | C.CLONE_UNTRACED | C.CLONE_PTRACE
FUTEX_PRIVATE, FUTEX_CLOCK_REALTIME = 128, 256
FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAKE_OP = 3, 4, 5
FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 9, 10
ARCH_GET_CPUID, ARCH_SET_CPUID = 0x1011, 0x1012
CAP_SYS_NICE = 23
GRND_ALL = 0x7
_libc = ctypes.CDLL(None, use_errno=True)


@hookimpl
def pysc_syscalls(table, platform):
    if not table.sentry_owned:
        return
    table.register_module(sys.modules[__name__])
    _wrap_host_scoped(table)


# --- clone ---
def do_clone(t, flags: int, stack: int, ptid: int, ctid: int, tls: int, exit_signal: int,
             pidfd_ptr: int = 0) -> int:
    if flags & CLONE_UNSUPPORTED:
        raise SyscallError(C.EPERM if flags & C.CLONE_NEW_ANY else C.EINVAL)
    if flags & C.CLONE_THREAD and not flags & C.CLONE_SIGHAND \
            or flags & C.CLONE_SIGHAND and not flags & C.CLONE_VM:
        raise SyscallError(C.EINVAL)
    if flags & C.CLONE_PIDFD and flags & C.CLONE_THREAD:
        raise SyscallError(C.EINVAL)
    if flags & C.CLONE_THREAD:
        exit_signal = 0
    flags = (flags & ~C.CSIGNAL) | (exit_signal & C.CSIGNAL)
    platform = t.kernel.platform
    tid = platform.clone(t, flags, stack, ptid, ctid, tls)
    if flags & C.CLONE_PIDFD:
        from pysc.syscalls.process import PidFD
        child = t.kernel.tasks.get(tid)
        fd = t.fdtable.install(PidFD(child.tg, 0), True)
        t.mem.write_u32(pidfd_ptr, fd)
    platform.vfork_wait(t, tid) if flags & C.CLONE_VFORK else None
    return t.pidns.id_of(tid)


@syscall()
def clone(t, flags, stack, ptid, ctid, tls, *_):
    flags &= 0xFFFFFFFF
    if flags & C.CLONE_PIDFD and flags & C.CLONE_PARENT_SETTID:
        raise SyscallError(C.EINVAL)
    return do_clone(t, flags & ~C.CSIGNAL, stack, ptid, ctid, tls, flags & C.CSIGNAL, ptid)


@syscall()
def fork(t, *_):
    return do_clone(t, 0, 0, 0, 0, 0, C.SIGCHLD)


@syscall()
def vfork(t, *_):
    return do_clone(t, C.CLONE_VM | C.CLONE_VFORK, 0, 0, 0, 0, C.SIGCHLD)


@syscall()
def clone3(t, uargs, size, *_):
    if size < 64 or size > 4096:
        raise SyscallError(C.EINVAL)
    data = t.mem.read(uargs, min(size, CLONE_ARGS.size)).ljust(CLONE_ARGS.size, b"\0")
    if size > CLONE_ARGS.size and any(t.mem.read(uargs + CLONE_ARGS.size, size - CLONE_ARGS.size)):
        raise SyscallError(C.E2BIG)
    flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, \
        cgroup = CLONE_ARGS.unpack(data)
    if exit_signal > C.NSIG or set_tid or set_tid_size or (stack and not stack_size) \
            or flags & 0x200000000:  # CLONE_INTO_CGROUP
        raise SyscallError(C.EINVAL)
    return do_clone(t, flags, stack + stack_size if stack else 0, parent_tid, child_tid, tls,
                    exit_signal, pidfd)


# --- exit ---
@syscall()
def exit(t, status, *_):
    return t.kernel.platform.exit_thread(t, (status & 0xFF) << 8)


@syscall()
def exit_group(t, status, *_):
    return t.kernel.platform.exit_group(t, (status & 0xFF) << 8)


# --- wait ---
def _wait_status(tg) -> tuple[int, int, int]:
    """(wait status, CLD_* code, si_status) of a zombie."""
    st = tg.exit_status
    if st & 0x7F:
        return st, (C.CLD_DUMPED if st & 0x80 else C.CLD_KILLED), st & 0x7F
    return st, C.CLD_EXITED, st >> 8


def _find_child(t, idtype: int, ident: int, options: int):
    """(child, wait status, code, si_status) of a child with something to
    report, None when there is none yet; ECHILD when nothing could match."""
    children = [c for c in t.tg.children]
    if idtype == C.P_PID:
        children = [c for c in children if c.pid == t.pidns.kernel_id(ident)]
    elif idtype == C.P_PGID:
        children = [c for c in children if c.pgid == ident]  # a kernel id: see the callers
    elif idtype == C.P_PIDFD:
        children = [c for c in children if c is ident]
    if not options & WALL:
        want_clone = bool(options & WCLONE)
        children = [c for c in children if (c.exit_signal != C.SIGCHLD) == want_clone]
    if not children:
        raise SyscallError(C.ECHILD)
    for c in children:
        if not c.alive and not c.reaped and options & C.WEXITED:
            return (c, *_wait_status(c))
        if options & C.WSTOPPED and getattr(c, "wait_stopped", False) and c.stopped:
            sig = getattr(c, "stop_signal", C.SIGSTOP)
            return c, (sig << 8) | 0x7F, C.CLD_STOPPED, sig
        if options & C.WCONTINUED and getattr(c, "wait_continued", False):
            return c, 0xFFFF, C.CLD_CONTINUED, C.SIGCONT
    return None


def _consume(t, child, code: int, options: int) -> None:
    if options & C.WNOWAIT:
        return
    if code in (C.CLD_EXITED, C.CLD_KILLED, C.CLD_DUMPED):
        t.tg.children_cpu = getattr(t.tg, "children_cpu", 0.0) + getattr(child, "cpu_time", 0.0)
        t.kernel.reap(child)
    elif code == C.CLD_STOPPED:
        child.wait_stopped = False
    else:
        child.wait_continued = False


@syscall()
def wait4(t, pid, wstatus, options, rusage, *_):
    pid = s32(pid)
    if options & ~WAIT4_OPTIONS:
        raise SyscallError(C.EINVAL)
    options |= C.WEXITED
    if pid < -1:
        idtype, ident = C.P_PGID, t.pidns.kernel_id(-pid)
    elif pid == -1:
        idtype, ident = C.P_ALL, 0
    elif pid == 0:
        idtype, ident = C.P_PGID, t.tg.pgid
    else:
        idtype, ident = C.P_PID, pid
    found = _find_child(t, idtype, ident, options)
    if found is None:
        if options & C.WNOHANG:
            return 0
        raise WouldBlock((t.tg.child_exit,), restart="sys")
    child, status, code, _ = found
    if wstatus:
        t.mem.write_u32(wstatus, status)
    if rusage:
        t.mem.write(rusage, _rusage(getattr(child, "cpu_time", 0.0)))
    pid = t.pidns.pid_of(child)  # before the reap frees its number
    _consume(t, child, code, options)
    return pid


@syscall()
def waitid(t, idtype, ident, infop, options, rusage, *_):
    idtype, ident = s32(idtype), s32(ident)
    if options & ~WAITID_OPTIONS or not options & (C.WEXITED | C.WSTOPPED | C.WCONTINUED):
        raise SyscallError(C.EINVAL)
    if idtype == C.P_PIDFD:
        f = t.fdtable.get(ident)
        ident = getattr(f, "thread_group", None)
        if ident is None:
            raise SyscallError(C.EBADF)
    elif idtype == C.P_PGID and ident == 0:
        ident = t.tg.pgid
    elif idtype not in (C.P_ALL, C.P_PID, C.P_PGID) or (idtype != C.P_ALL and ident <= 0):
        raise SyscallError(C.EINVAL)
    elif idtype == C.P_PGID:
        ident = t.pidns.kernel_id(ident)
    found = _find_child(t, idtype, ident, options)
    if found is None:
        if options & C.WNOHANG:
            if infop:
                t.mem.write(infop, bytes(128))
            return 0
        raise WouldBlock((t.tg.child_exit,), restart="sys")
    child, _, code, si_status = found
    if infop:  # (before the reap frees its number)
        t.mem.write(infop, pack_siginfo(C.SIGCHLD, code, pid=t.pidns.pid_of(child), uid=0,
                                        status=si_status))
    if rusage:
        t.mem.write(rusage, _rusage(getattr(child, "cpu_time", 0.0)))
    _consume(t, child, code, options)
    return 0


# --- CPU time ---
def thread_cpu(task) -> float:
    """CPU time of the host thread running ``task`` (guest code and its share of the Sentry)."""
    th = getattr(task.ctx, "thread", None)
    if th is None or th.ident is None:
        return 0.0
    if th is threading.current_thread():
        return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(th.ident))
    except (OSError, ProcessLookupError):
        return 0.0


def process_cpu(tg) -> float:
    return getattr(tg, "cpu_dead", 0.0) + sum(thread_cpu(t) for t in tg.tasks)


def _rusage(user: float) -> bytes:
    sec = int(user)
    return RUSAGE.pack(sec, int((user - sec) * 1e6), 0, 0, *([0] * 14))


@syscall()
def getrusage(t, who, usage, *_):
    who = s32(who)
    if who == 0:  # RUSAGE_SELF
        cpu = process_cpu(t.tg)
    elif who == -1:  # RUSAGE_CHILDREN
        cpu = getattr(t.tg, "children_cpu", 0.0)
    elif who == 1:  # RUSAGE_THREAD
        cpu = thread_cpu(t)
    else:
        raise SyscallError(C.EINVAL)
    t.mem.write(usage, _rusage(cpu))
    return 0


@syscall()
def times(t, buf, *_):
    if buf:
        hz = 100
        t.mem.write(buf, TMS.pack(int(process_cpu(t.tg) * hz), 0,
                                  int(getattr(t.tg, "children_cpu", 0.0) * hz), 0))
    return t.kernel.clock_ticks()


# --- process groups and sessions ---
def _tg_of(t, pid: int):
    pid = s32(pid)
    if pid == 0:
        return t.tg
    tg = t.pidns.tg(pid)
    if tg is None:
        raise SyscallError(C.ESRCH)
    return tg


@syscall()
def getpgid(t, pid, *_):
    return t.pidns.id_of(_tg_of(t, pid).pgid)


@syscall()
def getpgrp(t, *_):
    return t.pidns.id_of(t.tg.pgid)


@syscall()
def getsid(t, pid, *_):
    return t.pidns.id_of(_tg_of(t, pid).sid)


def _wrap_host_scoped(table) -> None:
    """Handlers shared with the host-process platforms that record the
    Sentry's view and then let the host kernel finish: here the Sentry's
    view is all there is, so their CONTINUE becomes the call's result."""
    for name, result in (("setsid", lambda t, args: t.pidns.id_of(t.tg.sid)), ("setpgid", lambda t, args: 0),
                         ("prctl", _prctl_rest)):
        inner = table.get(name)
        if inner is None:
            continue

        def wrapper(t, *args, _inner=inner, _result=result):
            r = _inner(t, *args)
            return _result(t, args) if r is CONTINUE else r
        table.register(name, wrapper, plugin=__name__)


def _prctl_rest(t, args) -> int:
    option, a2 = s32(args[0]), args[1]
    tg = t.tg
    if option == C.PR_SET_PDEATHSIG:
        if not 0 <= a2 <= C.NSIG:
            raise SyscallError(C.EINVAL)
        t.pdeath_signal = a2
        return 0
    if option == C.PR_GET_PDEATHSIG:
        t.mem.write_u32(a2, getattr(t, "pdeath_signal", 0))
        return 0
    if option == C.PR_GET_DUMPABLE:
        return getattr(tg, "dumpable", 1)
    if option == C.PR_SET_DUMPABLE:
        if a2 not in (0, 1):
            raise SyscallError(C.EINVAL)
        tg.dumpable = a2
        return 0
    if option == C.PR_SET_CHILD_SUBREAPER:
        tg.subreaper = bool(a2)
        return 0
    if option == C.PR_GET_CHILD_SUBREAPER:
        t.mem.write_u32(a2, int(getattr(tg, "subreaper", False)))
        return 0
    if option == C.PR_GET_NO_NEW_PRIVS:
        return int(t.creds.no_new_privs)
    if option == C.PR_GET_TID_ADDRESS:
        t.mem.write_u64(a2, t.clear_child_tid)
        return 0
    if option in (C.PR_SET_NAME,):
        return 0
    if option == C.PR_GET_THP_DISABLE:
        return int(getattr(tg, "thp_disable", False))
    if option == C.PR_SET_THP_DISABLE:
        tg.thp_disable = bool(a2)
        return 0
    if option == C.PR_SET_VMA:
        return 0  # names anonymous mappings; /proc maps does not show them yet
    if option == 8:  # PR_SET_KEEPCAPS
        if a2 not in (0, 1):
            raise SyscallError(C.EINVAL)
        t.keepcaps = a2
        return 0
    if option == 7:  # PR_GET_KEEPCAPS
        return getattr(t, "keepcaps", 0)
    raise SyscallError(C.EINVAL)


# --- scheduling ---
@syscall()
def sched_yield(t, *_):
    return 0


@syscall()
def sched_getaffinity(t, pid, size, mask, *_):
    task = _task_of(t, pid)
    if size < 8 or size & 7:
        raise SyscallError(C.EINVAL)
    th = task.ctx.thread
    cpus = os.sched_getaffinity(th.native_id if th is not None and th.native_id else 0)
    bits = sum(1 << c for c in cpus)
    n = max(8, ((os.cpu_count() or 1) + 63) // 64 * 8)
    n = min(n, size)
    t.mem.write(mask, bits.to_bytes(n, "little"))
    return n


@syscall()
def sched_setaffinity(t, pid, size, mask, *_):
    task = _task_of(t, pid)
    data = t.mem.read(mask, min(size, 128))
    bits = int.from_bytes(data, "little")
    cpus = {i for i in range(os.cpu_count() or 1) if bits >> i & 1}
    if not cpus:
        raise SyscallError(C.EINVAL)
    th = task.ctx.thread
    if th is not None and th.native_id:
        try:
            os.sched_setaffinity(th.native_id, cpus)
        except OSError as e:
            raise SyscallError(e.errno or C.EINVAL) from None
    return 0


def _task_of(t, pid):
    pid = s32(pid)
    if pid < 0:
        raise SyscallError(C.EINVAL)
    if pid == 0:
        return t
    task = t.pidns.task(pid)
    if task is None:
        raise SyscallError(C.ESRCH)
    return task


# The Sentry runs every thread as the host schedules its vCPU thread: it
# records the policy and nice value a thread asks for, and refuses what needs
# privileges the sandbox does not have (real-time, deadline).
NORMAL_POLICIES = (C.SCHED_OTHER, C.SCHED_BATCH, C.SCHED_IDLE)


def _check_policy(policy: int, priority: int) -> int:
    """The policy without its reset-on-fork flag, if the sandbox may have it."""
    policy &= ~C.SCHED_RESET_ON_FORK
    if policy in (C.SCHED_FIFO, C.SCHED_RR, C.SCHED_DEADLINE):
        raise SyscallError(C.EPERM if policy != C.SCHED_DEADLINE or priority == 0 else C.EINVAL)
    if policy not in NORMAL_POLICIES or priority != 0:
        raise SyscallError(C.EINVAL)
    return policy


def _set_policy(task, policy: int, reset: bool) -> None:
    task.sched_policy, task.sched_reset_on_fork = policy, reset


@syscall()
def sched_getscheduler(t, pid, *_):
    task = _task_of(t, pid)
    reset = C.SCHED_RESET_ON_FORK if task.sched_reset_on_fork else 0
    return task.sched_policy | reset


@syscall()
def sched_setscheduler(t, pid, policy, param, *_):
    task = _task_of(t, pid)
    if s32(policy) < 0:
        raise SyscallError(C.EINVAL)
    policy = s32(policy)
    _set_policy(task, _check_policy(policy, t.mem.read_u32(param)), bool(policy & C.SCHED_RESET_ON_FORK))
    return 0


@syscall()
def sched_getparam(t, pid, param, *_):
    _task_of(t, pid)
    t.mem.write_u32(param, 0)  # the priority of every normal policy
    return 0


@syscall()
def sched_setparam(t, pid, param, *_):
    _task_of(t, pid)
    if t.mem.read_u32(param) != 0:
        raise SyscallError(C.EINVAL)
    return 0


@syscall()
def sched_getattr(t, pid, attr, size, flags, *_):
    if s32(pid) < 0 or not attr or flags or size < C.SCHED_ATTR_SIZE_VER0 or size > C.PAGE_SIZE:
        raise SyscallError(C.EINVAL)
    task = _task_of(t, pid)
    size = min(size, C.SCHED_ATTR_SIZE_VER1)
    flags = C.SCHED_FLAG_RESET_ON_FORK if task.sched_reset_on_fork else 0
    data = SCHED_ATTR.pack(size, task.sched_policy, flags,
                           task.tg.nice, 0, 0, 0, 0, 0, 1024)
    t.mem.write(attr, data[:size])
    return 0


@syscall()
def sched_setattr(t, pid, attr, flags, *_):
    if s32(pid) < 0 or not attr or flags:
        raise SyscallError(C.EINVAL)
    size = t.mem.read_u32(attr) or C.SCHED_ATTR_SIZE_VER0
    if not C.SCHED_ATTR_SIZE_VER0 <= size <= C.PAGE_SIZE:
        t.mem.write_u32(attr, C.SCHED_ATTR_SIZE_VER1)
        raise SyscallError(C.E2BIG)
    data = t.mem.read(attr, size).ljust(SCHED_ATTR.size, b"\0")
    if any(data[SCHED_ATTR.size:]):  # fields of a newer kernel, set: not understood here
        t.mem.write_u32(attr, C.SCHED_ATTR_SIZE_VER1)
        raise SyscallError(C.E2BIG)
    _, policy, sflags, nice, priority = SCHED_ATTR.unpack(data[:SCHED_ATTR.size])[:5]
    if sflags & ~C.SCHED_FLAG_RESET_ON_FORK:
        raise SyscallError(C.EINVAL)
    task = _task_of(t, pid)
    policy = _check_policy(policy, priority)
    _set_nice(t, task.tg, nice)
    _set_policy(task, policy, bool(sflags))
    return 0


@syscall()
def sched_rr_get_interval(t, pid, tp, *_):
    if s32(pid) < 0:
        raise SyscallError(C.EINVAL)
    _task_of(t, pid)
    t.mem.write(tp, TIMESPEC.pack(0, 0))  # no round-robin thread here: no time slice
    return 0


@syscall()
def sched_get_priority_max(t, policy, *_):
    policy = s32(policy)
    if policy in (1, 2):
        return 99
    if policy in (0, 3, 5):
        return 0
    raise SyscallError(C.EINVAL)


@syscall()
def sched_get_priority_min(t, policy, *_):
    policy = s32(policy)
    if policy in (1, 2):
        return 1
    if policy in (0, 3, 5):
        return 0
    raise SyscallError(C.EINVAL)


@syscall()
def getpriority(t, which, who, *_):
    if s32(which) != 0:  # PRIO_PROCESS only
        raise SyscallError(C.EINVAL)
    return 20 - _tg_of(t, who).nice


@syscall()
def setpriority(t, which, who, prio, *_):
    if s32(which) != 0:
        raise SyscallError(C.EINVAL)
    _set_nice(t, _tg_of(t, who), s32(prio))
    return 0


def _set_nice(t, tg, nice: int) -> None:
    nice = max(-20, min(19, nice))
    if nice < tg.nice and not t.creds.has_cap(CAP_SYS_NICE):
        raise SyscallError(C.EACCES)
    tg.nice = nice


# --- I/O priorities: recorded per thread, as the Sentry does its I/O itself ---
def _ioprio_targets(t, which: int, who: int) -> list:
    if which == C.IOPRIO_WHO_PROCESS:
        return [_task_of(t, who)]
    if which == C.IOPRIO_WHO_PGRP:
        group = t.tg.pgid if who == 0 else t.pidns.kernel_id(who)
        tasks = [task for tg in list(t.kernel.thread_groups.values()) if tg.pgid == group and tg.alive
                 for task in tg.tasks]
    elif which == C.IOPRIO_WHO_USER:
        uid = t.creds.uid if who == 0 else who
        tasks = [task for task in list(t.kernel.tasks.values()) if task.creds.uid == uid]
    else:
        raise SyscallError(C.EINVAL)
    tasks = [task for task in tasks if t.pidns.id_of(task.tid)]
    if not tasks:
        raise SyscallError(C.ESRCH)
    return tasks


def _ioprio_best(a: int, b: int) -> int:
    """Linux's ioprio_best: the higher class (RT, then BE, then IDLE; none
    counts as BE level 4), then the lower level."""
    a = a if a >> 13 else (C.IOPRIO_CLASS_BE << 13) | 4
    b = b if b >> 13 else (C.IOPRIO_CLASS_BE << 13) | 4
    return min(a, b) if a >> 13 == b >> 13 else (a if a >> 13 < b >> 13 else b)


@syscall()
def ioprio_get(t, which, who, *_):
    targets = _ioprio_targets(t, s32(which), s32(who))
    best = targets[0].ioprio
    for task in targets[1:]:
        best = _ioprio_best(best, task.ioprio)
    return best


@syscall()
def ioprio_set(t, which, who, ioprio, *_):
    ioprio = s32(ioprio)
    cls, data = ioprio >> 13, ioprio & 0x1FFF
    if cls == C.IOPRIO_CLASS_RT:
        raise SyscallError(C.EPERM)  # needs CAP_SYS_ADMIN, which the sandbox does not give
    if cls == C.IOPRIO_CLASS_BE and data >= 8 or cls == C.IOPRIO_CLASS_NONE and data \
            or cls not in (C.IOPRIO_CLASS_NONE, C.IOPRIO_CLASS_BE, C.IOPRIO_CLASS_IDLE):
        raise SyscallError(C.EINVAL)
    for task in _ioprio_targets(t, s32(which), s32(who)):
        task.ioprio = ioprio
    return 0


@syscall()
def getcpu(t, cpu, node, *_):
    if cpu:
        t.mem.write_u32(cpu, max(0, _libc.sched_getcpu()))
    if node:
        t.mem.write_u32(node, 0)
    return 0


@syscall()
def personality(t, persona, *_):
    old = getattr(t.tg, "personality", 0)
    if persona & 0xFFFFFFFF != 0xFFFFFFFF:
        t.tg.personality = persona & 0xFFFFFFFF
    return old


# --- resource limits (every one is the Sentry's here) ---
@syscall()
def prlimit64(t, pid, resource, new, old, *_):
    return do_prlimit(t, _tg_of(t, pid), s32(resource), new, old, host_enforced=False)


@syscall()
def getrlimit(t, resource, old, *_):
    return do_prlimit(t, t.tg, s32(resource), 0, old, host_enforced=False)


@syscall()
def setrlimit(t, resource, new, *_):
    return do_prlimit(t, t.tg, s32(resource), new, 0, host_enforced=False)


# --- the thread's own state ---
@syscall()
def arch_prctl(t, code, addr, *_):
    vcpu = t.ctx.vcpu
    code = s32(code)
    if code == C.ARCH_SET_FS:
        if addr >= 1 << 47:
            raise SyscallError(C.EPERM)
        vcpu.fs_base = addr
        return 0
    if code == C.ARCH_SET_GS:
        if addr >= 1 << 47:
            raise SyscallError(C.EPERM)
        vcpu.gs_base = addr
        return 0
    if code == C.ARCH_GET_FS:
        t.mem.write_u64(addr, vcpu.fs_base)
        return 0
    if code == C.ARCH_GET_GS:
        t.mem.write_u64(addr, vcpu.gs_base)
        return 0
    if code == ARCH_GET_CPUID:
        return 1
    if code == ARCH_SET_CPUID:
        raise SyscallError(C.ENODEV)  # no CPUID faulting
    raise SyscallError(C.EINVAL)


@syscall()
def set_tid_address(t, tidptr, *_):
    t.clear_child_tid = tidptr
    return t.pidns.id_of(t.tid)


@syscall()
def set_robust_list(t, head, length, *_):
    if length != 24:
        raise SyscallError(C.EINVAL)
    t.robust_list = (head, length)
    return 0


@syscall()
def get_robust_list(t, pid, head_ptr, len_ptr, *_):
    task = _task_of(t, pid)
    t.mem.write_u64(head_ptr, task.robust_list[0])
    t.mem.write_u64(len_ptr, 24)
    return 0


@syscall()
def getrandom(t, buf, count, flags, *_):
    if flags & ~GRND_ALL or flags & 6 == 6:
        raise SyscallError(C.EINVAL)
    count = min(count, 1 << 25)
    t.mem.write(buf, os.urandom(count))
    return count


# --- futexes ---
def _futex_deadline(t, uaddr: int, timeout: int, cmd: int, op: int) -> float | None:
    if not timeout:
        return None
    sec, nsec = TIMESPEC.unpack(t.mem.read(timeout, 16))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise SyscallError(C.EINVAL)
    value = sec + nsec / 1e9
    key = ("futex", uaddr)
    saved = t.restart_deadline
    if saved is not None and saved[0] == key:
        return saved[1]
    if cmd == FUTEX_WAIT_BITSET:  # absolute
        clock = time.CLOCK_REALTIME if op & FUTEX_CLOCK_REALTIME else time.CLOCK_MONOTONIC
        rel = value - time.clock_gettime(clock)
    else:
        rel = value
    return call_deadline(t, key, max(0.0, rel))


def _futex_wait(t, uaddr: int, val: int, timeout: int, bitset: int, cmd: int, op: int) -> int:
    if uaddr & 3:
        raise SyscallError(C.EINVAL)
    if not bitset:
        raise SyscallError(C.EINVAL)
    key = futex_key(t.mem, uaddr, bool(op & FUTEX_PRIVATE))
    w = getattr(t, "futex_wait", None)
    if w is not None and w.key == key and w.woken:
        t.futex_wait = None
        clear_deadline(t, ("futex", uaddr))
        return 0
    deadline = _futex_deadline(t, uaddr, timeout, cmd, op)
    if t.mem.read_u32(uaddr) != val & 0xFFFFFFFF:
        t.futex_wait = None
        clear_deadline(t, ("futex", uaddr))
        raise SyscallError(C.EAGAIN)
    if expired(deadline):
        t.futex_wait = None
        clear_deadline(t, ("futex", uaddr))
        raise SyscallError(C.ETIMEDOUT)
    if w is None or w.key != key or w.woken:
        w = FutexWait(t.kernel.objects["futexes"], key, bitset)
        t.futex_wait = w
    raise WouldBlock((w,), deadline=deadline, restart="sys")


_WAKE_OPS = {0: lambda old, arg: arg, 1: lambda old, arg: old + arg, 2: lambda old, arg: old | arg,
             3: lambda old, arg: old & ~arg, 4: lambda old, arg: old ^ arg}
_WAKE_CMPS = {0: lambda a, b: a == b, 1: lambda a, b: a != b, 2: lambda a, b: a < b,
              3: lambda a, b: a <= b, 4: lambda a, b: a > b, 5: lambda a, b: a >= b}


@syscall()
def futex(t, uaddr, op, val, timeout, uaddr2, val3):
    cmd = op & ~(FUTEX_PRIVATE | FUTEX_CLOCK_REALTIME)
    private = bool(op & FUTEX_PRIVATE)
    table = t.kernel.objects["futexes"]
    val = val & 0xFFFFFFFF
    if cmd == C.FUTEX_WAIT:
        if op & FUTEX_CLOCK_REALTIME:
            raise SyscallError(C.ENOSYS)
        return _futex_wait(t, uaddr, val, timeout, ALL_BITS, cmd, op)
    if cmd == FUTEX_WAIT_BITSET:
        return _futex_wait(t, uaddr, val, timeout, val3 & 0xFFFFFFFF, cmd, op)
    if cmd in (C.FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = ALL_BITS if cmd == C.FUTEX_WAKE else val3 & 0xFFFFFFFF
        if not bitset:
            raise SyscallError(C.EINVAL)
        return table.wake(futex_key(t.mem, uaddr, private), s32(val) if s32(val) > 0 else 0, bitset)
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        nrequeue = timeout & 0xFFFFFFFF
        if s32(val) < 0 or s32(nrequeue) < 0:
            raise SyscallError(C.EINVAL)
        key, key2 = futex_key(t.mem, uaddr, private), futex_key(t.mem, uaddr2, private)
        if cmd == FUTEX_CMP_REQUEUE and t.mem.read_u32(uaddr) != val3 & 0xFFFFFFFF:
            raise SyscallError(C.EAGAIN)
        return table.requeue(key, key2, val, nrequeue)
    if cmd == FUTEX_WAKE_OP:
        opcode, cmp = (val3 >> 28) & 7, (val3 >> 24) & 15
        oparg, cmparg = (val3 >> 12) & 0xFFF, val3 & 0xFFF
        if val3 >> 31:  # FUTEX_OP_OPARG_SHIFT
            oparg = 1 << (oparg & 31)
        if opcode not in _WAKE_OPS or cmp not in _WAKE_CMPS:
            raise SyscallError(C.ENOSYS)
        old = t.mem.read_u32(uaddr2)
        t.mem.write_u32(uaddr2, _WAKE_OPS[opcode](old, oparg) & 0xFFFFFFFF)
        n = table.wake(futex_key(t.mem, uaddr, private), val)
        if _WAKE_CMPS[cmp](s32(old), cmparg if cmparg < 0x800 else cmparg - 0x1000):
            n += table.wake(futex_key(t.mem, uaddr2, private), timeout & 0xFFFFFFFF)
        return n
    raise SyscallError(C.ENOSYS)



FUTEX_WAITV_MAX, FUTEX2_SIZE_U32, FUTEX2_SIZE_MASK = 128, 0x02, 0x03
FUTEX_WAITV = struct.Struct("<QQII")  # val, uaddr, flags, reserved


@syscall()
def futex_waitv(t, waiters, nr_futexes, flags, timeout, clockid, *_):
    """Wait on several 32-bit futexes at once; the index of one that woke."""
    if flags or not 0 < nr_futexes <= FUTEX_WAITV_MAX or not waiters:
        raise SyscallError(C.EINVAL)
    raw = t.mem.read(waiters, FUTEX_WAITV.size * nr_futexes)
    entries = [FUTEX_WAITV.unpack_from(raw, i * FUTEX_WAITV.size) for i in range(nr_futexes)]
    if any(f & ~(FUTEX2_SIZE_MASK | FUTEX_PRIVATE) or f & FUTEX2_SIZE_MASK != FUTEX2_SIZE_U32 or r or a & 3
           for _, a, f, r in entries):
        raise SyscallError(C.EINVAL)
    call = ("futex_waitv", waiters, nr_futexes)
    waits = getattr(t, "futex_waitv", None)
    if waits is not None and waits[0] == call:
        for i, w in enumerate(waits[1]):
            if w.woken:
                t.futex_waitv = None
                clear_deadline(t, call)
                return i
    deadline = None
    if timeout:
        if s32(clockid) not in (0, 1):  # CLOCK_REALTIME, CLOCK_MONOTONIC
            raise SyscallError(C.EINVAL)
        sec, nsec = TIMESPEC.unpack(t.mem.read(timeout, TIMESPEC.size))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise SyscallError(C.EINVAL)
        clock = time.CLOCK_REALTIME if s32(clockid) == 0 else time.CLOCK_MONOTONIC
        deadline = call_deadline(t, call, max(0.0, sec + nsec / 1e9 - time.clock_gettime(clock)))
    for val, addr, _, _ in entries:
        if t.mem.read_u32(addr) != val & 0xFFFFFFFF:
            t.futex_waitv = None
            clear_deadline(t, call)
            raise SyscallError(C.EAGAIN)
    if expired(deadline):
        t.futex_waitv = None
        clear_deadline(t, call)
        raise SyscallError(C.ETIMEDOUT)
    table = t.kernel.objects["futexes"]
    ws = [FutexWait(table, futex_key(t.mem, addr, bool(f & FUTEX_PRIVATE)), ALL_BITS) for _, addr, f, _ in entries]
    t.futex_waitv = (call, ws)
    raise WouldBlock(ws, deadline=deadline, restart="sys")
