"""Fixtures of the end-to-end tests with a real container engine (issue 4):
containerd's ``ctr`` and the runc v2 shim (``containerd-shim-runc-v2``)
driving pysc as their runc.

* ``engine`` (session) -- a containerd daemon of the tests' own: its own
  config file (cri and the other unneeded plugins disabled), socket, root and
  state dirs, all under a short directory in /tmp (unix socket paths must stay
  under 108 bytes), its log in a file.  The busybox image of ``image.py`` is
  imported into the ``pysc-test`` namespace.  At the end the daemon is stopped
  by its pid (SIGTERM, then SIGKILL); the session fails if a shim of its
  address, a pysc process or an app process of its containers is left (they
  are killed), or a mount below its directory.  ``PYSC_E2E_KEEP=1`` keeps the
  directory for inspection.
* ``ctr`` (per test) -- ``ctr.run(*args)`` runs ``ctr --address SOCK -n
  pysc-test ARGS`` with a timeout; ``ctr.run_container(...)`` is ``ctr run
  --runc-binary WRAPPER --runc-root ROOT IMAGE ID CMD...``; ``ctr.diag(ID)``
  is what to read when something fails: the ctr command and its output, each
  pysc command line the shim ran with its exit status, pysc's own log (the
  ``--log`` file the shim passes, ``STATE/io.containerd.runtime.v2.task/
  pysc-test/ID/log.json``) and the tail of containerd's log.  At teardown
  every container the test made is removed; the test fails if one cannot be
  removed or if a process of it is left.

The runtime the shim runs is a small wrapper script: it runs ``pysc
--platform=P "$@"`` (P is the first of ``--pysc-platforms``, default ptrace),
appends each call's argv and exit status to ``calls.log``, and keeps a copy of
pysc's ``--log`` file (the shim deletes the bundle with it).

If containerd is not installed, ``.ci/e2e-deps`` installs it (the tests are
skipped only when that is impossible: not root, no apt-get).
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from pysc.core.coreflags import DEFAULT_PLATFORM

from .image import BUSYBOX, build_image

REPO = Path(__file__).resolve().parents[2]
E2E_DEPS = REPO / ".ci" / "e2e-deps"
NAMESPACE = "pysc-test"
TOOLS = ("containerd", "ctr", "containerd-shim-runc-v2")
MARK_VAR = "PYSC_E2E_MARK"

#: plugins a `ctr run` does not need; cri above all (slow, wants CNI)
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.monitor.v1.cgroups",
)

CTR_TIMEOUT = 60.0

#: containerd 1.6 puts every shim's socket in /run/containerd/s, whatever its
#: --state (sha256 of "ADDRESS/NAMESPACE/ID"): the one path the tests cannot
#: keep private; they remove what their shims leave there.
SHIM_SOCKET_DIR = "/run/containerd/s"


# ---------------------------------------------------------------- helpers

def pysc_cmd() -> list[str]:
    """The pysc command, as absolute as possible (the shim's PATH is not ours)."""
    override = os.environ.get("PYSC_TEST_CMD")
    if override:
        return shlex.split(override)
    beside = Path(sys.executable).with_name("pysc")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    exe = shutil.which("pysc")
    if exe:
        return [os.path.abspath(exe)]
    return [sys.executable, "-m", "pysc.core.cli"]


def _platform(config) -> str:
    try:
        value = config.getoption("--pysc-platforms") or ""
    except ValueError:
        value = os.environ.get("PYSC_TEST_PLATFORMS", "")
    first = [p.strip() for p in value.split(",") if p.strip()]
    return first[0] if first else DEFAULT_PLATFORM


def tail(text: str | bytes | None, limit: int = 4000) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text if len(text) <= limit else "...(cut)\n" + text[-limit:]


def read_text(path: Path | str, limit: int = 6000) -> str:
    try:
        with open(path, "rb") as f:
            return tail(f.read(), limit)
    except OSError as e:
        return f"({path}: {e.strerror})"


class Result:
    """A finished (or timed-out) command: argv, returncode (None when it was
    killed for running out of time), stdout, stderr."""

    def __init__(self, argv, returncode, stdout, stderr, timed_out=False, seconds=0.0):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        self.seconds = seconds

    def __str__(self) -> str:
        status = (f"TIMED OUT after {self.seconds:.1f}s (killed)" if self.timed_out
                  else f"{self.returncode} (after {self.seconds:.1f}s)")
        return (f"command: {shlex.join(map(str, self.argv))}\nexit status: {status}\n"
                f"--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}")


def run_cmd(argv, input: str | bytes | None = None, timeout: float = CTR_TIMEOUT,
            env=None, text: bool = True) -> Result:
    """Run ARGV in its own session; on timeout kill its whole process group."""
    start = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text, env=env,
                         start_new_session=True)
    try:
        out, err = p.communicate(input, timeout=timeout)
        return Result(argv, p.returncode, out, err, seconds=time.monotonic() - start)
    except subprocess.TimeoutExpired:
        _killpg(p.pid)
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        return Result(argv, None, out, err, timed_out=True, seconds=time.monotonic() - start)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _proc_read(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _proc_link(pid: int, name: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/{name}")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    stat = _proc_read(pid, "stat")
    if not stat:
        return False
    try:
        return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except IndexError:
        return False


def _ppid(pid: int) -> int:
    stat = _proc_read(pid, "stat")
    try:
        return int(stat.rsplit(b")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return 0


def processes_below(base: Path, exclude=(), also=None) -> list[int]:
    """Live host processes (this one and EXCLUDE aside) that name BASE on
    their command line, run below it (root, cwd or executable), or satisfy
    ALSO(pid); and their descendants."""
    me, text = os.getpid(), str(base)
    pids, ours = [], set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude or int(name) == me:
            continue
        pid = int(name)
        pids.append(pid)
        if text.encode() in _proc_read(pid, "cmdline") \
                or any(_proc_link(pid, n).startswith(text + "/") for n in ("root", "cwd", "exe")) \
                or (also is not None and also(pid)):
            ours.add(pid)
    parents = {pid: _ppid(pid) for pid in pids}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if pid not in ours and ppid in ours:
                ours.add(pid)
                changed = True
    return sorted(p for p in ours if _alive(p))


def proc_state(pid: int) -> str:
    """'t (tracing stop) ptrace_stop': /proc/PID/status State and wchan."""
    state = ""
    for line in _proc_read(pid, "status").decode(errors="replace").splitlines():
        if line.startswith("State:"):
            state = line.split(":", 1)[1].strip()
            break
    return f"{state} {_proc_read(pid, 'wchan').decode(errors='replace')}".strip()


def describe(pid: int) -> str:
    cmd = _proc_read(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
    return f"pid {pid} (ppid {_ppid(pid)}): {cmd[:300] or '[' + _proc_read(pid, 'comm').decode().strip() + ']'}"


# ---------------------------------------------------------------- the engine

class Engine:
    """A private containerd and what the tests need to drive it."""

    def __init__(self, base: Path, platform: str):
        self.base = base
        self.platform = platform
        self.sock = str(base / "c.sock")
        self.root = base / "root"
        self.state = base / "state"
        self.runc_root = base / "runc"
        self.config = base / "config.toml"
        self.log = base / "containerd.log"
        self.calls = base / "calls.log"
        self.logs = base / "logs"
        self.wrapper = base / "pysc-runtime"
        self.image_tar = base / "busybox.tar"
        self.fifo_dir = base / "fifo"
        self.run_dir_existed = os.path.exists(os.path.dirname(SHIM_SOCKET_DIR))
        self.image = ""
        self.mark = secrets.token_hex(8)
        self.proc: subprocess.Popen | None = None
        self.pysc = pysc_cmd()

    # --- setup
    def write_config(self) -> None:
        disabled = ", ".join(f'"{p}"' for p in DISABLED_PLUGINS)
        self.config.write_text(
            "# containerd of pysc's end-to-end tests: private paths, few plugins\n"
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            f"disabled_plugins = [{disabled}]\n"
            "oom_score = 0\n"
            "\n[grpc]\n"
            f'  address = "{self.sock}"\n'
            "\n[debug]\n"
            '  level = "debug"\n')

    def write_wrapper(self) -> None:
        """The runtime the shim runs: pysc with the platform pinned, and a
        record of every call (argv, exit status, pysc's --log)."""
        pysc = " ".join(shlex.quote(a) for a in self.pysc)
        self.logs.mkdir(exist_ok=True)
        self.wrapper.write_text(f"""#!/bin/bash
# pysc as containerd's runc, for the end-to-end tests (tests/e2e/conftest.py)
calls={shlex.quote(str(self.calls))}
logs={shlex.quote(str(self.logs))}
printf '%s pid=%s start:' "$(date +%T.%N)" "$$" >> "$calls"
printf ' %q' "$@" >> "$calls"; echo >> "$calls"
{pysc} --platform={shlex.quote(self.platform)} "$@"
rc=$?
printf '%s pid=%s exit=%s:' "$(date +%T.%N)" "$$" "$rc" >> "$calls"
printf ' %q' "$@" >> "$calls"; echo >> "$calls"
# keep pysc's log: the shim deletes the bundle that holds it
prev= ; lf=
for a in "$@"; do
    case "$prev" in --log) lf=$a ;; esac
    case "$a" in --log=*) lf=${{a#--log=}} ;; esac
    prev=$a
done
if [ -n "$lf" ] && [ -f "$lf" ]; then
    cp -f -- "$lf" "$logs/$(basename -- "$(dirname -- "$lf")").log.json" 2>/dev/null
fi
exit $rc
""")
        self.wrapper.chmod(0o755)

    def env(self) -> dict:
        env = dict(os.environ)
        env[MARK_VAR] = self.mark
        path = env.get("PATH", "")
        for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
            if d not in path.split(":"):
                path += ":" + d
        env["PATH"] = path.strip(":")
        return env

    def start(self) -> None:
        for d in (self.root, self.state, self.runc_root, self.fifo_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.write_wrapper()
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(self.config), "--address", self.sock,
                 "--root", str(self.root), "--state", str(self.state)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=self.env(),
                start_new_session=True)
        finally:
            logf.close()
        deadline = time.monotonic() + 30
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited with status {self.proc.returncode}\n"
                                   f"--- containerd log ---\n{read_text(self.log)}")
            if os.path.exists(self.sock):
                last = self.ctr_raw("version", timeout=10)
                if last.returncode == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"containerd did not answer on {self.sock} within 30 s\n"
                           f"{last or ''}\n--- containerd log ---\n{read_text(self.log)}")

    def import_image(self) -> None:
        self.image = build_image(str(self.image_tar))
        r = self.ctr_raw("-n", NAMESPACE, "images", "import", str(self.image_tar), timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"ctr images import failed\n{r}\n--- containerd log ---\n"
                               f"{self.containerd_log_tail()}")

    # --- commands
    def ctr_raw(self, *args, input=None, timeout: float = CTR_TIMEOUT, text=True) -> Result:
        return run_cmd(["ctr", "--address", self.sock, *map(str, args)], input=input,
                       timeout=timeout, env=self.env(), text=text)

    def containerd_log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log, "rb") as f:
                data = f.read().decode(errors="replace").splitlines()
        except OSError as e:
            return f"({self.log}: {e.strerror})"
        return "\n".join(line[:1500] for line in data[-lines:])

    # --- processes of the engine
    def our_processes(self) -> list[int]:
        """Host processes this engine's tests started (containerd excluded):
        marked by our environment variable, naming our directory (shims,
        pysc), or running below it (app processes, whose root is a bundle's
        rootfs); and their descendants."""
        mark = f"{MARK_VAR}={self.mark}".encode()
        daemon = self.proc.pid if self.proc else -1
        return processes_below(self.base, {daemon},
                               lambda pid: mark in _proc_read(pid, "environ").split(b"\0"))

    def mounts_below(self) -> list[str]:
        base = str(self.base) + "/"
        out = []
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    mp = line.split()[4].replace("\\040", " ")
                    if mp.startswith(base):
                        out.append(mp)
        except OSError:
            pass
        return out

    def shim_socket(self, cid: str) -> str:
        key = os.path.join(self.sock, NAMESPACE, cid).encode()
        return os.path.join(SHIM_SOCKET_DIR, hashlib.sha256(key).hexdigest())

    def forget_shim_sockets(self, ids) -> None:
        """Remove the sockets that shims of IDS left (a shim that was killed)."""
        for cid in ids:
            try:
                os.unlink(self.shim_socket(cid))
            except OSError:
                pass

    def tidy_run_dir(self) -> None:
        """Remove /run/containerd/{s,} if this session made them and they are empty."""
        if self.run_dir_existed:
            return
        for d in (SHIM_SOCKET_DIR, os.path.dirname(SHIM_SOCKET_DIR)):
            try:
                os.rmdir(d)
            except OSError:
                pass

    def stop(self) -> list[str]:
        """Stop containerd by its pid; returns the problems found."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                problems.append("containerd did not stop on SIGTERM within 15 s: killed")
                self.proc.kill()
                self.proc.wait(10)
        deadline = time.monotonic() + 5
        left = self.our_processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.our_processes()
        if left:
            problems.append("processes left behind (killed now):\n  "
                            + "\n  ".join(describe(p) for p in left))
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        mounts = self.mounts_below()
        if mounts:
            problems.append("mounts left behind (unmounted now): " + ", ".join(mounts))
            for mp in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30)
        return problems


def _ensure_tools() -> None:
    missing = [t for t in TOOLS if not shutil.which(t)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.skip(f"{', '.join(missing)} not installed, and installing containerd needs root "
                    f"(run `bash .ci/e2e-deps` as root)")
    if not shutil.which("apt-get"):
        pytest.skip(f"{', '.join(missing)} not installed, and there is no apt-get to install "
                    "containerd with")
    r = run_cmd(["bash", str(E2E_DEPS)], timeout=900)
    still = [t for t in TOOLS if not shutil.which(t)]
    if r.returncode != 0 or still:
        pytest.fail(f"installing containerd with .ci/e2e-deps failed (missing: {still})\n{r}",
                    pytrace=False)


def _check_platform(name: str) -> None:
    """Skip when `pysc help platforms` says NAME is unknown or unavailable."""
    r = run_cmd([*pysc_cmd(), "help", "platforms"], timeout=60)
    found = {}
    for line in (r.stdout or "").splitlines():
        m = re.match(r"^(\S+)\s+(available|unavailable)\b:?\s*(.*)$", line)
        if m:
            found[m.group(1)] = None if m.group(2) == "available" else (m.group(3) or "unavailable")
    if r.returncode != 0 or not found:
        return  # let the containers say what is wrong
    if name not in found:
        pytest.skip(f"platform {name}: not a platform of this pysc "
                    f"(`pysc help platforms` lists {', '.join(found)})")
    if found[name] is not None:
        pytest.skip(f"platform {name} unavailable here: {found[name]}")


@pytest.fixture(scope="session")
def engine(request):
    if sys.platform != "linux":
        pytest.skip("containerd needs Linux")
    if os.geteuid() != 0:
        pytest.skip("containerd and its runc shim need root")
    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} missing (Debian's busybox-static, installed by .ci/setup)")
    platform = _platform(request.config)
    _check_platform(platform)
    _ensure_tools()
    base = Path(tempfile.mkdtemp(prefix="pysc-e2e-", dir="/tmp"))
    if len(str(base / "c.sock.ttrpc")) > 100:
        pytest.skip(f"temporary directory {base} too long for a unix socket path")
    eng = Engine(base, platform)
    try:
        eng.start()
        eng.import_image()
    except BaseException as e:
        problems = eng.stop()
        eng.tidy_run_dir()
        shutil.rmtree(base, ignore_errors=True)
        msg = str(e) + ("\n" + "\n".join(problems) if problems else "")
        pytest.fail(f"cannot start the tests' containerd: {msg}", pytrace=False)
    yield eng
    # remove what a failed test may have left, then stop the daemon
    r = eng.ctr_raw("-n", NAMESPACE, "containers", "ls", "-q", timeout=30)
    left = (r.stdout or "").split()
    problems = []
    if left:
        problems.append(f"containers left in namespace {NAMESPACE}: {left}")
        problems += remove_all(eng, left)
    problems += eng.stop()
    eng.forget_shim_sockets(left)
    eng.tidy_run_dir()
    if os.environ.get("PYSC_E2E_KEEP"):
        print(f"\n[e2e] kept {base}", file=sys.stderr)
    else:
        shutil.rmtree(base, ignore_errors=True)
    if problems:
        pytest.fail("containerd teardown: " + "\n".join(problems), pytrace=False)


def _task_status(eng: Engine, cid: str) -> str | None:
    ls = eng.ctr_raw("-n", NAMESPACE, "tasks", "ls", timeout=30)
    for line in (ls.stdout or "").splitlines()[1:]:
        f = line.split()
        if f[:1] == [cid]:
            return f[2] if len(f) > 2 else ""
    return None


def _remove_container(eng: Engine, cid: str, stop_wait: float = 10.0) -> tuple[list[str], bool]:
    """Kill and remove container CID (task, container, snapshot) the way a
    user would: `tasks kill -a -s SIGKILL`, wait for STOPPED, `tasks rm`,
    `containers rm`.  Returns (errors, stuck): stuck when the task did not
    stop (the caller may then end its host processes and call again)."""
    errors: list[str] = []
    status = _task_status(eng, cid)
    if status is not None:
        if status != "STOPPED":
            k = eng.ctr_raw("-n", NAMESPACE, "tasks", "kill", "-a", "-s", "SIGKILL", cid,
                            timeout=30)
            deadline = time.monotonic() + stop_wait
            while status not in (None, "STOPPED") and time.monotonic() < deadline:
                time.sleep(0.1)
                status = _task_status(eng, cid)
            if status not in (None, "STOPPED"):
                errors.append(f"task {cid} still {status} {stop_wait:.0f} s after "
                              f"`ctr tasks kill -a -s SIGKILL`\n{k}")
                return errors, True
        if status is not None:
            r = eng.ctr_raw("-n", NAMESPACE, "tasks", "rm", cid, timeout=30)
            if r.returncode != 0:
                errors.append(f"ctr tasks rm {cid} failed (task status {status})\n{r}")
    r = eng.ctr_raw("-n", NAMESPACE, "containers", "rm", cid, timeout=30)
    if r.returncode != 0 and "not found" not in (r.stderr or ""):
        errors.append(f"ctr containers rm {cid} failed\n{r}")
    return errors, False


def _kill_app_side(eng: Engine) -> list[int]:
    """SIGKILL every process of the engine's containers but the shims (so
    that the shims see their init end and report the tasks stopped)."""
    killed = []
    for p in eng.our_processes():
        if b"containerd-shim" in _proc_read(p, "cmdline"):
            continue
        try:
            os.kill(p, signal.SIGKILL)
            killed.append(p)
        except ProcessLookupError:
            pass
    return killed


def remove_all(eng: Engine, ids) -> list[str]:
    """Remove containers IDS; a task that does not stop is ended by killing
    its host processes (reported as an error)."""
    errors: list[str] = []
    stuck = []
    for cid in ids:
        errs, is_stuck = _remove_container(eng, cid)
        errors += errs
        if is_stuck:
            stuck.append(cid)
    if stuck:
        killed = _kill_app_side(eng)
        errors.append(f"killed host processes {killed} so that {stuck} could be removed")
        for cid in stuck:
            errors += _remove_container(eng, cid)[0]
    return errors


# ---------------------------------------------------------------- per test

class Ctr:
    """ctr on the engine, in namespace pysc-test, for one test."""

    def __init__(self, engine: Engine, test_name: str):
        self.engine = engine
        self.ids: list[str] = []
        self.last: Result | None = None
        self.prefix = "".join(c for c in test_name.removeprefix("test_") if c.isalnum())[:16] or "t"

    def new_id(self) -> str:
        cid = f"{self.prefix}-{uuid.uuid4().hex[:8]}"
        self.ids.append(cid)
        return cid

    def run(self, *args, input=None, timeout: float = CTR_TIMEOUT) -> Result:
        self.last = self.engine.ctr_raw("-n", NAMESPACE, *args, input=input, timeout=timeout)
        return self.last

    def runtime_flags(self) -> list[str]:
        return ["--runc-binary", str(self.engine.wrapper), "--runc-root",
                str(self.engine.runc_root), "--fifo-dir", str(self.engine.fifo_dir)]

    def exec_(self, cid: str, exec_id: str, *cmd, timeout: float = CTR_TIMEOUT) -> Result:
        """`ctr tasks exec --exec-id EXEC_ID CID CMD...` (its FIFOs in our dir)."""
        return self.run("tasks", "exec", "--fifo-dir", str(self.engine.fifo_dir), "--exec-id",
                        exec_id, cid, *cmd, timeout=timeout)

    def run_argv(self, cid: str, *cmd, flags=("--rm",)) -> list[str]:
        """The argv of `ctr run FLAGS --runc-binary ... IMAGE CID CMD...`."""
        return ["ctr", "--address", self.engine.sock, "-n", NAMESPACE, "run", *flags,
                *self.runtime_flags(), self.engine.image, cid, *map(str, cmd)]

    def run_container(self, cid: str, *cmd, flags=("--rm",), input=None,
                      timeout: float = CTR_TIMEOUT) -> Result:
        self.last = run_cmd(self.run_argv(cid, *cmd, flags=flags), input=input, timeout=timeout,
                            env=self.engine.env())
        return self.last

    def tasks(self) -> dict[str, str]:
        """{task id: status} from `ctr tasks ls`."""
        r = self.run("tasks", "ls", timeout=30)
        out = {}
        for line in (r.stdout or "").splitlines()[1:]:
            f = line.split()
            if len(f) >= 3:
                out[f[0]] = f[2]
        return out

    def wait_status(self, cid: str, want: set[str], timeout: float = 20.0) -> str | None:
        """Poll `ctr tasks ls` until CID's status is in WANT ("" = no task);
        returns the last status seen (None if there was no task)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.tasks().get(cid)
            if (status or "") in want or time.monotonic() > deadline:
                return status
            time.sleep(0.1)

    def pysc(self, *args, timeout: float = 30) -> Result:
        """The wrapper (so the runtime pysc) on the shim's --root for our namespace."""
        return run_cmd([str(self.engine.wrapper), "--root",
                        str(self.engine.runc_root / NAMESPACE), *args], timeout=timeout,
                       env=self.engine.env())

    # --- diagnostics
    def calls_of(self, cid: str | None) -> str:
        try:
            lines = self.engine.calls.read_text(errors="replace").splitlines()
        except OSError:
            return "(no calls.log)"
        if cid:
            lines = [ln for ln in lines if cid in ln]
        return "\n".join(lines[-60:]) or "(none)"

    def pysc_log(self, cid: str) -> str:
        live = self.engine.state / "io.containerd.runtime.v2.task" / NAMESPACE / cid / "log.json"
        copy = self.engine.logs / f"{cid}.log.json"
        parts = []
        for p in (live, copy):
            if p.exists():
                parts.append(f"[{p}]\n{read_text(p)}")
        return "\n".join(parts) or "(pysc wrote no --log file)"

    def diag(self, cid: str | None = None, result: Result | None = None) -> str:
        result = result or self.last
        out = []
        if result is not None:
            out.append(str(result))
        if cid:
            out.append(f"--- pysc calls by the shim for {cid} (wrapper {self.engine.wrapper}) ---\n"
                       + self.calls_of(cid))
            out.append(f"--- pysc's log (--log) for {cid} ---\n{self.pysc_log(cid)}")
        procs = self.engine.our_processes()
        if procs:
            out.append("--- host processes of the engine's containers now (state, wait channel) ---\n"
                       + "\n".join(f"{proc_state(p):<22} {describe(p)}" for p in procs))
        out.append("--- containerd log (tail) ---\n" + self.engine.containerd_log_tail())
        return "\n".join(out)

    def cleanup(self) -> list[str]:
        errors = remove_all(self.engine, self.ids)
        self.engine.forget_shim_sockets(self.ids)
        listed = self.run("containers", "ls", "-q", timeout=30).stdout or ""
        for cid in self.ids:
            if cid in listed.split():
                errors.append(f"container {cid} still listed by `ctr containers ls` after removal")
        return errors


@pytest.fixture
def ctr(engine, request):
    c = Ctr(engine, request.node.name)
    yield c
    errors = c.cleanup()
    # no process of this test's containers may outlive them (shims, pysc, apps)
    deadline = time.monotonic() + 5
    left = engine.our_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = engine.our_processes()
    if left:
        errors.append("processes left after the test's containers were removed (killed now):\n  "
                      + "\n  ".join(describe(p) for p in left))
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if errors:
        detail = "\n".join(c.diag(cid, None) for cid in c.ids[-1:]) if c.ids else ""
        pytest.fail("teardown: " + "\n".join(errors) + "\n" + detail, pytrace=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: drives pysc through a real container engine")


_E2E_DIR = str(Path(__file__).resolve().parent) + os.sep


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).startswith(_E2E_DIR):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.integration)
