"""Fixtures of the OCI runtime tests (issue 4, DESIGN §8): pysc driven the
way runc is, through ``pysc [global flags] SUBCOMMAND ...``, against bundles
built by the tests (a static busybox rootfs).

* ``bundle(args=..., **edits)`` -- a factory: a bundle directory with
  ``rootfs/`` (busybox and its applet links, ``proc sys dev tmp etc root``,
  ``etc/passwd``, ``etc/group``) and a ``config.json`` written by
  ``pysc spec -b BUNDLE`` then edited (args, env, cwd, hostname, user,
  mounts, ...).  When ``pysc spec`` fails, the fixture writes runc's default
  config by hand so that the other subcommands are still exercised.
* ``runtime`` -- ``runtime.run(*args)`` runs ``pysc --root ROOT
  [--platform=P] ARGS...`` with a timeout (the whole process group is
  killed when it runs out); helpers for the usual sequences (create, start,
  state polling).  At teardown every container left in ROOT is force-deleted,
  and the test fails (after killing them) if processes of its containers are
  still alive on the host or a container's state is left under ROOT.

Output of a pysc command is captured in files, not pipes: ``create`` and
``run --detach`` leave a sandbox that inherits pysc's stdout/stderr, and a
pipe would then never reach end-of-file.  So a command is "done" when the
pysc process exits, whatever its containers still hold open.

The ``pysc`` command is the installed console script or ``python -m
pysc.core.cli``; ``PYSC_TEST_CMD`` (a shell-quoted command line) replaces it
for debugging.  Tests that use ``runtime`` run on every host-process
platform pysc has here (ptrace, seccomp), or on those ``--pysc-platforms``
names; tests of configuration errors run on the first of them only.
"""
from __future__ import annotations

import json
import os
import random
import re
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

BUSYBOX = "/bin/busybox"

APPLETS = (
    # the set the tests rely on (issue 4's brief) ...
    "sh", "echo", "cat", "ls", "sleep", "uname", "id", "hostname", "true", "false", "wc", "ps",
    "env", "pwd", "mkdir", "touch", "kill", "readlink", "stat", "test",
    # ... and a few more the test scripts use
    "grep", "tr", "sort", "head", "tail", "sed", "cut", "rm", "printf", "tty", "[",
)

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

TEST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "LANG": "C",
    "TZ": "UTC",
    "HOME": "/root" if os.getuid() == 0 else os.environ.get("HOME", "/tmp"),
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}

#: A tmpfs at /tmp, as Docker gives one; the default root is read-only.
TMPFS_TMP = {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}

TRACEBACK = "Traceback (most recent call last)"


# ---------------------------------------------------------------- helpers

def pysc_cmd() -> list[str]:
    override = os.environ.get("PYSC_TEST_CMD")
    if override:
        return shlex.split(override)
    exe = shutil.which("pysc")
    if exe:
        return [exe]
    return [sys.executable, "-m", "pysc.core.cli"]


def _tail(text: str | None, limit: int = 3000) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else "..." + text[-limit:]


def show(cp: subprocess.CompletedProcess, limit: int = 3000) -> str:
    """A result, readable in an assertion message."""
    cmd = cp.args if isinstance(cp.args, str) else shlex.join(map(str, cp.args))
    if len(cmd) > 1500:
        cmd = cmd[:1500] + "...(cut)"
    return (f"command: {cmd}\nexit status: {cp.returncode}\n"
            f"--- stdout ---\n{_tail(cp.stdout, limit)}\n--- stderr ---\n{_tail(cp.stderr, limit)}")


def assert_ok(cp: subprocess.CompletedProcess, status: int = 0, what: str = "") -> None:
    if cp.returncode != status:
        raise AssertionError(f"{what + ': ' if what else ''}expected exit status {status}\n{show(cp)}")


def assert_no_traceback(cp: subprocess.CompletedProcess) -> None:
    if TRACEBACK in (cp.stderr or "") + (cp.stdout or ""):
        raise AssertionError(f"pysc printed a Python traceback\n{show(cp)}")


