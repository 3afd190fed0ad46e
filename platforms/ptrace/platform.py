"""The ptrace platform: app threads are host processes stopped by seccomp
RET_TRACE at every emulated syscall, served inline by one tracer thread.

Only emulated calls stop; the delegated set runs natively.  A call that must
wait is parked *natively*: the tracee is switched into pause(2), so a real
signal interrupts it exactly as Linux would, and the Sentry wakes it with
PTRACE_INTERRUPT when its condition may hold; either way the tracee's
registers are set so that the kernel's own restart logic re-issues the call.
"""
from __future__ import annotations

import collections
import ctypes
import logging
import os
import select
import signal
import socket
import struct

from pysc.core.abi import consts as C
from pysc.core.abi.structs import CMSGHDR, IOVEC, MSGHDR, cmsg_space, user_regs_struct
from pysc.core.abi.sysnums import SYSCALLS
from pysc.core.dispatch import CONTINUE
from pysc.core.errors import SyscallError, TaskGone, WouldBlock
from pysc.platforms.hostproc import native, seccomp
from pysc.platforms.hostproc.memory import ProcMemory
from pysc.platforms.hostproc.base import HostProcessPlatform, HostWaits, ns_pids_of
from pysc.platforms.hostproc.spawn import HIDDEN_FD, spawn_init, spawn_joined
from pysc.platforms.hostproc.native import (
    PTRACE_CONT, PTRACE_EVENT_CLONE, PTRACE_EVENT_EXEC, PTRACE_EVENT_FORK, PTRACE_EVENT_SECCOMP,
    PTRACE_EVENT_STOP, PTRACE_EVENT_VFORK, PTRACE_GETEVENTMSG, PTRACE_GETREGS, PTRACE_INTERRUPT,
    PTRACE_LISTEN, PTRACE_SEIZE, PTRACE_SETREGS, PTRACE_SYSCALL, ptrace)
from pysc.platforms.hostproc.native import _ptrace

log = logging.getLogger("pysc.ptrace")

WALL = 0x40000000
NR_PAUSE = SYSCALLS["pause"]
NR_MMAP = SYSCALLS["mmap"]
NR_RECVMSG = SYSCALLS["recvmsg"]
NR_EXECVEAT = SYSCALLS["execveat"]
NR_CLONE, NR_FORK, NR_VFORK = SYSCALLS["clone"], SYSCALLS["fork"], SYSCALLS["vfork"]
MASK64 = (1 << 64) - 1
SCRATCH_SIZE = 64 * 1024
STOP_SIGNALS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
OPTIONS = (native.PTRACE_O_TRACESYSGOOD | native.PTRACE_O_TRACEFORK | native.PTRACE_O_TRACEVFORK
           | native.PTRACE_O_TRACECLONE | native.PTRACE_O_TRACEEXEC | native.PTRACE_O_TRACESECCOMP
           | native.PTRACE_O_EXITKILL)
SECCOMP_STOP = signal.SIGTRAP | (PTRACE_EVENT_SECCOMP << 8)
RESTART_ERRNO = {"sys": C.ERESTARTSYS, "nohand": C.ERESTARTNOHAND, "nointr": C.ERESTARTNOINTR}


class MM:
    """What the platform keeps per address space: memory access, the scratch
    page for injected calls, and host fds already installed for mmap."""

    def __init__(self, pid: int):
        self.mem = ProcMemory(pid)
        self.scratch = 0
        self.installed: dict = {}  # File -> host fd number in the tracee
        self.refs = 1


