"""Failures inside the sandbox stay there: a crashing syscall handler gives
the app an errno (and the log a traceback), a gofer that dies gives EIO, and
no host process of the sandbox is left behind."""
from __future__ import annotations

import os
import subprocess
import textwrap
import time

from .conftest import BUSYBOX, PYTHON, TEST_ENV, pysc_cmd, run_pysc, show

CRASHING_PLUGIN = textwrap.dedent('''
    import sys
    from pysc.core.dispatch import syscall
    from pysc.core.hookspecs import hookimpl

    @syscall()
    def uname(t, buf, *_):
        raise RuntimeError("a bug in a handler")

    @hookimpl
    def pysc_syscalls(table, platform):
        table.register_module(sys.modules[__name__])
''')


def plugin_env(tmp_path, name, source):
    (tmp_path / f"{name}.py").write_text(source)
    dist = tmp_path / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[pysc]\n{name} = {name}\n")
    env = dict(TEST_ENV)
    env["PYTHONPATH"] = str(tmp_path)
    return env


def test_crashing_handler_gives_eio_and_a_logged_traceback(platform, tmp_path):
    env = plugin_env(tmp_path, "pysc_crashing_uname", CRASHING_PLUGIN)
    logdir = tmp_path / "logs"
    probe = "import os\ntry:\n    os.uname()\nexcept OSError as e:\n    print('errno', e.errno)"
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", f'{PYTHON} -c "{probe}"; echo still-running',
                  extra_flags=(f"--debug-log={logdir}/",), env=env)
    assert cp.returncode == 0, show(cp)
    assert "errno 5" in cp.stdout and "still-running" in cp.stdout, show(cp)  # EIO
    assert "a bug in a handler" not in cp.stderr, show(cp)
    logs = "".join(p.read_text() for p in logdir.glob("*sentry*"))
    assert "a bug in a handler" in logs and "Traceback" in logs


def test_gofer_death_gives_eio(platform, tmp_path):
    """With --directfs=false every file operation goes through the gofer."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "f").write_text("data\n")
    script = f"cat {work}/f; sleep 1; cat {work}/f; echo cat=$?; echo done"
    cmd = [*pysc_cmd(), f"--platform={platform}", "--directfs=false", "do", BUSYBOX, "sh", "-c", script]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=TEST_ENV, start_new_session=True)
    try:
        time.sleep(0.6)
        gofers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_gofer_of(int(p), proc.pid)]
        assert gofers, "no gofer process found"
        for pid in gofers:
            os.kill(pid, 9)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert "data" in out and "done" in out, (out, err)
    assert "cat=1" in out, (out, err)
    assert "Traceback" not in err, err


def _is_gofer_of(pid: int, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return ppid == parent and b"pysc" in f.read() and _has_zmq_socket(pid)
    except (OSError, ValueError, IndexError):
        return False


def _has_zmq_socket(pid: int) -> bool:
    """The gofer is the child with a ZeroMQ context (an eventfd among its fds)."""
    try:
        return any("eventfd" in os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_sentry_killed_leaves_no_process(platform, tmp_path):
    """--directfs=false keeps a serving gofer beside the Sentry (with directfs
    the gofer exits once it has donated the roots)."""
    seconds = str(1000 + os.getpid() % 9000)  # a sleep nobody else runs
    marker = f"sleep\0{seconds}"
    cmd = [*pysc_cmd(), f"--platform={platform}", "--directfs=false", "do", BUSYBOX, "sh", "-c",
           f"{BUSYBOX} sleep {seconds} & {BUSYBOX} sleep {seconds}; :"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=TEST_ENV)
    try:
        time.sleep(1.5)
        if platform != "kvm":  # on kvm app processes are vCPUs of the Sentry, not host processes
            assert _processes_with(marker), "the sandboxed sleep did not start"
        helpers = _children_of(proc.pid)  # the gofer, and on host-process platforms the app
        assert helpers, "the sandbox has no helper process"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and (_processes_with(marker) or _alive(helpers)):
        time.sleep(0.1)
    assert not _processes_with(marker)
    assert not _alive(helpers)
    assert not _children_of(proc.pid)


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(pid)
        except OSError:
            pass
    return out


def _processes_with(text: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(p))
            except OSError:
                pass
    return out


def _children_of(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out
