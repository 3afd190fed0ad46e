"""Kernel objects for processes: credentials, fs context, thread groups, tasks."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pysc.core.abi import consts as C
from pysc.core.fdtable import FDTable
from pysc.core.record import Factory, Record
from pysc.core.signals import SigHand, SigPending
from pysc.core.waitqueue import WaitQueue

if TYPE_CHECKING:
    from pysc.core.kernel import Kernel
    from pysc.core.pidns import PIDNamespace
    from pysc.core.vfs import VFS, Dentry

CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 0, 1, 2, 3
CAP_KILL, CAP_SETGID, CAP_SETUID = 5, 6, 7
CAP_SYS_ADMIN = 21
CAP_LAST = 40
ALL_CAPS = (1 << (CAP_LAST + 1)) - 1


class Credentials(Record):
    """A task's ids and capabilities (Linux ``struct cred``)."""
    uid: int = 0
    gid: int = 0
    euid: int = 0
    egid: int = 0
    suid: int = 0
    sgid: int = 0
    fsuid: int = 0
    fsgid: int = 0
    groups: tuple[int, ...] = ()
    cap_effective: int = ALL_CAPS
    cap_permitted: int = ALL_CAPS
    cap_inheritable: int = 0
    cap_bounding: int = ALL_CAPS
    cap_ambient: int = 0
    no_new_privs: bool = False

    @classmethod
    def for_ids(cls, uid: int, gid: int, groups: tuple[int, ...] = (),
                caps: int | None = None) -> "Credentials":
        if caps is None:
            caps = ALL_CAPS if uid == 0 else 0
        return cls(uid, gid, uid, gid, uid, gid, uid, gid, tuple(groups),
                   caps, caps, 0, ALL_CAPS if caps else ALL_CAPS, 0)

    def has_cap(self, cap: int) -> bool:
        return bool(self.cap_effective & (1 << cap))

    def has_cap_dac_override(self) -> bool:
        return self.has_cap(CAP_DAC_OVERRIDE)

    def copy(self) -> "Credentials":
        return self.evolve()


class FSContext(Record, eq=False):
    """cwd, root and umask; shared between tasks cloned with CLONE_FS."""
    root: "Dentry"
    cwd: "Dentry"
    umask: int = 0o022

    def copy(self) -> "FSContext":
        return FSContext(self.root, self.cwd, self.umask)


class Rlimits(Record, eq=False):
    limits: dict[int, tuple[int, int]] = Factory(dict)

    LINUX: ClassVar[dict[int, tuple[int, int]]] = {  # what Linux gives init
        C.RLIMIT_CPU: (C.RLIM_INFINITY, C.RLIM_INFINITY),
        C.RLIMIT_FSIZE: (C.RLIM_INFINITY, C.RLIM_INFINITY),
        C.RLIMIT_DATA: (C.RLIM_INFINITY, C.RLIM_INFINITY),
        C.RLIMIT_STACK: (8 << 20, C.RLIM_INFINITY),
        C.RLIMIT_CORE: (0, C.RLIM_INFINITY),
        C.RLIMIT_RSS: (C.RLIM_INFINITY, C.RLIM_INFINITY),
        C.RLIMIT_NPROC: (C.RLIM_INFINITY, C.RLIM_INFINITY),
        C.RLIMIT_NOFILE: (1024, 1048576),
        C.RLIMIT_MEMLOCK: (8 << 20, 8 << 20),
        C.RLIMIT_AS: (C.RLIM_INFINITY, C.RLIM_INFINITY),
        C.RLIMIT_LOCKS: (C.RLIM_INFINITY, C.RLIM_INFINITY),
        C.RLIMIT_SIGPENDING: (95000, 95000),
        C.RLIMIT_MSGQUEUE: (819200, 819200),
        C.RLIMIT_NICE: (0, 0),
        C.RLIMIT_RTPRIO: (0, 0),
        C.RLIMIT_RTTIME: (C.RLIM_INFINITY, C.RLIM_INFINITY),
    }

    def get(self, res: int) -> tuple[int, int]:
        return self.limits.get(res, self.LINUX[res])

    def set(self, res: int, soft: int, hard: int) -> None:
        self.limits[res] = (soft, hard)

    def copy(self) -> "Rlimits":
        return Rlimits(dict(self.limits))


