"""Fixtures and helpers of the integration tests: real programs run inside a
sandbox through the real ``pysc`` command, on every platform pysc has.

* ``platform`` -- parametrised over the platforms ``pysc help platforms``
  lists (``NAME  available`` / ``NAME  unavailable: why``); an unavailable
  one is skipped with its reason.  ``--pysc-platforms=a,b`` narrows the set.
  ``kvm`` is that platform alone, for what only kvm does.
* ``run_pysc(platform, *argv, ...)`` runs ``pysc --platform=P [flags] do
  ARGV...``; ``run_native(*argv, ...)`` runs the same on the host.  Both use
  the same small, fixed environment (``TEST_ENV``), capture text output and
  never hang: a command that outlives its timeout is killed with its whole
  process group and the test fails showing what it printed so far.
* ``show(cp)`` formats a result for an assertion message.
* ``cbin`` -- compiles ``c/NAME.c`` once per session (dynamic or static).

The ``pysc`` command is the installed console script (``shutil.which``), or
``python -m pysc.core.cli`` when it is not on PATH.  For debugging only, the
environment variable ``PYSC_TEST_CMD`` (a shell-quoted command line) replaces
it, e.g. ``PYSC_TEST_CMD="python3 /tmp/runpysc.py"``.
"""
from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
C_DIR = HERE / "c"
BUSYBOX = "/bin/busybox"
PYTHON = "/usr/bin/python3"
ALL_PLATFORMS = ("ptrace", "seccomp", "kvm")

TEST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "LANG": "C",
    "TZ": "UTC",
    "TERM": "dumb",
    "HOME": "/root" if os.getuid() == 0 else os.environ.get("HOME", "/tmp"),
    "USER": os.environ.get("USER", "root"),
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}


def pysc_cmd() -> list[str]:
    override = os.environ.get("PYSC_TEST_CMD")
    if override:
        return shlex.split(override)
    exe = shutil.which("pysc")
    if exe:
        return [exe]
    return [sys.executable, "-m", "pysc.core.cli"]


# ---------------------------------------------------------------- running

def _run(cmd: list[str], *, input=None, timeout=60, cwd=None, env=None) -> subprocess.CompletedProcess:
    env = dict(TEST_ENV if env is None else env)
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
        cwd=cwd, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    else:
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    # The command and everything it started (same session) are killed; the
    # test fails showing what was printed so far.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = "", "(no output: could not collect it after the kill)"
    cp = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    pytest.fail(f"TIMED OUT after {timeout} s (killed)\n{show(cp)}")


def run_pysc(platform: str, *argv, input=None, timeout=60, extra_flags=(), cwd=None,
             env=None) -> subprocess.CompletedProcess:
    """``pysc --platform=P [extra_flags] do ARGV...`` (text mode, both streams captured)."""
    cmd = [*pysc_cmd(), f"--platform={platform}", *extra_flags, "do", *map(str, argv)]
    return _run(cmd, input=input, timeout=timeout, cwd=cwd, env=env)


