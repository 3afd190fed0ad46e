"""pysc under Docker and Podman (issue 4): ``docker run --runtime=pysc`` after
``pysc install``, and ``podman --runtime PYSC``.

Each engine works on paths of the tests' own, under a short directory in
/tmp: a ``dockerd`` with its own daemon.json (written by ``pysc install
--config-file``), socket, data root and exec root, stopped by its pid at the
end; podman with its own storage root and run root.  The image is the
busybox of ``image.py`` (``docker import`` of its layer, ``podman load`` of
the OCI archive).  At the end no process of the engine and no mount below its
directory may be left.  The platform is the first of ``--pysc-platforms``.
"""
from __future__ import annotations

import os
import pty
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from terminal import talk

from .conftest import (E2E_DEPS, _check_platform, _platform, describe, processes_below, pysc_cmd,
                       read_text, run_cmd)
from .image import BUSYBOX, IMAGE_NAME, build_image, layer_tar

TIMEOUT = 120.0
IMAGE = "pysc-busybox:e2e"


def _ensure(tools: tuple[str, ...]) -> None:
    if os.geteuid() != 0:
        pytest.skip("the container engines need root")
    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} missing (Debian's busybox-static, installed by .ci/setup)")
    if all(shutil.which(t) for t in tools):
        return
    if not shutil.which("apt-get"):
        pytest.skip(f"{', '.join(tools)} not installed, and no apt-get to install them with")
    r = run_cmd(["bash", str(E2E_DEPS)], timeout=900)
    missing = [t for t in tools if not shutil.which(t)]
    if r.returncode != 0 or missing:
        pytest.fail(f"installing {missing} with .ci/e2e-deps failed\n{r}", pytrace=False)


def mounts_below(base: Path) -> list[str]:
    prefix = str(base) + "/"
    with open("/proc/self/mountinfo") as f:
        return [mp for mp in (line.split()[4].replace("\\040", " ") for line in f) if mp.startswith(prefix)]


def clean_up(base: Path, exclude: set[int] = frozenset()) -> list[str]:
    """Wait a little for the engine's processes to go, then kill and unmount
    what is left; returns what had to be done."""
    problems = []
    deadline = time.monotonic() + 10
    left = processes_below(base, exclude)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_below(base, exclude)
    if left:
        problems.append("processes left (killed now):\n  " + "\n  ".join(describe(p) for p in left))
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    mounts = mounts_below(base)
    if mounts:
        problems.append("mounts left (unmounted now): " + ", ".join(mounts))
        for mp in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True, timeout=30)
    return problems


# ---------------------------------------------------------------- docker

class Docker:
    def __init__(self, base: Path, platform: str):
        self.base = base
        self.platform = platform
        self.sock = base / "d.sock"
        self.config = base / "daemon.json"
        self.pidfile = base / "dockerd.pid"
        self.log = base / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        beside = Path(shutil.which("dockerd")).with_name("docker")
        self.argv = [str(beside) if beside.exists() else shutil.which("docker"), "-H", f"unix://{self.sock}"]
        self.run_flags = ["--runtime=pysc"]
        self.image = IMAGE

    def start(self) -> None:
        self.config.write_text("{}\n")
        r = run_cmd([*pysc_cmd(), "install", "--config-file", str(self.config), "--",
                     f"--platform={self.platform}"], timeout=60)
        assert r.returncode == 0, f"pysc install failed\n{r}"
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                ["dockerd", "--config-file", str(self.config), "--data-root", str(self.base / "root"),
                 "--exec-root", str(self.base / "exec"), "--pidfile", str(self.pidfile),
                 "-H", f"unix://{self.sock}", "--iptables=false", "--ip6tables=false",
                 "--bridge=none", "--storage-driver=vfs"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}\n{read_text(self.log)}")
            if self.sock.exists() and self.run("version", timeout=10).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"dockerd did not answer within 60 s\n{read_text(self.log)}")
        tar = self.base / "layer.tar"
        tar.write_bytes(layer_tar())
        r = self.run("import", str(tar), IMAGE)
        if r.returncode != 0:
            raise RuntimeError(f"docker import failed\n{r}")

    def run(self, *args, input=None, timeout: float = TIMEOUT):
        return run_cmd([*self.argv, *map(str, args)], input=input, timeout=timeout)

    def stop(self) -> list[str]:
        ids = (self.run("ps", "-aq", timeout=30).stdout or "").split()
        problems = [f"containers left: {ids}"] if ids else []
        if ids:
            self.run("rm", "-f", *ids)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                problems.append("dockerd did not stop on SIGTERM within 30 s: killed")
                self.proc.kill()
                self.proc.wait(10)
        return problems + clean_up(self.base)

    def diag(self) -> str:
        return f"--- dockerd log ---\n{read_text(self.log, 3000)}"


