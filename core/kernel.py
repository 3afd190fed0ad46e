"""The Kernel: every kernel object of one sandbox, and the glue between them."""
from __future__ import annotations

import heapq
import itertools
import logging
import socket
import time
from typing import TYPE_CHECKING, Callable

from pysc.core.abi import consts as C
from pysc.core.dispatch import Dispatcher, SyscallTable
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.fdtable import FDTable
from pysc.core.pidns import PID_MAX, PIDNamespace
from pysc.core.plugins import call_in_order
from pysc.core.task import Credentials, FSContext, Task, ThreadGroup

if TYPE_CHECKING:
    from pysc.core.flags import Config
    from pysc.core.vfs import VFS

log = logging.getLogger("pysc.sentry")

UTS_RELEASE = "4.4.0"
UTS_VERSION = "#1 SMP Sun Jan 10 15:06:54 PST 2016"
CLOCK_TICKS = 100


class Kernel:
    """One sandbox's kernel state.  Platforms call in with events; syscall
    handlers reach everything through ``task.kernel``."""

    def __init__(self, config: "Config", pm, platform_name: str, sentry_owned: bool = False):
        self.config = config
        self.pm = pm
        self.platform_name = platform_name
        self.hostname = "pysc"
        self.domainname = "(none)"
        self.release = UTS_RELEASE
        self.version = UTS_VERSION
        self.boot_wall = time.time()
        self.boot_mono = time.monotonic()
        self.vfs: "VFS | None" = None
        self.tasks: dict[int, Task] = {}
        self.thread_groups: dict[int, ThreadGroup] = {}
        self.init: ThreadGroup | None = None
        self.root_pidns = PIDNamespace(self)  # the sandbox's; Kernel ids are its numbers
        self.exit_status: int | None = None  # init's wait status
        self.table = SyscallTable(sentry_owned)
        call_in_order(pm.hook.pysc_syscalls, table=self.table, platform=platform_name)
        self.strace = None
        if config.get("strace"):
            from pysc.core.strace import Strace
            self.strace = Strace.from_config(config)
        self.dispatch = Dispatcher(self, self.table, pm, self.strace)
        self.syslog_lines = self._boot_messages()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self.host_waits: dict[int, dict[object, tuple[int, Callable[[], None]]]] = {}
        self.network = config.get("network", "none")
        self.objects: dict[str, object] = {}  # named kernel-wide objects plugins may share
        self.anon_ino = itertools.count(1000)
        self.current: Task | None = None  # the task whose syscall is being handled
        # Where the Sentry runs the app's threads itself (kvm), it also keeps
        # zombies until they are waited for, and hands out pids.
        self.sentry_reaps = False
        self._last_pid = 0
        self._pids_wrapped = False
        self.on_new_timer: Callable[[], None] | None = None
        # A clock the app also reads without a syscall (kvm's vDSO), with
        # now_ns(clock id) -> ns or None: the Sentry's clock syscalls read it
        # too, so that both ways of asking agree.
        self.guest_clock = None

    # --- boot messages (dmesg) ---
    def _boot_messages(self) -> list[str]:
        lines = [
            "Starting pysc...",
            f"Linux version {self.release} (pysc) {self.version}",
            "Mounting root filesystem...",
            "Setting up procfs and devfs...",
            f"Platform: {self.platform_name}",
            "Ready!",
        ]
        return [f"[{0.001 * i:12.6f}] {line}" for i, line in enumerate(lines)]

    # --- time ---
    def uptime(self) -> float:
        return time.monotonic() - self.boot_mono

    def clock_ticks(self) -> int:
        return int(self.uptime() * CLOCK_TICKS)

    # --- tasks ---
    def new_init(self, tid: int, creds: Credentials, fs: FSContext, fdtable: FDTable, ctx) -> Task:
        task = self.new_process(tid, creds, fs, fdtable, ctx)
        self.init = task.tg
        return task

    def new_process(self, tid: int, creds: Credentials, fs: FSContext, fdtable: FDTable, ctx,
                    pidns: PIDNamespace | None = None, ns_ids: tuple[int, ...] = ()) -> Task:
        """A process started from outside (init, or `exec` into the sandbox),
        in ``pidns`` (default: the sandbox's); a namespace without an init
        gets this process as its init."""
        tg = ThreadGroup(self, tid, None)
        tg.pidns = self.root_pidns if pidns is None else pidns
        task = Task(self, tg, tid, creds, fs, fdtable, ctx)
        self.thread_groups[tid] = tg
        self.tasks[tid] = task
        self._number(tg.pidns, tid, ns_ids)
        if tg.pidns.init is None and not tg.pidns.is_root:
            tg.pidns.init = tg
        return task

    def _number(self, pidns: PIDNamespace, tid: int, ns_ids: tuple[int, ...]) -> None:
        """Give kernel id ``tid`` its numbers in the namespaces below the
        root: ``ns_ids`` (outermost first) where the host chose them, else
        fresh ones."""
        chain = pidns.chain()
        if not chain:
            return
        if len(ns_ids) != len(chain):
            ns_ids = tuple(ns.alloc() for ns in chain)
        for ns, nid in zip(chain, ns_ids):
            ns.add(tid, nid)

    def _release_id(self, kid: int, pidns: PIDNamespace) -> None:
        """Kernel id ``kid`` may have no user left: drop its numbers below the root."""
        if pidns.is_root or kid in self.tasks or kid in self.thread_groups:
            return
        if any(tg.pgid == kid or tg.sid == kid for tg in self.thread_groups.values()):
            return
        for ns in pidns.chain():
            ns.forget(kid)

    def clone_task(self, parent: Task, tid: int, flags: int, ctx, ns_ids: tuple[int, ...] = ()) -> Task:
        """A task made by fork/vfork/clone in ``parent`` with clone ``flags``;
        ``ns_ids`` are its numbers in the namespaces below the root, where
        the host gave them."""
        fdt = parent.fdtable if flags & C.CLONE_FILES else parent.fdtable.copy()
        fs = parent.fs if flags & C.CLONE_FS else parent.fs.copy()
        if flags & C.CLONE_THREAD:
            tg = parent.tg
        else:
            ptg = parent.tg.parent if flags & C.CLONE_PARENT and parent.tg.parent else parent.tg
            tg = ThreadGroup(self, tid, ptg)
            tg.exe, tg.comm, tg.rlimits = parent.tg.exe, parent.tg.comm, parent.tg.rlimits.copy()
            tg.pgid, tg.sid = parent.tg.pgid, parent.tg.sid
            tg.argv, tg.envp = parent.tg.argv, parent.tg.envp
            tg.exit_signal = flags & C.CSIGNAL
            tg.sighand = parent.tg.sighand if flags & C.CLONE_SIGHAND else parent.tg.sighand.copy()
            tg.pidns = parent.tg.pidns
            self.thread_groups[tid] = tg
        task = Task(self, tg, tid, parent.creds.copy(), fs, fdt, ctx)
        task.sigmask = parent.sigmask
        task.ioprio, task.sched_policy = parent.ioprio, parent.sched_policy
        if parent.sched_reset_on_fork and tg.nice < 0:  # no raised priority passes to the child
            tg.nice = 0
        self.tasks[tid] = task
        self._number(tg.pidns, tid, ns_ids)
        return task

    def task_exited(self, task: Task, wait_status: int) -> None:
        """``task`` is gone (``wait_status`` as waitpid reports it)."""
        if task.exited:
            return
        task.exited = True
        self.unpark(task)
        if self.tasks.get(task.tid) is task:  # (an exec may have given its tid to another thread)
            del self.tasks[task.tid]
            self._release_id(task.tid, task.tg.pidns)
        tg = task.tg
        if task in tg.tasks:
            tg.tasks.remove(task)
        self.pm.hook.pysc_task_exit(task=task)
        if not any(t.fdtable is task.fdtable for t in self.tasks.values()):
            task.fdtable.close_all()
        if not tg.tasks:
            self._thread_group_exited(tg, wait_status)

    def _thread_group_exited(self, tg: ThreadGroup, wait_status: int) -> None:
        tg.exit_status = wait_status
        tg.exe = None  # a zombie keeps no file (/proc/PID/exe: ENOENT), nor, through it, a mount tree
        tg.exited_wq.notify()
        locks = self.objects.get("locks")
        if locks is not None:
            locks.release_owner(tg)  # POSIX record locks die with their process
        reaper = tg.pidns.init if tg.pidns.init is not None and tg.pidns.init.alive else self.init
        orphans = [c for c in tg.children if c is not reaper]
        tg.children = []
        for child in orphans:  # reparented to their namespace's init, as Linux does
            child.parent = reaper
            if reaper is not None and reaper is not tg:
                reaper.children.append(child)
        if self.sentry_reaps and reaper is not None and reaper is not tg \
                and any(not c.alive for c in orphans):
            reaper.child_exit.notify()
        if tg is self.init:
            self.exit_status = wait_status
        parent = tg.parent
        if self.sentry_reaps and parent is not None and tg in parent.children:
            self._notify_parent(tg, wait_status)
            return
        if self.thread_groups.get(tg.pid) is tg:
            del self.thread_groups[tg.pid]
            self._release_id(tg.pid, tg.pidns)
        if parent is not None and tg in parent.children:
            parent.children.remove(tg)
            parent.child_exit.notify()

    def _notify_parent(self, tg: ThreadGroup, wait_status: int) -> None:
        """A child became a zombie: signal and wake its parent, or reap it at
        once when the parent ignores SIGCHLD (SIG_IGN or SA_NOCLDWAIT)."""
        from pysc.core import signals
        from pysc.core.sigframe import pack_siginfo
        parent = tg.parent
        act = parent.sighand.actions[C.SIGCHLD]
        if tg.exit_signal:
            if wait_status & 0x7F:
                code, status = (C.CLD_DUMPED if wait_status & 0x80 else C.CLD_KILLED), wait_status & 0x7F
            else:
                code, status = C.CLD_EXITED, wait_status >> 8
            info = pack_siginfo(tg.exit_signal, code, pid=parent.pidns.pid_of(tg), uid=0, status=status)
            signals.send(self, parent, tg.exit_signal, info, from_kernel=True)
        if tg.exit_signal == C.SIGCHLD and (act.handler == C.SIG_IGN or act.flags & C.SA_NOCLDWAIT):
            self.reap(tg)
        parent.child_exit.notify()

    def reap(self, tg: ThreadGroup) -> None:
        """A zombie was waited for: its pid is free again."""
        tg.reaped = True
        if tg.parent is not None and tg in tg.parent.children:
            tg.parent.children.remove(tg)
        if self.thread_groups.get(tg.pid) is tg:
            del self.thread_groups[tg.pid]
            self._release_id(tg.pid, tg.pidns)

    def alloc_pid(self) -> int:
        """A free pid (also used for thread ids), counting up and wrapping as
        Linux does; after a wrap, ids still used as a process group or
        session are skipped too."""
        pid = self._last_pid
        for _ in range(PID_MAX):
            pid += 1
            if pid >= PID_MAX:
                pid, self._pids_wrapped = 300, True
            if pid in self.tasks or pid in self.thread_groups:
                continue
            if self._pids_wrapped and any(tg.pgid == pid or tg.sid == pid
                                          for tg in self.thread_groups.values()):
                continue
            self._last_pid = pid
            return pid
        raise SyscallError(C.EAGAIN)

    def exec_done(self, task: Task, info) -> None:
        """The host kernel loaded the new image: apply what exec means to the Sentry's state."""
        if any(t is not task and t.fdtable is task.fdtable for t in self.tasks.values()):
            task.fdtable = task.fdtable.copy()  # exec unshares the fd table
        task.fdtable.close_on_exec()
        for timer in task.tg.posix_timers.values():  # exec deletes them
            timer.cancel()
        task.tg.posix_timers.clear()
        if info is not None:
            task.tg.exe = info.dentry
            task.tg.comm = info.comm

    def find_tg(self, pid: int) -> ThreadGroup | None:
        return self.thread_groups.get(pid)

    # --- blocking ---
    def park(self, task: Task, wb: WouldBlock) -> None:
        """Record that ``task`` waits for ``wb``; the platform has put it to sleep."""
        key = task
        wake = lambda: self.wake(task)
        for q in wb.queues:
            q.add(key, wake)
        for fd, events in wb.host_fds:
            self.host_waits.setdefault(fd, {})[key] = (events, wake)
        timer = None
        if wb.deadline is not None:
            timer = self.add_timer(wb.deadline, wake)
        task.parked = (wb, timer)

    def unpark(self, task: Task) -> None:
        if task.parked is None:
            return
        wb, timer = task.parked
        task.parked = None
        for q in wb.queues:
            q.remove(task)
        for fd, _ in wb.host_fds:
            waits = self.host_waits.get(fd)
            if waits is not None:
                waits.pop(task, None)
                if not waits:
                    del self.host_waits[fd]
        if timer is not None:
            self.cancel_timer(timer)

    def wake(self, task: Task) -> None:
        """A parked task's condition may hold now: let it run its handler again."""
        if task.parked is None or task.exited:
            return
        self.unpark(task)
        task.ctx.wake()

    # --- timers ---
    def add_timer(self, deadline: float, callback: Callable[[], None]):
        entry = [deadline, next(self._timer_seq), callback]
        heapq.heappush(self._timers, entry)
        if self.on_new_timer is not None and self._timers[0] is entry:
            self.on_new_timer()  # the loop watching the timers sleeps on another thread
        return entry

    def cancel_timer(self, entry) -> None:
        entry[2] = None

    def next_timeout(self) -> float | None:
        while self._timers and self._timers[0][2] is None:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and (self._timers[0][2] is None or self._timers[0][0] <= now):
            _, _, cb = heapq.heappop(self._timers)
            if cb is not None:
                cb()

    def host_fd_ready(self, fd: int, revents: int) -> None:
        for key, (events, wake) in list(self.host_waits.get(fd, {}).items()):
            if revents & (events | C.POLLERR | C.POLLHUP | C.POLLNVAL):
                wake()

    # --- misc ---
    def syslog(self, line: str) -> None:
        self.syslog_lines.append(f"[{self.uptime():12.6f}] {line}")

    def host_hostname(self) -> str:
        return socket.gethostname()
