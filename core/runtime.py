"""The runc-compatible commands: create, start, run, state, kill, delete,
list, ps, events, pause, resume, wait, update, spec.

Each container is one sandbox process (the Sentry with its gofer and the
app), detached from the command that created it, and recorded under --root.
Its host pid goes to --pid-file: it lives exactly as long as the container's
init and exits with its status, which is what a runc shim reaps."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time

from pysc.core import control
from pysc.core.oci import state as S
from pysc.core.sandbox_paths import state_dir

log = logging.getLogger("pysc.runtime")

STATE_POLL = 0.05


class RuntimeError_(Exception):
    """A clear message for the user, and a non-zero exit."""

    def __init__(self, msg: str, code: int = 1):
        super().__init__(msg)
        self.code = code


# --- argument parsing, runc's spellings ---
class _Parser(argparse.ArgumentParser):
    config = None

    def error(self, message):
        raise RuntimeError_(f"{self.prog}: {message}", 2)

    def parse_args(self, args=None, namespace=None):
        a = super().parse_args(args, namespace)
        if self.config is not None and getattr(a, "id", None):
            _name_logs_for(self.config, a.id)
        return a


def _parser(cmd: str, config=None) -> _Parser:
    p = _Parser(prog=f"pysc {cmd}", add_help=True)
    p.config = config
    return p


def _name_logs_for(config, cid: str) -> None:
    """The command is about container ``cid``: --debug-log's %ID% names it."""
    config.container_id = cid
    if "%ID%" in (config.get("debug-log") or ""):
        from pysc.core.cli import setup_logging
        setup_logging(config)


def parse_signal(text: str) -> int:
    t = text.upper()
    if t.isdigit():
        sig = int(t)
        if 0 < sig < 65:
            return sig
    else:
        name = t if t.startswith("SIG") else "SIG" + t
        try:
            return int(signal.Signals[name])
        except KeyError:
            pass
    raise RuntimeError_(f"invalid signal {text!r}")


# --- building the sandbox of a container ---
def _creds_of(spec):
    from pysc.core.task import Credentials
    user = spec.process.user
    creds = Credentials.for_ids(user.uid, user.gid, tuple(user.additional_gids))
    caps = spec.process.capabilities
    if caps is not None:
        creds.cap_bounding = caps.bounding_mask
        creds.cap_effective = caps.effective_mask
        creds.cap_permitted = caps.permitted_mask
        creds.cap_inheritable = caps.inheritable_mask
        creds.cap_ambient = caps.ambient_mask
    creds.no_new_privs = bool(spec.process.no_new_privileges)
    return creds


def _mounts_of(spec):
    """(binds [(dest, source, ro)], tmpfs destinations [(dest, ro)]) from config.json."""
    binds, tmpfs = [], []
    for m in spec.mounts:
        if m.type == "bind":
            binds.append((m.destination, m.source, m.readonly))
        elif m.type == "tmpfs" and m.destination not in ("/dev", "/dev/shm"):
            tmpfs.append((m.destination, m.readonly))
        # proc, sysfs, devpts, mqueue, cgroup and /dev: the Sentry's own.
    return binds, tmpfs


def boot_container(config, pm, spec, workdir: str, hold: bool, donation=None):
    from pysc.core.oci.spec import has_network_namespace, network_namespace_path
    from pysc.core.sandbox import Sandbox
    sb = Sandbox(config, pm, workdir)
    proc = spec.process
    env = {os.fsencode(k): os.fsencode(v) for k, v in proc.env_dict().items()}
    netns_path = network_namespace_path(spec)
    new_net = has_network_namespace(spec) and not netns_path
    if config.network == "none":
        new_net, netns_path = True, None
    binds, tmpfs = _mounts_of(spec)
    sb.kernel.hostname = spec.hostname or sb.kernel.hostname
    sb.boot(spec.root.path, [os.fsencode(a) for a in proc.args], env, os.fsencode(proc.cwd or "/"),
            _creds_of(spec), mounts=binds, tmpfs=tmpfs, root_readonly=bool(spec.root.readonly),
            new_net=new_net and not netns_path, netns_path=netns_path, hold=hold,
            umask=proc.user.umask if proc.user.umask is not None else 0o022, donation=donation)
    for rl in proc.rlimits:
        res, soft, hard, name = rl.number, rl.soft, rl.hard, rl.type
        if res == 7:  # RLIMIT_NOFILE is the Sentry's
            sb.kernel.init.rlimits.set(res, soft, hard)
            for t in sb.kernel.init.tasks:
                t.fdtable.limit = min(soft, 1 << 20)
            continue
        try:
            sb.platform.set_rlimit(res, soft, hard)
        except (OSError, ValueError) as e:
            raise RuntimeError_(f"config.json: process.rlimits: {name}: {e}") from None
    return sb