class PtraceContext:
    """One traced thread."""

    def __init__(self, platform: "PtracePlatform", host_tid: int, mm: MM):
        self.platform = platform
        self.tid = host_tid
        self.mm = mm
        self.task = None
        self.regs = user_regs_struct()
        self.regs_addr = ctypes.addressof(self.regs)
        self.parked: tuple[int, str] | None = None  # (syscall nr, restart class) while asleep in pause
        self.wake_pending = False
        self.pending_exec = None
        self.deferred_signals: list[int] = []

    @property
    def mem(self) -> ProcMemory:
        return self.mm.mem

    # --- registers ---
    def getregs(self) -> user_regs_struct:
        ptrace(PTRACE_GETREGS, self.tid, 0, ctypes.addressof(self.regs))
        return self.regs

    def setregs(self) -> None:
        ptrace(PTRACE_SETREGS, self.tid, 0, ctypes.addressof(self.regs))

    def cont(self, sig: int = 0) -> None:
        try:
            ptrace(PTRACE_CONT, self.tid, 0, sig)
        except ProcessLookupError:
            pass

    # --- blocking ---
    def park(self, nr: int, restart: str) -> None:
        """Sleep natively in pause(2) instead of ``nr``."""
        self.parked = (nr, restart)
        self.regs.orig_rax = NR_PAUSE
        self.setregs()
        self.cont()

    def wake(self) -> None:
        if self.parked is not None and not self.wake_pending:
            self.wake_pending = True
            try:
                ptrace(PTRACE_INTERRUPT, self.tid)
            except ProcessLookupError:
                pass

    def unpark_regs(self, retry: bool) -> None:
        """At a stop of a parked tracee: make the kernel re-issue the parked
        call (always when ``retry``, else as its restart class says)."""
        nr, restart = self.parked
        self.parked = None
        self.wake_pending = False
        if not retry and self.task is not None:
            self.task.restart_deadline = None  # a signal ends the call; a new one gets a new timeout
        regs = self.getregs()
        if regs.orig_rax != NR_PAUSE:
            return
        regs.orig_rax = nr
        regs.rax = (-(C.ERESTARTNOINTR if retry else RESTART_ERRNO[restart])) & MASK64
        self.setregs()

    # --- injected syscalls (only at a seccomp stop) ---
    def _wait_for(self, want_syscall_stop: bool) -> None:
        """Wait for this tracee's next syscall-entry/exit or seccomp stop,
        holding back signals that arrive meanwhile."""
        while True:
            try:
                _, status = os.waitpid(self.tid, WALL)
            except ChildProcessError:
                raise TaskGone() from None
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.platform.exited(self.tid, status)
                raise TaskGone()
            sig, event = os.WSTOPSIG(status), status >> 16
            if want_syscall_stop and sig == signal.SIGTRAP | 0x80:
                return
            if not want_syscall_stop and event == PTRACE_EVENT_SECCOMP:
                return
            if event == 0 and sig not in (signal.SIGTRAP, signal.SIGTRAP | 0x80):
                self.deferred_signals.append(sig)
            req = PTRACE_SYSCALL if want_syscall_stop else PTRACE_CONT
            ptrace(req, self.tid, 0, 0)

    def inject(self, nr: int, *args: int) -> int:
        """Run syscall ``nr`` in the tracee now, then come back to the same
        seccomp stop.  Returns the raw result (negative errno on failure)."""
        saved = user_regs_struct.from_buffer_copy(self.getregs())
        regs = self.regs
        regs.orig_rax = nr
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args + (0,) * 6):
            setattr(regs, name, value & MASK64)
        self.setregs()
        ptrace(PTRACE_SYSCALL, self.tid, 0, 0)
        self._wait_for(True)  # exit stop of the injected call
        result = self.getregs().rax
        result = result - (1 << 64) if result >> 63 else result
        # Re-issue the original call: back to its syscall instruction.
        ctypes.memmove(ctypes.addressof(self.regs), ctypes.addressof(saved), ctypes.sizeof(saved))
        self.regs.rip -= 2
        self.regs.rax = saved.orig_rax
        self.setregs()
        ptrace(PTRACE_SYSCALL, self.tid, 0, 0)
        self._wait_for(True)  # entry stop of the re-issued call
        ptrace(PTRACE_CONT, self.tid, 0, 0)
        self._wait_for(False)  # its seccomp stop
        self.getregs()
        return result

    def scratch(self) -> int:
        if not self.mm.scratch:
            addr = self.inject(NR_MMAP, 0, SCRATCH_SIZE, C.PROT_READ | C.PROT_WRITE,
                               C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0)
            if addr < 0:
                raise SyscallError(-addr)
            self.mm.scratch = addr
        return self.mm.scratch

    def install_fd(self, hostfd: int) -> int:
        """Give the tracee a copy of the Sentry's ``hostfd`` (close-on-exec);
        returns its number in the tracee's host fd table."""
        base = self.scratch()
        ctl_len = cmsg_space(4)
        msg = MSGHDR.pack(0, 0, base + 64, 1, base + 128, ctl_len, 0)
        iov = IOVEC.pack(base + 96, 1)
        self.mem.write(base, msg + b"\0" * (64 - len(msg)) + iov)
        plat = self.platform
        socket.send_fds(plat.fd_sock, [b"f"], [hostfd])
        res = self.inject(NR_RECVMSG, HIDDEN_FD, base, C.MSG_CMSG_CLOEXEC | C.MSG_DONTWAIT)
        if res < 0:
            plat.drain_fd_sock()
            raise SyscallError(-res)
        _, level, typ = CMSGHDR.unpack(self.mem.read(base + 128, CMSGHDR.size))
        if level != socket.SOL_SOCKET or typ != C.SCM_RIGHTS:
            raise SyscallError(C.EIO)
        return self.mem.read_u32(base + 128 + CMSGHDR.size)

    def map_file(self, vfd: int, file) -> object:
        """Let the host map ``file`` for the mmap being served: its fd argument
        becomes a host fd of the file, installed once per address space."""
        fd = self.mm.installed.get(file)
        if fd is None:
            hostfd = file.host_fd()
            if hostfd is None:
                raise SyscallError(C.ENODEV)
            fd = self.install_fd(hostfd)
            self.mm.installed[file] = fd
        self.set_arg(4, fd)
        return CONTINUE

    def map_anonymous(self, vfd: int, file, flags: int) -> object:
        """Serve the mmap of a file that maps as anonymous memory (/dev/zero)."""
        self.set_arg(3, flags | C.MAP_ANONYMOUS)
        self.set_arg(4, -1)
        return CONTINUE

    def wait_pidfd(self, vfd: int, tg) -> object:
        """waitid(P_PIDFD) on a Sentry pidfd: wait for the pid instead."""
        self.set_arg(0, C.P_PID)
        self.set_arg(1, tg.pid)
        return CONTINUE

    def clone_flags(self, flags: int) -> object:
        """clone with CLONE_UNTRACED/CLONE_PTRACE: the app may not trace, drop them."""
        self.set_arg(0, flags & ~(C.CLONE_UNTRACED | C.CLONE_PTRACE))
        return CONTINUE

    def set_arg(self, index: int, value: int) -> None:
        setattr(self.regs, ("rdi", "rsi", "rdx", "r10", "r8", "r9")[index], value & MASK64)
        self.setregs()

    def exec_image(self, hostfd: int, argv: list[bytes] | None, argv_ptr: int, envp_ptr: int,
                   info) -> object:
        """Turn the current execve into execveat(fd, "", argv, envp, AT_EMPTY_PATH)
        on a host fd of the file the Sentry resolved; the host kernel loads it."""
        fd = self.install_fd(hostfd)
        base = self.scratch()
        blob = bytearray(b"\0" * 8)  # offset 0: the empty path
        if argv is not None:
            strings_at = 4096
            ptrs, blob_strings = [], bytearray()
            for a in argv:
                if isinstance(a, int):
                    ptrs.append(a)
                else:
                    ptrs.append(base + strings_at + len(blob_strings))
                    blob_strings += a + b"\0"
            ptrs.append(0)
            table = struct.pack(f"<{len(ptrs)}Q", *ptrs)
            if 8 + len(table) > strings_at or strings_at + len(blob_strings) > SCRATCH_SIZE:
                raise SyscallError(C.E2BIG)
            self.mem.write(base + strings_at, bytes(blob_strings))
            blob += table
            argv_ptr = base + 8
        self.mem.write(base, bytes(blob))
        self.getregs()
        r = self.regs
        r.orig_rax = NR_EXECVEAT
        r.rdi, r.rsi, r.rdx, r.r10, r.r8 = fd, base, argv_ptr & MASK64, envp_ptr & MASK64, C.AT_EMPTY_PATH
        self.setregs()
        self.pending_exec = info
        return CONTINUE


