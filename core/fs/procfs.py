"""procfs: a synthetic /proc that shows only the sandbox's processes, with
sandbox pids.

Per-process data comes from the Sentry's objects (ThreadGroup, Task,
Credentials, FDTable, VFS).  What the Sentry does not track (CPU times,
memory sizes, the memory map, argv and environment, the signal dispositions
the host kernel keeps for a delegated rt_sigaction) is read from the host's
/proc entry of the app process (``task.ctx.tid`` is a task's host tid), with
every host pid replaced by the sandbox's.  Without a host process (a
platform that emulates everything) those fields fall back to what the
thread group offers (``tg.argv``, ``tg.envp``, ``tg.mm.maps()``) or zeros.
"""
from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Callable

from pysc.core.abi import consts as C
from pysc.core.abi.structs import os_major, os_minor
from pysc.core.errors import SyscallError
from pysc.core.fs.synthetic import SynthFS, SynthInode
from pysc.core.vfs import Dentry, Mount

if TYPE_CHECKING:
    from pysc.core.file import File
    from pysc.core.task import Task, ThreadGroup

PROC_SUPER_MAGIC = 0x9FA0
CLOCK_TICKS = 100
CAP_LAST_CAP = 40

# Filesystem types listed in /proc/filesystems: (nodev, name).
FILESYSTEMS = (
    (True, "sysfs"),
    (True, "tmpfs"),
    (True, "proc"),
    (True, "devtmpfs"),
    (True, "devpts"),
    (True, "mqueue"),
    (True, "overlay"),
    (True, "cgroup"),
    (True, "cgroup2"),
)

# /proc/PID/limits: resource, name, unit.
_LIMITS = (
    (C.RLIMIT_CPU, "Max cpu time", "seconds"),
    (C.RLIMIT_FSIZE, "Max file size", "bytes"),
    (C.RLIMIT_DATA, "Max data size", "bytes"),
    (C.RLIMIT_STACK, "Max stack size", "bytes"),
    (C.RLIMIT_CORE, "Max core file size", "bytes"),
    (C.RLIMIT_RSS, "Max resident set", "bytes"),
    (C.RLIMIT_NPROC, "Max processes", "processes"),
    (C.RLIMIT_NOFILE, "Max open files", "files"),
    (C.RLIMIT_MEMLOCK, "Max locked memory", "bytes"),
    (C.RLIMIT_AS, "Max address space", "bytes"),
    (C.RLIMIT_LOCKS, "Max file locks", "locks"),
    (C.RLIMIT_SIGPENDING, "Max pending signals", "signals"),
    (C.RLIMIT_MSGQUEUE, "Max msgqueue size", "bytes"),
    (C.RLIMIT_NICE, "Max nice priority", ""),
    (C.RLIMIT_RTPRIO, "Max realtime priority", ""),
    (C.RLIMIT_RTTIME, "Max realtime timeout", "us"),
)

_STATE_NAMES = {
    "R": "R (running)", "S": "S (sleeping)", "D": "D (disk sleep)", "T": "T (stopped)",
    "t": "t (tracing stop)", "Z": "Z (zombie)", "X": "X (dead)", "I": "I (idle)",
}

# Lines of the host's /proc/PID/status copied as they are.
_HOST_STATUS_MEM = ("VmPeak", "VmSize", "VmLck", "VmPin", "VmHWM", "VmRSS", "RssAnon", "RssFile",
                    "RssShmem", "VmData", "VmStk", "VmExe", "VmLib", "VmPTE", "VmSwap",
                    "HugetlbPages")
_HOST_STATUS_SIG = ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
_HOST_STATUS_TAIL = ("Cpus_allowed", "Cpus_allowed_list", "Mems_allowed", "Mems_allowed_list",
                     "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")

