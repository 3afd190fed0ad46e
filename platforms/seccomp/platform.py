"""The seccomp platform: app threads are host processes whose emulated calls
reach the Sentry as seccomp user notifications.

The delegated set runs natively with no stop at all.  An emulated call is
received and answered on this one thread (SYNC_WAKE_UP makes the round trip
cheap without pinning).  A call that must wait stays unanswered ("parked")
while the others are served; WAIT_KILLABLE_RECV holds back signals once a
call was received, so the Sentry interrupts parked calls itself: when a
signal the thread does not block is pending, it answers -ERESTART*, and the
host kernel runs the handler and restarts or fails the call as Linux does.

The host kernel is not asked for events.  fork and clone run natively (a
notified fork could fail with EINTR when a signal comes before the Sentry
receives it, which a native fork never does).  Before it serves any call of
a process, the Sentry reads its threads' /proc children lists (a held-open
fd, about 1 us) and adopts new children then: nothing the child inherited
can have changed in the Sentry since the fork, as only the parent's own
calls change it.  exit and exit_group are notified so that children are
adopted before their parent is gone.  A new thread is adopted at its first
call.  Exits come from a pidfd per thread, and a successful execve shows as
the old address space being gone.  execve runs
in the host kernel on the exec root (see hostproc/execroot.py); mmap of a
file gets the host file installed at the fd number the app passed (ADDFD).
"""
from __future__ import annotations

import collections
import logging
import os
import select
import signal
import time

from pysc.core.abi import consts as C
from pysc.core.abi.sysnums import SYSCALLS
from pysc.core.dispatch import CONTINUE
from pysc.core.errors import SyscallError, TaskGone, WouldBlock
from pysc.core.exec import elf_interpreter, exec_fd
from pysc.core.sandbox_paths import state_dir
from pysc.platforms.hostproc import seccomp
from pysc.platforms.hostproc.base import (HostProcessPlatform, HostWaits, exit_status_of, ns_pids_of,
                                          proc_status_fields)
from pysc.platforms.hostproc.execroot import ExecRoot
from pysc.platforms.hostproc.memory import ProcMemory
from pysc.platforms.hostproc.spawn import spawn_init, spawn_joined
from pysc.platforms.seccomp import notify
from pysc.platforms.seccomp.notify import Listener

log = logging.getLogger("pysc.seccomp")

THREAD_FLAGS = (C.CLONE_VM | C.CLONE_FS | C.CLONE_FILES | C.CLONE_SIGHAND | C.CLONE_THREAD
                | C.CLONE_SYSVSEM)
KILL_CALLS = frozenset(SYSCALLS[n] for n in ("kill", "tkill", "tgkill", "rt_sigqueueinfo",
                                              "rt_tgsigqueueinfo", "pidfd_send_signal"))
RESTART_ERRNO = {"sys": C.ERESTARTSYS, "nohand": C.ERESTARTNOHAND, "nointr": C.ERESTARTNOINTR}
FILTER_FLAGS = notify.FILTER_FLAG_NEW_LISTENER | notify.FILTER_FLAG_WAIT_KILLABLE_RECV
LISTENER_FD = 3  # where init's filter puts its listener (0-2 are the only fds open)
SIGNAL_POLL = 0.02  # how often parked threads are checked for signals from elsewhere
MASK64 = (1 << 64) - 1


