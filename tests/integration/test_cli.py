"""The ``pysc`` command line: version, flags, help, errors a user makes
(clear message, non-zero status, never a Python traceback), --strace,
--directfs=false, signal forwarding, cwd and environment."""
from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import (BUSYBOX, TEST_ENV, assert_no_traceback, assert_same, need, pysc_cmd,
                       run_native, run_pysc, run_pysc_raw, show)

UNISTD_64 = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"


def test_version():
    for args in (["--version"], ["version"]):
        cp = run_pysc_raw(*args)
        assert cp.returncode == 0 and re.match(r"^pysc version \d+\.\d+", cp.stdout), show(cp)


def test_usage():
    cp = run_pysc_raw("--help")
    assert cp.returncode == 0 and "usage: pysc" in cp.stdout, show(cp)
    cp = run_pysc_raw()
    assert cp.returncode != 0 and "usage" in (cp.stdout + cp.stderr), show(cp)
    assert_no_traceback(cp)
    cp = run_pysc_raw("no-such-subcommand")
    assert cp.returncode != 0 and "no-such-subcommand" in cp.stderr, show(cp)
    assert_no_traceback(cp)


def test_flags_lists_defaults():
    cp = run_pysc_raw("flags")
    assert cp.returncode == 0, show(cp)
    expected = {"platform": "seccomp", "network": "host", "strace": "false", "overlay2": "root:memory",
                "directfs": "true", "debug": "false", "debug-log": "", "root": "/var/run/pysc"}
    for name, default in expected.items():
        m = re.search(rf"^--{re.escape(name)}\s+\(default '([^']*)'\)", cp.stdout, re.M)
        assert m, f"`pysc flags` does not list --{name}\n{show(cp)}"
        assert m.group(1) == default, f"--{name}: default {m.group(1)!r}, expected {default!r}"
    flags = re.findall(r"^--(\S+)\s+\(default", cp.stdout, re.M)
    assert len(flags) == len(set(flags)), f"flags listed twice: {flags}"
    # every flag has a help line under it
    blocks = re.split(r"^--", cp.stdout, flags=re.M)[1:]
    for block in blocks:
        lines = block.splitlines()
        assert len(lines) >= 2 and lines[1].strip(), f"flag without help: --{lines[0]}"