class PtracePlatform(HostProcessPlatform):
    """App threads are host processes; seccomp RET_TRACE stops them at emulated calls."""
    name = "ptrace"
    delegates = seccomp.DELEGATED | {"mmap (MAP_ANONYMOUS)", "clone (no namespace flags)"}

    @classmethod
    def available(cls) -> str | None:
        try:
            with open("/proc/sys/kernel/yama/ptrace_scope") as f:
                if f.read().strip() == "3":
                    return "ptrace is disabled (kernel.yama.ptrace_scope=3)"
        except OSError:
            pass
        return None

    def __init__(self, kernel, config):
        self.kernel = kernel
        self.config = config
        self.contexts: dict[int, PtraceContext] = {}
        self.early_stops: dict[int, int] = {}  # new tracees seen before their parent's event
        self.spawned = None
        self.fd_sock, self.fd_sock_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.fd_sock_peer.setblocking(False)
        self.other_children: dict[int, callable] = {}  # non-tracee children: pid -> on exit
        self.sigfd = -1
        self.doorbell: int | None = None
        self.calls: collections.deque = collections.deque()

    # --- start ---
    def start(self, root: str, exec_path: bytes, argv: list[bytes], env: dict[bytes, bytes],
              new_net: bool, make_init, hold: bool = False) -> None:
        """Spawn init; ``make_init(ctx)`` creates its Task.  With ``hold``, init
        waits before its first exec until release() (OCI create, then start)."""
        # SIGCHLD (one for every tracee stop) is read through a signalfd: it
        # must be blocked in every thread, so before any other thread starts.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        prog = seccomp.build_filter(seccomp.SECCOMP_RET_TRACE)
        sp = spawn_init(root, prog, new_net, self.fd_sock_peer.fileno(), exec_path, argv, env)
        self.spawned = sp
        self.other_children[sp.holder_pid] = lambda status: None
        ptrace(PTRACE_SEIZE, sp.init_pid, 0, OPTIONS)
        ctx = PtraceContext(self, sp.init_pid, MM(sp.init_pid))
        self.contexts[sp.init_pid] = ctx
        make_init(ctx)
        self._start_doorbell()
        if not hold:
            self.release()

    # --- work from other threads (the control server) ---
    def _start_doorbell(self) -> None:
        """The namespace holder (init's parent, asleep in waitpid) doubles as a
        doorbell: traced, a signal to it stops it and so wakes the tracer,
        which then runs call_soon()'s work; only the tracer thread may ptrace,
        and it sleeps in waitpid."""
        pid = self.spawned.holder_pid
        ptrace(PTRACE_SEIZE, pid, 0, native.PTRACE_O_EXITKILL)
        self.doorbell = pid

    def call_soon(self, fn) -> None:
        """Run ``fn()`` on the tracer thread (thread-safe)."""
        self.calls.append(fn)
        try:
            os.kill(self.doorbell, signal.SIGUSR1)
        except (ProcessLookupError, TypeError):
            pass

    def spawn_process(self, root: str, exec_path: bytes, argv: list[bytes], env: dict[bytes, bytes],
                      make_task, pidns=None) -> int:
        """Start another app process in the sandbox (on the tracer thread), in
        ``pidns`` (default: the sandbox's); ``make_task(ctx, tid, ns_ids)``
        creates its Task.  Returns its host pid."""
        prog = seccomp.build_filter(seccomp.SECCOMP_RET_TRACE)
        sp = spawn_joined(self.spawned.holder_pid, root, prog, self.fd_sock_peer.fileno(), exec_path,
                          argv, env, **self.pidns_args(pidns))
        self.other_children[sp.holder_pid] = lambda status: None
        ptrace(PTRACE_SEIZE, sp.init_pid, 0, OPTIONS)
        ctx = PtraceContext(self, sp.init_pid, MM(sp.init_pid))
        self.contexts[sp.init_pid] = ctx
        tid, *ns_ids = ns_pids_of(sp.init_pid)
        make_task(ctx, tid, tuple(ns_ids))
        os.write(sp.go_fd, b"g")
        os.close(sp.go_fd)
        return sp.init_pid

    # --- the loop ---
    def run(self) -> None:
        """Serve the sandbox until no tracee is left."""
        kernel = self.kernel
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # read through the signalfd
        self.sigfd = native.signalfd([signal.SIGCHLD])
        ep = select.epoll()
        ep.register(self.sigfd, select.EPOLLIN)
        waits = HostWaits(ep, kernel)
        try:
            while self.contexts:
                timeout = kernel.next_timeout()
                if timeout is None and not kernel.host_waits:
                    try:
                        pid, status = os.waitpid(-1, WALL)
                    except ChildProcessError:
                        break
                    self.event(pid, status)
                    continue
                waits.sync()
                ready = ep.poll(-1 if timeout is None else timeout)
                for fd, revents in ready:
                    if fd == self.sigfd:
                        try:
                            os.read(self.sigfd, 4096)
                        except BlockingIOError:
                            pass
                self.drain_waits()
                for fd, revents in ready:
                    if fd != self.sigfd:
                        kernel.host_fd_ready(fd, revents)
                kernel.run_timers()
        finally:
            ep.close()
            os.close(self.sigfd)

    def drain_waits(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, WALL | os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.event(pid, status)

    def exited(self, pid: int, status: int) -> None:
        ctx = self.contexts.pop(pid, None)
        if ctx is None:
            cb = self.other_children.pop(pid, None)
            if cb is not None:
                cb(status)
            return
        ctx.mm.refs -= 1
        if ctx.mm.refs == 0:
            ctx.mm.mem.close()
        if ctx.task is not None:
            self.kernel.task_exited(ctx.task, status)

    def event(self, pid: int, status: int) -> None:
        if pid == self.doorbell and os.WIFSTOPPED(status):
            self._run_calls()
            try:  # its signals (the bell, SIGCHLD from init) are not delivered
                ptrace(PTRACE_CONT, pid, 0, 0)
            except ProcessLookupError:
                pass
            return
        if status >> 8 == SECCOMP_STOP:  # the hot path: a trapped syscall
            ctx = self.contexts.get(pid)
            if ctx is not None:
                try:
                    self.syscall(ctx)
                except (TaskGone, ProcessLookupError):
                    pass
                except Exception:
                    log.exception("tracer: error handling a syscall of %d", pid)
                    ctx.cont()
                return
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.exited(pid, status)
            return
        if not os.WIFSTOPPED(status):
            return
        ctx = self.contexts.get(pid)
        sig, event = os.WSTOPSIG(status), status >> 16
        if ctx is None:
            self.early_stops[pid] = status
            return
        try:
            if event == PTRACE_EVENT_SECCOMP:
                self.syscall(ctx)
            elif event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
                self.clone(ctx, event)
                ctx.cont()
            elif event == PTRACE_EVENT_EXEC:
                self.execed(ctx)
                ctx.cont()
            elif event == PTRACE_EVENT_STOP:
                if ctx.parked is not None:
                    ctx.unpark_regs(retry=ctx.wake_pending and sig not in STOP_SIGNALS)
                if sig in STOP_SIGNALS:
                    ptrace(PTRACE_LISTEN, pid)
                else:
                    ctx.cont()
            elif sig == signal.SIGTRAP | 0x80:
                ctx.cont()
            else:  # signal-delivery-stop
                if ctx.parked is not None:
                    ctx.unpark_regs(retry=False)
                ctx.cont(sig)
        except (TaskGone, ProcessLookupError):
            pass
        except Exception:
            log.exception("tracer: error handling a stop of %d (status %#x)", pid, status)
            if pid in self.contexts:
                self.contexts[pid].cont()

    # --- events ---
    def syscall(self, ctx: PtraceContext) -> None:
        tid, regs, addr = ctx.tid, ctx.regs, ctx.regs_addr
        if _ptrace(PTRACE_GETREGS, tid, 0, addr) == -1:
            return  # gone
        nr = regs.orig_rax
        task = ctx.task
        try:
            result = self.kernel.dispatch(task, nr, (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9))
        except WouldBlock as wb:
            self.kernel.park(task, wb)
            ctx.park(nr, wb.restart)
            return
        except TaskGone:
            return
        if result is not CONTINUE:
            regs.orig_rax = MASK64
            regs.rax = result & MASK64
            _ptrace(PTRACE_SETREGS, tid, 0, addr)
        _ptrace(PTRACE_CONT, tid, 0, 0)
        if ctx.deferred_signals:  # held back during injected calls: raise them again
            for s in ctx.deferred_signals:
                try:
                    os.kill(ctx.tid, s)
                except OSError:
                    pass
            ctx.deferred_signals.clear()

    def clone(self, parent: PtraceContext, event: int) -> None:
        child_pid = ptrace_geteventmsg(parent.tid)
        regs = parent.getregs()
        nr = regs.orig_rax
        if event == PTRACE_EVENT_FORK:
            flags = C.SIGCHLD
        elif event == PTRACE_EVENT_VFORK:
            flags = (regs.rdi if nr == NR_CLONE else C.CLONE_VM | C.CLONE_VFORK | C.SIGCHLD)
        else:
            flags = regs.rdi
        flags &= 0xFFFFFFFF
        if flags & C.CLONE_THREAD:
            mm = parent.mm
            mm.refs += 1
        else:  # its own /proc/PID/mem; a vfork child shares the parent's memory
            mm = MM(child_pid)
            mm.scratch = parent.mm.scratch  # the copied address space has it too
            mm.installed = parent.mm.installed if flags & C.CLONE_VM else dict(parent.mm.installed)
        ctx = PtraceContext(self, child_pid, mm)
        self.contexts[child_pid] = ctx
        tid, *ns_ids = ns_pids_of(child_pid)
        if parent.task is not None:
            ctx.task = self.kernel.clone_task(parent.task, tid, flags, ctx, tuple(ns_ids))
        early = self.early_stops.pop(child_pid, None)
        if early is not None:
            self.event(child_pid, early)

    def execed(self, ctx: PtraceContext) -> None:
        former = ptrace_geteventmsg(ctx.tid)
        if former != ctx.tid:  # a non-leader thread exec'd: it takes the leader's id
            old = self.contexts.pop(former, None)
            if old is not None:
                leader = ctx  # the old leader is gone without an exit event of its own
                leader.mm.refs -= 1
                if leader.task is not None:
                    self.kernel.task_exited(leader.task, 0)
                old.tid = ctx.tid
                self.contexts[ctx.tid] = old
                ctx = old
                task, kernel = ctx.task, self.kernel
                if task is not None:
                    if kernel.tasks.get(task.tid) is task:
                        del kernel.tasks[task.tid]
                    task.tid = task.tg.pid
                    kernel.tasks[task.tid] = task
        ctx.mm.mem.reopen()
        ctx.mm.scratch = 0
        ctx.mm.installed = {}
        info, ctx.pending_exec = ctx.pending_exec, None
        if ctx.task is not None:
            self.kernel.exec_done(ctx.task, info)

    def drain_fd_sock(self) -> None:
        try:
            while True:
                _, fds, _, _ = socket.recv_fds(self.fd_sock_peer, 1, 8, socket.MSG_DONTWAIT)
                for fd in fds:
                    os.close(fd)
        except (BlockingIOError, OSError):
            pass


def ptrace_geteventmsg(pid: int) -> int:
    msg = ctypes.c_ulong()
    ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(msg))
    return msg.value
