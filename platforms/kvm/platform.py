"""The kvm platform: app threads run in guest ring 3 of one KVM virtual
machine per sandbox, and the Sentry owns everything else.

Each app thread has a vCPU and a host thread that runs it.  ``Vcpu.run()``
releases the GIL and returns at the thread's next syscall, fault or kick; the
thread then takes the Sentry's one lock (the kernel is single-threaded, as on
the other platforms) and handles the event inline: no hand-off between host
threads on the hot path.  A call that must wait parks the thread on its
condition variable (which releases the lock); whoever makes the condition
true wakes it.  The main thread watches the host fds and timers the parked
calls wait for, and runs the calls other threads queue (``call_soon``).

Memory (core/mm), the ELF loader (core/loader), signal frames
(core/sigframe), signals (core/signals) and futexes (core/futex) are the
Sentry's; the machine itself is platforms/kvm/machine.py.
"""
from __future__ import annotations

import collections
import logging
import os
import select
import struct
import threading
import time

from pysc.core import signals
from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.futex import FutexTable, futex_key, release_robust_list
from pysc.core.mm.physical import PhysicalMemory
from pysc.core.abi.structs import xstate_size
from pysc.core.sigframe import init_xsave, pack_siginfo, restore_rt_frame, setup_rt_frame, sigframe_size
from pysc.platforms.hostproc.base import HostWaits
from pysc.platforms.kvm import probe
from pysc.platforms.kvm.guestmmap import GuestMmap

log = logging.getLogger("pysc.kvm")

MASK64 = (1 << 64) - 1
RESTART_ERRNO = {"sys": C.ERESTARTSYS, "nohand": C.ERESTARTNOHAND, "nointr": C.ERESTARTNOINTR}
RESTARTS = frozenset({C.ERESTARTSYS, C.ERESTARTNOINTR, C.ERESTARTNOHAND, C.ERESTART_RESTARTBLOCK})
SYS_RT_SIGRETURN = 15
# Exceptions (vector) -> (signal, si_code) for the faults that are not page faults.
TRAP_SIGNALS = {0: (C.SIGFPE, 1), 1: (C.SIGTRAP, 1), 3: (C.SIGTRAP, 0x80), 4: (C.SIGSEGV, 0x80),
                5: (C.SIGSEGV, 0x80), 6: (C.SIGILL, 2), 7: (C.SIGFPE, 0x80), 10: (C.SIGSEGV, 0x80),
                11: (C.SIGBUS, 0x80), 12: (C.SIGBUS, 0x80), 13: (C.SIGSEGV, 0x80), 16: (C.SIGFPE, 0x80),
                17: (C.SIGBUS, 1), 19: (C.SIGFPE, 0x80)}
PF_WRITE, PF_INSN = 2, 16