# Static values of /proc/sys.
SYS_DEFAULTS = {
    ("kernel", "ostype"): "Linux",
    ("kernel", "pid_max"): "4194304",
    ("kernel", "ngroups_max"): "65536",
    ("kernel", "cap_last_cap"): str(CAP_LAST_CAP),
    ("kernel", "shmmax"): "18446744073692774399",
    ("kernel", "shmall"): "18446744073692774399",
    ("kernel", "shmmni"): "4096",
    ("kernel", "threads-max"): "257151",
    ("kernel", "overflowuid"): "65534",
    ("kernel", "overflowgid"): "65534",
    ("kernel", "yama", "ptrace_scope"): "1",
    ("kernel", "random", "entropy_avail"): "256",
    ("kernel", "random", "poolsize"): "4096",
    ("vm", "overcommit_memory"): "0",
    ("vm", "overcommit_ratio"): "50",
    ("vm", "max_map_count"): "65530",
    ("vm", "mmap_min_addr"): "65536",
    ("fs", "file-max"): "9223372036854775807",
    ("fs", "nr_open"): "1048576",
    ("fs", "pipe-max-size"): "1048576",
    ("net", "core", "somaxconn"): "4096",
}


def _host_read(path: str, limit: int = 1 << 22) -> bytes | None:
    """The bytes of a host /proc file, or None if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        total = 0
        while total < limit:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
            total += len(b)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _parse_status(data: bytes | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if not data:
        return out
    for line in data.decode(errors="replace").splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k] = v.strip()
    return out


def _escape(path: bytes | str) -> str:
    """Mount paths as /proc/mounts shows them (space, tab, newline, backslash as octal)."""
    if isinstance(path, bytes):
        path = path.decode(errors="surrogateescape")
    for ch, esc in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        path = path.replace(ch, esc)
    return path


def _ncpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def random_uuid() -> str:
    """A random (version 4, RFC 4122 variant) UUID in its text form, as
    /proc/sys/kernel/random/uuid gives.  Written out because the uuid module
    costs each start 5-8 ms (it imports platform)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _AnonInode(SynthInode):
    """What /proc/PID/fd/N leads to for a file without an inode (a socket of
    the netstack, an epoll instance): stat works, open fails with ENXIO."""

    def __init__(self, fs: "ProcFS", file: "File"):
        self.fs = fs
        self.file = file
        self.key = ("anon", id(file))
        self.ino = 0
        self.perm = 0o600
        self.owner = self.valid = self.time_ns = None

    @property
    def mode(self) -> int:
        return self.stat().mode

    def stat(self):
        return self.file.stat()

    def open(self, flags, dentry, task):
        raise SyscallError(C.ENXIO)


class _AnonDentry(Dentry):
    """A dentry for a file reached through /proc/PID/fd/N that has no name
    in the tree (a pipe); its path is what the fd link reads as."""

    def __init__(self, name: bytes, inode, mount: Mount, text: bytes):
        super().__init__(name, None, inode, mount)
        self.text = text

    def path(self) -> bytes:
        return self.text


