"""What a sandboxed program can see and reach of the host: its own pid
namespace in /proc, its own root, an overlay that keeps writes in memory,
no host AF_UNIX sockets, and the network mode's reach."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from .conftest import BUSYBOX, PYTHON, TEST_ENV, need, run_native, run_pysc, show


@pytest.fixture
def host_sleep():
    """A host process the sandbox must neither see nor signal."""
    proc = subprocess.Popen(["sleep", "100"], env=TEST_ENV, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_proc_shows_only_sandbox_processes(platform, host_sleep):
    need(BUSYBOX)
    hp = host_sleep.pid
    script = f"""
echo "pids: $(ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' ')"
test -e /proc/{hp} && echo "host pid {hp}: visible" || echo "host pid {hp}: hidden"
kill -0 {hp} 2>/dev/null && echo "kill -0 host pid: allowed" || echo "kill -0 host pid: refused"
kill -9 {hp} 2>/dev/null && echo "kill -9 host pid: allowed" || echo "kill -9 host pid: refused"
echo "ps: $(ps -o args | grep -c '^sleep 100$')"
echo "\\$\\$=$$ PPID=$PPID"
while read k v; do case $k in Pid:|PPid:|Tgid:) echo "self status $k $v";; esac; done < /proc/self/status
echo "pid 1 cmdline: $(tr '\\0' ' ' < /proc/1/cmdline | head -c 19)"
"""
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", script)
    out = cp.stdout
    assert cp.returncode == 0, show(cp)
    m = re.search(r"^pids: (.*)$", out, re.M)
    assert m, show(cp)
    pids = [int(p) for p in m.group(1).split()]
    assert pids and pids[0] == 1 and max(pids) < 100 and len(pids) < 20, \
        f"/proc lists pids that are not the sandbox's: {pids}\n{show(cp)}"
    assert hp not in pids
    assert f"host pid {hp}: hidden" in out, show(cp)
    assert "kill -0 host pid: refused" in out, show(cp)
    assert "kill -9 host pid: refused" in out, show(cp)
    assert host_sleep.poll() is None, "the sandbox killed a host process"
    assert "ps: 0" in out, f"`ps` inside shows the host's sleep 100\n{show(cp)}"
    assert "$$=1 PPID=0" in out, show(cp)
    assert "self status Pid: 1" in out and "self status PPid: 0" in out, show(cp)
    assert "pid 1 cmdline: /bin/busybox sh -c" in out, show(cp)


def test_root_cwd_and_exe(platform):
    need(BUSYBOX)
    script = """
echo "proc/1/root: $(readlink /proc/1/root)"
cd /
echo "self/cwd after cd /: $(readlink /proc/self/cwd)"
cd ..; cd ../..; echo "cd .. from /: $(pwd) $(readlink /proc/self/cwd)"
test "$(ls /..)" = "$(ls /)" && echo "/.. is /"
cd -P /proc/self/root && cd -P ../.. && echo "via /proc/self/root/../..: $(pwd -P)"
test "$(ls /proc/1/root/)" = "$(ls /)" && echo "/proc/1/root lists /"
cd /tmp && echo "self/cwd in /tmp: $(readlink /proc/self/cwd)"
echo "self/exe: $(readlink /proc/self/exe)"
"""
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", script)
    out = cp.stdout
    assert cp.returncode == 0, show(cp)
    for want in ("proc/1/root: /\n", "self/cwd after cd /: /\n", "cd .. from /: / /\n", "/.. is /\n",
                 "via /proc/self/root/../..: /\n", "/proc/1/root lists /\n", "self/cwd in /tmp: /tmp\n",
                 f"self/exe: {os.path.realpath(BUSYBOX)}\n"):
        assert want in out, f"missing {want!r}\n{show(cp)}"


def test_proc_self_exe_of_python(platform):
    need(PYTHON)
    code = "import os, sys; print(os.readlink('/proc/self/exe'), sys.executable, os.getpid(), os.getppid())"
    cp = run_pysc(platform, PYTHON, "-c", code)
    native = run_native(PYTHON, "-c", code)
    assert cp.returncode == 0, show(cp)
    exe_in, exe_arg, pid, ppid = cp.stdout.split()
    assert [exe_in, exe_arg] == native.stdout.split()[:2], show(cp)
    assert (pid, ppid) == ("1", "0"), show(cp)


def test_overlay_keeps_writes_in_memory(platform, tmp_path):
    need(BUSYBOX)
    tag = uuid.uuid4().hex[:12]
    in_tmp = f"/tmp/pysc-test-{tag}"
    # /etc is writable (in the overlay) only for root, as on the host.
    in_etc = f"/etc/pysc-test-{tag}" if os.getuid() == 0 else f"/tmp/pysc-test-{tag}-2"
    victim = tmp_path / "victim.txt"
    victim.write_text("host data\n")
    keep = tmp_path / "keep.txt"
    keep.write_text("original\n")
    keep_mode = keep.stat().st_mode
    script = f"""
