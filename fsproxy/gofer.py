"""The gofer process: its command line (``main``), and how the Sentry starts
it, receives its donation and stops it (``start_gofer``, ``GoferHandle``).

Under directfs (the default) the gofer only donates the mount roots and
exits (``--donate-only``): nothing here then imports the gofer protocol or
its server.  ``--directfs=false`` keeps it serving requests
(``pysc.fsproxy.server``), which ``pysc.fsproxy.client`` sends.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import weakref
from typing import TYPE_CHECKING

from pysc.fsproxy import donation
from pysc.fsproxy.donation import recv_donation

if TYPE_CHECKING:
    from pysc.fsproxy.client import GoferClient, GoferFS

log = logging.getLogger("pysc.gofer")

START_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1


class GoferError(RuntimeError):
    """The gofer could not be started."""


class GoferHandle:
    """A running gofer process (made by ``start_gofer``)."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, root_fds: list[int],
                 mounts: list[tuple], zmq_address: str | None, log_path: str | None):
        self.proc = proc
        self.pid = proc.pid
        self.sock = sock                  # the donation socket; EOF when the gofer is gone
        self.root_fds = root_fds          # one per mount, in order (the caller owns them)
        self.mounts = mounts              # [(host path, readonly, is_dir), ...]
        self.zmq_address = zmq_address
        self.log_path = log_path
        try:
            self.pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        self._clients: list[weakref.ref] = []
        self._default: "GoferClient | None" = None

    @property
    def death_fd(self) -> int:
        """An fd that polls readable once the gofer has exited."""
        return self.pidfd if self.pidfd is not None else self.sock.fileno()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def client(self, timeout: float | None = None) -> "GoferClient":
        """A new request channel to this gofer."""
        from pysc.fsproxy.client import DEFAULT_TIMEOUT, GoferClient
        if self.zmq_address is None:
            raise GoferError("this gofer only donated its roots and does not serve requests")
        c = GoferClient(self.zmq_address, timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
                        death_fd=self.death_fd)
        self._clients.append(weakref.ref(c))
        return c

    def filesystem(self, mount: int | str, *, client: "GoferClient | None" = None,
                   readonly: bool = False, exclusive: bool = False) -> "GoferFS":
        """A ``GoferFS`` of mount ``mount`` (index or host path); all of them
        share one channel unless ``client`` is given."""
        from pysc.fsproxy.client import GoferFS
        if client is None:
            if self._default is None or self._default.closed:
                self._default = self.client()
            client = self._default
        return GoferFS(client, str(mount), readonly=readonly, exclusive=exclusive)

    def stop(self, timeout: float = 2.0, close_fds: bool = False, graceful: bool = False) -> int | None:
        """Shut the gofer down and return its exit status.  It answers every
        request before taking the next and keeps no state, so SIGKILL loses
        nothing; ``graceful`` sends a Shutdown message first."""
        if self.alive() and graceful:
            from pysc.core.errors import SyscallError
            from pysc.fsproxy import protocol as P
            from pysc.fsproxy.client import GoferClient
            c = GoferClient(self.zmq_address, timeout=timeout, death_fd=self.death_fd)
            try:
                c.call(P.Shutdown())
            except SyscallError:
                pass
            finally:
                c.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        for ref in self._clients:
            c = ref()
            if c is not None:
                c.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.sock.close()
        if close_fds:
            for fd in self.root_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.root_fds = []
        if self.zmq_address and self.zmq_address.startswith("ipc://"):
            try:
                os.unlink(self.zmq_address[6:])
            except OSError:
                pass
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the gofer (tests, emergencies)."""
        if self.alive():
            self.proc.kill()

    def __repr__(self) -> str:
        return f"GoferHandle(pid={self.pid}, zmq={self.zmq_address!r}, mounts={len(self.mounts)})"


def start_gofer(mounts: list[tuple[str, bool]], workdir: str, log_path: str | None = None,
                *, timeout: float = START_TIMEOUT, debug: bool = False,
                fork: bool = True, serve: bool = True) -> GoferHandle:
    """Start a gofer serving ``mounts`` ([(host path, readonly), ...]).

    Its ZeroMQ socket lives in ``workdir``; its log (and stderr) goes to
    ``log_path``, else stderr goes to ``workdir/gofer.stderr``.  Returns once
    the gofer is serving and has donated its root fds; raises ``GoferError``
    (with the gofer's stderr) if it dies or does not answer within ``timeout``.
    The gofer gets SIGKILL when the calling thread exits (PR_SET_PDEATHSIG).
    With ``fork`` (the default) the gofer is a fork of the caller that runs
    the server directly, which saves starting and importing a new Python
    (~0.2 s); otherwise it is ``python3 -m pysc.fsproxy``.  Call it before the
    caller starts threads (ZeroMQ's included).

    Without ``serve`` the gofer donates the roots and exits (directfs: the
    Sentry walks below them itself and never sends a message), and the
    handle has no ZeroMQ address."""
    os.makedirs(workdir, exist_ok=True)
    address = None
    cmd = [sys.executable, "-m", "pysc.fsproxy"]
    if serve:
        tag = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"
        zpath = os.path.join(workdir, f"gofer-{tag}.zmq")
        if len(zpath.encode()) > 100:
            raise GoferError(f"workdir path too long for a unix socket: {zpath}")
        address = "ipc://" + zpath
        cmd += ["--zmq", address]
    else:
        cmd += ["--donate-only"]
    errpath = log_path or os.path.join(workdir, "gofer.stderr")
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    cmd += ["--donate-fd", str(child.fileno()), "--ppid", str(os.getpid())]
    for path, ro in mounts:
        cmd += ["--mount", f"{path}:{'ro' if ro else 'rw'}"]
    if log_path:
        cmd += ["--log", log_path]
    if debug:
        cmd += ["--debug"]
    errf = open(errpath, "ab")
    try:
        err_start = errf.tell()
        if fork:
            proc = _fork_gofer(cmd[3:], errf.fileno(), child.fileno(), share_zmq=serve)
        else:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=errf, pass_fds=(child.fileno(),), close_fds=True)
    finally:
        errf.close()
        child.close()

    def fail(why: str) -> GoferError:
        try:
            proc.wait(0.5)  # it may be on its way out: report its own status
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.wait()
        parent.close()
        try:
            with open(errpath, "rb") as f:
                f.seek(err_start)
                err = f.read().decode(errors="replace").strip()
        except OSError:
            err = ""
        return GoferError(f"gofer (pid {proc.pid}) {why}, exit status {proc.returncode}"
                          + (f": {err[-2000:]}" if err else ""))

    parent.settimeout(timeout)
    try:
        got_mounts, fds = recv_donation(parent)
    except (socket.timeout, TimeoutError):
        raise fail(f"did not start within {timeout:g} s") from None
    except (EOFError, OSError, ValueError) as e:
        raise fail(f"died at start ({e})") from None
    parent.settimeout(None)
    if not serve:
        try:
            proc.wait(timeout)  # it exits once the roots are sent
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return GoferHandle(proc, parent, fds, got_mounts, address, log_path)


class _ForkedGofer:
    """The part of subprocess.Popen's interface GoferHandle uses, for a forked gofer."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None and self.poll() is None:
            try:
                pidfd = os.pidfd_open(self.pid)
            except OSError:  # already reaped
                return self.poll()
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                ready = poller.poll(timeout * 1000)
            finally:
                os.close(pidfd)
            if not ready and self.poll() is None:
                raise subprocess.TimeoutExpired("gofer", timeout)
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                self.returncode = -1
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _fork_gofer(args: list[str], errfd: int, sockfd: int, share_zmq: bool = True) -> _ForkedGofer:
    import gc
    if share_zmq:
        import zmq  # noqa: F401  (imported once, shared with the child, instead of once in each)
    gc.freeze()  # the child's collector then leaves the shared pages alone (no copy on write)
    pid = os.fork()
    if pid == 0:
        code = 1
        # Objects of the parent that own fds (its log handlers, its std
        # streams) stay referenced until _exit: collecting them would close
        # fd numbers that, after the dup2s below, belong to the gofer.
        inherited = [logging.root.handlers, sys.stdin, sys.stdout, sys.stderr]  # noqa: F841
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(errfd, 2)
            keep = os.dup2(sockfd, 3, inheritable=False)
            os.closerange(4, 1 << 16)
            sys.stdin = open(0, "r", closefd=False)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False, buffering=1)
            logging.root.handlers = []
            args = list(args)
            args[args.index("--donate-fd") + 1] = str(keep)
            code = main(args)
        except BaseException:
            import traceback
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(code or 0)
    return _ForkedGofer(pid)


def parse_mount(arg: str) -> tuple[str, bool]:
    """``/host/dir[:ro|:rw]`` -> (path, readonly)."""
    path, sep, opt = arg.rpartition(":")
    if sep and opt in ("ro", "rw") and path:
        return path, opt == "ro"
    return arg, False


def _set_pdeathsig(ppid: int | None) -> None:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if ppid is not None and os.getppid() != ppid:
        os._exit(0)  # the parent died before the prctl took effect


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m pysc.fsproxy",
                                 description="pysc gofer: serve host directories to a Sentry")
    ap.add_argument("--zmq", help="ZeroMQ address to bind, e.g. ipc:///run/x/gofer")
    ap.add_argument("--donate-only", action="store_true",
                    help="send the mount root fds and exit without serving (directfs needs no more)")
    ap.add_argument("--donate-sock", metavar="PATH",
                    help="listen on this unix stream socket path; send the mount root fds to the first client")
    ap.add_argument("--donate-fd", type=int, metavar="FD",
                    help="an inherited, connected unix stream socket to send the mount root fds on")
    ap.add_argument("--mount", action="append", required=True, metavar="HOSTDIR[:ro]",
                    help="a host directory to serve (repeat; mount order is attach/donation order)")
    ap.add_argument("--log", metavar="FILE", help="log to this file")
    ap.add_argument("--debug", action="store_true", help="log every request")
    ap.add_argument("--ppid", type=int, help="exit at once unless this is our parent")
    args = ap.parse_args(argv)
    if not args.zmq and not args.donate_only:
        ap.error("--zmq is required unless --donate-only")
    if args.donate_only and args.donate_fd is None and not args.donate_sock:
        ap.error("--donate-only needs --donate-fd or --donate-sock")

    _set_pdeathsig(args.ppid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the Sentry decides when we stop
    if args.log:
        logging.basicConfig(filename=args.log, level=logging.DEBUG if args.debug else logging.INFO,
                            format="%(asctime)s gofer[%(process)d] %(levelname)s %(message)s",
                            force=True)  # a forked gofer inherits the parent's handlers
    os.umask(0)  # the Sentry applies the app's umask itself
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass

    mounts = [parse_mount(m) for m in args.mount]
    server = None
    donate_sock = None
    try:
        if not args.donate_only:
            from pysc.fsproxy.server import GoferServer
            server = GoferServer(mounts)
            import zmq
            ctx = zmq.Context.instance()
            zsock = ctx.socket(zmq.REP)
            zsock.setsockopt(zmq.LINGER, 1000)
            zsock.bind(args.zmq)
        if args.donate_fd is not None:
            donate_sock = socket.socket(fileno=args.donate_fd)
        elif args.donate_sock:
            lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                os.unlink(args.donate_sock)
            except FileNotFoundError:
                pass
            lsock.bind(args.donate_sock)
            lsock.listen(1)
            donate_sock, _ = lsock.accept()
            lsock.close()
        if donate_sock is not None:
            if server is not None:
                server.donate(donate_sock)
            else:
                donation.donate(donate_sock, mounts)
    except Exception as e:
        msg = f"gofer: cannot start: {e}"
        print(msg, file=sys.stderr, flush=True)
        log.error("%s", msg)
        return 2
    if server is None:
        log.info("gofer: donated the roots of %s; done", [path for path, _ in mounts])
        return 0
    log.info("gofer up: zmq %s, mounts %s", args.zmq,
             [(m.path, "ro" if m.readonly else "rw") for m in server.mounts])
    gc.enable()  # a gofer forked by `pysc` inherits it turned off for start-up
    from pysc.fsproxy.server import _serve_loop
    try:
        _serve_loop(server, zsock)
    finally:
        zsock.close(linger=1000)
        if args.zmq.startswith("ipc://"):
            try:
                os.unlink(args.zmq[len("ipc://"):])
            except OSError:
                pass
        server.close_all()
    # donate_sock stays open until we exit: its EOF tells the Sentry we are gone.
    return 0