class ProcFS(SynthFS):
    """The sandbox's /proc.  ``kernel`` supplies thread_groups, tasks, vfs,
    current, release, version, hostname, domainname, uptime() and boot_wall."""
    name = "proc"
    magic = PROC_SUPER_MAGIC
    file_size = 0

    def __init__(self, kernel) -> None:
        super().__init__()
        self.k = kernel
        self.pidns = kernel.root_pidns  # the one it was mounted in: its pids are that one's numbers
        self.boot_id = random_uuid()
        self.oom_score_adj: "weakref.WeakKeyDictionary[ThreadGroup, int]" = weakref.WeakKeyDictionary()
        self._cpuinfo: bytes | None = None
        self._mount: Mount | None = None
        self.root = self._build_root()

    # ------------------------------------------------------------------
    # Sentry objects
    # ------------------------------------------------------------------
    def _tg(self, pid: int) -> "ThreadGroup | None":
        tg = self.k.thread_groups.get(pid)
        if tg is None or not tg.tasks or getattr(tg, "exit_status", None) is not None \
                or not self.pidns.sees(tg):
            return None
        return tg

    def _task(self, pid: int, tid: int | None) -> "Task | None":
        tg = self._tg(pid)
        if tg is None:
            return None
        if tid is None:
            return tg.leader
        for t in tg.tasks:
            if t.tid == tid and not getattr(t, "exited", False):
                return t
        return None

    def _need(self, pid: int, tid: int | None) -> "tuple[ThreadGroup, Task]":
        task = self._task(pid, tid)
        if task is None:
            raise SyscallError(C.ESRCH)
        return task.tg, task

    def _current(self) -> "Task":
        t = getattr(self.k, "current", None)
        if t is None:
            raise SyscallError(C.ENOENT)
        return t

    def live_pids(self) -> list[int]:
        return sorted(pid for pid in list(self.k.thread_groups) if self._tg(pid) is not None)

    def _ticks(self) -> int:
        return int(self.k.uptime() * CLOCK_TICKS)

    def _boot_wall(self) -> float:
        b = getattr(self.k, "boot_wall", None)
        if b is None:
            import time
            b = time.time() - self.k.uptime()
        return b

    def proc_mount(self) -> Mount:
        """The mount /proc is on (for dentries of anonymous files)."""
        vfs = getattr(self.k, "vfs", None)
        if vfs is not None:
            for m in vfs.mount_list():
                if m.fs is self:
                    return m
        if self._mount is None:
            self._mount = Mount(self, self.root, b"/proc", "proc", "proc")
        return self._mount

    # --- the host process behind a task ---------------------------------
    @staticmethod
    def _host_tid(task: "Task | None") -> int | None:
        ctx = getattr(task, "ctx", None) if task is not None else None
        tid = getattr(ctx, "tid", None)
        return tid if isinstance(tid, int) and tid > 0 else None

    def _host_dir(self, tg: "ThreadGroup", task: "Task | None") -> str | None:
        """/proc/HOSTPID or /proc/HOSTPID/task/HOSTTID of the app process."""
        hpid = self._host_tid(tg.leader)
        if task is None:
            return f"/proc/{hpid}" if hpid else None
        htid = self._host_tid(task)
        if htid is None:
            return None
        return f"/proc/{hpid}/task/{htid}" if hpid else f"/proc/{htid}"

    def _host(self, tg: "ThreadGroup", task: "Task | None", name: str) -> bytes | None:
        d = self._host_dir(tg, task)
        return _host_read(f"{d}/{name}") if d else None

    # ------------------------------------------------------------------
    # the tree
    # ------------------------------------------------------------------
    def _build_root(self):
        f = self.file
        static: dict[bytes, SynthInode] = {
            b"self": self.symlink(("self",), lambda: b"%d" % self.pidns.id_of(self._current().tg.pid)),
            b"thread-self": self.symlink(
                ("thread-self",),
                lambda: b"%d/task/%d" % (self.pidns.id_of(self._current().tg.pid),
                                         self.pidns.id_of(self._current().tid))),
            b"mounts": self.symlink(("mounts",), b"self/mounts"),
            b"meminfo": f(("meminfo",), self._meminfo),
            b"cpuinfo": f(("cpuinfo",), self._cpuinfo_text),
            b"stat": f(("stat",), self._stat_global),
            b"loadavg": f(("loadavg",), self._loadavg),
            b"version": f(("version",), lambda: f"Linux version {self.k.release} {self.k.version}\n"),
            b"uptime": f(("uptime",), lambda: "%.2f %.2f\n" % (self.k.uptime(), 0.0)),
            b"filesystems": f(("filesystems",), lambda: "".join(
                f"{'nodev' if nodev else ''}\t{name}\n" for nodev, name in FILESYSTEMS)),
            b"sys": self._build_sys(),
        }
        self.static = static

        def entries():
            out = dict(static)
            for pid in self.live_pids():
                out[b"%d" % self.pidns.id_of(pid)] = self._pid_dir(pid, None)
            return out

        def lookup(name: bytes):
            if name in static:
                return static[name]
            if not name.isdigit() or name.startswith(b"0"):
                return None
            n = self.pidns.kernel_id(int(name))
            if n is None:
                return None
            if self._tg(n) is not None:
                return self._pid_dir(n, None)
            # A thread's tid works too, though /proc does not list it.
            task = self.k.tasks.get(n)
            if task is not None and self._task(task.tg.pid, n) is not None:
                return self._pid_dir(task.tg.pid, n, key_pid=n)
            return None

        return self.dir(("root",), entries, lookup)

    def _build_sys(self):
        k = self.k
        values: dict[tuple, object] = dict(SYS_DEFAULTS)
        values[("kernel", "hostname")] = lambda: k.hostname
        values[("kernel", "domainname")] = lambda: getattr(k, "domainname", "(none)")
        values[("kernel", "osrelease")] = lambda: k.release
        values[("kernel", "version")] = lambda: k.version
        values[("kernel", "random", "boot_id")] = lambda: self.boot_id
        values[("kernel", "random", "uuid")] = lambda: random_uuid()
        tree: dict = {}
        for path, value in values.items():
            node = tree
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value

        def build(node: dict, prefix: tuple):
            entries = {}
            for name, sub in sorted(node.items()):
                key = prefix + (name,)
                if isinstance(sub, dict):
                    entries[name.encode()] = build(sub, key)
                else:
                    entries[name.encode()] = self.file(
                        key, (lambda v=sub: (v() if callable(v) else v) + "\n"))
            return self.dir(prefix, entries)

        return build(tree, ("sys",))

    # --- /proc/PID and /proc/PID/task/TID ---------------------------------
    def _pid_dir(self, pid: int, tid: int | None, key_pid: int | None = None):
        """The directory of process ``pid`` (tid None) or of its thread ``tid``."""
        base = ("pid", pid, tid, key_pid)
        valid = lambda: self._task(pid, tid) is not None  # noqa: E731

        def owner():
            task = self._task(pid, tid)
            if task is None:
                return (0, 0)
            return (task.creds.euid, task.creds.egid)

        def start_ns():
            tg = self._tg(pid)
            if tg is None:
                return self.created_ns
            return int((self._boot_wall() + tg.start_time / CLOCK_TICKS) * 1e9)

        kw = dict(owner=owner, valid=valid, time_ns=start_ns)

        def F(name: str, gen: Callable, write=None, perm=None):
            return self.file(base + (name,), gen, write, perm=perm, **kw)

        def L(name: str, target: Callable, magic=None):
            return self.symlink(base + (name,), target, magic, **kw)

        def entries():
            e = {
                b"exe": L("exe", lambda: self._exe(pid, tid).path(), lambda t: self._exe(pid, tid)),
                b"cwd": L("cwd", lambda: self._fsdentry(pid, tid, "cwd").path(),
                          lambda t: self._fsdentry(pid, tid, "cwd")),
                b"root": L("root", lambda: self._fsdentry(pid, tid, "root").path(),
                           lambda t: self._fsdentry(pid, tid, "root")),
                b"fd": self.dir(base + ("fd",), lambda: self._fd_entries(pid, tid, base, kw),
                                perm=0o500, **kw),
                b"fdinfo": self.dir(base + ("fdinfo",),
                                    lambda: self._fdinfo_entries(pid, tid, base, kw),
                                    perm=0o500, **kw),
                b"stat": F("stat", lambda: self._stat(pid, tid)),
                b"statm": F("statm", lambda: self._host_or(pid, tid, "statm", b"0 0 0 0 0 0 0\n")),
                b"status": F("status", lambda: self._status(pid, tid)),
                b"cmdline": F("cmdline", lambda: self._cmdline(pid, tid, "cmdline", "argv")),
                b"environ": F("environ", lambda: self._cmdline(pid, tid, "environ", "envp"),
                              perm=0o400),
                b"auxv": F("auxv", lambda: self._host_or(pid, tid, "auxv", b""), perm=0o400),
                b"comm": F("comm", lambda: self._need(pid, tid)[0].comm + b"\n",
                           write=lambda data: self._write_comm(pid, tid, data), perm=0o644),
                b"maps": F("maps", lambda: self._maps(pid, tid, "maps")),
                b"smaps": F("smaps", lambda: self._maps(pid, tid, "smaps")),
                b"mounts": F("mounts", lambda: self._mounts(pid, tid)),
                b"mountinfo": F("mountinfo", lambda: self._mountinfo(pid, tid)),
                b"limits": F("limits", lambda: self._limits(pid, tid)),
                b"oom_score_adj": F("oom_score_adj",
                                    lambda: "%d\n" % self.oom_score_adj.get(self._need(pid, tid)[0], 0),
                                    write=lambda data: self._write_oom(pid, tid, data)),
                b"oom_score": F("oom_score", lambda: "0\n"),
                b"oom_adj": F("oom_adj", lambda: "%d\n" % (
                    self.oom_score_adj.get(self._need(pid, tid)[0], 0) * 17 // 1000)),
                b"loginuid": F("loginuid", lambda: "4294967295"),
                b"sessionid": F("sessionid", lambda: "4294967295"),
                b"cgroup": F("cgroup", lambda: "0::/\n"),
                b"uid_map": F("uid_map", lambda: "%10u %10u %10u\n" % (0, 0, 4294967295)),
                b"gid_map": F("gid_map", lambda: "%10u %10u %10u\n" % (0, 0, 4294967295)),
                b"setgroups": F("setgroups", lambda: "allow\n"),
                b"wchan": F("wchan", lambda: "0"),
            }
            if tid is None:
                e[b"task"] = self.dir(base + ("task",), lambda: self._task_entries(pid), **kw)
            return dict(sorted(e.items()))

        return self.dir(base, entries, perm=0o555, **kw)

    def _task_entries(self, pid: int):
        tg = self._tg(pid)
        if tg is None:
            return {}
        return {b"%d" % self.pidns.id_of(t.tid): self._pid_dir(pid, t.tid)
                for t in sorted(tg.tasks, key=lambda t: t.tid) if not getattr(t, "exited", False)}

    # --- magic links ------------------------------------------------------
    def _exe(self, pid, tid) -> Dentry:
        tg, _ = self._need(pid, tid)
        if tg.exe is None:
            raise SyscallError(C.ENOENT)
        return tg.exe

    def _fsdentry(self, pid, tid, which: str) -> Dentry:
        _, task = self._need(pid, tid)
        d = getattr(task.fs, which, None)
        if d is None:
            raise SyscallError(C.ENOENT)
        return d

    def _file(self, pid, tid, fd: int) -> "File":
        _, task = self._need(pid, tid)
        try:
            return task.fdtable.get(fd)
        except SyscallError:
            raise SyscallError(C.ENOENT) from None

    def file_dentry(self, f: "File", name: bytes) -> Dentry:
        """The dentry /proc/PID/fd/N stands for."""
        if f.dentry is not None:
            return f.dentry
        inode = f.inode if f.inode is not None else _AnonInode(self, f)
        return _AnonDentry(name, inode, self.proc_mount(), f.path_for_proc())

    def _fd_entries(self, pid, tid, base, kw):
        task = self._task(pid, tid)
        if task is None:
            return {}
        out = {}
        for fd, f, _ in list(task.fdtable.items()):
            name = b"%d" % fd
            perm = 0
            if f.readable or f.flags & C.O_PATH:
                perm |= 0o500
            if f.writable:
                perm |= 0o300
            out[name] = self.symlink(
                base + ("fd", fd),
                lambda fd=fd: self._file(pid, tid, fd).path_for_proc(),
                lambda t, fd=fd, name=name: self.file_dentry(self._file(pid, tid, fd), name),
                perm=perm, owner=kw["owner"], time_ns=kw["time_ns"],
                valid=lambda fd=fd: self._fd_open(pid, tid, fd))
        return out

    def _fd_open(self, pid, tid, fd) -> bool:
        task = self._task(pid, tid)
        return task is not None and fd in task.fdtable.fds

    def _fdinfo_entries(self, pid, tid, base, kw):
        task = self._task(pid, tid)
        if task is None:
            return {}
        out = {}
        for fd, _, _ in list(task.fdtable.items()):
            out[b"%d" % fd] = self.file(
                base + ("fdinfo", fd), lambda fd=fd: self._fdinfo(pid, tid, fd),
                perm=0o444, owner=kw["owner"], time_ns=kw["time_ns"],
                valid=lambda fd=fd: self._fd_open(pid, tid, fd))
        return out

    def _fdinfo(self, pid, tid, fd) -> str:
        _, task = self._need(pid, tid)
        f = self._file(pid, tid, fd)
        flags = f.flags
        if task.fdtable.cloexec(fd):
            flags |= C.O_CLOEXEC
        mnt_id = f.dentry.mount.id if f.dentry is not None and f.dentry.mount is not None else 0
        try:
            ino = f.stat().ino
        except SyscallError:
            ino = 0
        return f"pos:\t{f.offset}\nflags:\t0{flags:o}\nmnt_id:\t{mnt_id}\nino:\t{ino}\n"

    # --- per-process files -------------------------------------------------
    def _host_or(self, pid, tid, name: str, default: bytes) -> bytes:
        tg, task = self._need(pid, tid)
        data = self._host(tg, task if tid is not None else None, name)
        return data if data is not None else default

    def _cmdline(self, pid, tid, name: str, attr: str) -> bytes:
        tg, task = self._need(pid, tid)
        data = self._host(tg, None, name)
        if data is not None:
            return data
        vals = getattr(tg, attr, None)
        if not vals:
            return b""
        return b"".join((v if isinstance(v, bytes) else str(v).encode()) + b"\0" for v in vals)

    def _maps(self, pid, tid, name: str) -> bytes:
        tg, task = self._need(pid, tid)
        data = self._host(tg, task if tid is not None else None, name)
        if data is not None:
            return data
        mm = getattr(tg, "mm", None)
        fn = getattr(mm, "maps", None)
        if fn is None:
            return b""
        lines = fn()  # the Sentry's own address space (kvm); smaps shows the same lines
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode()

    def _state(self, tg, task, host_state: str | None) -> str:
        if getattr(tg, "stopped", False):
            return "T"
        if task is getattr(self.k, "current", None):
            return "R"
        if getattr(task, "parked", None) is not None:
            return "S"
        if host_state is None or host_state in "tT":
            # Stopped for the Sentry (a syscall in progress) or not on the host.
            return "R"
        return host_state

    def _ppid(self, tg) -> int:
        p = tg.parent
        if p is None or self._tg(p.pid) is not p:
            return 0
        return self.pidns.id_of(p.pid)

    def _stat(self, pid, tid) -> bytes:
        tg, task = self._need(pid, tid)
        host = self._host(tg, task if tid is not None else None, "stat")
        f: list[bytes] = [b"0"] * 53  # 1-based fields, 52 of them
        host_state = None
        if host:
            rest = host.rpartition(b")")[2].split()
            for i, v in enumerate(rest[:50]):
                f[3 + i] = v
            if rest:
                host_state = rest[0].decode(errors="replace")
        else:
            f[18], f[25] = b"20", b"%d" % C.RLIM_INFINITY
        ns = self.pidns.id_of
        f[1] = b"%d" % ns(task.tid if tid is not None else pid)
        f[2] = b"(" + tg.comm + b")"
        f[3] = self._state(tg, task, host_state).encode()
        f[4] = b"%d" % self._ppid(tg)
        f[5] = b"%d" % ns(tg.pgid)
        f[6] = b"%d" % ns(tg.sid)
        f[7] = b"0"   # no controlling tty in the sandbox's terms
        f[8] = b"-1"
        f[20] = b"%d" % len(tg.tasks)
        f[22] = b"%d" % tg.start_time
        f[38] = b"%d" % getattr(tg, "exit_signal", C.SIGCHLD)
        return b" ".join(f[1:]) + b"\n"

    def _status(self, pid, tid) -> str:
        tg, task = self._need(pid, tid)
        host = _parse_status(self._host(tg, task if tid is not None else None, "status"))
        hstat = self._host(tg, task if tid is not None else None, "stat")
        host_state = None
        if hstat:
            rest = hstat.rpartition(b")")[2].split()
            host_state = rest[0].decode(errors="replace") if rest else None
        cr = task.creds
        state = self._state(tg, task, host_state)
        fds = [fd for fd, _, _ in task.fdtable.items()]
        fdsize = 64
        while fds and fdsize <= max(fds):
            fdsize *= 2
        ns = self.pidns.id_of
        lines = [
            ("Name", tg.comm.decode(errors="replace")),
            ("Umask", "%04o" % task.fs.umask),
            ("State", _STATE_NAMES.get(state, state)),
            ("Tgid", ns(tg.pid)),
            ("Ngid", 0),
            ("Pid", ns(task.tid)),
            ("PPid", self._ppid(tg)),
            ("TracerPid", 0),
            ("Uid", f"{cr.uid}\t{cr.euid}\t{cr.suid}\t{cr.fsuid}"),
            ("Gid", f"{cr.gid}\t{cr.egid}\t{cr.sgid}\t{cr.fsgid}"),
            ("FDSize", fdsize),
            ("Groups", " ".join(str(g) for g in cr.groups)),
            ("NStgid", ns(tg.pid)),
            ("NSpid", ns(task.tid)),
            ("NSpgid", ns(tg.pgid)),
            ("NSsid", ns(tg.sid)),
        ]
        lines += [(k, host[k]) for k in _HOST_STATUS_MEM if k in host]
        lines.append(("Threads", len(tg.tasks)))
        lines.append(("SigQ", f"0/{tg.rlimits.get(C.RLIMIT_SIGPENDING)[0]}"))
        lines += [(k, host.get(k, "0" * 16)) for k in _HOST_STATUS_SIG]
        lines += [
            ("CapInh", "%016x" % cr.cap_inheritable),
            ("CapPrm", "%016x" % cr.cap_permitted),
            ("CapEff", "%016x" % cr.cap_effective),
            ("CapBnd", "%016x" % cr.cap_bounding),
            ("CapAmb", "%016x" % cr.cap_ambient),
            ("NoNewPrivs", int(bool(cr.no_new_privs))),
            ("Seccomp", 0),
        ]
        lines += [(k, host[k]) for k in _HOST_STATUS_TAIL if k in host]
        return "".join(f"{k}:\t{v}\n" for k, v in lines)

    def _mount_view(self, task) -> list[tuple[Mount, bytes]]:
        """Mounts visible from the task's root, with paths relative to it."""
        vfs = getattr(task, "vfs", None) or self.k.vfs
        rootp = b"/"
        try:
            rootp = task.fs.root.path()
        except AttributeError:
            pass
        out = []
        for m in vfs.mount_list():
            mp = m.mountpoint
            if rootp != b"/":
                if mp == rootp:
                    mp = b"/"
                elif mp.startswith(rootp + b"/"):
                    mp = mp[len(rootp):]
                else:
                    continue
            out.append((m, mp))
        return out

    def _mounts(self, pid, tid) -> str:
        _, task = self._need(pid, tid)
        return "".join(f"{_escape(m.source or 'none')} {_escape(mp)} {m.fstype} {m.options} 0 0\n"
                       for m, mp in self._mount_view(task))

    def _mountinfo(self, pid, tid) -> str:
        _, task = self._need(pid, tid)
        view = self._mount_view(task)
        by_path = {mp: m for m, mp in view}
        out = []
        for m, mp in view:
            parent = m
            p = mp
            while p != b"/":
                p = p.rpartition(b"/")[0] or b"/"
                if p in by_path:
                    parent = by_path[p]
                    break
            dev = m.fs.dev
            mopts = "ro" if m.readonly else "rw"
            out.append(f"{m.id} {parent.id} {os_major(dev)}:{os_minor(dev)} / {_escape(mp)} "
                       f"{mopts} - {m.fstype} {_escape(m.source or 'none')} {m.options}\n")
        return "".join(out)

    def _limits(self, pid, tid) -> str:
        tg, _ = self._need(pid, tid)

        def fmt(v: int) -> str:
            return "unlimited" if v >= C.RLIM_INFINITY else str(v)

        out = ["%-25s %-20s %-20s %-10s\n" % ("Limit", "Soft Limit", "Hard Limit", "Units")]
        for res, name, unit in _LIMITS:
            soft, hard = tg.rlimits.get(res)
            line = "%-25s %-20s %-20s " % (name, fmt(soft), fmt(hard))
            if unit:
                line += "%-10s" % unit
            out.append(line + "\n")
        return "".join(out)

    # --- writable files -----------------------------------------------------
    def _write_comm(self, pid, tid, data: bytes) -> None:
        tg, _ = self._need(pid, tid)
        name = data.split(b"\0", 1)[0][:15]
        if name.endswith(b"\n"):
            name = name[:-1]
        tg.comm = name

    def _write_oom(self, pid, tid, data: bytes) -> None:
        tg, _ = self._need(pid, tid)
        try:
            v = int(data.strip() or b"x")
        except ValueError:
            raise SyscallError(C.EINVAL) from None
        if not -1000 <= v <= 1000:
            raise SyscallError(C.EINVAL)
        self.oom_score_adj[tg] = v

    # --- global files --------------------------------------------------------
    def _meminfo(self) -> bytes:
        data = _host_read("/proc/meminfo")
        if data is not None:
            return data
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024
        except (ValueError, OSError):
            total = avail = 0
        return (f"MemTotal:       {total:8d} kB\nMemFree:        {avail:8d} kB\n"
                f"MemAvailable:   {avail:8d} kB\nBuffers:               0 kB\n"
                f"Cached:                0 kB\nSwapTotal:             0 kB\n"
                f"SwapFree:              0 kB\n").encode()

    def _cpuinfo_text(self) -> bytes:
        if self._cpuinfo is None:
            data = _host_read("/proc/cpuinfo")
            if data is None:
                data = b"".join(b"processor\t: %d\nvendor_id\t: unknown\n\n" % i
                                for i in range(_ncpus()))
            self._cpuinfo = data
        return self._cpuinfo

    def _stat_global(self) -> bytes:
        data = _host_read("/proc/stat")
        btime = int(self._boot_wall())
        if data is None:
            n = _ncpus()
            lines = [b"cpu  0 0 0 0 0 0 0 0 0 0"]
            lines += [b"cpu%d 0 0 0 0 0 0 0 0 0 0" % i for i in range(n)]
            lines += [b"ctxt 0", b"btime %d" % btime, b"processes %d" % len(self.k.thread_groups),
                      b"procs_running 1", b"procs_blocked 0"]
            return b"\n".join(lines) + b"\n"
        out = []
        for line in data.splitlines():
            if line.startswith(b"btime "):
                line = b"btime %d" % btime
            elif line.startswith(b"processes "):
                line = b"processes %d" % max(self.live_pids() or [0])
            elif line.startswith(b"procs_running "):
                line = b"procs_running %d" % self._nrunning()
            elif line.startswith(b"procs_blocked "):
                line = b"procs_blocked 0"
            out.append(line)
        return b"\n".join(out) + b"\n"

    def _nrunning(self) -> int:
        return max(1, sum(1 for t in list(self.k.tasks.values())
                          if getattr(t, "parked", None) is None))

    def _loadavg(self) -> bytes:
        data = _host_read("/proc/loadavg")
        loads = data.split()[:3] if data else [b"0.00", b"0.00", b"0.00"]
        if len(loads) < 3:
            loads = [b"0.00", b"0.00", b"0.00"]
        pids = self.live_pids()
        return b"%s %s %s %d/%d %d\n" % (loads[0], loads[1], loads[2], self._nrunning(),
                                         len(self.k.tasks), max(pids or [0]))


def make_procfs(kernel) -> "tuple[ProcFS, SynthInode]":
    fs = ProcFS(kernel)
    return fs, fs.root
