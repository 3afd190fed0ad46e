"""The control protocol between the `pysc` command and a running sandbox:
every message type, their msgpack wire form, the sandbox's server thread and
the client.  Carried over a unix stream socket in the container's state dir,
one request per connection.

Not ZeroMQ, as DESIGN §1 draws it: importing pyzmq cost every container
start about 20 ms of CPU in the sandbox process, for a socket that answers a
handful of requests in the container's life; the exec socket beside it was
a plain unix socket already.  The gofer protocol stays on ZeroMQ."""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Callable

import msgpack

from pysc.core.message import Message

if TYPE_CHECKING:
    from pysc.core.sandbox import Sandbox

log = logging.getLogger("pysc.control")


class ControlError(Exception):
    pass


# --- messages: requests ---
class Start(Message):
    pass


class Kill(Message):
    signal: int
    all: bool = False
    pid: int = 0  # a sandbox pid (an `exec`'d process); 0: the container's init
    container: str = ""  # with all: every process of this pod container


class Ps(Message):
    container: str = ""  # only this pod container's processes, as it numbers them


class Stats(Message):
    pass


class Pause(Message):
    pass


class Resume(Message):
    pass


# --- messages: replies ---
class Ok(Message):
    pass


class Error(Message):
    message: str


class Processes(Message):
    processes: list  # [pid, ppid, uid, comm, cmdline] per process, sandbox pids


class StatsReply(Message):
    stats: dict


MESSAGES = {cls.__name__: cls for cls in (Start, Kill, Ps, Stats, Pause, Resume, Ok, Error, Processes,
                                          StatsReply)}


def encode(msg) -> bytes:
    return msgpack.packb([type(msg).__name__, msg.asdict()])


def decode(data: bytes):
    try:
        name, fields = msgpack.unpackb(data)
        return MESSAGES[name](**fields)
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        raise ControlError(f"bad control message: {e}") from None


# --- the server, a thread in the sandbox process ---
MAX_REQUEST = 1 << 16