def _host_auxv() -> dict[int, int]:
    """The Sentry's own auxv: the app gets the same AT_HWCAP/AT_HWCAP2 as a native process."""
    try:
        with open("/proc/self/auxv", "rb") as f:
            data = f.read()
    except OSError:
        return {}
    return dict(struct.iter_unpack("<QQ", data[:len(data) // 16 * 16]))


class KvmContext:
    """One app thread: its vCPU, its address space and the host thread that runs it."""
    tid = None  # not a host process: /proc is served from the Sentry's own objects

    def __init__(self, platform: "KvmPlatform", vcpu, mm):
        self.platform = platform
        self.vcpu = vcpu
        self.mm = mm
        self.task = None
        self.cond = threading.Condition(platform.lock)
        self.woken = False
        self.interrupted = False
        self.thread: threading.Thread | None = None
        self.restart: tuple[int, int] | None = None  # (nr, -ERESTART*) of the call a signal interrupted
        self.fault: tuple[int, int, int] | None = None  # (vector, error code, cr2) of the fault being signalled
        self.vfork_parent = None  # a vfork child: the task waiting for it to exec or exit
        self.exec_killed = False  # another thread of the process exec'd: this one ends
        self.exits = [0, 0, 0, 0]  # by machine.EXIT_*: syscalls, faults, interruptions (the debug log)

    @property
    def mem(self):
        return self.mm

    def wake(self) -> None:
        self.woken = True
        self.cond.notify()

    # --- exec (the Sentry loads the image itself) ---
    def exec_image(self, hostfd: int, argv, argv_ptr: int, envp_ptr: int, info) -> int:
        t = self.task
        mem = self.mm
        if argv is None:
            argv = mem.read_ptr_array(argv_ptr) if argv_ptr else []
        args = [a if isinstance(a, bytes) else mem.read_cstr(a, C.MAX_ARG_STRLEN) for a in argv]
        envp = [mem.read_cstr(a, C.MAX_ARG_STRLEN) for a in (mem.read_ptr_array(envp_ptr) if envp_ptr else [])]
        self.platform.load_image(self, info.dentry, args, envp, info.path or info.dentry.path(), fresh=False)
        t.kernel.exec_done(t, info)
        return 0


class KvmPlatform:
    """App threads on vCPUs of one VM; the Sentry owns memory, threads and signals."""
    name = "kvm"
    sentry_owned = True
    delegates: frozenset = frozenset()

    @classmethod
    def available(cls) -> str | None:
        return probe.unavailable_reason()

    FLAVOURS = {"pvm": "PVM: kvm_pvm, a software hypervisor on shadow paging",
                "vmx": "VMX: kvm_intel, hardware virtualisation", "svm": "SVM: kvm_amd, hardware virtualisation"}

    @classmethod
    def describe(cls) -> str:
        """Which KVM this host has (`pysc help platforms`)."""
        flavour = probe.kvm_flavour()
        return cls.FLAVOURS.get(flavour, flavour or "no KVM")

    def __init__(self, kernel, config):
        from pysc.platforms.kvm.machine import Machine
        self.kernel = kernel
        self.config = config
        self.lock = threading.Lock()
        kernel.sentry_reaps = True
        kernel.on_new_timer = self.ring
        kernel.objects["futexes"] = FutexTable()
        self.phys = PhysicalMemory()
        self.machine = Machine(self.phys)
        self.phys.on_remove = self.machine.remove_region
        self.xfeatures = self.machine.xcr0
        self.xstate_size = xstate_size(self.xfeatures)
        self.init_xsave = init_xsave()
        self.auxv = _host_auxv()
        self.vdso = None
        self._vdso_checked = False
        self.contexts: set[KvmContext] = set()
        self.calls: collections.deque = collections.deque()
        self.doorbell = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ep = select.epoll()
        self.ep.register(self.doorbell, select.EPOLLIN)
        self.waits = HostWaits(self.ep, kernel)
        self.go = threading.Event()
        self.stopping = False
        self.frozen = False  # `pysc pause`
        self.guest_mmap = self._guest_mmap_allowed()

    def _guest_mmap_allowed(self) -> bool:
        """Whether the trampoline may answer mmap/munmap (guestmmap.py):
        nothing may need to see those calls, and the trampoline must run in
        user mode (PVM)."""
        from pysc.syscalls.sentry import memory
        kernel = self.kernel
        table = kernel.table
        dispatch = kernel.dispatch
        return (self.machine.flavour == "pvm" and kernel.strace is None and dispatch.enter_hook is None
                and dispatch.exit_hook is None and table.get("mmap") is memory.mmap
                and table.get("munmap") is memory.munmap)

    # --- the Sandbox's interface ---
    def start(self, root_path, path, argv, env, new_net, make_init, hold=False) -> None:
        if new_net:
            # Every vCPU thread starts from this one, so the sockets the
            # Sentry makes for the app all live in the new namespace.
            from pysc.platforms.hostproc import native
            from pysc.platforms.hostproc.spawn import loopback_up
            native.unshare(C.CLONE_NEWNET)
            loopback_up()
        with self.lock:
            self._new_process(make_init, path, argv, env)
        if not hold:
            self.go.set()

    def release(self) -> None:
        self.go.set()

    def enter_netns(self) -> None:
        """The Sentry unshared its network namespace in start(): nothing more to join."""

    def call_soon(self, fn) -> None:
        self.calls.append(fn)
        self.ring()

    def ring(self) -> None:
        try:
            os.eventfd_write(self.doorbell, 1)
        except OSError:
            pass

    def init_handles(self, sig: int) -> bool:
        init = self.kernel.init
        return init is not None and init.sighand.actions[sig].handler not in (C.SIG_DFL, C.SIG_IGN)

    def signal_init(self, sig: int) -> None:
        """From pysc's own signal handlers (main thread): never take the lock here."""
        def send():
            init = self.kernel.init
            if init is not None and init.alive:
                signals.send(self.kernel, init, sig, pack_siginfo(sig, signals.SI_USER), from_kernel=True)
        self.call_soon(send)

    def run(self) -> None:
        """The main thread: host fds and timers of parked calls, queued calls,
        until init has exited and every app thread has ended."""
        kernel = self.kernel
        while True:
            with self.lock:
                while self.calls:
                    fn = self.calls.popleft()
                    try:
                        fn()
                    except Exception:
                        log.exception("kvm: a queued call failed")
                kernel.run_timers()
                if kernel.exit_status is not None and not self.stopping:
                    self.stopping = True
                    for tg in list(kernel.thread_groups.values()):
                        if tg.alive:
                            self.kill_group(tg, C.SIGKILL)
                if self.stopping and not self.contexts:
                    return
                self.waits.sync()
                timeout = kernel.next_timeout()
            try:
                events = self.ep.poll(-1 if timeout is None else timeout)
            except InterruptedError:
                continue
            with self.lock:
                for fd, ev in events:
                    if fd == self.doorbell:
                        try:
                            os.eventfd_read(self.doorbell)
                        except OSError:
                            pass
                    else:
                        kernel.host_fd_ready(fd, ev)

    def kill_all(self) -> None:
        with self.lock:
            self.stopping = True
            for ctx in list(self.contexts):
                ctx.interrupted = True
                ctx.cond.notify()
                ctx.vcpu.kick()
            self.go.set()
        for ctx in list(self.contexts):
            if ctx.thread is not None and ctx.thread is not threading.current_thread():
                ctx.thread.join(2)

    # --- what the OCI runtime asks of a running sandbox (any thread) ---
    def host_pids(self) -> list[int]:
        return []  # app processes are threads of the Sentry

    def signal_processes(self, sig: int, all_: bool = False, pid: int = 0) -> None:
        def send():
            k = self.kernel
            if pid:
                targets = [k.find_tg(pid)]
            elif all_:
                targets = list(k.thread_groups.values())
            else:
                targets = [k.init]
            for tg in targets:  # from outside the sandbox: init still gets only what it handles
                if tg is not None and tg.alive:
                    signals.send(k, tg, sig, pack_siginfo(sig, signals.SI_USER))
        self.call_soon(send)

    def pause(self) -> None:
        """Every app thread stops on its way back to user mode (a cgroup freeze, not SIGSTOP)."""
        def freeze():
            self.frozen = True
            for ctx in self.contexts:
                ctx.vcpu.kick()
        self.call_soon(freeze)

    def resume(self) -> None:
        def thaw():
            self.frozen = False
            for ctx in self.contexts:
                ctx.cond.notify()
        self.call_soon(thaw)

    def usage(self) -> tuple[int, int]:
        from pysc.syscalls.sentry.process import process_cpu
        with self.lock:
            cpu = sum(process_cpu(tg) for tg in self.kernel.thread_groups.values())
            return int(cpu * 1e9), self.phys.allocated * 4096

    def set_rlimit(self, resource_: int, soft: int, hard: int) -> None:
        self.kernel.init.rlimits.set(resource_, soft, hard)

    def spawn_process(self, root: str, path: bytes, argv: list[bytes], env: dict[bytes, bytes],
                      make_task, pidns=None) -> None:
        """`exec` into the running sandbox (on the main thread, lock held): a
        new process with no parent; there is no host pid to report.  The
        Kernel numbers it in its pid namespace."""
        self._new_process(lambda ctx: make_task(ctx, self.kernel.alloc_pid(), ()), path, argv, env)
        return None

    def _new_process(self, make_task, path: bytes, argv: list[bytes], env: dict[bytes, bytes]) -> None:
        """A process started from outside (init, `exec`): ``make_task(ctx)``
        creates its Task; its thread starts once the image is loaded."""
        mm = self._new_mm()
        ctx = KvmContext(self, self.machine.new_vcpu(), mm)
        make_task(ctx)
        task = ctx.task
        try:
            d = task.vfs.walk(task, task.fs.cwd, path, True)
            self.load_image(ctx, d, list(argv), [k + b"=" + v for k, v in env.items()], path, fresh=True)
        except BaseException:
            self.kernel.task_exited(task, C.SIGKILL)
            ctx.vcpu.release()
            raise
        task.tg.exe = d
        task.tg.comm = path.rsplit(b"/", 1)[-1][:15]
        self._start_thread(ctx)

    def _new_mm(self):
        """An empty address space, with the machine's own slot in its top-level table."""
        from pysc.core.mm.mm import MemoryManager
        from pysc.platforms.kvm.machine import SYSTEM_PML4_INDEX, USER_LIMIT
        mm = MemoryManager(self.phys, {SYSTEM_PML4_INDEX: self.machine.system_pml4e}, USER_LIMIT)
        mm.users = 1
        mm.guest_mmap = GuestMmap(mm)
        return mm

    def barrier(self, caller, mm=None) -> None:
        """membarrier: every other thread running guest code (of address
        space ``mm``, or all) leaves it once, which orders its memory
        accesses (a VM exit serialises the CPU), before this returns.
        Called with the lock held; the kicked threads leave KVM_RUN
        without it."""
        kicked = []
        for ctx in list(self.contexts):
            vcpu = ctx.vcpu
            if ctx is not caller and (mm is None or ctx.mm is mm) and vcpu.in_guest:
                kicked.append((vcpu, vcpu.exits))
                vcpu.kick()
        deadline = time.monotonic() + 5
        for vcpu, exits in kicked:
            while vcpu.exits == exits and vcpu.in_guest and time.monotonic() < deadline:
                time.sleep(0.00005)

    def signal_thread(self, task, sig: int) -> None:
        signals.send(self.kernel, task.tg, sig, pack_siginfo(sig, signals.SI_KERNEL), task=task,
                     from_kernel=True)

    # --- called by core.signals ---
    def interrupt(self, task) -> None:
        """Make ``task`` look at its signals soon: wake it if parked, kick its vCPU if running."""
        ctx = task.ctx
        if ctx is None:
            return
        ctx.interrupted = True
        ctx.cond.notify()
        ctx.vcpu.kick()

    def kill_group(self, tg, sig: int) -> None:
        if tg.group_exit is None:
            tg.group_exit = sig
        tg.stopped = False
        for t in tg.tasks:
            self.interrupt(t)

    def continue_group(self, tg) -> None:
        for t in tg.tasks:
            self.interrupt(t)

    # --- images and threads ---
    def load_image(self, ctx: KvmContext, dentry, argv: list[bytes], envp: list[bytes], execfn: bytes,
                   fresh: bool) -> None:
        """Load the ELF file at ``dentry`` into a new address space and point
        the thread at its entry.  Until the new image is complete the old one
        is untouched, so a failed exec returns to the caller."""
        from pysc.core.loader import load_elf
        task = ctx.task
        kernel = self.kernel
        mm = ctx.mm if fresh else self._new_mm()
        f = dentry.inode.open(C.O_RDONLY, dentry, task)
        vdso = self._vdso()

        def open_interp(path: bytes):
            d = task.vfs.walk(task, task.fs.root, path, True)
            return d.inode.open(C.O_RDONLY, d, task)
        try:
            creds = task.creds
            image = load_elf(mm, f, argv, envp, execfn, open_interp=open_interp, random16=os.urandom(16),
                             hwcap=self.auxv.get(16, 0), hwcap2=self.auxv.get(26, 0),
                             uid=creds.uid, euid=creds.euid, gid=creds.gid, egid=creds.egid,
                             stack_size=task.tg.rlimits.get(C.RLIMIT_STACK)[0] & ~0xFFF or 8 << 20,
                             minsigstksz=sigframe_size(self.xstate_size),
                             map_vdso=vdso.map_into if vdso is not None else None)
        except BaseException:
            if not fresh:
                mm.release()
            raise
        finally:
            f.decref()
        if not fresh:
            if task.robust_list[0]:  # as Linux, at exec: the old image's locks are released
                self._release_robust_list(ctx)
            self._exec_threads(ctx)
            tg = task.tg
            if task.tid != tg.pid:  # the exec'ing thread becomes the leader, with its tid
                kernel.tasks.pop(task.tid, None)
                task.tid = tg.pid
                kernel.tasks[tg.pid] = task
            self._drop_mm(ctx)
            ctx.mm = mm
            if ctx.vfork_parent is not None:
                self._vfork_release(ctx)
        task.tg.mm = mm
        task.tg.argv, task.tg.envp = argv, envp
        task.tg.sighand.reset_for_exec()
        task.altstack = (0, C.SS_DISABLE, 0)
        vcpu = ctx.vcpu
        vcpu.set_cr3(mm.cr3)
        vcpu.fs_base = 0
        vcpu.gs_base = 0
        regs = vcpu.regs
        for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12",
                     "r13", "r14", "r15"):
            setattr(regs, name, 0)
        regs.rip = image.entry
        regs.rsp = image.sp
        regs.rflags = 0x202

    def _vdso(self):
        """The vDSO, made on first use (the TSC rate is known once a vCPU
        exists); None where the host cannot have one."""
        if not self._vdso_checked:
            from pysc.platforms.kvm import vdso
            self._vdso_checked = True
            reason = vdso.unavailable_reason(self.machine)
            if reason is None:
                self.vdso = vdso.Vdso(self.phys, self.machine.tsc_khz)
                self.kernel.guest_clock = self.vdso.timekeeper
            else:
                log.info("kvm: no vDSO: %s", reason)
        return self.vdso

    def _exec_threads(self, ctx: KvmContext) -> None:
        """exec ends every other thread of the process (Linux's de_thread)."""
        task = ctx.task
        for t in list(task.tg.tasks):
            if t is not task:
                t.ctx.exec_killed = True
                self.interrupt(t)

    def _start_thread(self, ctx: KvmContext) -> None:
        self.contexts.add(ctx)
        ctx.thread = threading.Thread(target=self._thread_main, args=(ctx,), daemon=True,
                                      name=f"vcpu-{ctx.task.tid}")
        ctx.thread.start()

    def _drop_mm(self, ctx: KvmContext) -> None:
        mm = ctx.mm
        mm.users -= 1
        if mm.users == 0:
            mm.release()

    # --- the loop of one app thread ---
    def _thread_main(self, ctx: KvmContext) -> None:
        from pysc.platforms.kvm.machine import EXIT_FAULT, EXIT_SYSCALL
        self.go.wait()
        vcpu = ctx.vcpu
        exits = ctx.exits
        try:
            with self.lock:
                alive = self._to_user(ctx)
            while alive:
                ev = vcpu.run()
                with self.lock:
                    exits[ev] += 1
                    guest_mmap = ctx.mm.guest_mmap
                    if guest_mmap.offered:
                        guest_mmap.drain()
                    if ev == EXIT_SYSCALL:
                        self._syscall(ctx)
                    elif ev == EXIT_FAULT:
                        self._fault(ctx)
                    alive = self._to_user(ctx)
        except Exception:
            log.exception("kvm: thread %s failed; it is killed", ctx.task)
            with self.lock:
                self._exit_task(ctx, C.SIGKILL)
        log.debug("kvm: thread %d left the guest for %d syscalls, %d faults and %d interruptions",
                  ctx.task.tid, exits[1], exits[2], exits[3])

    def _syscall(self, ctx: KvmContext) -> None:
        task = ctx.task
        kernel = self.kernel
        regs = ctx.vcpu.regs
        nr = regs.rax
        args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
        task.restart_hook = None
        while True:
            try:
                result = kernel.dispatch(task, nr, args)
                break
            except WouldBlock as wb:
                if signals.pending_for(task) or task.tg.group_exit is not None or self.stopping \
                        or ctx.exec_killed:
                    task.restart_deadline = None
                    result = -RESTART_ERRNO[wb.restart]
                    break
                kernel.park(task, wb)
                if wb.deadline is not None or wb.host_fds:
                    self.ring()
                ctx.woken = ctx.interrupted = False
                while not ctx.woken and not ctx.interrupted:
                    ctx.cond.wait()
                kernel.unpark(task)
        if result is ctx:  # the handler set every register itself (rt_sigreturn)
            return
        if isinstance(result, int):
            if -result in RESTARTS:
                ctx.restart = (nr, -result)
            regs.rax = result & MASK64
        else:
            log.error("kvm: %s returned %r, which this platform cannot do: ENOSYS", nr, result)
            regs.rax = -C.ENOSYS & MASK64

    def _fault(self, ctx: KvmContext) -> None:
        vcpu = ctx.vcpu
        task = ctx.task
        if vcpu.vector == 14:
            access = (1 if vcpu.error_code & PF_WRITE else 0) | (2 if vcpu.error_code & PF_INSN else 0)
            got = ctx.mm.fault(vcpu.cr2, access)
            if got is None:
                return
            sig, code = got
            info = pack_siginfo(sig, code, addr=vcpu.cr2)
        else:
            sig, code = TRAP_SIGNALS.get(vcpu.vector, (C.SIGSEGV, 0x80))
            if vcpu.vector == 6 and self._at_int80(ctx):
                # PVM raises #UD for `int $0x80`; Linux without 32-bit emulation raises #GP.
                sig, code = C.SIGSEGV, 0x80
            info = pack_siginfo(sig, code, addr=vcpu.regs.rip if sig != C.SIGSEGV else 0)
        ctx.fault = (vcpu.vector, vcpu.error_code, vcpu.cr2)
        signals.force(self.kernel, task, sig, info)

    @staticmethod
    def _at_int80(ctx: KvmContext) -> bool:
        try:
            return ctx.mm.read(ctx.vcpu.regs.rip, 2) == b"\xcd\x80"
        except SyscallError:
            return False

    def _to_user(self, ctx: KvmContext) -> bool:
        """What happens between the kernel and user mode: exits, stops,
        signal delivery and syscall restarts.  False when the thread is gone."""
        task = ctx.task
        tg = task.tg
        while True:
            if self.stopping or tg.group_exit is not None or ctx.exec_killed:
                status = tg.group_exit if tg.group_exit is not None else C.SIGKILL
                self._exit_task(ctx, status)
                return False
            if task.exited:
                return False
            if tg.stopped or self.frozen:
                ctx.interrupted = False
                while (tg.stopped or self.frozen) and not ctx.interrupted:
                    ctx.cond.wait()
                continue
            if not signals.pending_for(task):
                break
            sig, info = signals.dequeue(task)
            act = tg.sighand.actions[sig]
            if act.handler == C.SIG_IGN:
                continue
            if act.handler == C.SIG_DFL:
                what = signals.default_action(sig)
                if what in ("ignore", "cont"):
                    continue
                if what == "stop":
                    self._stop_group(tg, sig)
                    continue
                self.kill_group(tg, sig)  # term, core, kill: the whole process ends
                continue
            self._deliver(ctx, sig, info, act)
        if ctx.restart is not None:  # no handler ran: the interrupted call starts again
            nr, _ = ctx.restart
            ctx.restart = None
            regs = ctx.vcpu.regs
            regs.rip -= 2
            regs.rax = nr
        if task.saved_sigmask is not None:
            task.sigmask, task.saved_sigmask = task.saved_sigmask, None
        ctx.interrupted = False
        if self.vdso is not None:  # fresh clock lines for a thread back from a long wait
            self.vdso.timekeeper.tick()
        ctx.mm.guest_mmap.publish(self.guest_mmap)
        return True

    def _deliver(self, ctx: KvmContext, sig: int, info: bytes, act) -> None:
        task = ctx.task
        regs = ctx.vcpu.regs
        if ctx.restart is not None:
            nr, err = ctx.restart
            ctx.restart = None
            if err == C.ERESTARTNOINTR or (err == C.ERESTARTSYS and act.flags & C.SA_RESTART):
                regs.rip -= 2
                regs.rax = nr
            else:
                regs.rax = -C.EINTR & MASK64
                hook = getattr(task, "restart_hook", None)
                if hook is not None:  # e.g. nanosleep's remaining time
                    task.restart_hook = None
                    try:
                        hook()
                    except SyscallError:
                        pass
        old_mask = task.saved_sigmask if task.saved_sigmask is not None else task.sigmask
        task.saved_sigmask = None
        fault = getattr(ctx, "fault", None) or (0, 0, 0)
        ctx.fault = None
        try:
            setup_rt_frame(ctx.mm, regs, sig=sig, siginfo=info, handler=act.handler, sa_flags=act.flags,
                           restorer=act.restorer, blocked_mask=old_mask, altstack=task.altstack,
                           fpstate=ctx.vcpu.get_xsave(), fs_base=ctx.vcpu.fs_base,
                           trapno=fault[0], err=fault[1], cr2=fault[2], xfeatures=self.xfeatures,
                           xstate_size=self.xstate_size)
        except SyscallError:
            self.kill_group(task.tg, C.SIGSEGV)  # no room for the frame: Linux's force_sigsegv
            return
        ctx.vcpu.set_xsave(self.init_xsave)  # the handler starts with a clean FPU, as on Linux
        if task.altstack[1] & C.SS_AUTODISARM:
            task.altstack = (0, C.SS_DISABLE, 0)
        mask = act.mask
        if not act.flags & C.SA_NODEFER:
            mask |= signals.bit(sig)
        task.sigmask = (old_mask | mask) & ~signals.UNBLOCKABLE
        if act.flags & C.SA_RESETHAND:
            task.tg.sighand.actions[sig] = signals.SigAction()

    def sigreturn(self, task) -> object:
        """rt_sigreturn: every register, the mask and the FPU state come back from the frame."""
        ctx = task.ctx
        try:
            mask, fpstate, stack = restore_rt_frame(ctx.mm, ctx.vcpu.regs, xfeatures=self.xfeatures,
                                                    xstate_size=self.xstate_size)
        except SyscallError:
            signals.force(self.kernel, task, C.SIGSEGV, pack_siginfo(C.SIGSEGV, 0x80))
            return ctx
        task.sigmask = mask & ~signals.UNBLOCKABLE
        ctx.vcpu.set_xsave(fpstate if fpstate is not None else self.init_xsave)
        if stack is not None:
            sp, flags, size = stack
            if not task.altstack[1] & C.SS_ONSTACK:
                task.altstack = (sp, flags & ~C.SS_ONSTACK, size)
        return ctx

    def _stop_group(self, tg, sig: int) -> None:
        if tg.stopped:
            return
        tg.stopped = True
        tg.stop_signal = sig
        parent = tg.parent
        if parent is not None:
            act = parent.sighand.actions[C.SIGCHLD]
            tg.wait_stopped = True
            if not act.flags & C.SA_NOCLDSTOP:
                signals.send(self.kernel, parent, C.SIGCHLD,
                             pack_siginfo(C.SIGCHLD, C.CLD_STOPPED, pid=tg.pid, status=sig), from_kernel=True)
            parent.child_exit.notify()
        for t in tg.tasks:
            self.interrupt(t)

    # --- ends of threads (called by the exit handlers, on the thread itself) ---
    def exit_thread(self, task, status: int) -> object:
        ctx = task.ctx
        self._exit_task(ctx, status)
        return ctx

    def exit_group(self, task, status: int) -> object:
        self.kill_group(task.tg, status)
        return self.exit_thread(task, status)

    def vfork_wait(self, task, child_tid: int) -> None:
        """The vfork parent sleeps until its child has exec'd or exited (killable only)."""
        child = self.kernel.tasks.get(child_tid)
        ctx = task.ctx
        while child is not None and child.ctx.vfork_parent is task and task.tg.group_exit is None \
                and not self.stopping:
            ctx.cond.wait()

    def _exit_task(self, ctx: KvmContext, status: int) -> None:
        """The thread exits with wait status ``status``."""
        task = ctx.task
        if task.exited:
            return
        if task.robust_list[0] and ctx.mm is not None:
            self._release_robust_list(ctx)
        if task.clear_child_tid and ctx.mm is not None and ctx.mm.users > 1:
            try:
                ctx.mm.write_u32(task.clear_child_tid, 0)
                self.kernel.objects["futexes"].wake(futex_key(ctx.mm, task.clear_child_tid, False), 1)
            except SyscallError:
                pass
        if ctx.vfork_parent is not None:
            self._vfork_release(ctx)
        self._drop_mm(ctx)
        self.kernel.task_exited(task, status)
        ctx.vcpu.release()
        self.contexts.discard(ctx)
        tg = task.tg
        tg.cpu_dead = tg.cpu_time = getattr(tg, "cpu_dead", 0.0) + self._cpu_of(ctx)
        self.ring()

    def _release_robust_list(self, ctx: KvmContext) -> None:
        """Locks a gone thread (or a replaced image) still holds: owner died."""
        task, mm = ctx.task, ctx.mm
        futexes = self.kernel.objects["futexes"]
        release_robust_list(mm, task.robust_list[0], task.pidns.id_of(task.tid),
                            lambda addr: futexes.wake(futex_key(mm, addr, False), 1))
        task.robust_list = (0, 0)

    @staticmethod
    def _cpu_of(ctx: KvmContext) -> float:
        th = ctx.thread
        if th is threading.current_thread():
            return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)
        return 0.0

    def _vfork_release(self, ctx: KvmContext) -> None:
        parent = ctx.vfork_parent
        ctx.vfork_parent = None
        parent.ctx.wake()

    # --- new threads and processes (clone) ---
    def clone(self, parent_task, flags: int, stack: int, ptid: int, ctid: int, tls: int) -> int:
        """fork, vfork and clone: a new thread on a new vCPU, started at the
        instruction after the parent's syscall with rax = 0."""
        kernel = self.kernel
        pctx = parent_task.ctx
        if flags & C.CLONE_VM:
            mm = pctx.mm
            mm.users += 1
        else:
            mm = pctx.mm.fork()
            mm.users = 1
            mm.guest_mmap = GuestMmap(mm)
        vcpu = self.machine.new_vcpu()
        ctx = KvmContext(self, vcpu, mm)
        tid = kernel.alloc_pid()
        task = kernel.clone_task(parent_task, tid, flags, ctx)
        ctx.task = task
        if not flags & C.CLONE_THREAD:
            task.tg.mm = mm
        src, dst = pctx.vcpu.regs, vcpu.regs
        for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
                     "r12", "r13", "r14", "r15", "rip", "rflags"):
            setattr(dst, name, getattr(src, name))
        dst.rax = 0
        if stack:
            dst.rsp = stack
        vcpu.set_cr3(mm.cr3)
        vcpu.fs_base = tls if flags & C.CLONE_SETTLS else pctx.vcpu.fs_base
        vcpu.gs_base = pctx.vcpu.gs_base
        vcpu.set_xsave(pctx.vcpu.get_xsave())
        task.altstack = parent_task.altstack if not flags & C.CLONE_VM or flags & C.CLONE_VFORK \
            else (0, C.SS_DISABLE, 0)
        try:
            if flags & C.CLONE_PARENT_SETTID:
                pctx.mm.write_u32(ptid, task.pidns.id_of(tid))
            if flags & C.CLONE_CHILD_SETTID:
                mm.write_u32(ctid, task.pidns.id_of(tid))
        except SyscallError:
            pass
        if flags & C.CLONE_CHILD_CLEARTID:
            task.clear_child_tid = ctid
        if flags & C.CLONE_VFORK:
            ctx.vfork_parent = parent_task
        self._start_thread(ctx)
        return tid