def run_pysc_raw(*args, input=None, timeout=60, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``pysc ARGS...`` exactly as given (for CLI tests)."""
    return _run([*pysc_cmd(), *map(str, args)], input=input, timeout=timeout, cwd=cwd, env=env)


def run_native(*argv, input=None, timeout=60, cwd=None, env=None) -> subprocess.CompletedProcess:
    """ARGV run on the host, with the same environment as run_pysc."""
    return _run([*map(str, argv)], input=input, timeout=timeout, cwd=cwd, env=env)


def _tail(text: str, limit: int = 3000) -> str:
    if text is None:
        return ""
    return text if len(text) <= limit else "..." + text[-limit:]


def show(cp: subprocess.CompletedProcess, limit: int = 3000) -> str:
    """A result, readable in an assertion message."""
    cmd = cp.args if isinstance(cp.args, str) else shlex.join(map(str, cp.args))
    if len(cmd) > 1500:
        cmd = cmd[:1500] + "...(cut)"
    return (f"command: {cmd}\nexit status: {cp.returncode}\n"
            f"--- stdout ---\n{_tail(cp.stdout, limit)}\n--- stderr ---\n{_tail(cp.stderr, limit)}")


def assert_ok(cp: subprocess.CompletedProcess, status: int = 0) -> None:
    if cp.returncode != status:
        raise AssertionError(f"expected exit status {status}\n{show(cp)}")


def assert_no_traceback(cp: subprocess.CompletedProcess) -> None:
    if "Traceback (most recent call last)" in (cp.stderr + cp.stdout):
        raise AssertionError(f"pysc printed a Python traceback\n{show(cp)}")


def assert_same(inside: subprocess.CompletedProcess, native: subprocess.CompletedProcess) -> None:
    """Same exit status and the same stdout inside the sandbox as natively."""
    if native.returncode == inside.returncode and native.stdout == inside.stdout:
        return
    raise AssertionError(
        f"sandbox and native differ: {shlex.join(map(str, native.args))[:300]}\n"
        f"exit status: sandbox {inside.returncode}, native {native.returncode}\n"
        "--- stdout diff (native -> sandbox) ---\n"
        + "".join(difflib.unified_diff(native.stdout.splitlines(True), inside.stdout.splitlines(True),
                                       "native", "sandbox", n=2))[:4000]
        + f"\n--- sandbox stderr ---\n{_tail(inside.stderr)}\n--- native stderr ---\n{_tail(native.stderr, 1000)}")


def compare(platform: str, *argv, **kw) -> subprocess.CompletedProcess:
    """Run ARGV inside and natively, assert the same status and stdout; return the sandbox run."""
    inside = run_pysc(platform, *argv, **kw)
    native = run_native(*argv, **{k: v for k, v in kw.items() if k not in ("extra_flags",)})
    assert_same(inside, native)
    return inside


def need(*paths: str) -> None:
    """Skip the test, saying which, unless every program in PATHS exists."""
    for p in paths:
        found = p if os.path.isabs(p) else shutil.which(p, path=TEST_ENV["PATH"])
        if not found or not os.access(found, os.X_OK):
            pytest.skip(f"{p} is not installed (bash .ci/setup installs it)")


# ---------------------------------------------------------------- platforms

_platforms_cache: tuple[dict[str, str | None], str | None] | None = None


def query_platforms() -> tuple[dict[str, str | None], str | None]:
    """({name: None if available else why}, error text if the query itself failed)."""
    global _platforms_cache
    if _platforms_cache is not None:
        return _platforms_cache
    cmd = [*pysc_cmd(), "help", "platforms"]
    found: dict[str, str | None] = {}
    error = None
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=TEST_ENV,
                            stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        error = f"`{shlex.join(cmd)}` failed: {e}"
    else:
        for line in cp.stdout.splitlines():
            m = re.match(r"^(\S+)\s+(available|unavailable)\b:?\s*(.*)$", line)
            if m:
                found[m.group(1)] = None if m.group(2) == "available" else (m.group(3).strip() or "unavailable")
        if cp.returncode != 0 or not found:
            error = (f"`{shlex.join(cmd)}` exited {cp.returncode} and listed no platform\n"
                     f"--- stdout ---\n{_tail(cp.stdout)}\n--- stderr ---\n{_tail(cp.stderr)}")
    _platforms_cache = (found, error)
    return _platforms_cache


def pytest_generate_tests(metafunc):
    if "platform" not in metafunc.fixturenames:
        return
    found, error = query_platforms()
    names = list(found) if found else ["ptrace"]  # the default platform, so the failure shows
    wanted = [p.strip() for p in (metafunc.config.getoption("--pysc-platforms") or "").split(",") if p.strip()]
    if wanted:
        names = wanted
    metafunc.parametrize("platform", names, indirect=True)


@pytest.fixture
def platform(request) -> str:
    return _usable(request.param)


@pytest.fixture
def kvm(request) -> str:
    """"kvm", for a test of what only that platform does: skipped, with the
    reason, where it is unusable or --pysc-platforms leaves it out."""
    wanted = [p.strip() for p in (request.config.getoption("--pysc-platforms") or "").split(",") if p.strip()]
    if wanted and "kvm" not in wanted:
        pytest.skip("kvm: left out by --pysc-platforms")
    return _usable("kvm")


def _usable(name: str) -> str:
    found, error = query_platforms()
    if error and not found:
        pytest.fail(f"cannot list pysc's platforms: {error}", pytrace=False)
    if name not in found:
        pytest.skip(f"{name}: not a platform of this pysc (`pysc help platforms` lists {', '.join(found)})")
    why = found[name]
    if why is not None:
        pytest.skip(f"{name}: {why}")
    return name


@pytest.fixture
def pysc(platform):
    """``pysc(*argv, **kw)`` == ``run_pysc(platform, *argv, **kw)``."""
    def run(*argv, **kw):
        return run_pysc(platform, *argv, **kw)
    return run


# ---------------------------------------------------------------- C programs

class CBuilder:
    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.cache: dict[tuple[str, bool], Path] = {}

    def __call__(self, name: str, static: bool = False) -> Path:
        key = (name, static)
        if key in self.cache:
            return self.cache[key]
        need("gcc")
        src = C_DIR / f"{name}.c"
        out = self.outdir / (name + ("-static" if static else ""))
        cmd = ["gcc", "-O1", "-Wall", "-o", str(out), str(src), "-pthread"]
        if static:
            cmd.insert(1, "-static")
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if cp.returncode != 0 and static and "cannot find -lc" in cp.stderr:
            pytest.skip("static libc (libc6-dev) is missing")
        assert cp.returncode == 0, f"compiling {src} failed:\n{cp.stderr}"
        self.cache[key] = out
        return out


@pytest.fixture(scope="session")
def cbin(tmp_path_factory) -> CBuilder:
    """``cbin("name", static=False)`` compiles tests/integration/c/name.c (once) and returns the binary."""
    return CBuilder(tmp_path_factory.mktemp("cbin"))