def _sandbox_main(config, pm, spec, root: str, cid: str, report_fd: int, hold: bool,
                  console_socket: str | None, donation: socket.socket | None) -> int:
    """In the container's sandbox process: boot, report, serve, record the end."""
    from pysc.core.sandbox import SandboxError
    st = S.load(root, cid)
    workdir = S.socket_dir(root, cid)  # the gofer's socket goes there too

    def on_state(status: str) -> None:
        st.status = status
        S.save(root, st)

    try:
        if console_socket:
            _attach_console(console_socket)
        sb = boot_container(config, pm, spec, workdir, hold, donation)
        st.pid = os.getpid()
        st.status = "created" if hold else "running"
        S.save(root, st)
        server = control.ControlServer(S.control_socket(root, cid), sb, on_state)
        server.start()
        execs = control.ExecServer(S.exec_socket(root, cid), sb)
        execs.start()
    except BaseException as e:  # reported to `pysc create`, which cleans up
        msg = str(e.args[0]) if getattr(e, "args", None) else repr(e)
        if isinstance(e, (RuntimeError_, SandboxError, OSError, control.ControlError)):
            log.info("container %s: start failed: %s", cid, msg)
        else:
            log.exception("container %s: start failed", cid)
        os.write(report_fd, b"error: " + msg.encode(errors="replace"))
        os.close(report_fd)
        return 1
    os.write(report_fd, b"ok")
    os.close(report_fd)
    code = sb.serve()
    st.status = "stopped"
    st.exit_status = code
    try:
        S.save(root, st)
    except OSError:
        pass  # deleted meanwhile
    server.close()
    execs.close()
    return code


def console_pty(path: str, what: str = "") -> int:
    """A pty whose master goes to the console socket at ``path`` (as runc
    does for terminal: true); returns its slave."""
    master, slave = os.openpty()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            socket.send_fds(s, [b"/dev/ptmx"], [master])
    except OSError as e:
        os.close(slave)
        raise RuntimeError_(f"{what}console socket {path}: {e.strerror}") from None
    finally:
        os.close(master)
    return slave


def _attach_console(path: str) -> None:
    """terminal: true — the pty's slave becomes the container's stdio (and
    /dev/pts/0 inside)."""
    slave = console_pty(path)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    os.setsid()
    import fcntl
    import termios
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


FLAG_ANNOTATION = "dev.pysc.flag."


def apply_flag_annotations(config, annotations: dict) -> None:
    """dev.pysc.flag.NAME=VALUE annotations override flags with --allow-flag-override."""
    from pysc.core.flags import FlagError
    wanted = {k[len(FLAG_ANNOTATION):]: v for k, v in annotations.items() if k.startswith(FLAG_ANNOTATION)}
    if not wanted:
        return
    if not config.get("allow-flag-override"):
        log.info("ignoring flag annotations %s without --allow-flag-override", sorted(wanted))
        return
    for name, value in wanted.items():
        try:
            config.override(name, value)
        except FlagError as e:
            raise RuntimeError_(f"config.json: annotations[\"{FLAG_ANNOTATION}{name}\"]: {e}") from None