def assert_clear_error(cp: subprocess.CompletedProcess, *must: str, any_of: tuple[str, ...] = (),
                       what: str = "") -> None:
    """Non-zero exit, no traceback, a message on stderr containing every
    string of MUST and (if given) one of ANY_OF (case-insensitive)."""
    head = f"{what}: " if what else ""
    assert cp.returncode != 0, f"{head}expected a non-zero exit status\n{show(cp)}"
    assert_no_traceback(cp)
    err = (cp.stderr or "").strip()
    assert err, f"{head}expected an error message on stderr, got none\n{show(cp)}"
    low = err.lower()
    for word in must:
        assert word.lower() in low, f"{head}the error message does not name {word!r}\n{show(cp)}"
    if any_of:
        assert any(w.lower() in low for w in any_of), \
            f"{head}the error message says none of {list(any_of)}\n{show(cp)}"


def pid_alive(pid: int) -> bool:
    """Whether host process PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(pred, timeout: float = 20.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def host_processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every live host process (zombies have no argv)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if not raw:
            continue
        argv = [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]
        out.append((int(name), argv))
    return out


def entries_naming(root: str, word: str) -> list[str]:
    """Paths under ROOT whose name contains WORD (a container's leftovers)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            if word in n:
                found.append(os.path.join(dirpath, n))
    return found


def parse_json(cp: subprocess.CompletedProcess, what: str):
    try:
        return json.loads(cp.stdout)
    except ValueError as e:
        raise AssertionError(f"{what}: stdout is not JSON ({e})\n{show(cp)}") from None


PLATFORMS = ("ptrace", "seccomp", "kvm")


def _platforms(config) -> list[str]:
    wanted = [p.strip() for p in (config.getoption("--pysc-platforms", default="") or "").split(",")
              if p.strip()]
    if wanted:
        return wanted
    try:
        cp = subprocess.run([*pysc_cmd(), "help", "platforms"], capture_output=True, text=True,
                            timeout=60, env=TEST_ENV, stdin=subprocess.DEVNULL)
        available = set(re.findall(r"^(\S+)\s+available\b", cp.stdout, re.M))
    except (OSError, subprocess.TimeoutExpired):
        available = set()
    return [p for p in PLATFORMS if p in available] or ["ptrace"]


def pytest_generate_tests(metafunc):
    if "runtime" not in metafunc.fixturenames:
        return
    names = _platforms(metafunc.config)
    if metafunc.module.__name__.endswith("test_bundle_errors"):
        names = names[:1]  # the configuration is checked before any platform starts
    metafunc.parametrize("runtime", names, indirect=True)


# ---------------------------------------------------------------- running pysc

class Background:
    """A pysc command running in the background; output goes to files."""

    def __init__(self, cmd: list[str], outdir: str, input: str | None = None, env=None, cwd=None):
        self.cmd = cmd
        fd, self.out_path = tempfile.mkstemp(prefix="out-", dir=outdir)
        os.close(fd)
        fd, self.err_path = tempfile.mkstemp(prefix="err-", dir=outdir)
        os.close(fd)
        self._in_path = None
        stdin = subprocess.DEVNULL
        if input is not None:
            fd, self._in_path = tempfile.mkstemp(prefix="in-", dir=outdir)
            with os.fdopen(fd, "w") as f:
                f.write(input)
            stdin = open(self._in_path, "rb")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=out, stderr=err, cwd=cwd,
                                         env=dict(TEST_ENV if env is None else env),
                                         start_new_session=True)
        if stdin is not subprocess.DEVNULL:
            stdin.close()

    def stdout(self) -> str:
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def stderr(self) -> str:
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def result(self) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(self.cmd, self.proc.returncode, self.stdout(), self.stderr())

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def wait(self, timeout: float = 60) -> subprocess.CompletedProcess:
        """The result once pysc exits; on timeout its process group is
        killed and the test fails showing what it printed so far."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"TIMED OUT after {timeout} s (killed)\n{show(self.result())}")
        return self.result()

    def cleanup(self) -> None:
        self.kill()
        for p in (self.out_path, self.err_path, self._in_path):
            if p:
                try:
                    os.unlink(p)
                except OSError:
                    pass


class Runtime:
    """``pysc --root ROOT`` for one test."""

    def __init__(self, tmp_path: Path, platform: str):
        self.tmp_path = tmp_path
        self.platform = platform
        # Short: the runtime puts unix sockets under ROOT/ID/ (108-byte limit).
        self.root = tempfile.mkdtemp(prefix="pysc-t-", dir="/tmp")
        self.outdir = str(tmp_path / "pysc-out")
        os.makedirs(self.outdir, exist_ok=True)
        self.ids: list[str] = []
        self.durations: list[str] = []
        self.short_dirs: list[str] = []
        self.background: list[Background] = []

    # --- naming
    def new_id(self, prefix: str = "c") -> str:
        cid = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        return cid

    def unique_secs(self) -> str:
        """A sleep duration no other process uses (days), to find the
        container's ``sleep`` among the host's processes."""
        while True:
            d = str(random.randrange(200000, 900000))
            if d not in self.durations:
                self.durations.append(d)
                return d

    def short_dir(self) -> str:
        d = tempfile.mkdtemp(prefix="pysc-s-", dir="/tmp")
        self.short_dirs.append(d)
        return d

    # --- running
    def cmd(self, *args, flags=()) -> list[str]:
        return [*pysc_cmd(), "--root", self.root, f"--platform={self.platform}", *map(str, flags),
                *map(str, args)]

    def popen(self, *args, flags=(), input=None, env=None, cwd=None) -> Background:
        bg = Background(self.cmd(*args, flags=flags), self.outdir, input=input, env=env, cwd=cwd)
        self.background.append(bg)
        return bg

    def run(self, *args, flags=(), timeout: float = 60, input=None, env=None, cwd=None,
            check_traceback: bool = True) -> subprocess.CompletedProcess:
        """``pysc --root ROOT --platform=P FLAGS... ARGS...``; returns when pysc exits."""
        bg = self.popen(*args, flags=flags, input=input, env=env, cwd=cwd)
        cp = bg.wait(timeout)
        bg.cleanup()
        self.background.remove(bg)
        if check_traceback:
            assert_no_traceback(cp)
        return cp

    # --- common sequences
    def create(self, bundle: Path, cid: str, pid_file: Path | None = None, extra=()) -> int | None:
        """``create --bundle B [--pid-file P] ID``; returns the pid in the pid file."""
        args = ["create", "--bundle", str(bundle)]
        if pid_file is not None:
            args += ["--pid-file", str(pid_file)]
        cp = self.run(*args, *extra, cid, timeout=60)
        assert_ok(cp, what=f"create {cid}")
        if pid_file is None:
            return None
        assert pid_file.exists(), f"create did not write --pid-file {pid_file}\n{show(cp)}"
        text = pid_file.read_text().strip()
        assert text.isdigit(), f"--pid-file holds {text!r}, not a pid\n{show(cp)}"
        return int(text)

    def start(self, cid: str) -> None:
        cp = self.run("start", cid, timeout=60)
        assert_ok(cp, what=f"start {cid}")

    def create_and_start(self, bundle: Path, cid: str | None = None) -> tuple[str, int]:
        """A running container: (id, pid from --pid-file)."""
        cid = cid or self.new_id()
        pid_file = self.tmp_path / f"{cid}.pid"
        pid = self.create(bundle, cid, pid_file)
        self.start(cid)
        return cid, pid

    def state(self, cid: str) -> dict:
        cp = self.run("state", cid, timeout=30)
        assert_ok(cp, what=f"state {cid}")
        st = parse_json(cp, f"state {cid}")
        assert isinstance(st, dict), f"state {cid}: not a JSON object\n{show(cp)}"
        return st

    def wait_status(self, cid: str, want: str, timeout: float = 30) -> dict:
        """Poll ``state ID`` until its status is WANT; the state."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            cp = self.run("state", cid, timeout=30)
            last = cp
            if cp.returncode == 0:
                try:
                    st = json.loads(cp.stdout)
                except ValueError:
                    st = None
                if isinstance(st, dict) and st.get("status") == want:
                    return st
            if time.monotonic() >= deadline:
                pytest.fail(f"container {cid} did not reach status {want!r} within {timeout} s; "
                            f"last `state`:\n{show(last)}")
            time.sleep(0.2)

    def list_json(self) -> list[dict]:
        cp = self.run("list", "--format", "json", timeout=30)
        assert_ok(cp, what="list --format json")
        data = parse_json(cp, "list --format json")
        if data is None:          # runc prints `null` for no container
            data = []
        assert isinstance(data, list), f"list --format json: not a JSON list\n{show(cp)}"
        return data

    def sleep_processes(self, duration: str) -> list[int]:
        """Host pids of live ``sleep DURATION`` processes (a container's)."""
        return [pid for pid, argv in host_processes()
                if duration in argv and any(os.path.basename(a) == "sleep" for a in argv)]

    # --- teardown
    def _leftover_processes(self) -> list[tuple[int, list[str]]]:
        me = os.getpid()
        marks = [self.root, str(self.tmp_path)] + self.short_dirs
        found = []
        for pid, argv in host_processes():
            if pid == me:
                continue
            is_sleep = any(os.path.basename(a) == "sleep" for a in argv)
            if (is_sleep and any(d in argv for d in self.durations)) or \
                    any(m in a for a in argv for m in marks):
                found.append((pid, argv))
        return found

    def teardown(self) -> list[str]:
        problems: list[str] = []
        for bg in list(self.background):
            bg.cleanup()
        self.background.clear()
        ids = set(self.ids)
        try:
            cp = subprocess.run(self.cmd("list", "--format", "json"), capture_output=True, text=True,
                                timeout=30, env=TEST_ENV, stdin=subprocess.DEVNULL, start_new_session=True)
            data = json.loads(cp.stdout) if cp.returncode == 0 else None
            for item in data or []:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    ids.add(item["id"])
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        for cid in sorted(ids):
            try:
                subprocess.run(self.cmd("delete", "--force", cid), capture_output=True, timeout=60,
                               env=TEST_ENV, stdin=subprocess.DEVNULL, start_new_session=True)
            except subprocess.TimeoutExpired:
                problems.append(f"`delete --force {cid}` timed out")
        wait_until(lambda: not self._leftover_processes(), timeout=15, interval=0.3)
        left = self._leftover_processes()
        if left:
            problems.append("host processes of the test's containers are still alive after "
                            "`delete --force` (killed now):\n" +
                            "\n".join(f"  pid {pid}: {shlex.join(argv)[:300]}" for pid, argv in left))
            for pid, _ in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for cid in sorted(ids):
            stale = entries_naming(self.root, cid)
            if stale:
                problems.append(f"container {cid}'s state is left under --root after `delete --force`: "
                                f"{stale}")
        shutil.rmtree(self.root, ignore_errors=True)
        for d in self.short_dirs:
            shutil.rmtree(d, ignore_errors=True)
        return problems