def _header_syscalls() -> dict[str, int]:
    out = {}
    with open(UNISTD_64) as f:
        for line in f:
            m = re.match(r"#define __NR_(\w+)\s+(\d+)", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def test_help_syscalls_lists_each_once():
    cp = run_pysc_raw("help", "syscalls")
    assert cp.returncode == 0, show(cp)
    rows = re.findall(r"^\s*(\d+)\s+(\w+)\s+(implemented|partial|host|missing)\b", cp.stdout, re.M)
    names = [name for _, name, _ in rows]
    dup = sorted({n for n in names if names.count(n) > 1})
    assert not dup, f"listed more than once: {dup}"
    if os.path.exists(UNISTD_64):
        want = _header_syscalls()
    else:
        from pysc.core.abi.sysnums import SYSCALLS as want
    missing = sorted(set(want) - set(names))
    assert not missing, f"`pysc help syscalls` does not list: {missing}"
    wrong_nr = [(n, int(nr), want[n]) for nr, n, _ in rows if n in want and int(nr) != want[n]]
    assert not wrong_nr, f"wrong numbers (name, listed, real): {wrong_nr}"
    m = re.search(r"^(\d+) syscalls: (\d+) implemented, (\d+) partial, (\d+) host, (\d+) missing",
                  cp.stdout, re.M)
    assert m, f"no summary line\n{show(cp)}"
    total, *parts = map(int, m.groups())
    assert total == len(rows) == sum(parts), f"summary {m.group(0)!r} vs {len(rows)} rows"
    for status in ("implemented", "host", "missing", "partial"):
        n = sum(1 for _, _, s in rows if s == status)
        assert n == dict(zip(("implemented", "partial", "host", "missing"), parts))[status], status


def test_help_platforms():
    cp = run_pysc_raw("help", "platforms")
    assert cp.returncode == 0, show(cp)
    found = re.findall(r"^(\S+)\s+(available.*|unavailable: \S.*)$", cp.stdout, re.M)
    names = [n for n, _ in found]
    assert "ptrace" in names, show(cp)
    assert set(names) <= {"ptrace", "seccomp", "kvm"}, f"unknown platform names: {names}"
    kvm = dict(found).get("kvm", "")
    if kvm.startswith("available"):  # says which KVM it found
        assert re.match(r"available \((PVM|VMX|SVM): ", kvm), show(cp)
    elif os.path.exists("/dev/kvm"):
        assert kvm.startswith("unavailable: "), show(cp)


@pytest.mark.parametrize("args, mention", [
    (["--no-such-flag", "do", "true"], "no-such-flag"),
    (["--network=bogus", "do", "true"], "network"),
    (["--overlay2=bogus", "do", "true"], "overlay2"),
    (["--platform=bogus", "do", "true"], "bogus"),
    (["--strace-log-size=abc", "do", "true"], "strace-log-size"),
    (["--platform"], "platform"),
])
def test_bad_flags(args, mention):
    cp = run_pysc_raw(*args)
    assert cp.returncode != 0, show(cp)
    assert mention in cp.stderr, f"the message does not mention {mention!r}\n{show(cp)}"
    assert_no_traceback(cp)


def test_do_errors(platform):
    cp = run_pysc(platform, "nonexistent-cmd-pysc")
    assert cp.returncode == 127 and "nonexistent-cmd-pysc" in cp.stderr, show(cp)
    assert_no_traceback(cp)
    cp = run_pysc(platform, "/etc/passwd")
    assert cp.returncode == 126 and "/etc/passwd" in cp.stderr, show(cp)
    assert_no_traceback(cp)
    cp = run_pysc_raw(f"--platform={platform}", "do")
    assert cp.returncode == 2 and "usage" in cp.stderr, show(cp)
    assert_no_traceback(cp)


def test_network_sandbox_is_refused_clearly(platform):
    cp = run_pysc(platform, "true", extra_flags=("--network=sandbox",))
    assert cp.returncode != 0, show(cp)
    assert "network" in cp.stderr and len(cp.stderr.strip()) > 10, show(cp)
    assert_no_traceback(cp)


def test_strace(platform):
    need("true", "sh")
    # A shell that execs: on kvm the first image is loaded by the Sentry, not by a traced execve.
    cp = run_pysc(platform, "/bin/sh", "-c", "exec /bin/true", extra_flags=("--strace",))
    assert cp.returncode == 0, show(cp)
    lines = [ln for ln in cp.stderr.splitlines() if ln.startswith("[")]
    assert any("execve(" in ln and "= " in ln for ln in lines), f"no decoded execve line\n{show(cp)}"
    assert any(re.search(r"\bopenat\(AT_FDCWD, \".*\", O_RDONLY.*\) = \d+", ln) for ln in lines), \
        f"no decoded openat line with its result\n{show(cp)}"
    assert any(re.search(r"= -1 ENOENT", ln) for ln in lines), f"no decoded error result\n{show(cp)}"
    cp = run_pysc(platform, "/bin/true", extra_flags=("--strace", "--strace-syscalls=openat"))
    traced = {m.group(1) for m in re.finditer(r"^\[\s*\d+\] (\w+)\(", cp.stderr, re.M)}
    assert cp.returncode == 0 and traced == {"openat"}, f"--strace-syscalls=openat traced {traced}\n{show(cp)}"


def test_directfs_false(platform):
    need("cat", "ls")
    for argv in (["cat", "/etc/hostname"], ["ls", "/etc"], ["/bin/sh", "-c", "ls -la /etc | tail -n +2"],
                 ["cat", "/etc/passwd"]):
        inside = run_pysc(platform, *argv, extra_flags=("--directfs=false",))
        assert_same(inside, run_native(*argv))
    need(BUSYBOX)
    script = ("D=$(mktemp -d); cd $D; echo data > f; mkdir d; mv f d/g; cat d/g; ls -R | sort; "
              "cd /; rm -r $D && echo removed")
    inside = run_pysc(platform, BUSYBOX, "sh", "-c", script, extra_flags=("--directfs=false",))
    assert_same(inside, run_native(BUSYBOX, "sh", "-c", script))


def test_cwd_and_environment(platform, tmp_path):
    need(BUSYBOX)
    cp = run_pysc(platform, BUSYBOX, "pwd", cwd=tmp_path)
    assert (cp.returncode, cp.stdout) == (0, f"{tmp_path}\n"), show(cp)
    cp = run_pysc_raw(f"--platform={platform}", "do", "--cwd=/etc", BUSYBOX, "pwd")
    assert (cp.returncode, cp.stdout) == (0, "/etc\n"), show(cp)
    env = dict(TEST_ENV, PYSC_TEST_VAR="hello world")
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", 'echo "$PYSC_TEST_VAR|$PATH"', env=env)
    assert (cp.returncode, cp.stdout) == (0, f"hello world|{TEST_ENV['PATH']}\n"), show(cp)
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (cp.returncode, cp.stdout) == (3, "out\n") and "err\n" in cp.stderr, show(cp)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_signal_forwarded_to_the_command(platform, sig):
    """A signal to pysc reaches the sandbox's first process.  That process is
    the init of a pid namespace, which (as on Linux) ignores signals it has no
    handler for, so the shell traps it and exits with a status of its own."""
    need(BUSYBOX)
    script = (f"trap 'echo got {sig.name}; exit 42' {sig.name[3:]}; echo ready; "
              "sleep 30 & wait; echo 'wait returned'")
    proc = subprocess.Popen([*pysc_cmd(), f"--platform={platform}", "do", BUSYBOX, "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, env=TEST_ENV, start_new_session=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=30) and proc.stdout.readline()
        sel.close()
        if ready != "ready\n":
            raise subprocess.TimeoutExpired(proc.args, 30)
        time.sleep(0.2)   # from "ready" to the shell waiting
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"pysc did not start, or did not exit within 20 s of {sig.name}\n"
                    f"stdout: {out[-2000:]}\nstderr: {err[-2000:]}")
    cp = subprocess.CompletedProcess(proc.args, proc.returncode, "ready\n" + out, err)
    assert (proc.returncode, cp.stdout) == (42, f"ready\ngot {sig.name}\n"), show(cp)
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert_no_traceback(cp)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_a_sandbox_whose_init_has_no_handler(platform, sig):
    """Ctrl-C or SIGTERM to pysc ends the sandbox even when its init ignores
    the signal (no handler): pysc exits promptly with 128+N."""
    need(BUSYBOX)
    proc = subprocess.Popen([*pysc_cmd(), f"--platform={platform}", "do", BUSYBOX, "sh", "-c",
                             "echo ready; exec sleep 30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, env=TEST_ENV, start_new_session=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=30) and proc.stdout.readline()
        sel.close()
        if ready != "ready\n":
            raise subprocess.TimeoutExpired(proc.args, 30)
        time.sleep(0.3)   # let the shell exec sleep
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"pysc did not start, or did not exit within 20 s of {sig.name}\n"
                    f"stdout: {out[-2000:]}\nstderr: {err[-2000:]}")
    cp = subprocess.CompletedProcess(proc.args, proc.returncode, "ready\n" + out, err)
    assert proc.returncode == 128 + sig, show(cp)
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert_no_traceback(cp)


def test_no_state_left_behind(platform):
    """pysc's working directory (gofer socket, logs) goes away with the sandbox."""
    need(BUSYBOX)
    # short: the gofer's unix socket path lives below it
    work = Path(tempfile.mkdtemp(prefix="pysc-it-", dir="/tmp"))
    try:
        env = dict(TEST_ENV, TMPDIR=str(work))
        cp = run_pysc(platform, BUSYBOX, "sh", "-c", "echo hi; exit 4", env=env)
        assert (cp.returncode, cp.stdout) == (4, "hi\n"), show(cp)
        cp = run_pysc(platform, "nonexistent-cmd-pysc", env=env)
        assert cp.returncode == 127, show(cp)
        left = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
        assert left == [], f"pysc left files in $TMPDIR: {left}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
