"""A sandbox: the gofer, the Sentry's kernel and filesystems, and a platform
running the app.  ``pysc do`` runs one in the calling process."""
from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import weakref
import stat as pystat

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.fdtable import FDTable
from pysc.core.file import HostFDFile
from pysc.core.fs.overlay import OverlayFS
from pysc.core.fs.tmpfs import TmpFS
from pysc.core.kernel import Kernel
from pysc.core.pidns import PIDNamespace
from pysc.core.coreflags import DEFAULT_PLATFORM, FALLBACK_PLATFORM
from pysc.core.plugins import platform_class, platforms
from pysc.core.sandbox_paths import debug_log_path
from pysc.core.task import Credentials, FSContext
from pysc.core.vfs import VFS, Mount

log = logging.getLogger("pysc.sandbox")

TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
               signal.SIGUSR2)
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


class SandboxError(Exception):
    """A sandbox could not be set up; the message says why."""


def exit_code(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def gofer_mounts(config, root_path: str, binds=()) -> list[tuple[str, bool]]:
    """The gofer's mounts, in order: [(host path, readonly)].  The root is
    read-only below the in-memory overlay; ``binds`` as for ``build_vfs``."""
    return [(root_path, config.overlay2 == "root:memory")] + [(src, ro) for _, src, ro in binds]


class Sandbox:
    def __init__(self, config, pm, workdir: str):
        self.config = config
        self.pm = pm
        self.workdir = workdir
        offered = platforms(pm)
        name = config.platform
        if name not in offered:
            raise SandboxError(f"unknown platform {name!r}: choose one of {', '.join(sorted(offered))}")
        cls = platform_class(offered[name])
        why = cls.available()
        if why and name == DEFAULT_PLATFORM and FALLBACK_PLATFORM in offered \
                and not platform_class(offered[FALLBACK_PLATFORM]).available():
            log.warning("platform %s is not available here (%s): using %s", name, why, FALLBACK_PLATFORM)
            name, cls, why = FALLBACK_PLATFORM, platform_class(offered[FALLBACK_PLATFORM]), None
        if why:
            raise SandboxError(f"platform {name} is not available here: {why}")
        if config.network == "sandbox":
            raise SandboxError("--network=sandbox needs pysc's user-space network stack, which is not "
                               "built yet; use --network=host or --network=none")
        self.kernel = Kernel(config, pm, name, sentry_owned=getattr(cls, "sentry_owned", False))
        self.platform = cls(self.kernel, config)
        self.kernel.platform = self.platform
        self.gofer = None
        self.root_fds: list[int] = []  # one per gofer mount: for directfs, below which the Sentry walks
        # joined containers: mount tree, host root, pid namespace
        self.containers: dict[str, tuple[VFS, str, PIDNamespace]] = {}
        self.killed_by: int | None = None  # a signal to pysc that ended the sandbox

    # --- filesystems ---
    def build_vfs(self, root_path: str, binds=(), root_readonly: bool = False,
                  donation: socket.socket | None = None) -> None:
        """The root (the gofer's first mount, below the overlay unless
        --overlay2=none), /proc, /dev, /dev/shm, /sys, then ``binds``:
        [(destination, host source, readonly)] served by the same gofer.

        With ``donation`` (directfs only) the mount roots arrive on that
        socket from whoever started the sandbox (`pysc create`), and no
        gofer process is started."""
        mounts = gofer_mounts(self.config, root_path, binds)
        if donation is not None:
            self.root_fds = self._receive_roots(donation, mounts)
        else:
            from pysc.fsproxy.gofer import start_gofer
            self.gofer = start_gofer(mounts, self.workdir, debug_log_path(self.config, "gofer"),
                                     debug=bool(self.config.debug), serve=not self.config.directfs)
            self.root_fds = self.gofer.root_fds
        self.kernel.vfs = self._make_tree(root_path, binds, root_readonly, self._gofer_fs)

    def _make_tree(self, root_path: str, binds, root_readonly: bool, fs_of,
                   pidns: PIDNamespace | None = None) -> VFS:
        """A container's mount tree: its root (below the in-memory overlay
        unless --overlay2=none), /proc (of ``pidns``, default the sandbox's),
        /dev, /dev/shm, /sys, then ``binds``.  ``fs_of(index, source,
        readonly)`` gives the filesystem of gofer mount ``index``."""
        overlay = self.config.overlay2 == "root:memory"
        lower = fs_of(0, root_path, overlay)
        if overlay:
            fs = OverlayFS(lower.root)
            root = Mount(fs, fs.root, b"/", "none", "overlay", "rw", readonly=root_readonly)
        else:
            fs = lower
            root = Mount(fs, fs.root, b"/", root_path, "9p", "rw", readonly=root_readonly)
        vfs = VFS(root)
        fstypes = {}
        for result in self.pm.hook.pysc_filesystems():
            fstypes.update(result)
        proc = fstypes["proc"](self.kernel)
        if pidns is not None:
            proc.pidns = pidns
        self.mount(b"/proc", "proc", proc, "proc", vfs=vfs)
        self.mount(b"/dev", "devfs", fstypes["devfs"](self.kernel), "tmpfs", "mode=755", vfs=vfs)
        self.mount(b"/dev/shm", "tmpfs", TmpFS(mode=0o1777), "tmpfs", "mode=1777", vfs=vfs)
        self.mount(b"/sys", "sysfs", fstypes["sysfs"](self.kernel), "sysfs", readonly=True, vfs=vfs)
        for i, (dest, src, ro) in enumerate(binds, start=1):
            self.mount(os.fsencode(dest), src, fs_of(i, src, ro), "9p", "bind", readonly=ro, create=True,
                       vfs=vfs)
        return vfs

    def _receive_roots(self, sock: socket.socket, mounts: list[tuple[str, bool]]) -> list[int]:
        from pysc.fsproxy.donation import recv_donation
        if not self.config.directfs:
            raise SandboxError("donated mount roots need --directfs")
        try:
            got, fds = recv_donation(sock)
        except (EOFError, OSError, ValueError) as e:
            raise SandboxError(f"the mount roots were not donated ({e})") from None
        finally:
            sock.close()
        if [(path, ro) for path, ro, _ in got] != mounts:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"donated mount roots {got} are not the mounts {mounts}")
        return fds

    def _gofer_fs(self, index: int, source: str, readonly: bool):
        exclusive = self.config.get("file-access") == "exclusive"
        if self.config.directfs:
            from pysc.core.fs.hostfs import HostFS
            return HostFS(self.root_fds[index], readonly=readonly, exclusive=exclusive, source=source)
        return self.gofer.filesystem(index, readonly=readonly, exclusive=exclusive)

    def mount(self, path: bytes, source: str, fs, fstype: str, options: str = "rw",
              readonly: bool = False, create: bool = False, vfs: VFS | None = None) -> None:
        """Mount ``fs`` at ``path``, resolved inside the sandbox (a symlink on
        the way leads to a place in the sandbox, never on the host); with
        ``create``, missing directories are made (in the overlay, not the host)."""
        if isinstance(fs, tuple):
            fs, root = fs
        else:
            root = fs.root
        vfs = vfs or self.kernel.vfs
        try:
            d = vfs.walk(None, vfs.root, path)
        except SyscallError:
            if not create:
                log.warning("cannot mount %s at %s: no such directory", fstype, path.decode())
                return
            d = self._make_dirs(vfs, path)
        if not d.inode.is_dir() and root.is_dir():
            raise SandboxError(f"cannot mount {source} at {path.decode()}: not a directory")
        where = d.path()
        vfs.mount(where, Mount(fs, root, where, source, fstype, options, readonly))

    def _make_dirs(self, vfs: VFS, path: bytes, depth: int = 0):
        """mkdir -p inside a container's tree, following symlinks there."""
        if depth > 40:
            raise SandboxError(f"cannot create mount point {path.decode()}: too many symlinks")
        d = vfs.root
        creds = Credentials.for_ids(0, 0)
        for name in [p for p in path.split(b"/") if p]:
            try:
                d = vfs.walk(None, d, name)
                continue
            except SyscallError as e:
                if e.errno != C.ENOENT:
                    raise SandboxError(f"cannot create mount point {path.decode()}: "
                                       f"{os.strerror(e.errno)}") from None
            try:
                link = vfs.walk(None, d, name, follow=False)
            except SyscallError:
                link = None
            if link is not None and link.inode.is_symlink():  # dangling: make its target
                target = link.inode.readlink()
                base = b"" if target.startswith(b"/") else d.path().rstrip(b"/") + b"/"
                d = self._make_dirs(vfs, base + target, depth + 1)
                continue
            try:
                d.inode.mkdir(name, 0o755, creds)
            except SyscallError as e:
                raise SandboxError(f"cannot create mount point {path.decode()}: "
                                   f"{os.strerror(e.errno)}") from None
            d.invalidate(name)
            d = vfs.child(d, name)
        return d

    # --- the first process ---
    def find_command(self, name: bytes, path_env: bytes, cwd, vfs: VFS | None = None) -> bytes:
        vfs = vfs or self.kernel.vfs
        candidates = [name] if b"/" in name else [
            (d or b".") + b"/" + name for d in path_env.split(b":")]
        found_noexec = None
        for cand in candidates:
            try:
                d = vfs.walk(None, cwd, cand)
            except SyscallError:
                continue
            st = d.inode.stat()
            if pystat.S_ISREG(st.mode):
                if st.mode & 0o111:
                    return cand
                found_noexec = cand
        if found_noexec is not None:
            raise SandboxError(f"{name.decode(errors='replace')}: permission denied", 126)
        raise SandboxError(f"{name.decode(errors='replace')}: command not found", 127)

    def stdio(self) -> FDTable:
        """The caller's stdio as the sandbox's fds 0-2."""
        table = FDTable()
        for fd in (0, 1, 2):
            try:
                table.install_at(fd, self._stdio_file(fd, fd, self.kernel.vfs))
            except OSError:
                continue
        return table

    def _stdio_file(self, fd: int, index: int, vfs: VFS) -> HostFDFile:
        """Host fd ``fd`` as stdio ``index`` of a process, reopened so that
        the Sentry never blocks on it; a terminal also appears in ``vfs`` as
        /dev/pts/N (N counts the host terminals the sandbox has seen)."""
        st = os.fstat(fd)
        tty = os.isatty(fd)
        flags = C.O_RDWR if tty else (C.O_RDONLY if index == 0 else C.O_WRONLY)
        node, name = self._pts_node(st.st_rdev, vfs) if tty else (None, b"")
        f = HostFDFile(reopen_nonblocking(fd, index), flags, inode=node, name=name, shared_offset=True)
        if tty:
            self.kernel.objects.setdefault("host_ttys", {}).setdefault(st.st_rdev, f.fd)
        return f

    def _pts_node(self, rdev: int, vfs: VFS):
        """The devpts node of a host terminal in ``vfs``, made on first use,
        so that fstat of the terminal and stat of /dev/pts/N agree (ttyname
        compares them); (node, path), or (None, b"") without a /dev/pts."""
        numbers = self.kernel.objects.setdefault("pts_numbers", {})
        name = str(numbers.setdefault(rdev, len(numbers))).encode()
        try:
            pts = vfs.walk(None, vfs.root, b"/dev/pts").inode
            try:
                node = pts.lookup(name)
            except SyscallError:
                pts.mknod(name, C.S_IFCHR | 0o620, rdev, Credentials.for_ids(0, 5))
                node = pts.lookup(name)
        except SyscallError:
            return None, b""
        return (node, b"/dev/pts/" + name) if node.stat().rdev == rdev else (None, b"")

    def run(self, argv: list[bytes], env: dict[bytes, bytes], cwd: bytes, uid: int, gid: int,
            root_path: str = "/") -> int:
        """`pysc do`: boot, run until init exits, return its exit code."""
        creds = Credentials.for_ids(uid, gid, tuple(os.getgroups()) if uid == os.getuid() else ())
        self.boot(root_path, argv, env, cwd, creds, new_net=self.config.network == "none")
        return self.serve()

    def boot(self, root_path: str, argv: list[bytes], env: dict[bytes, bytes], cwd: bytes,
             creds: Credentials, *, mounts=(), tmpfs=(), root_readonly: bool = False, new_net: bool = False,
             netns_path: str | None = None, hold: bool = False, umask: int = 0o022,
             donation: socket.socket | None = None) -> None:
        """Build the sandbox and spawn its init, which waits before exec if ``hold``."""
        self.root_path = root_path
        if self.config.get("pin-cpu") and self.platform.name in ("ptrace", "seccomp"):
            pin_to_one_cpu()
        self.build_vfs(root_path, mounts, root_readonly, donation)
        for dest, ro in tmpfs:
            self.mount(os.fsencode(dest), "tmpfs", TmpFS(mode=0o1777), "tmpfs", readonly=ro, create=True)
        vfs = self.kernel.vfs
        try:
            cwd_d = vfs.walk(None, vfs.root, cwd)
        except SyscallError:
            cwd_d = vfs.root
        path = self.find_command(argv[0], env.get(b"PATH", b"/usr/local/bin:/usr/bin:/bin"), cwd_d)
        fdt = self.stdio()
        fs = FSContext(vfs.root, cwd_d, umask)
        kernel = self.kernel

        def make_init(ctx):
            task = kernel.new_init(1, creds, fs, fdt, ctx)
            ctx.task = task

        log.info("sandbox: platform %s, network %s, overlay %s, directfs %s; running %r",
                 self.platform.name, self.config.network, self.config.overlay2, self.config.directfs,
                 argv)
        self.platform.start(root_path, path, argv, env, new_net, make_init, hold=hold)
        if new_net:
            self.platform.enter_netns()
        elif netns_path:
            enter_netns_path(netns_path)

    def release(self) -> None:
        self.platform.release()

    # --- containers that join this sandbox (the containers of a pod) ---
    def add_container(self, cid: str, root_path: str, binds, tmpfs, root_readonly: bool,
                      fds: list[int]) -> None:
        """Give container ``cid`` of the pod its own mount tree, over the mount
        roots its `pysc create` donated (``fds``: the root, then ``binds``).
        and its own pid namespace, as under Kubernetes; it shares everything
        else with the sandbox: kernel, network, hostname.  Runs on the tracer
        thread."""
        if not self.config.directfs:
            raise SandboxError("a container joins a pod sandbox only with --directfs")
        if cid in self.containers:
            raise SandboxError(f"container {cid} is in this sandbox already")
        if len(fds) != 1 + len(binds):
            raise SandboxError(f"container {cid}: {len(fds)} mount roots for {1 + len(binds)} mounts")
        from pysc.core.fs.hostfs import HostFS
        exclusive = self.config.get("file-access") == "exclusive"

        def fs_of(index: int, source: str, readonly: bool):
            return HostFS(fds[index], readonly=readonly, exclusive=exclusive, source=source)

        pidns = PIDNamespace(self.kernel, self.kernel.root_pidns)
        vfs = self._make_tree(root_path, binds, root_readonly, fs_of, pidns)
        for dest, ro in tmpfs:
            self.mount(os.fsencode(dest), "tmpfs", TmpFS(mode=0o1777), "tmpfs", readonly=ro, create=True,
                       vfs=vfs)
        self.containers[cid] = (vfs, root_path, pidns)

    def remove_container(self, cid: str) -> "weakref.ref[VFS] | None":
        """Container ``cid``'s init has exited: as when the init of a pid
        namespace dies, its other processes are killed, and its mount tree
        is dropped.  Dentries form cycles, so only the collector frees the
        tree (and, through HostInode.__del__, the host fds below its roots):
        the caller runs it once ``processes_in`` the returned tree are gone.
        Runs on the tracer thread."""
        entry = self.containers.pop(cid, None)
        if entry is None:
            return None
        for tg in self.processes_in(entry[0]):
            self.platform.signal_processes(signal.SIGKILL, pid=tg.pid)
        return weakref.ref(entry[0])

    def processes_in(self, vfs: VFS) -> list:
        """The live processes (ThreadGroups) whose mount tree is ``vfs``: a
        container's."""
        return [tg for tg in list(self.kernel.thread_groups.values())
                if tg.alive and tg.leader is not None and tg.leader.vfs is vfs]

    def spawn_exec(self, argv: list[bytes], env: dict[bytes, bytes], cwd: bytes, creds: Credentials,
                   stdio: list[int], container: str | None = None):
        """Start another process in the running sandbox (`pysc exec`, or the
        init of a container that joined it), with the caller's host fds as its
        stdio, in ``container``'s mount tree (default: the sandbox's own).
        Runs on the tracer thread; returns (host pid, ThreadGroup)."""
        if container is not None and container not in self.containers:
            raise SandboxError(f"no container {container} in this sandbox")
        vfs, root_path, pidns = self.containers[container] if container \
            else (self.kernel.vfs, self.root_path, self.kernel.root_pidns)
        try:
            cwd_d = vfs.walk(None, vfs.root, cwd)
        except SyscallError:
            raise SandboxError(f"exec: cwd {cwd.decode(errors='replace')}: no such directory") from None
        path = self.find_command(argv[0], env.get(b"PATH", b"/usr/local/bin:/usr/bin:/bin"), cwd_d, vfs)
        fdt = FDTable()
        for i, hostfd in enumerate(stdio[:3]):  # the caller keeps (and closes) its fds
            fdt.install_at(i, self._stdio_file(hostfd, i, vfs))
        fs = FSContext(vfs.root, cwd_d, 0o022)
        made = []

        ttys = {os.fstat(fd).st_rdev for fd in stdio[:3] if os.isatty(fd)}

        def make_task(ctx, tid, ns_ids):
            task = self.kernel.new_process(tid, creds, fs, fdt, ctx, pidns, ns_ids)
            ctx.task = task
            made.append(task)
            for rdev in ttys:  # its terminal's foreground process group is its own
                self.kernel.objects.setdefault("tty_pgrp", {})[rdev] = task.tg.pgid

        try:
            hostpid = self.platform.spawn_process(root_path, path, argv, env, make_task, pidns)
        except BaseException:
            if not made:
                fdt.close_all()
            raise
        return hostpid, made[0].tg

    def serve(self) -> int:
        """Run the app until init exits; returns its exit code (128+N for signal N)."""
        gc.enable()  # `pysc` turns it off for start-up
        kernel = self.kernel
        old = {s: signal.signal(s, self._forward) for s in FORWARDED_SIGNALS}
        self.pm.hook.pysc_sandbox_started(sandbox=self)
        try:
            self.platform.run()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.platform.kill_all()
            self.pm.hook.pysc_sandbox_stopped(sandbox=self)
            self.stop()
        status = kernel.exit_status
        log.info("sandbox: init exited with wait status %s", status)
        if self.killed_by is not None:
            return 128 + self.killed_by
        return exit_code(status) if status is not None else 128 + signal.SIGKILL

    def _forward(self, sig, frame) -> None:
        """A signal to pysc goes to the sandbox's init.  As the init of its pid
        namespace, it ignores signals it has no handler for; for those that
        would end an ordinary process, the sandbox is ended instead, so that
        Ctrl-C and `timeout` work as they do on the command natively."""
        if sig in TERMINATING and not self.platform.init_handles(sig):
            self.killed_by = sig
            self.platform.signal_init(signal.SIGKILL)
        else:
            self.platform.signal_init(sig)

    def stop(self) -> None:
        if self.gofer is not None:
            self.gofer.stop()
            self.gofer = None


def enter_netns_path(path: str) -> None:
    """Make the Sentry's inet sockets live in the network namespace at ``path``."""
    from pysc.platforms.hostproc import native
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        native.setns(fd, C.CLONE_NEWNET)
    except OSError as e:
        raise SandboxError(f"cannot join the network namespace {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def reopen_nonblocking(fd: int, index: int | None = None) -> int:
    """A host fd for the caller's stdio the Sentry can use without blocking.

    Pipes, FIFOs and terminals are reopened through /proc/self/fd, which makes
    a new open file description whose O_NONBLOCK does not leak to the caller;
    regular files are dup'ed so that the offset stays shared with the caller."""
    st = os.fstat(fd)
    if pystat.S_ISFIFO(st.st_mode) or pystat.S_ISCHR(st.st_mode):
        try:
            reading = (fd if index is None else index) == 0
            mode = os.O_RDWR if pystat.S_ISCHR(st.st_mode) else (os.O_RDONLY if reading else os.O_WRONLY)
            return os.open(f"/proc/self/fd/{fd}", mode | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError:
            pass
    return os.dup(fd)


def pin_to_one_cpu() -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[os.getpid() % len(cpus)]})
    except OSError:
        pass