def _engine(request, cls, tools: tuple[str, ...], prefix: str):
    """A started engine of class CLS under a fresh directory, stopped and
    checked for leftovers at the end."""
    _ensure(tools)
    platform = _platform(request.config)
    _check_platform(platform)
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    eng = cls(base, platform)
    try:
        eng.start()
    except BaseException as e:
        problems = eng.stop()
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"cannot start the tests' {tools[0]}: {e}\n" + "\n".join(problems), pytrace=False)
    yield eng
    problems = eng.stop()
    shutil.rmtree(base, ignore_errors=True)
    if problems:
        pytest.fail(f"{tools[0]} teardown: " + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def docker(request):
    yield from _engine(request, Docker, ("dockerd", "docker"), "pysc-dk-")


# ---------------------------------------------------------------- podman

class Podman:
    def __init__(self, base: Path, platform: str):
        self.base = base
        pysc = pysc_cmd()
        if len(pysc) != 1:
            pytest.skip(f"podman --runtime needs one executable, not {pysc}")
        self.argv = ["podman", "--root", str(base / "root"), "--runroot", str(base / "run"),
                     "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
                     "--events-backend", "file", "--tmpdir", str(base / "tmp"),
                     "--runtime", pysc[0], "--runtime-flag", f"platform={platform}"]
        self.run_flags = ["--network", "none"]
        self.image = IMAGE_NAME

    def run(self, *args, input=None, timeout: float = TIMEOUT):
        return run_cmd([*self.argv, *map(str, args)], input=input, timeout=timeout)

    def start(self) -> None:
        tar = self.base / "busybox.tar"
        build_image(str(tar))
        r = self.run("load", "-i", str(tar))
        if r.returncode != 0:
            raise RuntimeError(f"podman load failed\n{r}")

    def stop(self) -> list[str]:
        ids = (self.run("ps", "-aq", timeout=30).stdout or "").split()
        problems = [f"containers left: {ids}"] if ids else []
        if ids:
            self.run("rm", "-f", *ids)
        return problems + clean_up(self.base)

    def diag(self) -> str:
        return ""


@pytest.fixture(scope="module")
def podman(request):
    yield from _engine(request, Podman, ("podman",), "pysc-pm-")


# ---------------------------------------------------------------- the tests, on both

@pytest.fixture(scope="module", params=["docker", "podman"])
def engine(request):
    return request.getfixturevalue(request.param)


def test_run_uname(engine):
    r = engine.run("run", "--rm", *engine.run_flags, engine.image, "uname", "-r")
    assert r.returncode == 0 and r.stdout.strip() == "4.4.0", f"{r}\n{engine.diag()}"


def test_stdin_and_exit_status(engine):
    r = engine.run("run", "--rm", "-i", *engine.run_flags, engine.image, "sh", "-c", "cat; exit 3",
                   input="through the engine\n")
    assert r.returncode == 3 and r.stdout == "through the engine\n", f"{r}\n{engine.diag()}"


def test_detached_exec_and_kill(engine):
    r = engine.run("run", "-d", *engine.run_flags, engine.image, "sleep", "1000")
    assert r.returncode == 0, f"{r}\n{engine.diag()}"
    cid = r.stdout.strip()
    try:
        e = engine.run("exec", cid, "sh", "-c", "echo in; ps -o pid,comm")
        assert e.returncode == 0 and e.stdout.startswith("in\n"), f"{e}\n{engine.diag()}"
        assert e.stdout.split()[3:5] == ["1", "sleep"], e.stdout  # the container's own pid 1
        assert engine.run("kill", cid).returncode == 0
        w = engine.run("wait", cid)
        assert w.stdout.strip() == "137", f"{w}\n{engine.diag()}"
    finally:
        engine.run("rm", "-f", cid)


@pytest.mark.skipif(not shutil.which("script"), reason="script(1) (util-linux) is needed for a tty")
def test_tty(engine):
    cmd = shlex.join([*engine.argv, "run", "--rm", "-it", *engine.run_flags, engine.image,
                      "sh", "-c", "tty; echo ok"])
    r = run_cmd(["script", "-qec", cmd, "/dev/null"])
    assert r.returncode == 0 and "/dev/pts/0" in r.stdout and "ok" in r.stdout, f"{r}\n{engine.diag()}"


def on_a_terminal(argv: list[str], typed: bytes, until: bytes, timeout: float = 60) -> str:
    """Run ARGV with a pty as its stdio; once it prints a shell prompt, type
    TYPED; return what it printed up to UNTIL (or its end)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        return talk(master, typed, until, prompt=b"# ", timeout=timeout)
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_exec_with_a_tty(engine):
    """`docker exec -it`, `podman exec -it`: an interactive shell gets its
    terminal and job control."""
    r = engine.run("run", "-d", *engine.run_flags, engine.image, "sleep", "1000")
    assert r.returncode == 0, f"{r}\n{engine.diag()}"
    cid = r.stdout.strip()
    try:
        text = on_a_terminal([*engine.argv, "exec", "-it", cid, "sh"],
                             b"tty; echo typed-$((40+2)); exit 0\n", b"typed-42", timeout=30)
        assert "typed-42" in text and "/dev/pts/" in text, f"{text!r}\n{engine.diag()}"
    finally:
        engine.run("rm", "-f", cid)
