"""Signals kept and delivered by the Sentry, for platforms where the host
kernel does not run the app's threads (kvm).

What Linux keeps in ``sighand_struct``, ``signal_struct`` and ``task_struct``
lives here as SigHand (the actions, shared by CLONE_SIGHAND), a thread
group's shared pending set and a task's own pending set, mask and alternate
stack.  Sending queues a signal and wakes a thread that can take it; the
platform's task loop dequeues and delivers on the way back to user mode
(``next_signal``), and builds the frame itself.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pysc.core.abi import consts as C
from pysc.core.record import Record

if TYPE_CHECKING:
    from pysc.core.task import Task, ThreadGroup

SI_USER, SI_KERNEL, SI_TKILL = C.SI_USER, C.SI_KERNEL, C.SI_TKILL
UNBLOCKABLE = (1 << (C.SIGKILL - 1)) | (1 << (C.SIGSTOP - 1))
# Faults are taken before other pending signals, as Linux's SYNCHRONOUS_MASK does.
SYNCHRONOUS = sum(1 << (s - 1) for s in (C.SIGSEGV, C.SIGBUS, C.SIGILL, C.SIGTRAP, C.SIGFPE, C.SIGSYS))
CORE_SIGNALS = frozenset({C.SIGQUIT, C.SIGILL, C.SIGTRAP, C.SIGABRT, C.SIGBUS, C.SIGFPE, C.SIGSEGV,
                          C.SIGXCPU, C.SIGXFSZ, C.SIGSYS})
STOP_MASK = sum(1 << (s - 1) for s in C.SIG_DEFAULT_STOP)


def bit(sig: int) -> int:
    return 1 << (sig - 1)


class SigAction(Record):
    """struct k_sigaction"""
    handler: int = C.SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0


class SigHand:
    """The actions of a thread group (shared between processes made with CLONE_SIGHAND)."""

    def __init__(self, actions: list[SigAction] | None = None):
        self.actions = actions if actions is not None else [SigAction() for _ in range(C.NSIG + 1)]

    def copy(self) -> "SigHand":
        return SigHand([a.evolve() for a in self.actions])

    def reset_for_exec(self) -> None:
        """exec keeps ignored signals ignored and resets handled ones to default."""
        for i, a in enumerate(self.actions):
            if a.handler != C.SIG_IGN:
                self.actions[i] = SigAction()
            else:
                a.flags, a.restorer, a.mask = 0, 0, 0


class SigPending:
    """A set of pending signals: standard ones at most once, real-time ones queued."""
    __slots__ = ("mask", "queue")

    def __init__(self) -> None:
        self.mask = 0
        self.queue: list[tuple[int, bytes]] = []

    def add(self, sig: int, info: bytes) -> bool:
        if sig < C.SIGRTMIN and self.mask & bit(sig):
            return False
        self.mask |= bit(sig)
        self.queue.append((sig, info))
        return True

    def take(self, sig: int) -> bytes:
        for i, (s, info) in enumerate(self.queue):
            if s == sig:
                del self.queue[i]
                if not any(q == sig for q, _ in self.queue):
                    self.mask &= ~bit(sig)
                return info
        self.mask &= ~bit(sig)
        return b""

    def discard(self, mask: int) -> None:
        if self.mask & mask:
            self.queue = [(s, i) for s, i in self.queue if not bit(s) & mask]
            self.mask &= ~mask


def lowest(mask: int) -> int:
    """The lowest signal number in ``mask`` (0 if empty), synchronous ones first."""
    sync = mask & SYNCHRONOUS
    m = sync or mask
    return (m & -m).bit_length() if m else 0


def default_action(sig: int) -> str:
    if sig in (C.SIGKILL,):
        return "kill"
    if sig == C.SIGCONT:
        return "cont"
    if sig in C.SIG_DEFAULT_STOP:
        return "stop"
    if sig in C.SIG_DEFAULT_IGNORE:
        return "ignore"
    return "core" if sig in CORE_SIGNALS else "term"


def ignored(tg: "ThreadGroup", sig: int) -> bool:
    """Whether sending ``sig`` to ``tg`` would do nothing at all (Linux's sig_ignored)."""
    act = tg.sighand.actions[sig]
    if act.handler == C.SIG_IGN:
        return sig != C.SIGKILL and sig != C.SIGSTOP
    return act.handler == C.SIG_DFL and default_action(sig) == "ignore"


def pending_for(task: "Task") -> int:
    """Signals pending for ``task`` that it does not block."""
    return (task.pending.mask | task.tg.shared_pending.mask) & ~task.sigmask


def dequeue(task: "Task") -> tuple[int, bytes] | None:
    own = task.pending.mask & ~task.sigmask
    shared = task.tg.shared_pending.mask & ~task.sigmask
    sig = lowest(own) if own & SYNCHRONOUS or not shared & SYNCHRONOUS else 0
    if sig:
        return sig, task.pending.take(sig)
    sig = lowest(shared)
    if sig:
        return sig, task.tg.shared_pending.take(sig)
    return None


def send(kernel, tg: "ThreadGroup", sig: int, info: bytes, task: "Task | None" = None,
         from_kernel: bool = False) -> None:
    """Queue ``sig`` for the thread group (or just ``task``) and wake a thread
    that can take it.  Signal 0 and zombies do nothing."""
    if sig == 0 or not tg.tasks:
        return
    # As Linux, whether a signal is dropped at once depends on the mask of the
    # task it was sent to: the thread, or for a process the group leader.
    addressee = task or getattr(tg, "leader", None) or tg.tasks[0]
    blocked = bool(addressee.sigmask & bit(sig))
    if (tg is kernel.init or tg.pidns.init is tg) and not from_kernel \
            and tg.sighand.actions[sig].handler == C.SIG_DFL and sig != C.SIGKILL and not blocked:
        return  # the init of a pid namespace gets only the signals it handles or blocks
    if sig == C.SIGKILL:
        kernel.platform.kill_group(tg, C.SIGKILL)
        return
    if sig == C.SIGCONT:
        tg.shared_pending.discard(STOP_MASK)
        for t in tg.tasks:
            t.pending.discard(STOP_MASK)
        if tg.stopped:
            tg.stopped = False
            kernel.platform.continue_group(tg)
    elif bit(sig) & STOP_MASK:
        tg.shared_pending.discard(bit(C.SIGCONT))
        for t in tg.tasks:
            t.pending.discard(bit(C.SIGCONT))
    if ignored(tg, sig) and not blocked:
        return
    target = task
    if task is not None:
        task.pending.add(sig, info)
    else:
        tg.shared_pending.add(sig, info)
        target = next((t for t in tg.tasks if takes(t, sig)), None)
    if target is not None and takes(target, sig):
        kernel.platform.interrupt(target)


def takes(task: "Task", sig: int) -> bool:
    """Whether ``task`` would act on ``sig`` now: it does not block it, or it
    waits for it in rt_sigtimedwait."""
    return not task.sigmask & bit(sig) or bool(task.sigwait & bit(sig))


def force(kernel, task: "Task", sig: int, info: bytes) -> None:
    """A fault the thread caused: if it is blocked or ignored, the default
    action (death) is taken, as Linux's force_sig_info does."""
    act = task.tg.sighand.actions[sig]
    if task.sigmask & bit(sig) or act.handler == C.SIG_IGN:
        task.sigmask &= ~bit(sig)
        task.tg.sighand.actions[sig] = SigAction()
    task.pending.add(sig, info)