class MM:
    """Per address space: its memory, and which file each host fd number
    mirrors (installed for mmap)."""

    def __init__(self, pid: int, installed: dict | None = None):
        self.mem = ProcMemory(pid)
        self.installed: dict[int, object] = installed if installed is not None else {}
        self.refs = 1

    def drop(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.mem.close()


class SeccompContext:
    """One app thread."""

    def __init__(self, platform: "SeccompPlatform", tid: int, mm: MM, host_tgid: int):
        self.platform = platform
        self.tid = tid
        self.host_tgid = host_tgid
        self.mm = mm
        self.task = None
        self.listener: Listener | None = None
        self.notif: tuple | None = None  # (id, nr, args) of the call served or parked
        self.parked: str | None = None  # the parked call's restart class
        self.queued = False
        self.pending_exec = None
        self.children_fd = -1  # /proc/TGID/task/TID/children, read before each call of the group
        self.children_seen = b""
        self.vm_parent: int | None = None  # a vfork child: the host pid it shares memory with
        self.pidfd = -1

    @property
    def mem(self) -> ProcMemory:
        return self.mm.mem

    def wake(self) -> None:
        if not self.queued:
            self.queued = True
            self.platform.ready.append(self)

    # --- host fds the app needs ---
    def _install(self, srcfd: int, number: int) -> None:
        try:
            self.listener.addfd(self.notif[0], srcfd, number, notify.ADDFD_FLAG_SETFD)
        except OSError as e:
            if e.errno == C.ENOENT:
                raise TaskGone() from None
            raise SyscallError(e.errno or C.EIO) from None

    def map_file(self, vfd: int, file) -> object:
        """The host maps the file itself: its host fd goes to the number the
        app passed, once per address space and number."""
        if self.mm.installed.get(vfd) is not file:
            hostfd = file.host_fd()
            if hostfd is None:
                raise SyscallError(C.ENODEV)
            self._install(hostfd, vfd)
            self.mm.installed[vfd] = file
        return CONTINUE

    def map_anonymous(self, vfd: int, file, flags: int) -> object:
        return self.map_file(vfd, file)  # its host fd is /dev/zero

    def wait_pidfd(self, vfd: int, tg) -> object:
        """waitid(P_PIDFD): a host pidfd of the process goes to that number."""
        if not tg.tasks:
            raise SyscallError(C.ECHILD)
        pidfd = notify.pidfd_open(tg.tasks[0].ctx.tid)
        try:
            self._install(pidfd, vfd)
        finally:
            os.close(pidfd)
        self.mm.installed[vfd] = None
        return CONTINUE

    def clone_flags(self, flags: int) -> object:
        return CONTINUE  # nothing traces app processes here: the flags mean nothing

    # --- exec ---
    def exec_image(self, hostfd: int, argv, argv_ptr: int, envp_ptr: int, info) -> object:
        """Put every file the host kernel will open for this execve where it
        will look, then let the call go on."""
        root = self.platform.exec_root
        t = self.task
        try:
            first_path, first = info.chain[0]
            if info.flags & C.AT_EMPTY_PATH and not info.path:
                fd = exec_fd(first)
                try:
                    self._install(fd, info.dirfd)
                finally:
                    os.close(fd)
                self.mm.installed[info.dirfd] = None
            elif info.path.startswith(b"/") or info.dirfd == C.AT_FDCWD:
                root.place(info.path, first)
            else:  # relative to a directory fd: mirror that directory
                base = t.fdtable.get(info.dirfd).dentry.path()
                dirfd = os.open(root.directory(base), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    self._install(dirfd, info.dirfd)
                finally:
                    os.close(dirfd)
                self.mm.installed[info.dirfd] = None
                root.place(info.path, first, base)
            for path, d in info.chain[1:]:
                root.place(path, d)
            interp = elf_interpreter(hostfd)  # the Sentry's fd of the ELF file
            if interp is not None:
                root.place(interp, t.vfs.walk(t, t.fs.cwd, interp, True))
        except OSError as e:
            raise SyscallError(e.errno or C.EIO) from None
        self.pending_exec = info
        return CONTINUE


class SeccompPlatform(HostProcessPlatform):
    """App threads are host processes; emulated calls arrive as seccomp notifications."""
    name = "seccomp"
    delegated = seccomp.DELEGATED - {"exit", "exit_group"}
    delegates = delegated | {"mmap (MAP_ANONYMOUS)", "clone (no namespace flags)"}

    @classmethod
    def available(cls) -> str | None:
        try:
            fd = notify.pidfd_open(os.getpid(), notify.PIDFD_THREAD)
            os.close(fd)
        except OSError:
            return "needs Linux 6.9 or later (pidfds of threads, seccomp WAIT_KILLABLE_RECV)"
        return None

    def __init__(self, kernel, config):
        self.kernel = kernel
        self.config = config
        self.contexts: dict[int, SeccompContext] = {}
        self.by_pidfd: dict[int, SeccompContext] = {}
        self.groups: dict[int, list[SeccompContext]] = {}  # host tgid -> its threads
        self.listeners: dict[int, Listener] = {}
        self.ready: collections.deque = collections.deque()
        self.parked: set[SeccompContext] = set()
        self.calls: collections.deque = collections.deque()
        self.children: list[int] = []  # host children to reap (holder, exec joiners)
        self.joiners: dict[int, int] = {}  # host pid of an exec'd process -> its parent, our child
        self.ep = select.epoll()
        self.doorbell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.ep.register(self.doorbell, select.EPOLLIN)
        self.exec_root: ExecRoot | None = None
        self.signal_check_at: float | None = None
        self.filter = seccomp.build_filter(seccomp.SECCOMP_RET_USER_NOTIF, self.delegated)

    # --- start ---
    def start(self, root: str, exec_path: bytes, argv: list[bytes], env: dict[bytes, bytes],
              new_net: bool, make_init, hold: bool = False) -> None:
        """Spawn init chrooted into a fresh exec root; ``make_init(ctx)`` creates
        its Task.  With ``hold``, init waits before its first exec until release()."""
        self.exec_root = ExecRoot(state_dir(self.config))
        sp = spawn_init(self.exec_root.path, self.filter, new_net, None, exec_path, argv, env,
                        filter_flags=FILTER_FLAGS)
        self.spawned = sp
        self.children.append(sp.holder_pid)
        ctx = self._new_context(sp.init_pid, MM(sp.init_pid), sp.init_pid)
        make_init(ctx)
        if not hold:
            self.release()

    def release(self) -> None:
        sp = self.spawned
        if sp is not None and sp.go_fd >= 0:
            super().release()
            self.call_soon(lambda: self._take_listener(sp.init_pid))

    def _take_listener(self, pid: int) -> None:
        """Take the listener of the filter ``pid`` just installed (it then
        waits in its first notified call) with pidfd_getfd."""
        deadline = time.monotonic() + 10
        path = f"/proc/{pid}/fd/{LISTENER_FD}"
        while True:
            try:
                if os.readlink(path) == "anon_inode:seccomp notify":
                    break
            except OSError:
                if not os.path.exists(f"/proc/{pid}"):
                    return
            if time.monotonic() > deadline:
                log.error("seccomp: process %d installed no filter", pid)
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.0002)
        pidfd = notify.pidfd_open(pid)
        try:
            listener = Listener(notify.pidfd_getfd(pidfd, LISTENER_FD))
        finally:
            os.close(pidfd)
        self.listeners[listener.fd] = listener
        self.ep.register(listener.fd, select.EPOLLIN)
        ctx = self.contexts.get(pid)
        if ctx is not None:
            ctx.listener = listener

    def spawn_process(self, root: str, exec_path: bytes, argv: list[bytes], env: dict[bytes, bytes],
                      make_task, pidns=None) -> int:
        """Start another app process in the sandbox (on the loop thread), in
        ``pidns`` (default: the sandbox's); ``make_task(ctx, tid, ns_ids)``
        creates its Task.  Returns its host pid."""
        sp = spawn_joined(self.spawned.holder_pid, self.exec_root.path, self.filter, None, exec_path,
                          argv, env, filter_flags=FILTER_FLAGS, **self.pidns_args(pidns))
        self.joiners[sp.init_pid] = sp.holder_pid
        ctx = self._new_context(sp.init_pid, MM(sp.init_pid), sp.init_pid)
        tid, *ns_ids = ns_pids_of(sp.init_pid)
        make_task(ctx, tid, tuple(ns_ids))
        os.write(sp.go_fd, b"g")
        os.close(sp.go_fd)
        self._take_listener(sp.init_pid)
        return sp.init_pid

    def _new_context(self, tid: int, mm: MM, host_tgid: int) -> SeccompContext:
        ctx = SeccompContext(self, tid, mm, host_tgid)
        try:
            ctx.pidfd = notify.pidfd_open(tid, notify.PIDFD_THREAD)
            self.ep.register(ctx.pidfd, select.EPOLLIN)
            self.by_pidfd[ctx.pidfd] = ctx
        except OSError:
            pass  # already gone: its exit is noticed when its group's leader goes
        try:
            ctx.children_fd = os.open(f"/proc/{host_tgid}/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass
        self.contexts[tid] = ctx
        self.groups.setdefault(host_tgid, []).append(ctx)
        return ctx

    # --- work from other threads (the control server) ---
    def call_soon(self, fn) -> None:
        """Run ``fn()`` on the loop thread (thread-safe)."""
        self.calls.append(fn)
        os.eventfd_write(self.doorbell, 1)

    # --- the loop ---
    def run(self) -> None:
        """Serve the sandbox until init's process is gone."""
        kernel = self.kernel
        ep = self.ep
        waits = HostWaits(ep, kernel)
        listeners, by_pidfd = self.listeners, self.by_pidfd
        self._run_calls()
        while self.contexts and kernel.exit_status is None:
            timeout = kernel.next_timeout()
            if self.signal_check_at is not None:
                wait = max(0.0, self.signal_check_at - time.monotonic())
                timeout = wait if timeout is None else min(timeout, wait)
            if kernel.host_waits or waits.watched:
                waits.sync()
            for fd, revents in ep.poll(-1 if timeout is None else timeout):
                listener = listeners.get(fd)
                if listener is not None:
                    if revents & select.EPOLLIN:
                        self.receive(listener)
                    elif revents & (select.EPOLLHUP | select.EPOLLERR):
                        self._drop_listener(listener)
                    continue
                ctx = by_pidfd.get(fd)
                if ctx is not None:
                    self.exited(ctx)
                elif fd == self.doorbell:
                    try:
                        os.eventfd_read(fd)
                    except BlockingIOError:
                        pass
                    self._run_calls()
                elif fd in waits:
                    kernel.host_fd_ready(fd, revents)
            if timeout is not None:
                kernel.run_timers()
            if self.ready:
                self.run_ready()
            if self.signal_check_at is not None and time.monotonic() >= self.signal_check_at:
                self.check_signals()

    def _drop_listener(self, listener: Listener) -> None:
        self.listeners.pop(listener.fd, None)
        try:
            self.ep.unregister(listener.fd)
        except OSError:
            pass
        listener.close()

    def receive(self, listener: Listener) -> None:
        try:
            nid, pid, _, nr, _, ip, a0, a1, a2, a3, a4, a5 = listener.recv()
        except OSError:
            return  # the caller died or was interrupted meanwhile
        ctx = self.contexts.get(pid)
        if ctx is None:
            ctx = self.adopt(pid, listener)
            if ctx is None:
                listener.send(nid, 0, -C.ESRCH)
                return
        ctx.listener = listener
        if ctx.tid == ctx.host_tgid and ctx.pending_exec is None and len(self.groups[ctx.host_tgid]) > 1:
            self.took_leader(ctx)
        if ctx.pending_exec is not None:
            self.check_exec(ctx, ip)
        ctx.notif = (nid, nr, (a0, a1, a2, a3, a4, a5))
        self.serve(ctx)

    def serve(self, ctx: SeccompContext) -> None:
        """Run the handler of ctx's call and answer it (or park it)."""
        nid, nr, args = ctx.notif
        task = ctx.task
        for c in self.groups[ctx.host_tgid]:
            if c.children_fd >= 0:
                self.adopt_children(c)
        try:
            result = self.kernel.dispatch(task, nr, args)
        except WouldBlock as wb:
            self.kernel.park(task, wb)
            ctx.parked = wb.restart
            self.parked.add(ctx)
            if self.signal_check_at is None:
                self.signal_check_at = time.monotonic() + SIGNAL_POLL
            return
        except TaskGone:
            return
        except Exception:
            log.exception("seccomp: error handling syscall %d of %d", nr, ctx.tid)
            ctx.listener.send(nid, 0, -C.ENOSYS)
            return
        if result is CONTINUE:
            if nr in KILL_CALLS:
                self.check_signals_soon()
            ctx.listener.send(nid, 0, 0, notify.USER_NOTIF_FLAG_CONTINUE)
        elif -4096 < result < 0:
            ctx.listener.send(nid, 0, result)
        else:
            result &= MASK64
            ctx.listener.send(nid, result - (1 << 64) if result >> 63 else result)

    def run_ready(self) -> None:
        """Re-run the handlers of parked calls whose condition may hold now."""
        while self.ready:
            ctx = self.ready.popleft()
            ctx.queued = False
            if ctx.parked is None or ctx.tid not in self.contexts:
                continue
            ctx.parked = None
            self.parked.discard(ctx)
            if not ctx.listener.id_valid(ctx.notif[0]):
                continue  # killed while parked; its pidfd reports the exit
            self.serve(ctx)

    # --- signals to parked calls ---
    def check_signals_soon(self) -> None:
        soon = time.monotonic() + 0.0005
        if self.signal_check_at is None or soon < self.signal_check_at:
            self.signal_check_at = soon

    def check_signals(self) -> None:
        """Interrupt each parked call whose thread has a signal pending that
        it does not block: the host kernel then delivers it and restarts or
        fails the call according to the handler's SA_RESTART."""
        for ctx in list(self.parked):
            try:
                f = proc_status_fields(ctx.tid, (b"SigPnd", b"ShdPnd", b"SigBlk"))
                if (f[b"SigPnd"] | f[b"ShdPnd"]) & ~f[b"SigBlk"]:
                    self.interrupt(ctx)
            except (OSError, KeyError):
                continue
        self.signal_check_at = time.monotonic() + SIGNAL_POLL if self.parked else None

    def interrupt(self, ctx: SeccompContext) -> None:
        restart = ctx.parked
        ctx.parked = None
        self.parked.discard(ctx)
        task = ctx.task
        self.kernel.unpark(task)
        task.restart_deadline = None  # a signal ends the call; a restarted one has a new timeout
        ctx.listener.send(ctx.notif[0], 0, -RESTART_ERRNO[restart])

    def signal_init(self, sig: int) -> None:
        super().signal_init(sig)
        self.check_signals_soon()

    # --- new threads and processes ---
    def adopt_children(self, ctx: SeccompContext) -> None:
        """Adopt the children ctx's thread forked since the Sentry last looked."""
        try:
            data = os.pread(ctx.children_fd, 65536, 0)
        except OSError:
            return
        if data == ctx.children_seen:
            return
        ctx.children_seen = data
        for pid in data.split():
            pid = int(pid)
            if pid not in self.contexts:
                self.adopt_process(ctx, pid)

    def adopt_process(self, parent: SeccompContext, pid: int) -> SeccompContext:
        """A child process ``parent`` forked natively; what it shares with its
        parent is read back with kcmp."""
        flags = exit_signal_of(pid)
        for kind, flag in ((notify.KCMP_VM, C.CLONE_VM), (notify.KCMP_FILES, C.CLONE_FILES),
                           (notify.KCMP_FS, C.CLONE_FS)):
            if notify.kcmp_same(pid, parent.tid, kind):
                flags |= flag
        # A vfork child shares memory and, until it execs, the unchanged host
        # fd table of its suspended parent; a forked one starts afresh.
        shared_vm = bool(flags & C.CLONE_VM)
        ctx = self._new_context(pid, MM(pid, dict(parent.mm.installed) if shared_vm else None), pid)
        if shared_vm:
            ctx.vm_parent = parent.tid
        ctx.listener = parent.listener
        tid, *ns_ids = ns_pids_of(pid)
        ctx.task = self.kernel.clone_task(parent.task, tid, flags, ctx, tuple(ns_ids))
        return ctx

    def adopt(self, tid: int, listener: Listener) -> SeccompContext | None:
        """A thread never seen before, at its first call: a new thread of a
        known process, or a process whose parent has made no call since."""
        try:
            st = proc_status_fields(tid, (b"Tgid", b"PPid"))
        except (OSError, KeyError):
            return None
        tgid = st[b"Tgid"]
        if tgid == tid:
            parents = self.groups.get(st[b"PPid"], ())
            for c in parents:
                if c.children_fd >= 0:
                    self.adopt_children(c)
            ctx = self.contexts.get(tid)
            if ctx is None and parents:  # e.g. made with CLONE_PARENT
                ctx = self.adopt_process(parents[0], tid)
            return ctx
        group = self.groups.get(tgid)
        if not group:
            return None
        maker = group[0]
        maker.mm.refs += 1
        ctx = self._new_context(tid, maker.mm, tgid)
        ctx.listener = listener
        ktid, *ns_ids = ns_pids_of(tid)
        ctx.task = self.kernel.clone_task(maker.task, ktid, THREAD_FLAGS, ctx, tuple(ns_ids))
        return ctx

    # --- exec and exit ---
    def check_exec(self, ctx: SeccompContext, ip: int) -> None:
        """At the first call after an execve went on: did it succeed?  The old
        address space is gone if it did."""
        info, ctx.pending_exec = ctx.pending_exec, None
        if ctx.vm_parent is not None:
            execd = not notify.kcmp_same(ctx.tid, ctx.vm_parent, notify.KCMP_VM)
        else:
            try:
                execd = os.pread(ctx.mm.mem.fd, 1, ip) == b""
            except OSError:
                execd = True  # the calling code is not mapped in the old space
        if not execd:
            return
        ctx.mm.drop()
        ctx.mm = MM(ctx.tid)
        ctx.vm_parent = None
        self.kernel.exec_done(ctx.task, info)

    def took_leader(self, leader: SeccompContext) -> None:
        """Did a thread other than the leader exec?  The host kernel then gave
        it the leader's tid (de_thread), so from now on the leader's context
        runs that thread's task, and the thread's own pidfd reports the end of
        the old leader."""
        for c in self.groups.get(leader.host_tgid, ()):
            if c is leader or c.pending_exec is None or not _pidfd_exited(c.pidfd):
                continue
            leader.task, c.task = c.task, leader.task
            leader.task.ctx, c.task.ctx = leader, c
            leader.pending_exec, c.pending_exec = c.pending_exec, None
            task, kernel = leader.task, self.kernel
            if kernel.tasks.get(task.tid) is task:
                del kernel.tasks[task.tid]
            task.tid = task.tg.pid
            kernel.tasks[task.tid] = task
            return

    def exited(self, ctx: SeccompContext) -> None:
        if ctx.pending_exec is not None and ctx.tid != ctx.host_tgid and ctx.host_tgid in self.contexts:
            self.took_leader(self.contexts[ctx.host_tgid])
        try:
            self.ep.unregister(ctx.pidfd)
        except OSError:
            pass
        os.close(ctx.pidfd)
        if ctx.children_fd >= 0:
            os.close(ctx.children_fd)
        self.by_pidfd.pop(ctx.pidfd, None)
        self.contexts.pop(ctx.tid, None)
        group = self.groups.get(ctx.host_tgid)
        if group is not None:
            group.remove(ctx)
            if not group:
                del self.groups[ctx.host_tgid]
        self.parked.discard(ctx)
        ctx.parked = None
        ctx.mm.drop()
        status = exit_status_of(ctx.host_tgid)
        joiner = self.joiners.pop(ctx.tid, None)
        if joiner is not None:  # its parent, which reaps it, ends with its status
            try:
                _, joined = os.waitpid(joiner, 0)
                status = joined if status is None else status
            except ChildProcessError:
                pass
        if ctx.task is not None:
            self.kernel.task_exited(ctx.task, status or 0)
        if self.parked:
            self.check_signals_soon()  # SIGCHLD to a parent waiting in the Sentry

    # --- the end ---
    def kill_all(self) -> None:
        super().kill_all()
        for pid in self.children + list(self.joiners.values()):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.children.clear()
        self.joiners.clear()
        for listener in list(self.listeners.values()):
            self._drop_listener(listener)
        for ctx in list(self.contexts.values()):
            for fd in (ctx.pidfd, ctx.children_fd):
                if fd >= 0:
                    os.close(fd)
        self.contexts.clear()
        self.groups.clear()
        self.by_pidfd.clear()
        if self.exec_root is not None:
            self.exec_root.remove()
            self.exec_root = None


def _pidfd_exited(pidfd: int) -> bool:
    if pidfd < 0:
        return False
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(0))


def exit_signal_of(pid: int) -> int:
    """The signal a process sends its parent when it ends (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[35])
    except (OSError, ValueError, IndexError):
        return C.SIGCHLD
