"""Signals the Sentry keeps and delivers itself (core/signals.py): actions,
masks, the alternate stack, sending, waiting, and returning from a handler."""
from __future__ import annotations

import sys

from pysc.core import signals
from pysc.core.abi import consts as C
from pysc.core.abi.structs import KERNEL_SIGACTION, SIGSET, STACK_T, TIMESPEC
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.eventpoll import call_deadline, clear_deadline, expired
from pysc.core.hookspecs import hookimpl
from pysc.core.sigframe import altstack_flags, on_altstack, pack_siginfo

CAP_KILL = 5


@hookimpl
def pysc_syscalls(table, platform):
    if table.sentry_owned:
        table.register_module(sys.modules[__name__])


def _valid(sig: int) -> int:
    sig = s32(sig)
    if not 1 <= sig <= C.NSIG:
        raise SyscallError(C.EINVAL)
    return sig


@syscall()
def rt_sigaction(t, sig, act, oact, sigsetsize, *_):
    sig = _valid(sig)
    if sigsetsize != 8:
        raise SyscallError(C.EINVAL)
    actions = t.tg.sighand.actions
    new = None
    if act:
        handler, flags, restorer, mask = KERNEL_SIGACTION.unpack(t.mem.read(act, KERNEL_SIGACTION.size))
        if sig in (C.SIGKILL, C.SIGSTOP):
            raise SyscallError(C.EINVAL)
        new = signals.SigAction(handler, flags & 0xFFFFFFFF, restorer, mask & ~signals.UNBLOCKABLE)
    if oact:
        a = actions[sig]
        t.mem.write(oact, KERNEL_SIGACTION.pack(a.handler, a.flags, a.restorer, a.mask))
    if new is not None:
        actions[sig] = new
        if signals.ignored(t.tg, sig):  # setting SIG_IGN discards what is pending
            t.tg.shared_pending.discard(signals.bit(sig))
            for task in t.tg.tasks:
                task.pending.discard(signals.bit(sig))
    return 0


def set_mask(t, how: int, mask: int) -> None:
    if how == C.SIG_BLOCK:
        t.sigmask |= mask
    elif how == C.SIG_UNBLOCK:
        t.sigmask &= ~mask
    elif how == C.SIG_SETMASK:
        t.sigmask = mask
    else:
        raise SyscallError(C.EINVAL)
    t.sigmask &= ~signals.UNBLOCKABLE


@syscall()
def rt_sigprocmask(t, how, nset, oset, sigsetsize, *_):
    if sigsetsize != 8:
        raise SyscallError(C.EINVAL)
    new = SIGSET.unpack(t.mem.read(nset, 8))[0] if nset else None
    if new is not None and s32(how) not in (C.SIG_BLOCK, C.SIG_UNBLOCK, C.SIG_SETMASK):
        raise SyscallError(C.EINVAL)
    if oset:
        t.mem.write(oset, SIGSET.pack(t.sigmask))
    if new is not None:
        set_mask(t, s32(how), new)
    return 0


@syscall()
def rt_sigpending(t, uset, sigsetsize, *_):
    if sigsetsize > 8:
        raise SyscallError(C.EINVAL)
    pending = (t.pending.mask | t.tg.shared_pending.mask) & t.sigmask
    t.mem.write(uset, SIGSET.pack(pending)[:sigsetsize])
    return 0


@syscall()
def rt_sigreturn(t, *_):
    return t.kernel.platform.sigreturn(t)


@syscall()
def sigaltstack(t, uss, uoss, *_):
    sp = t.ctx.vcpu.regs.rsp
    if uss:
        nsp, nflags, nsize = STACK_T.unpack(t.mem.read(uss, STACK_T.size))
        if on_altstack(sp, t.altstack):
            raise SyscallError(C.EPERM)
        mode = nflags & ~C.SS_FLAG_BITS
        if mode not in (0, C.SS_ONSTACK, C.SS_DISABLE):
            raise SyscallError(C.EINVAL)
        if mode != C.SS_DISABLE and nsize < C.MINSIGSTKSZ:
            raise SyscallError(C.ENOMEM)
    if uoss:
        ss_sp, _, ss_size = t.altstack
        t.mem.write(uoss, STACK_T.pack(ss_sp, altstack_flags(sp, t.altstack), ss_size))
    if uss:
        t.altstack = (0, C.SS_DISABLE, 0) if mode == C.SS_DISABLE else (nsp, nflags & C.SS_FLAG_BITS, nsize)
    return 0


@syscall()
def rt_sigsuspend(t, uset, sigsetsize, *_):
    if sigsetsize != 8:
        raise SyscallError(C.EINVAL)
    mask = SIGSET.unpack(t.mem.read(uset, 8))[0]
    if t.saved_sigmask is None:
        t.saved_sigmask = t.sigmask
    t.sigmask = mask & ~signals.UNBLOCKABLE
    raise WouldBlock(restart="nohand")  # until a signal


@syscall()
def pause(t, *_):
    raise WouldBlock(restart="nohand")  # until a signal


