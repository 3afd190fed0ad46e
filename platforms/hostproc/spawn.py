"""Starting the first app host process: fresh namespaces, a chroot, no new
privileges, and the seccomp filter, in that order.

    Sentry ──fork──▶ holder (unshares user/pid/mount/ipc/uts[/net] namespaces)
                       └─fork──▶ init (pid 1 of the new pid namespace): chroot,
                                 waits until the Sentry attached, installs the
                                 filter, execs.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import struct

from pysc.core.abi import consts as C
from pysc.core.record import Record
from pysc.platforms.hostproc import native

HIDDEN_FD = 3  # the app process's end of the fd-passing socket (a host fd the app never sees)


class Spawned(Record):
    holder_pid: int
    init_pid: int
    go_fd: int  # write one byte here to let init install its filter and exec
    lifeline: int = -1  # the Sentry's end of the holder's lifeline (see spawn_init)


def _write_map(pid: int, name: str, text: str) -> None:
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write(text)


def spawn_init(root: str, filter_prog: list, new_net: bool, hidden_sock: int | None,
               exec_path: bytes, argv: list[bytes], env: dict[bytes, bytes],
               filter_flags: int = 0) -> Spawned:
    """Fork the namespace holder and the init process; return their host pids."""
    flags = C.CLONE_NEWUSER | C.CLONE_NEWNS | C.CLONE_NEWPID | C.CLONE_NEWIPC | C.CLONE_NEWUTS
    if new_net:
        flags |= C.CLONE_NEWNET
    to_sentry_r, to_sentry_w = os.pipe()
    to_holder_r, to_holder_w = os.pipe()
    go_r, go_w = os.pipe()
    life_r, life_w = os.pipe()
    sentry = os.getpid()
    shell = shutil.which("sh")
    shell = os.fsencode(shell) if shell else None
    pid = os.fork()
    if pid == 0:  # holder
        try:
            native.prctl(native.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != sentry:
                os._exit(1)
            native.unshare(flags)
            os.write(to_sentry_w, b"u")
            if os.read(to_holder_r, 1) != b"m":
                os._exit(1)
            init = os.fork()
            if init == 0:
                _init(root, filter_prog, filter_flags, hidden_sock, exec_path, argv, env, go_r)
            os.write(to_sentry_w, struct.pack("<q", init))
            # The lifeline: when the Sentry is gone, however it ended, the
            # holder reads EOF and kills init, which ends every process of
            # the pid namespace (init's own parent-death signal does not
            # survive its exec into the app).  A shell costs far less memory
            # than this copy of the Sentry's Python.
            os.dup2(life_r, 0)
            devnull = os.open("/dev/null", os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.closerange(3, 1 << 16)
            # As the namespace's root (like init) it may still signal init
            # after its exec, which recomputes its capabilities.
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            if shell:
                try:
                    os.execv(shell, [b"pysc-ns-holder", b"-c", b"read x; kill -9 $0", b"%d" % init])
                except OSError:
                    pass
            os.read(0, 1)
            os.kill(init, signal.SIGKILL)
            os._exit(0)
        except BaseException:
            os._exit(127)
    os.close(to_sentry_w)
    os.close(to_holder_r)
    os.close(go_r)
    os.close(life_r)
    try:
        if os.read(to_sentry_r, 1) != b"u":
            raise OSError("the namespace holder failed to unshare its namespaces")
        outside = 65534 if os.geteuid() == 0 else os.geteuid()
        outside_gid = 65534 if os.geteuid() == 0 else os.getegid()
        _write_map(pid, "uid_map", f"0 {outside} 1\n")
        try:
            _write_map(pid, "setgroups", "deny")
        except OSError:
            pass
        _write_map(pid, "gid_map", f"0 {outside_gid} 1\n")
        os.write(to_holder_w, b"m")
        data = os.read(to_sentry_r, 8)
        if len(data) != 8:
            raise OSError("the namespace holder died before starting init")
        init_pid = struct.unpack("<q", data)[0]
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(go_w)
        os.close(life_w)
        raise
    finally:
        os.close(to_sentry_r)
        os.close(to_holder_w)
    return Spawned(pid, init_pid, go_w, life_w)


# user first: it grants the rights for the rest.  The holder itself stays in
# the outer pid namespace; the sandbox's is the one it made for its children.
NAMESPACES = ("user", "ipc", "uts", "net", "mnt", "pid_for_children")


def spawn_joined(holder_pid: int, root: str, filter_prog: list, hidden_sock: int | None,
                 exec_path: bytes, argv: list[bytes], env: dict[bytes, bytes],
                 filter_flags: int = 0, pidns_of: int | None = None, new_pidns: bool = False) -> Spawned:
    """Start another app process (for `exec`) in the namespaces of a running
    sandbox: an intermediate process joins them (the pid namespace applies to
    its children) and forks the new process, which then goes on as init did.

    The new process's pid namespace is the sandbox's, or that of host process
    ``pidns_of`` (an exec into a pod's container), or with ``new_pidns`` a
    new one below the sandbox's, where it is pid 1 (a pod container's init)."""
    ns_fds = [os.open(f"/proc/{holder_pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
    if pidns_of is not None:
        ns_fds.append(os.open(f"/proc/{pidns_of}/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    # the host's /proc: the sandbox's mount namespace, joined below, has its own
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if new_pidns else -1
    to_sentry_r, to_sentry_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            native.prctl(native.PR_SET_PDEATHSIG, signal.SIGKILL)
            for fd in ns_fds:
                try:
                    native.setns(fd, 0)
                except OSError as e:
                    if e.errno != 22:  # EINVAL: already a member (a namespace the sandbox shares)
                        raise

            def start() -> None:
                _init(root, filter_prog, filter_flags, hidden_sock, exec_path, argv, env, go_r)

            if new_pidns:
                waited, child = _fork_in_new_pidns(proc, start)
            else:
                waited = child = os.fork()
                if child == 0:
                    start()
            os.write(to_sentry_w, struct.pack("<q", child))
            os.closerange(3, 1 << 16)
            _exit_as(waited)
        except BaseException:
            os._exit(127)
    for fd in ns_fds + [to_sentry_w, go_r] + ([proc] if proc >= 0 else []):
        os.close(fd)
    try:
        data = os.read(to_sentry_r, 8)
    finally:
        os.close(to_sentry_r)
    if len(data) != 8:
        os.waitpid(pid, 0)
        os.close(go_w)
        raise OSError("could not join the sandbox's namespaces")
    return Spawned(pid, struct.unpack("<q", data)[0], go_w)


def _exit_as(child: int) -> None:
    """Wait for ``child`` and end the same way, so that whoever waits for
    this process reads the child's status."""
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _fork_in_new_pidns(proc: int, start) -> tuple[int, int]:
    """Run ``start()`` as pid 1 of a new pid namespace below the sandbox's;
    returns (the helper to wait for, the new process's host pid).

    This process cannot make that namespace itself: its own pid namespace
    is the host's, and Linux nests a new one only below the caller's own.  A
    helper child, which lives in the sandbox's, unshares it and forks the
    process; its host pid is read from the host's /proc (``proc``)."""
    r, w = os.pipe()
    helper = os.fork()
    if helper == 0:
        try:
            os.close(r)
            native.prctl(native.PR_SET_PDEATHSIG, signal.SIGKILL)
            native.unshare(C.CLONE_NEWPID)
            child = os.fork()
            if child == 0:
                os.close(w)
                start()
            os.write(w, b"f")
            os.close(w)
            _exit_as(child)
        finally:
            os._exit(127)
    os.close(w)
    try:
        if os.read(r, 1) != b"f":
            raise OSError("could not make a pid namespace")
    finally:
        os.close(r)
    fd = os.open(f"{helper}/task/{helper}/children", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    with open(fd, "rb") as f:
        children = f.read().split()
    if len(children) != 1:
        raise OSError("the new pid namespace has no init")
    return helper, int(children[0])


def _init(root: str, filter_prog: list, filter_flags: int, hidden_sock: int | None, exec_path: bytes,
          argv: list[bytes], env: dict[bytes, bytes], go_r: int) -> None:
    """In the init process: never returns.  With ``hidden_sock`` None, no fd
    but 0-2 is open when the filter is installed (a listener it creates is
    then fd 3)."""
    try:
        os.setsid()
        devnull = os.open("/dev/null", os.O_RDWR)
        os.chroot(root)
        os.chdir("/")
        # Become the namespace's root, which is an unprivileged id on the host.
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        native.prctl(native.PR_SET_PDEATHSIG, signal.SIGKILL)  # after the id change, which clears it
        hidden = fcntl.fcntl(hidden_sock, fcntl.F_DUPFD, 1000) if hidden_sock is not None else None
        go = fcntl.fcntl(go_r, fcntl.F_DUPFD_CLOEXEC, 1000)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if hidden is not None:
            os.dup2(hidden, HIDDEN_FD, inheritable=True)
        os.dup2(go, HIDDEN_FD + 1, inheritable=False)
        go = HIDDEN_FD + 1
        os.closerange(go + 1, 1 << 16)
        if hidden is None:
            try:
                os.close(HIDDEN_FD)
            except OSError:
                pass
        for sig in range(1, signal.NSIG):
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if os.read(go, 1) != b"g":  # the Sentry is now attached
            os._exit(1)
        os.close(go)
        native.prctl(native.PR_SET_NO_NEW_PRIVS, 1)
        native.install_seccomp(filter_prog, filter_flags)
        # The Sentry serves this execve like any other (the filter is on).
        os.execve(exec_path, argv, env)
    except BaseException:
        pass
    os._exit(127)


def enter_netns_of(pid: int) -> None:
    """Move the calling thread into ``pid``'s network namespace and bring up
    its loopback interface (a fresh namespace starts with it down)."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        native.setns(fd, C.CLONE_NEWNET)
    finally:
        os.close(fd)
    loopback_up()


def loopback_up() -> None:
    """Bring up ``lo`` in the calling thread's network namespace."""
    import socket
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