class ThreadGroup:
    """A process: pid, parent and children, exit status, rlimits, argv/exe."""

    def __init__(self, kernel: "Kernel", pid: int, parent: "ThreadGroup | None"):
        self.kernel = kernel
        self.pid = pid
        self.parent = parent
        self.children: list[ThreadGroup] = []
        self.tasks: list[Task] = []
        # the namespace its numbers are seen in (getpid, kill, /proc): its parent's
        self.pidns: "PIDNamespace" = parent.pidns if parent else kernel.root_pidns
        self.pgid = parent.pgid if parent else pid
        self.sid = parent.sid if parent else pid
        self.rlimits = parent.rlimits.copy() if parent else Rlimits()
        self.nice = parent.nice if parent else 0  # where the Sentry keeps it (kvm)
        self.posix_timers: dict[int, Any] = {}  # timer_create's, where the Sentry runs them (kvm)
        self.exit_status: int | None = None  # a wait status once all tasks exited
        self.reaped = False
        self.exe: "Dentry | None" = parent.exe if parent else None
        self.comm: bytes = parent.comm if parent else b""
        self.start_time = kernel.clock_ticks()
        self.child_exit = WaitQueue()  # notified when a child changes state
        self.exited_wq = WaitQueue()  # notified when this process has exited (pidfds)
        self.exit_signal = C.SIGCHLD
        self.platform_data: dict[str, Any] = {}
        # Kept by the Sentry where it delivers signals itself (kvm):
        self.sighand = SigHand()
        self.shared_pending = SigPending()
        self.stopped = False
        self.group_exit: int | None = None  # the wait status every thread exits with
        self.mm = None  # the address space, where the Sentry owns it
        self.argv: list[bytes] = []
        self.envp: list[bytes] = []
        if parent is not None:
            parent.children.append(self)

    @property
    def leader(self) -> "Task | None":
        for t in self.tasks:
            if t.tid == self.pid:
                return t
        return self.tasks[0] if self.tasks else None

    @property
    def alive(self) -> bool:
        return self.exit_status is None

    def __repr__(self) -> str:
        return f"ThreadGroup(pid={self.pid})"


class Task:
    """A thread: the unit the platform runs and the syscall handlers get."""

    def __init__(self, kernel: "Kernel", tg: ThreadGroup, tid: int, creds: Credentials,
                 fs: FSContext, fdtable: FDTable, ctx: Any = None):
        self.kernel = kernel
        self.tg = tg
        self.tid = tid
        self.creds = creds
        self.fs = fs
        self.fdtable = fdtable
        self.ctx = ctx  # the platform's context for this thread
        self.exited = False
        self.parked: Any = None  # the platform's record of a blocked call
        self.clear_child_tid = 0
        self.restart_deadline = None  # (call key, deadline) kept while a timed call is re-run
        # Kept by the Sentry where it delivers signals itself (kvm):
        self.sigmask = 0
        self.saved_sigmask: int | None = None  # restored after a handler (rt_sigsuspend, ppoll)
        self.sigwait = 0  # signals it waits for in rt_sigtimedwait
        self.pending = SigPending()
        self.altstack = (0, 2, 0)  # ss_sp, ss_flags (SS_DISABLE), ss_size
        self.robust_list = (0, 0)
        # Scheduling policy and I/O priority, where the Sentry keeps them (kvm).
        self.sched_policy = C.SCHED_OTHER
        self.sched_reset_on_fork = False
        self.ioprio = 0
        tg.tasks.append(self)

    @property
    def mem(self):
        return self.ctx.mem

    @property
    def pid(self) -> int:
        return self.tg.pid

    @property
    def pidns(self) -> "PIDNamespace":
        return self.tg.pidns

    @property
    def vfs(self) -> "VFS":
        """The mount tree (namespace) the task's paths resolve in: its container's."""
        return self.fs.root.mount.vfs

    def __repr__(self) -> str:
        return f"Task(tid={self.tid}, pid={self.tg.pid})"