echo inside > {in_tmp} && cat {in_tmp}
echo inside > {in_etc} && cat {in_etc}
rm {victim} && test ! -e {victim} && echo "victim removed inside"
echo changed > {keep} && cat {keep}
mkdir {tmp_path}/newdir && echo "mkdir ok"
chmod 700 {tmp_path}/keep.txt && echo "chmod ok"
"""
    try:
        cp = run_pysc(platform, BUSYBOX, "sh", "-c", script)
        assert cp.returncode == 0, show(cp)
        assert cp.stdout == ("inside\ninside\nvictim removed inside\nchanged\nmkdir ok\nchmod ok\n"), show(cp)
        leaked = [p for p in (in_tmp, in_etc, str(tmp_path / "newdir")) if os.path.exists(p)]
        assert not leaked, f"writes reached the host: {leaked}"
        assert victim.read_text() == "host data\n", "rm inside removed the host's file"
        assert keep.read_text() == "original\n", "a write inside changed the host's file"
        assert keep.stat().st_mode == keep_mode, "chmod inside reached the host"
    finally:
        for p in (in_tmp, in_etc):
            if os.path.exists(p):
                os.unlink(p)


def test_overlay_none_writes_reach_host(platform, tmp_path):
    need(BUSYBOX)
    victim = tmp_path / "victim.txt"
    victim.write_text("host data\n")
    script = f"echo reached > {tmp_path}/out.txt && rm {victim} && mkdir {tmp_path}/d && echo ok"
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", script, extra_flags=("--overlay2=none",))
    assert (cp.returncode, cp.stdout) == (0, "ok\n"), show(cp)
    assert (tmp_path / "out.txt").read_text() == "reached\n"
    assert not victim.exists()
    assert (tmp_path / "d").is_dir()


class HostServer:
    """A listening host socket whose thread records every accepted connection."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.accepted: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with c:
                c.settimeout(5)
                try:
                    data = c.recv(100)
                    c.sendall(b"host says hi")
                except OSError:
                    data = b"(error)"
                self.accepted.append(data)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


CONNECT = """
import socket, sys
fam = socket.AF_UNIX if sys.argv[1] == "unix" else socket.AF_INET
addr = sys.argv[2] if fam == socket.AF_UNIX else ("127.0.0.1", int(sys.argv[2]))
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(addr)
    s.sendall(b"hello from the sandbox")
    print("connected:", s.recv(100).decode())
except OSError as e:
    print("connect failed:", type(e).__name__)
"""


def test_host_unix_socket_unreachable(platform, tmp_path):
    need(PYTHON)
    path = str(tmp_path / "host.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    server = HostServer(s)
    try:
        native = run_native(PYTHON, "-c", CONNECT, "unix", path)
        assert native.stdout.startswith("connected: host says hi"), f"host server broken\n{show(native)}"
        server.accepted.clear()
        cp = run_pysc(platform, PYTHON, "-c", CONNECT, "unix", path)
        assert cp.returncode == 0 and cp.stdout.startswith("connect failed:"), \
            f"a sandboxed program connected to a host AF_UNIX socket\n{show(cp)}"
        assert server.accepted == [], f"the host socket accepted {server.accepted}"
    finally:
        server.close()


@pytest.fixture
def host_tcp_server():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    server = HostServer(s)
    try:
        yield server
    finally:
        server.close()


def test_network_none_cannot_reach_host(platform, host_tcp_server):
    need(PYTHON)
    port = host_tcp_server.sock.getsockname()[1]
    cp = run_pysc(platform, PYTHON, "-c", CONNECT, "inet", port, extra_flags=("--network=none",))
    assert cp.returncode == 0 and cp.stdout.startswith("connect failed:"), \
        f"--network=none reached a host listener on 127.0.0.1:{port}\n{show(cp)}"
    assert host_tcp_server.accepted == []


def test_network_host_reaches_host(platform, host_tcp_server):
    need(PYTHON)
    port = host_tcp_server.sock.getsockname()[1]
    cp = run_pysc(platform, PYTHON, "-c", CONNECT, "inet", port, extra_flags=("--network=host",))
    assert (cp.returncode, cp.stdout) == (0, "connected: host says hi\n"), show(cp)
    assert host_tcp_server.accepted == [b"hello from the sandbox"]


def _host_processes_with_cmdline(needle: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_nothing_outlives_the_sandbox(platform):
    """When the first process exits, every process of the sandbox goes too."""
    need(BUSYBOX)
    tag = f"{uuid.uuid4().int % 100000 + 100000}.25"   # a unique sleep argument
    t0 = time.monotonic()
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", f"sleep {tag} & (sleep {tag} &) ; echo started", timeout=30)
    elapsed = time.monotonic() - t0
    assert (cp.returncode, cp.stdout) == (0, "started\n"), show(cp)
    assert elapsed < 15, f"pysc waited {elapsed:.1f} s for processes its init did not wait for"
    time.sleep(0.5)
    left = _host_processes_with_cmdline(b"sleep\0" + tag.encode())
    for pid in left:   # ours: started by this test's sandbox
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"sandbox processes survived the sandbox: host pids {left}"