def create(config, pm, cid: str, bundle: str, pid_file: str | None, console_socket: str | None,
           hold: bool = True) -> int:
    from pysc.core.oci.spec import SpecError, load_spec
    bundle = os.path.abspath(bundle)
    try:
        spec = load_spec(bundle)
    except SpecError as e:
        raise RuntimeError_(str(e)) from None
    if spec.process is None:
        raise RuntimeError_("config.json: process: missing")
    apply_flag_annotations(config, spec.annotations)
    root = state_dir(config)
    pod = pod_sandbox_id(spec.annotations or {})
    if pod is not None and pod != cid:
        return _create_in_pod(config, spec, root, cid, bundle, pod, pid_file, console_socket)
    try:
        S.reserve(root, cid, bundle, spec.annotations or {})
    except S.StateError as e:
        raise RuntimeError_(str(e)) from None
    donor = recipient = None
    if config.directfs:
        # This process donates the mount roots itself while the sandbox boots:
        # with directfs no gofer process is needed (fsproxy/donation.py).
        from pysc.core.sandbox import gofer_mounts
        from pysc.fsproxy import donation
        mounts = gofer_mounts(config, spec.root.path, _mounts_of(spec)[0])
        donor, recipient = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            if donor is not None:
                donor.close()
            if not console_socket:
                os.setsid()
            code = _sandbox_main(config, pm, spec, root, cid, w, hold, console_socket, recipient)
        except BaseException:
            log.exception("sandbox process of %s", cid)
        finally:
            os._exit(code)
    os.close(w)
    donation_error = None
    if donor is not None:
        recipient.close()
        try:
            donation.donate(donor, mounts)
        except OSError as e:  # the sandbox sees the socket close and gives up
            donation_error = f"cannot open a mount: {e.strerror}"
        finally:
            donor.close()
    report = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        report += chunk
    os.close(r)
    if report != b"ok":
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        S.remove(root, cid)
        why = donation_error or report.decode(errors="replace").removeprefix("error: ") \
            or "the sandbox process died"
        raise RuntimeError_(f"container {cid}: {why}")
    if pid_file:
        _write_pid_file(pid_file, pid)
    return 0


# --- containers of a pod: one sandbox, the pod's, for all of them ---
#: the annotations containerd's CRI plugin and CRI-O put in config.json
POD_ANNOTATIONS = (("io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id"),
                   ("io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID"))


def pod_sandbox_id(annotations: dict) -> str | None:
    """The id of the pod sandbox a container joins, or None: the pod's
    sandbox (pause) container, and a container outside any pod, get a
    sandbox of their own."""
    for kind_key, id_key in POD_ANNOTATIONS:
        if annotations.get(kind_key) == "container" and annotations.get(id_key):
            return annotations[id_key]
    return None


def _create_in_pod(config, spec, root: str, cid: str, bundle: str, pod: str, pid_file: str | None,
                   console_socket: str | None) -> int:
    """`create` of a container that joins pod sandbox ``pod``: no sandbox of
    its own.  A waiter process stands for it (its pid is the container's, as
    the runc shim expects): at `start` it donates the container's mount roots
    to the pod's sandbox, which gives it its own mount tree and starts its
    init there; the waiter then lives as long as that init and exits with
    its status."""
    if not config.directfs:
        raise RuntimeError_(f"container {cid}: joining pod sandbox {pod} needs --directfs")
    try:
        host = S.load(root, pod)
    except S.StateError:
        raise RuntimeError_(f"container {cid}: pod sandbox {pod} does not exist") from None
    if host.sandbox or host.status not in ("created", "running"):
        raise RuntimeError_(f"container {cid}: pod sandbox {pod} is not a running sandbox")
    try:
        st = S.reserve(root, cid, bundle, spec.annotations or {})
    except S.StateError as e:
        raise RuntimeError_(str(e)) from None
    st.sandbox = pod
    fifo = S.start_fifo(root, cid)
    os.mkfifo(fifo, 0o600)
    slave = None
    if console_socket:
        try:
            slave = console_pty(console_socket)
        except RuntimeError_:
            S.remove(root, cid)
            raise
    proc = spec.process
    binds, tmpfs = _mounts_of(spec)
    req = {"args": list(proc.args), "env": proc.env_dict(), "cwd": proc.cwd or "/",
           "uid": proc.user.uid, "gid": proc.user.gid, "groups": list(proc.user.additional_gids),
           "container": cid,
           "new_container": {"root_path": spec.root.path, "readonly": bool(spec.root.readonly),
                             "binds": [list(b) for b in binds], "tmpfs": [list(t) for t in tmpfs]}}
    from pysc.core.sandbox import gofer_mounts
    mounts = gofer_mounts(config, spec.root.path, binds)
    waiter = os.fork()
    if waiter == 0:
        code = 137
        try:
            os.setsid()
            if slave is not None:
                for fd in (0, 1, 2):
                    os.dup2(slave, fd)
            code = _pod_container_waiter(root, st, fifo, req, mounts)
        except BaseException:
            log.exception("waiter of container %s", cid)
        finally:
            os._exit(code)
    if slave is not None:
        os.close(slave)
    st.pid, st.status = waiter, "created"
    S.save(root, st)
    if pid_file:
        _write_pid_file(pid_file, waiter)
    return 0


