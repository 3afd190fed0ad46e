"""What the host-process platforms (ptrace, seccomp) share beyond spawning:
the namespace holder, signals to init, the end of a sandbox, /proc lookups
about app processes, and keeping an epoll set in step with the host fds the
Sentry's parked calls wait on."""
from __future__ import annotations

import collections
import logging
import os
import select
import signal

from pysc.core.abi import consts as C
from pysc.platforms.hostproc.spawn import Spawned, enter_netns_of

log = logging.getLogger("pysc.platform")


class HostProcessPlatform:
    """Base of the platforms whose app threads are host processes."""
    name = "?"
    spawned: Spawned | None = None
    calls: collections.deque  # work call_soon() queued for the loop thread

    def _run_calls(self) -> None:
        while self.calls:
            fn = self.calls.popleft()
            try:
                fn()
            except Exception:
                log.exception("%s: a call from another thread failed", self.name)

    def release(self) -> None:
        """Let init install its filter and exec the app (any thread may call this)."""
        sp = self.spawned
        if sp is not None and sp.go_fd >= 0:
            fd, sp.go_fd = sp.go_fd, -1
            try:
                os.write(fd, b"g")
            finally:
                os.close(fd)

    @staticmethod
    def pidns_args(pidns) -> dict:
        """spawn_joined's arguments for a process in ``pidns``: the host pid
        namespace of its init, or a new one when it has none yet."""
        if pidns is None or pidns.is_root:
            return {}
        if pidns.init is None:
            return {"new_pidns": True}
        leader = pidns.init.leader
        if leader is None or not pidns.init.alive:
            raise OSError("the container's init has exited")
        return {"pidns_of": leader.ctx.tid}

    def enter_netns(self) -> None:
        """Make the Sentry's sockets (hostinet) live in the sandbox's network namespace."""
        enter_netns_of(self.spawned.holder_pid)

    def init_handles(self, sig: int) -> bool:
        """Whether init has a handler for ``sig`` (read from the host's /proc)."""
        try:
            mask = proc_status_fields(self.spawned.init_pid, (b"SigCgt",))[b"SigCgt"]
        except (OSError, AttributeError, KeyError):
            return False
        return bool(mask & (1 << (sig - 1)))

    # --- what the OCI runtime asks of a running sandbox ---
    def host_pids(self) -> list[int]:
        return list(self.contexts)

    def signal_processes(self, sig: int, all_: bool = False, pid: int = 0) -> None:
        """`kill`: init, every app process, or the process with sandbox pid ``pid``."""
        if pid:
            tg = self.kernel.find_tg(pid)
            pids = [tg.leader.ctx.tid] if tg is not None and tg.leader is not None else []
        else:
            pids = self.host_pids() if all_ else [self.spawned.init_pid]
        for hp in pids:
            try:
                os.kill(hp, sig)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        self.signal_processes(signal.SIGSTOP, all_=True)

    def resume(self) -> None:
        self.signal_processes(signal.SIGCONT, all_=True)

    def usage(self) -> tuple[int, int]:
        """CPU time (ns) and resident memory (bytes) of the app processes."""
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = rss = 0
        for hp in self.host_pids():
            try:
                with open(f"/proc/{hp}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                cpu += (int(fields[11]) + int(fields[12])) * 10**9 // ticks
                rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):
                pass
        return cpu, rss

    def set_rlimit(self, resource_: int, soft: int, hard: int) -> None:
        """A limit of config.json's process.rlimits: the host kernel enforces it on init."""
        import resource
        resource.prlimit(self.spawned.init_pid, resource_, (soft, hard))

    def signal_thread(self, task, sig: int) -> None:
        """A signal the Sentry raises for one app thread (SIGPIPE): the host kernel delivers it."""
        try:
            os.kill(task.ctx.tid, sig)
        except (OSError, AttributeError, TypeError):
            pass

    def signal_init(self, sig: int) -> None:
        if self.spawned is not None:
            try:
                os.kill(self.spawned.init_pid, sig)
            except OSError:
                pass

    def kill_all(self) -> None:
        sp = self.spawned
        if sp is not None:
            for pid in (sp.init_pid, sp.holder_pid):
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            if sp.lifeline >= 0:
                os.close(sp.lifeline)
                sp.lifeline = -1


def proc_status_fields(pid: int, names: tuple[bytes, ...]) -> dict[bytes, int]:
    """Numeric fields of /proc/PID/status (hex masks such as SigBlk are read
    as hex, the rest as the last decimal number on the line)."""
    out: dict[bytes, int] = {}
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            key, _, value = line.partition(b":")
            if key in names:
                value = value.split()
                out[key] = int(value[-1], 16) if key.startswith(b"Sig") or key.startswith(b"Shd") \
                    else int(value[-1])
                if len(out) == len(names):
                    break
    return out


def ns_pids_of(host_pid: int) -> tuple[int, ...]:
    """The pids an app process has in the sandbox's pid namespace and in
    those below it (a pod container's), outermost first: NSpid without the
    Sentry's own."""
    try:
        with open(f"/proc/{host_pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    ids = tuple(int(v) for v in line.split()[1:])
                    return ids[1:] or ids
    except (OSError, ValueError):
        pass
    return (host_pid,)


def exit_status_of(host_pid: int) -> int | None:
    """The wait status of an exited (zombie) process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{host_pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[49]) if len(fields) > 49 else None


class HostWaits:
    """Keeps an epoll set registered for exactly the host fds the kernel's
    parked calls wait on (``kernel.host_waits``)."""

    def __init__(self, ep: select.epoll, kernel):
        self.ep = ep
        self.kernel = kernel
        self.watched: dict[int, int] = {}

    def sync(self) -> None:
        kernel = self.kernel
        want = {}
        for fd, waits in kernel.host_waits.items():
            ev = 0
            for events, _ in waits.values():
                ev |= events
            if waits:
                want[fd] = ev
        for fd in list(self.watched):
            if fd not in want:
                try:
                    self.ep.unregister(fd)
                except OSError:
                    pass
                del self.watched[fd]
        for fd, ev in want.items():
            try:
                if fd in self.watched:
                    if self.watched[fd] != ev:
                        self.ep.modify(fd, ev)
                else:
                    self.ep.register(fd, ev)
                self.watched[fd] = ev
            except OSError:
                kernel.host_fd_ready(fd, C.POLLERR)

    def __contains__(self, fd: int) -> bool:
        return fd in self.watched