@pytest.fixture
def runtime(request, tmp_path) -> Runtime:
    rt = Runtime(tmp_path, request.param)
    yield rt
    problems = rt.teardown()
    if problems:
        pytest.fail("teardown:\n" + "\n".join(problems), pytrace=False)


# ---------------------------------------------------------------- bundles

def runc_default_config() -> dict:
    """What ``runc spec`` writes (terminal off), for when ``pysc spec`` fails."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [DEFAULT_PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": list(caps), "effective": list(caps),
                             "permitted": list(caps), "ambient": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pysc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def build_rootfs(rootfs: Path) -> None:
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    os.chmod(rootfs / "bin" / "busybox", 0o755)
    for applet in APPLETS:
        os.symlink("busybox", rootfs / "bin" / applet)
    for d in ("proc", "sys", "dev", "tmp", "etc", "root"):
        (rootfs / d).mkdir(exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")


def _merge_env(base: list[str], extra) -> list[str]:
    if isinstance(extra, dict):
        extra = [f"{k}={v}" for k, v in extra.items()]
    out: dict[str, str] = {}
    for entry in list(base) + list(extra):
        k, _, v = entry.partition("=")
        out[k] = v
    return [f"{k}={v}" for k, v in out.items()]


class BundleFactory:
    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.count = 0
        self.spec_failures: list[str] = []   # why `pysc spec` could not be used, per bundle

    def _spec(self, path: Path) -> dict:
        cmd = [*pysc_cmd(), "spec", "-b", str(path)]
        why = None
        try:
            cp = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=TEST_ENV,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"{shlex.join(cmd)}: {e}"
        else:
            if cp.returncode != 0:
                why = show(cp, 500)
        config = None
        if why is None:
            try:
                config = json.loads((path / "config.json").read_text())
                if not isinstance(config, dict) or not isinstance(config.get("process"), dict):
                    why = "config.json of `pysc spec` has no process object"
                    config = None
            except (OSError, ValueError) as e:
                why = f"config.json of `pysc spec` is unreadable: {e}"
        if config is None:
            self.spec_failures.append(why or "?")
            try:
                (path / "config.json").unlink()
            except FileNotFoundError:
                pass
            config = runc_default_config()
        return config

    def __call__(self, args=("true",), *, env=None, cwd=None, hostname=None, uid=None, gid=None,
                 additional_gids=None, terminal=False, readonly=None, mounts=(), rlimits=None,
                 annotations=None, files=None, symlinks=None, dirs=(), edit=None,
                 name=None) -> Path:
        """A bundle whose process runs ARGS.  ENV (list of K=V or a dict) is
        merged over the default environment; MOUNTS are appended; FILES
        ({relpath: text}), SYMLINKS ({relpath: target}) and DIRS are created
        in the rootfs; EDIT(config) may change anything else."""
        self.count += 1
        path = self.tmp_path / (name or f"bundle{self.count}")
        path.mkdir()
        rootfs = path / "rootfs"
        build_rootfs(rootfs)
        for d in dirs:
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        for rel, text in (files or {}).items():
            (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
            (rootfs / rel).write_text(text)
        for rel, target in (symlinks or {}).items():
            (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(str(target), rootfs / rel)

        config = self._spec(path)
        proc = config.setdefault("process", {})
        proc["args"] = list(args)
        proc["terminal"] = bool(terminal)
        proc.setdefault("cwd", "/")
        proc.setdefault("env", [DEFAULT_PATH])
        if not any(e.startswith("PATH=") for e in proc["env"]):
            proc["env"].insert(0, DEFAULT_PATH)
        if env is not None:
            proc["env"] = _merge_env(proc["env"], env)
        if cwd is not None:
            proc["cwd"] = cwd
        user = proc.setdefault("user", {"uid": 0, "gid": 0})
        if uid is not None:
            user["uid"] = uid
        if gid is not None:
            user["gid"] = gid
        if additional_gids is not None:
            user["additionalGids"] = list(additional_gids)
        if rlimits is not None:
            proc["rlimits"] = list(rlimits)
        config.setdefault("root", {"path": "rootfs", "readonly": True})
        config["root"]["path"] = "rootfs"
        if readonly is not None:
            config["root"]["readonly"] = bool(readonly)
        if hostname is not None:
            config["hostname"] = hostname
        config.setdefault("mounts", [])
        config["mounts"].extend(mounts)
        if annotations is not None:
            config["annotations"] = dict(annotations)
        if edit is not None:
            edit(config)
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return path


@pytest.fixture
def bundle(tmp_path) -> BundleFactory:
    return BundleFactory(tmp_path)


@pytest.fixture(autouse=True)
def _need_busybox():
    if not (os.path.isfile(BUSYBOX) and os.access(BUSYBOX, os.X_OK)):
        pytest.skip(f"{BUSYBOX} is missing: the OCI tests build their rootfs from a static busybox")


def read_config(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "config.json").read_text())


def write_config(bundle_dir: Path, config: dict) -> None:
    (bundle_dir / "config.json").write_text(json.dumps(config, indent=2))


def section_output(text: str) -> dict[str, str]:
    """Split ``== NAME`` delimited output into {NAME: text}."""
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines(keepends=True):
        m = re.match(r"^== (\S+)\s*$", line)
        if m:
            name = m.group(1)
            out[name] = ""
        elif name is not None:
            out[name] += line
    return out