def _pod_container_waiter(root: str, st: S.ContainerState, fifo: str, req: dict, mounts) -> int:
    """In the waiter of a pod's container: wait for `start`, have the pod's
    sandbox start the container, return its exit status."""
    import msgpack
    from pysc.fsproxy.donation import open_roots
    st.pid = os.getpid()  # this copy of the state was made before the fork told its pid
    with open(fifo, "rb") as f:  # blocks until `pysc start` opens it
        if f.read(1) != b"g":
            return 137

    def fail(why: str) -> int:
        st.status, st.error, st.exit_status = "stopped", why, 127
        S.save(root, st)
        return 127

    try:
        _, roots = open_roots(mounts)
    except OSError as e:
        return fail(f"cannot open a mount: {e.strerror}")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(S.exec_socket(root, st.sandbox))
        socket.send_fds(conn, [msgpack.packb(req)], [0, 1, 2] + roots)
    except OSError as e:
        return fail(f"cannot reach pod sandbox {st.sandbox} ({e.strerror})")
    finally:
        for fd in roots:
            os.close(fd)
    unpacker = msgpack.Unpacker()
    reply = _next_message(conn, unpacker)
    if reply is None or "error" in reply:
        return fail(reply["error"] if reply else f"pod sandbox {st.sandbox} closed the connection")
    st.status, st.vpid = "running", reply.get("vpid", 0)
    S.save(root, st)
    msg = _next_message(conn, unpacker)
    code = msg.get("exit", 137) if msg else 137
    st.status, st.exit_status = "stopped", code
    try:
        S.save(root, st)
    except OSError:
        pass  # deleted meanwhile
    return code