class ControlServer:
    """Answers requests with the sandbox's state.  It only reads kernel
    objects and sends host signals, which is safe beside the thread that runs
    the platform.

    One request per connection on a unix stream socket: the client sends the
    encoded message and shuts down its writing side; the reply follows and
    the server closes."""

    def __init__(self, path: str, sandbox: "Sandbox", on_state: Callable[[str], None]):
        self.path = path
        self.sandbox = sandbox
        self.on_state = on_state
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(path)
            self.sock.listen(16)
        except OSError as e:
            self.sock.close()
            raise ControlError(f"control socket {path}: {e.strerror}") from None
        self.thread = threading.Thread(target=self._accept, name="pysc-control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # close() shut the socket down
                return
            with conn:
                conn.settimeout(REQUEST_TIMEOUT)
                try:
                    data = _read_all(conn, MAX_REQUEST)
                except (OSError, ControlError) as e:
                    log.info("control request not read: %s", e)
                    continue
                try:
                    reply = self.handle(decode(data))
                except Exception as e:  # never let a request kill the sandbox
                    log.exception("control request failed")
                    reply = Error(str(e))
                try:
                    conn.sendall(encode(reply))
                except OSError:
                    pass

    def handle(self, msg):
        sb = self.sandbox
        if isinstance(msg, Start):
            sb.release()
            self.on_state("running")
            return Ok()
        if isinstance(msg, Kill):
            if msg.container:
                entry = sb.containers.get(msg.container)
                for tg in sb.processes_in(entry[0]) if entry else ():
                    sb.platform.signal_processes(msg.signal, pid=tg.pid)
            else:
                sb.platform.signal_processes(msg.signal, msg.all, msg.pid)
            return Ok()
        if isinstance(msg, (Pause, Resume)):
            if isinstance(msg, Pause):
                sb.platform.pause()
            else:
                sb.platform.resume()
            self.on_state("paused" if isinstance(msg, Pause) else "running")
            return Ok()
        if isinstance(msg, Ps):
            if msg.container:  # a pod container's, numbered as it sees them
                entry = sb.containers.get(msg.container)
                groups = sb.processes_in(entry[0]) if entry else []
                pid_of = entry[2].pid_of if entry else None
            else:
                groups = list(sb.kernel.thread_groups.values())
                pid_of = lambda tg: tg.pid if tg is not None else 0  # noqa: E731
            procs = []
            for tg in groups:
                leader = tg.leader
                procs.append([pid_of(tg), pid_of(tg.parent), leader.creds.uid if leader else 0,
                              tg.comm.decode(errors="replace"), _cmdline(leader)])
            return Processes(sorted(procs))
        if isinstance(msg, Stats):
            return StatsReply(_stats(sb))
        return Error(f"unknown request {type(msg).__name__}")

    def close(self) -> None:
        """Stop serving: shutting the listening socket down wakes accept."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()


def _cmdline(task) -> str:
    try:
        with open(f"/proc/{task.ctx.tid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").strip().decode(errors="replace")
    except (OSError, AttributeError, TypeError):  # no host process (kvm): the Sentry's record
        argv = getattr(task.tg, "argv", None) if task is not None else None
        return b" ".join(argv).decode(errors="replace") if argv else ""


def _stats(sb) -> dict:
    """cpu (ns), memory (bytes) and pids of the container, as `events --stats` shows."""
    cpu, rss = sb.platform.usage()
    return {"cpu": {"usage": {"total": cpu}}, "memory": {"usage": {"usage": rss}},
            "pids": {"current": len(sb.kernel.thread_groups)}}


# --- the client ---
REQUEST_TIMEOUT = 10.0


def _read_all(conn: socket.socket, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ControlError(f"message larger than {limit} bytes")
        chunks.append(chunk)


def request(path: str, msg, timeout: float = REQUEST_TIMEOUT):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(encode(msg))
            sock.shutdown(socket.SHUT_WR)
            data = _read_all(sock, 1 << 30)
    except OSError as e:
        raise ControlError(f"the sandbox does not answer ({e.strerror or e})") from None
    if not data:
        raise ControlError("the sandbox closed the connection without answering")
    reply = decode(data)
    if isinstance(reply, Error):
        raise ControlError(reply.message)
    return reply


# --- exec: a unix socket, because the caller's stdio travels as fds ---
MAX_DONATED_ROOTS = 64


class ExecServer:
    """Starts processes in the running sandbox for `pysc exec`, and the init
    of a container that joins the sandbox (a pod's container).

    A request is one msgpack map {args, env, cwd, uid, gid, groups} with the
    caller's stdin, stdout and stderr as SCM_RIGHTS; ``container`` names the
    joined container whose mount tree to use, and ``new_container``
    ({root_path, readonly, binds, tmpfs}) makes it first, from the mount root
    fds that follow the stdio.  The reply is {"pid": host pid, "vpid":
    sandbox pid} or {"error": message}, and later {"exit": code} when the
    process ends."""

    def __init__(self, path: str, sandbox: "Sandbox"):
        self.sandbox = sandbox
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._accept, name="pysc-exec", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        import time
        from pysc.core.task import Credentials
        with conn:
            fds: list[int] = []
            try:
                data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3 + MAX_DONATED_ROOTS)
                req = msgpack.unpackb(data)
                creds = Credentials.for_ids(req["uid"], req["gid"], tuple(req.get("groups", ())))
                env = {k.encode(): v.encode() for k, v in req["env"].items()}
                argv = [a.encode() for a in req["args"]]
                container = req.get("container")
                new = req.get("new_container")
                if len(fds) < 3 or (len(fds) > 3 and not new):
                    raise ValueError(f"{len(fds)} fds")
            except Exception as e:
                for fd in fds:
                    os.close(fd)
                conn.sendall(msgpack.packb({"error": f"bad exec request: {e}"}))
                return
            result: dict = {}
            done = threading.Event()
            stdio, roots = fds[:3], fds[3:]

            def spawn() -> None:  # on the tracer thread
                try:
                    if new:
                        self.sandbox.add_container(container, new["root_path"],
                                                   [tuple(b) for b in new["binds"]],
                                                   [tuple(t) for t in new["tmpfs"]], new["readonly"], roots)
                    result["pid"], result["tg"] = self.sandbox.spawn_exec(
                        argv, env, req["cwd"].encode(), creds, stdio, container)
                except Exception as e:
                    result["error"] = str(e.args[0]) if e.args else repr(e)
                    if not (new and container in self.sandbox.containers):
                        for fd in roots:  # else the container's mount tree owns them
                            os.close(fd)
                finally:
                    for fd in stdio:  # the process's files hold their own copies
                        os.close(fd)
                    done.set()

            self.sandbox.platform.call_soon(spawn)
            if not done.wait(30):
                result["error"] = "the sandbox did not start the process"
            if "error" in result:
                conn.sendall(msgpack.packb({"error": result["error"]}))
                if new:  # a container whose init did not start goes again
                    self._end_container(container)
                return
            conn.sendall(msgpack.packb({"pid": result["pid"], "vpid": result["tg"].pid}))
            tg = result["tg"]
            while tg.exit_status is None and self.sandbox.kernel.exit_status is None:
                time.sleep(0.02)
            status = tg.exit_status if tg.exit_status is not None else 9
            code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            tg = None
            result.clear()  # no reference to its tasks, hence to its mount tree, is left here
            try:
                conn.sendall(msgpack.packb({"exit": code}))
            except OSError:
                pass
        if new:  # the init of a pod's container: the container ends with it
            self._end_container(container)

    def _end_container(self, cid: str) -> None:
        import gc
        import time
        box: dict = {}
        done = threading.Event()

        def remove() -> None:  # on the tracer thread
            box["tree"] = self.sandbox.remove_container(cid)
            done.set()

        self.sandbox.platform.call_soon(remove)
        done.wait(30)
        tree = box.pop("tree", None)
        deadline = time.monotonic() + 30
        while tree is not None and time.monotonic() < deadline:
            vfs = tree()
            try:
                if vfs is None or not self.sandbox.processes_in(vfs):
                    break
            except RuntimeError:  # the tracer changed the process table meanwhile
                pass
            finally:
                vfs = None
            time.sleep(0.05)
        self.sandbox.platform.call_soon(gc.collect)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