@syscall()
def rt_sigtimedwait(t, uset, uinfo, uts, sigsetsize, *_):
    if sigsetsize != 8:
        raise SyscallError(C.EINVAL)
    want = SIGSET.unpack(t.mem.read(uset, 8))[0] & ~signals.UNBLOCKABLE
    timeout = None
    if uts:
        sec, nsec = TIMESPEC.unpack(t.mem.read(uts, 16))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise SyscallError(C.EINVAL)
        timeout = sec + nsec / 1e9
    key = ("rt_sigtimedwait", uset, uts)
    deadline = call_deadline(t, key, timeout)
    for pending in (t.pending, t.tg.shared_pending):
        sig = signals.lowest(pending.mask & want)
        if sig:
            clear_deadline(t, key)
            t.sigwait = 0
            info = pending.take(sig)
            if uinfo:
                t.mem.write(uinfo, info)
            return sig
    if expired(deadline):
        clear_deadline(t, key)
        t.sigwait = 0
        raise SyscallError(C.EAGAIN)
    # While waiting, the awaited signals are unblocked so that sending them wakes us;
    # they are taken here on the re-run rather than delivered.
    t.sigwait = want
    raise WouldBlock(deadline=deadline, restart="nohand")


# --- sending ---
def _may_signal(t, tg) -> bool:
    c = t.creds
    if c.has_cap(CAP_KILL):
        return True
    target = tg.leader.creds if tg.leader is not None else None
    return target is None or c.euid in (target.uid, target.suid) or c.uid in (target.uid, target.suid)


def _user_info(t, sig: int, code: int = signals.SI_USER) -> bytes:
    return pack_siginfo(sig, code, pid=t.pidns.id_of(t.tg.pid), uid=t.creds.uid)


def send_to(t, tg, sig: int, info: bytes | None = None) -> None:
    if not _may_signal(t, tg):
        raise SyscallError(C.EPERM)
    signals.send(t.kernel, tg, sig, info if info is not None else _user_info(t, sig))


@syscall()
def kill(t, pid, sig, *_):
    pid, sig = s32(pid), s32(sig)
    if not 0 <= sig <= C.NSIG:
        raise SyscallError(C.EINVAL)
    k, ns = t.kernel, t.pidns
    if pid > 0:
        tg = ns.tg(pid)
        if tg is None:
            raise SyscallError(C.ESRCH)
        send_to(t, tg, sig)
        return 0
    if pid == 0:
        targets = [g for g in k.thread_groups.values() if g.pgid == t.tg.pgid]
    elif pid == -1:
        inits = (k.init, ns.init)
        targets = [g for g in k.thread_groups.values() if g not in inits and g is not t.tg] + [t.tg]
    else:
        targets = [g for g in k.thread_groups.values() if g.pgid == ns.kernel_id(-pid)]
    targets = [g for g in targets if g.tasks and ns.sees(g)]
    if not targets:
        raise SyscallError(C.ESRCH)
    sent = 0
    for g in targets:
        try:
            send_to(t, g, sig)
            sent += 1
        except SyscallError:
            pass
    if not sent:
        raise SyscallError(C.EPERM)
    return 0


def _thread(t, tgid: int, tid: int):
    task = t.pidns.task(tid)
    if task is None or task.exited or (tgid > 0 and t.pidns.pid_of(task.tg) != tgid):
        raise SyscallError(C.ESRCH)
    return task


def _tkill(t, tgid: int, tid: int, sig: int, info: bytes | None = None) -> int:
    sig = s32(sig)
    if tid <= 0 or not 0 <= sig <= C.NSIG:
        raise SyscallError(C.EINVAL)
    task = _thread(t, tgid, tid)
    if not _may_signal(t, task.tg):
        raise SyscallError(C.EPERM)
    if sig:
        signals.send(t.kernel, task.tg, sig, info or _user_info(t, sig, signals.SI_TKILL), task=task)
    return 0


@syscall()
def tkill(t, tid, sig, *_):
    return _tkill(t, -1, s32(tid), sig)


@syscall()
def tgkill(t, tgid, tid, sig, *_):
    if s32(tgid) <= 0:
        raise SyscallError(C.EINVAL)
    return _tkill(t, s32(tgid), s32(tid), sig)


def _queued_info(t, sig: int, uinfo: int, target_pid: int) -> bytes:
    """A siginfo the caller wrote: only negative codes may be forged for
    another process (the kernel's own codes could otherwise be faked)."""
    info = bytearray(t.mem.read(uinfo, 128))
    code = int.from_bytes(info[8:12], "little", signed=True)
    if (code >= 0 or code == signals.SI_TKILL) and target_pid != t.pidns.id_of(t.tg.pid):
        raise SyscallError(C.EPERM)
    info[0:4] = sig.to_bytes(4, "little")
    return bytes(info)


@syscall()
def rt_sigqueueinfo(t, pid, sig, uinfo, *_):
    sig = _valid(sig)
    tg = t.pidns.tg(s32(pid))
    if tg is None:
        raise SyscallError(C.ESRCH)
    send_to(t, tg, sig, _queued_info(t, sig, uinfo, s32(pid)))
    return 0


@syscall()
def rt_tgsigqueueinfo(t, tgid, tid, sig, uinfo, *_):
    sig = _valid(sig)
    return _tkill(t, s32(tgid), s32(tid), sig, _queued_info(t, sig, uinfo, s32(tgid)))


@syscall()
def pidfd_send_signal(t, pidfd, sig, uinfo, flags, *_):
    f = t.fdtable.get(s32(pidfd))
    tg = getattr(f, "thread_group", None)
    if tg is None:
        raise SyscallError(C.EBADF)
    sig = s32(sig)
    if flags or not 0 <= sig <= C.NSIG:
        raise SyscallError(C.EINVAL)
    if not tg.alive or not tg.tasks:
        raise SyscallError(C.ESRCH)
    if sig:
        send_to(t, tg, sig, _queued_info(t, sig, uinfo, t.pidns.pid_of(tg)) if uinfo else None)
    return 0
