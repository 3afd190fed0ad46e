"""The control protocol between the `pysc` command and a running sandbox:
every message type, their msgpack wire form, the sandbox's server thread and
the client.  Carried by ZeroMQ over an ipc socket in the container's state dir."""
from __future__ import annotations

import logging
import os
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


class Ps(Message):
    pass


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
class ControlServer:
    """Answers requests with the sandbox's state.  It only reads kernel
    objects and sends host signals, which is safe beside the thread that runs
    the platform.

    Its thread imports zmq (about 20 ms) and binds while the sandbox boots:
    ``start`` it first, ``attach`` the booted sandbox, and ``wait_bound``
    before telling anyone the socket is there.  Requests that arrive before
    ``attach`` wait in the socket's queue."""

    def __init__(self, address: str, on_state: Callable[[str], None]):
        self.address = address
        self.on_state = on_state
        self.sandbox: "Sandbox | None" = None
        self.error: str | None = None
        self._bound = threading.Event()
        self._attached = threading.Event()
        self._lock = threading.Lock()  # orders the making of the context against close()
        self._closed = False
        self._ctx = None
        self.thread = threading.Thread(target=self._serve, name="pysc-control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def attach(self, sandbox: "Sandbox") -> None:
        self.sandbox = sandbox
        self._attached.set()

    def wait_bound(self, timeout: float = 10.0) -> None:
        if not self._bound.wait(timeout):
            raise ControlError(f"control socket {self.address}: not bound after {timeout:g} s")
        if self.error:
            raise ControlError(self.error)

    def _serve(self) -> None:
        sock = None
        try:
            import zmq
            with self._lock:
                if self._closed:
                    return
                self._ctx = zmq.Context()
            sock = self._ctx.socket(zmq.REP)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(self.address)
        except Exception as e:  # zmq.ZMQError; reported by wait_bound
            self.error = f"control socket {self.address}: {e}"
            if sock is not None:
                sock.close(0)
            return
        finally:
            self._bound.set()
        try:
            self._attached.wait()
            self._loop(zmq, sock)
        finally:
            sock.close(0)  # only this thread touches the socket

    def _loop(self, zmq, sock) -> None:
        while True:
            try:
                data = sock.recv()
            except zmq.ZMQError:  # ETERM: close() was called
                return
            try:
                reply = self.handle(decode(data))
            except Exception as e:  # never let a request kill the sandbox
                log.exception("control request failed")
                reply = Error(str(e))
            try:
                sock.send(encode(reply))
            except zmq.ZMQError:
                return

    def handle(self, msg):
        sb = self.sandbox
        if isinstance(msg, Start):
            sb.release()
            self.on_state("running")
            return Ok()
        if isinstance(msg, Kill):
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
            procs = []
            for tg in list(sb.kernel.thread_groups.values()):
                leader = tg.leader
                procs.append([tg.pid, tg.parent.pid if tg.parent else 0,
                              leader.creds.uid if leader else 0, tg.comm.decode(errors="replace"),
                              _cmdline(leader)])
            return Processes(sorted(procs))
        if isinstance(msg, Stats):
            return StatsReply(_stats(sb))
        return Error(f"unknown request {type(msg).__name__}")

    def close(self) -> None:
        """Stop serving: terminating the context makes the thread's recv fail.
        A thread that has not made its context yet ends by itself."""
        with self._lock:
            self._closed = True
            ctx = self._ctx
        self._attached.set()
        if ctx is not None:
            ctx.term()
            self.thread.join(5)


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
def request(address: str, msg, timeout: float = 10.0):
    import zmq
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(address)
        sock.send(encode(msg))
        reply = decode(sock.recv())
    except zmq.ZMQError as e:
        raise ControlError(f"the sandbox does not answer ({e})") from None
    finally:
        sock.close(0)
    if isinstance(reply, Error):
        raise ControlError(reply.message)
    return reply


# --- exec: a unix socket, because the caller's stdio travels as fds ---
class ExecServer:
    """Starts processes in the running sandbox for `pysc exec`.

    A request is one msgpack map {args, env, cwd, uid, gid, groups} with the
    caller's stdin, stdout and stderr as SCM_RIGHTS; the reply is {"pid": host
    pid} or {"error": message}, and later {"exit": code} when the process ends."""

    def __init__(self, path: str, sandbox: "Sandbox"):
        import socket
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
        import socket
        import time
        from pysc.core.task import Credentials
        with conn:
            try:
                data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                req = msgpack.unpackb(data)
                creds = Credentials.for_ids(req["uid"], req["gid"], tuple(req.get("groups", ())))
                env = {k.encode(): v.encode() for k, v in req["env"].items()}
                argv = [a.encode() for a in req["args"]]
            except Exception as e:
                conn.sendall(msgpack.packb({"error": f"bad exec request: {e}"}))
                return
            result: dict = {}
            done = threading.Event()

            def spawn() -> None:  # on the tracer thread
                try:
                    result["pid"], result["tg"] = self.sandbox.spawn_exec(
                        argv, env, req["cwd"].encode(), creds, fds)
                except Exception as e:
                    result["error"] = str(e.args[0]) if e.args else repr(e)
                    for fd in fds:
                        os.close(fd)
                done.set()

            self.sandbox.platform.call_soon(spawn)
            if not done.wait(30):
                result["error"] = "the sandbox did not start the process"
            if "error" in result:
                conn.sendall(msgpack.packb({"error": result["error"]}))
                return
            conn.sendall(msgpack.packb({"pid": result["pid"], "vpid": result["tg"].pid}))
            tg = result["tg"]
            while tg.exit_status is None and self.sandbox.kernel.exit_status is None:
                time.sleep(0.02)
            status = tg.exit_status if tg.exit_status is not None else 9
            code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            try:
                conn.sendall(msgpack.packb({"exit": code}))
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