def _start_in_pod(root: str, st: S.ContainerState) -> None:
    try:
        fd = os.open(S.start_fifo(root, st.id), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        raise RuntimeError_(f"container {st.id}: its waiter is gone") from None
    try:
        os.write(fd, b"g")
    finally:
        os.close(fd)
    deadline = time.monotonic() + 30
    while True:
        cur = S.load(root, st.id)
        if cur.status != "created":
            break
        if time.monotonic() > deadline:
            raise RuntimeError_(f"container {st.id}: pod sandbox {st.sandbox} did not start it in 30 s")
        time.sleep(STATE_POLL)
    if cur.error:
        raise RuntimeError_(f"container {st.id}: {cur.error}")


def _signal_in_pod(root: str, st: S.ContainerState, sig: int, all_: bool = False) -> None:
    """Signal a pod's container: its init (or with ``all_`` each of its
    processes) in the pod's sandbox once started, else its waiter (which
    ends it)."""
    if st.vpid:
        try:
            msg = control.Kill(sig, True, container=st.id) if all_ else control.Kill(sig, False, st.vpid)
            _request(root, st.sandbox, msg)
            return
        except RuntimeError_:
            pass  # the pod's sandbox is gone: so is the container
    _forward(st.pid, sig)


def _write_pid_file(path: str, pid: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def _running(root: str, cid: str) -> S.ContainerState:
    try:
        st = S.load(root, cid)
    except S.StateError as e:
        raise RuntimeError_(str(e)) from None
    if st.status == "stopped":  # the words runc uses, which the runc shim looks for
        raise RuntimeError_(f"container {cid}: container not running")
    return st


def _request(root: str, cid: str, msg):
    try:
        return control.request(S.control_socket(root, cid), msg)
    except control.ControlError as e:
        raise RuntimeError_(f"container {cid}: {e}") from None


def wait_stopped(root: str, cid: str, timeout: float | None = None) -> S.ContainerState:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        st = S.load(root, cid)
        if st.status == "stopped":
            return st
        if deadline is not None and time.monotonic() > deadline:
            return st
        time.sleep(STATE_POLL)


# --- the commands ---
def _create_parser(cmd: str, config) -> _Parser:
    """The flags create and run share (runc's spellings)."""
    p = _parser(cmd, config)
    p.add_argument("-b", "--bundle", default=".")
    p.add_argument("--pid-file")
    p.add_argument("--console-socket")
    p.add_argument("--no-pivot", action="store_true")
    p.add_argument("--no-new-keyring", action="store_true")
    p.add_argument("--preserve-fds", type=int, default=0)
    p.add_argument("id")
    return p


def cmd_create(config, pm, argv):
    a = _create_parser("create", config).parse_args(argv)
    return create(config, pm, a.id, a.bundle, a.pid_file, a.console_socket)


def cmd_start(config, pm, argv):
    p = _parser("start", config)
    p.add_argument("id")
    a = p.parse_args(argv)
    st = _running(state_dir(config), a.id)
    if st.status != "created":
        raise RuntimeError_(f"container {a.id} is {st.status}, not created")
    if st.sandbox:
        _start_in_pod(state_dir(config), st)
    else:
        _request(state_dir(config), a.id, control.Start())
    return 0


def cmd_run(config, pm, argv):
    p = _create_parser("run", config)
    p.add_argument("-d", "--detach", action="store_true")
    a = p.parse_args(argv)
    root = state_dir(config)
    if a.detach:
        return create(config, pm, a.id, a.bundle, a.pid_file, a.console_socket, hold=False)
    create(config, pm, a.id, a.bundle, a.pid_file, a.console_socket, hold=False)
    st = S.load(root, a.id)
    old = {s: signal.signal(s, lambda sig, _: _forward(st.pid, sig)) for s in
           (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    try:
        code = _wait_pid(st.pid)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    S.remove(root, a.id)
    return code


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_pid(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) \
                else 128 + os.WTERMSIG(status)
        except ChildProcessError:
            return 1


def cmd_state(config, pm, argv):
    p = _parser("state", config)
    p.add_argument("id")
    a = p.parse_args(argv)
    try:
        st = S.load(state_dir(config), a.id)
    except S.StateError as e:
        raise RuntimeError_(str(e)) from None
    print(json.dumps(st.oci(), indent=2))
    return 0


def cmd_kill(config, pm, argv):
    p = _parser("kill", config)
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("id")
    p.add_argument("signal", nargs="?", default="TERM")
    a = p.parse_args(argv)
    sig = parse_signal(a.signal)
    root = state_dir(config)
    if a.all:
        try:
            if S.load(root, a.id).status == "stopped":
                return 0  # as runc: nothing left to signal
        except S.StateError as e:
            raise RuntimeError_(str(e)) from None
    st = _running(root, a.id)
    if st.sandbox:
        _signal_in_pod(root, st, sig, a.all)
    else:
        _request(root, a.id, control.Kill(sig, a.all))
    return 0


def cmd_delete(config, pm, argv):
    p = _parser("delete", config)
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("id")
    a = p.parse_args(argv)
    root = state_dir(config)
    try:
        st = S.load(root, a.id)
    except S.StateError as e:
        S.remove(root, a.id)  # a half-created container may have left its directory
        if a.force:  # as runc: deleting what is gone already is not an error with --force
            return 0
        raise RuntimeError_(str(e)) from None
    if st.status not in ("stopped", "created") and not a.force:
        raise RuntimeError_(f"cannot delete container {a.id} that is not stopped: {st.status} "
                            "(use --force)")
    if st.status != "stopped":
        if st.sandbox:
            _signal_in_pod(root, st, signal.SIGKILL)
        _forward(st.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while S.pid_alive(st.pid) and time.monotonic() < deadline:
            time.sleep(STATE_POLL)
    S.remove(root, a.id)
    return 0


def cmd_list(config, pm, argv):
    p = _parser("list", config)
    p.add_argument("-f", "--format", default="table", choices=("table", "json"))
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    root = state_dir(config)
    states = []
    for cid in S.list_ids(root):
        try:
            states.append(S.load(root, cid))
        except S.StateError:
            continue
    if a.quiet:
        for st in states:
            print(st.id)
    elif a.format == "json":
        print(json.dumps([st.oci() for st in states]))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(st.id, str(st.pid if st.status != "stopped" else 0), st.status, st.bundle, st.created,
                  "root") for st in states]
        print(_table(rows))
    return 0


def _table(rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell plus three spaces, as runc's tabwriter."""
    widths = [max(len(r[i]) for r in rows) + 3 for i in range(len(rows[0]) - 1)]
    return "\n".join("".join(c.ljust(w) for c, w in zip(r, widths)) + r[-1] for r in rows)


def cmd_ps(config, pm, argv):
    p = _parser("ps", config)
    p.add_argument("-f", "--format", default="table", choices=("table", "json"))
    p.add_argument("id")
    p.add_argument("ps_args", nargs="*")
    a = p.parse_args(argv)
    root = state_dir(config)
    st = _running(root, a.id)
    ps = control.Ps(container=a.id) if st.sandbox else control.Ps()
    procs = _request(root, st.sandbox or a.id, ps).processes
    if a.format == "json":
        print(json.dumps([pr[0] for pr in procs]))
    else:
        print(f"{'UID':<8}{'PID':<8}{'PPID':<8}CMD")
        for pid, ppid, uid, comm, cmdline in procs:
            print(f"{uid:<8}{pid:<8}{ppid:<8}{cmdline or comm}")
    return 0


def cmd_events(config, pm, argv):
    p = _parser("events", config)
    p.add_argument("--stats", action="store_true")
    p.add_argument("--interval", default="5s")
    p.add_argument("id")
    a = p.parse_args(argv)
    root = state_dir(config)
    interval = _duration(a.interval)
    while True:
        st = _running(root, a.id)
        stats = _request(root, st.sandbox or a.id, control.Stats()).stats
        print(json.dumps({"type": "stats", "id": a.id, "data": stats}), flush=True)
        if a.stats:
            return 0
        time.sleep(interval)


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for u in ("ms", "s", "m", "h"):
        if text.endswith(u) and text[:-len(u)].replace(".", "", 1).isdigit():
            return float(text[:-len(u)]) * units[u]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise RuntimeError_(f"invalid interval {text!r}")


def _pause_resume(config, argv, cmd, msg, want):
    p = _parser(cmd, config)
    p.add_argument("id")
    a = p.parse_args(argv)
    root = state_dir(config)
    st = _running(root, a.id)
    if st.sandbox:
        raise RuntimeError_(f"container {a.id} shares the sandbox of pod container {st.sandbox}: "
                            f"{cmd} that one (it holds every container of the pod)")
    if st.status not in want:
        raise RuntimeError_(f"container {a.id} is {st.status}")
    _request(root, a.id, msg)
    return 0


def cmd_pause(config, pm, argv):
    return _pause_resume(config, argv, "pause", control.Pause(), ("running",))


def cmd_resume(config, pm, argv):
    return _pause_resume(config, argv, "resume", control.Resume(), ("paused",))


def cmd_wait(config, pm, argv):
    p = _parser("wait", config)
    p.add_argument("id")
    a = p.parse_args(argv)
    try:
        st = wait_stopped(state_dir(config), a.id)
    except S.StateError as e:
        raise RuntimeError_(str(e)) from None
    code = st.exit_status if st.exit_status is not None else 128 + signal.SIGKILL
    print(code)
    return code


def cmd_update(config, pm, argv):
    p = _parser("update", config)
    p.add_argument("-r", "--resources")
    p.add_argument("id")
    a, _rest = p.parse_known_args(argv)
    root = state_dir(config)
    _running(root, a.id)
    data = {}
    if a.resources:
        src = sys.stdin if a.resources == "-" else open(a.resources)
        with src:
            try:
                data = json.load(src)
            except ValueError as e:
                raise RuntimeError_(f"update: --resources: invalid JSON: {e}") from None
    with open(os.path.join(S.container_dir(root, a.id), "resources.json"), "w") as f:
        json.dump(data, f)
    return 0


def cmd_spec(config, pm, argv):
    from pysc.core.oci.spec import SpecError, write_default_spec
    p = _parser("spec", config)
    p.add_argument("-b", "--bundle", default=".")
    p.add_argument("--rootless", action="store_true")
    a = p.parse_args(argv)
    try:
        write_default_spec(a.bundle, rootless=a.rootless)
    except SpecError as e:
        raise RuntimeError_(str(e)) from None
    return 0


def cmd_exec(config, pm, argv):
    import msgpack
    from pysc.core.oci.spec import SpecError, load_spec, parse_process
    p = _parser("exec", config)
    p.add_argument("-p", "--process")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--pid-file")
    p.add_argument("--console-socket")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--cwd")
    p.add_argument("-u", "--user")
    p.add_argument("-g", "--additional-gids", action="append", default=[])
    p.add_argument("--preserve-fds", type=int, default=0)
    p.add_argument("--no-new-privs", action="store_true")
    p.add_argument("-c", "--cap", action="append", default=[])
    p.add_argument("id")
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    root = state_dir(config)
    st = _running(root, a.id)
    try:
        spec = load_spec(st.bundle, check_paths=False)
        if a.process:
            with open(a.process) as f:
                proc = parse_process(json.load(f))
        else:
            proc = spec.process
    except (SpecError, OSError, ValueError) as e:
        raise RuntimeError_(f"exec: {e}") from None
    args = list(proc.args) if a.process else [c for c in a.command if c != "--"]
    if not args:
        raise RuntimeError_("exec: no command given")
    env = proc.env_dict()
    for item in a.env:
        k, _, v = item.partition("=")
        env[k] = v
    uid, gid = proc.user.uid, proc.user.gid
    if a.user:
        u, _, g = a.user.partition(":")
        try:
            uid, gid = int(u), int(g) if g else gid
        except ValueError:
            raise RuntimeError_(f"exec: --user {a.user}: use UID[:GID]") from None
    groups = list(proc.user.additional_gids) + [int(x) for x in a.additional_gids]
    req = {"args": args, "env": env, "cwd": a.cwd or proc.cwd or "/", "uid": uid, "gid": gid,
           "groups": groups}
    if st.sandbox:  # a pod's container: its mount tree in the pod's sandbox
        req["container"] = a.id
    stdio = [0, 1, 2]
    pty_slave = None
    if a.console_socket or a.tty or (a.process and proc.terminal):
        if not a.console_socket:
            raise RuntimeError_("exec: a terminal needs --console-socket")
        pty_slave = console_pty(a.console_socket, "exec: ")
        stdio = [pty_slave] * 3
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(S.exec_socket(root, st.sandbox or a.id))
        socket.send_fds(conn, [msgpack.packb(req)], stdio)
    except OSError as e:
        raise RuntimeError_(f"container {a.id}: cannot reach the sandbox ({e.strerror})") from None
    finally:
        if pty_slave is not None:
            os.close(pty_slave)
    unpacker = msgpack.Unpacker()
    reply = _next_message(conn, unpacker)
    if reply is None or "error" in reply:
        raise RuntimeError_(f"exec: {reply.get('error') if reply else 'the sandbox closed the connection'}")
    hostpid = reply["pid"]
    if a.detach:
        waiter = os.fork()
        if waiter == 0:  # lives as long as the process and exits with its status
            os.setsid()
            # The sandbox holds the process's stdio. Our caller's must close
            # here: containerd's shim reads this command's output to its end
            # before it takes the pty master (docker exec -it).
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            msg = _next_message(conn, unpacker)
            os._exit(msg.get("exit", 137) if msg else 137)
        conn.close()
        if a.pid_file:
            _write_pid_file(a.pid_file, waiter)
        return 0
    if a.pid_file:
        _write_pid_file(a.pid_file, os.getpid())
    if hostpid is None:  # no host process (kvm): through the sandbox
        vpid = reply.get("vpid", 0)

        def forward(sig, _):
            try:
                _request(root, st.sandbox or a.id, control.Kill(sig, False, vpid))
            except RuntimeError_:
                pass
    else:
        def forward(sig, _):
            _forward(hostpid, sig)
    old = {sg: signal.signal(sg, forward) for sg in
           (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    try:
        msg = _next_message(conn, unpacker)
    finally:
        for sg, h in old.items():
            signal.signal(sg, h)
    return msg.get("exit", 137) if msg else 137


def _next_message(conn, unpacker):
    while True:
        for msg in unpacker:
            return msg
        try:
            data = conn.recv(65536)
        except InterruptedError:
            continue
        if not data:
            return None
        unpacker.feed(data)


COMMANDS = {
    "exec": cmd_exec,
    "create": cmd_create, "start": cmd_start, "run": cmd_run, "state": cmd_state, "kill": cmd_kill,
    "delete": cmd_delete, "list": cmd_list, "ps": cmd_ps, "events": cmd_events, "pause": cmd_pause,
    "resume": cmd_resume, "wait": cmd_wait, "update": cmd_update, "spec": cmd_spec,
}


def _install_command(name: str):
    """install/uninstall, imported only when called (every start would pay for it)."""
    def run(config, pm, argv):
        from pysc.core import install
        return install.COMMANDS[name](config, pm, argv)
    return run


COMMANDS.update({name: _install_command(name) for name in ("install", "uninstall")})
