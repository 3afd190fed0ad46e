"""pysc driven by a real container engine: containerd's `ctr` and the runc v2
shim (containerd-shim-runc-v2), with pysc as the shim's runc
(`ctr run --runc-binary`).  See conftest.py for the private daemon.

What the shim runs, and so what these tests exercise in pysc:
  create --bundle B --pid-file P ID   (stdio: pipes, or --console-socket for -t)
  start ID, kill [--all] ID SIG, delete [--force] ID, ps --format json ID,
  pause/resume ID, exec --process F --detach --pid-file P ID
each with the global flags `--root R --log B/log.json --log-format json`.
"""
from __future__ import annotations

import os
import select
import subprocess
import time

import pytest

from .conftest import Result


def _ok(ctr, res: Result, cid: str, what: str, status: int = 0) -> None:
    if res.returncode != status:
        pytest.fail(f"{what}: expected exit status {status}\n{ctr.diag(cid, res)}", pytrace=False)


def test_output_and_kernel_release(ctr):
    cid = ctr.new_id()
    r = ctr.run_container(cid, "sh", "-c", "echo hi; uname -r")
    _ok(ctr, r, cid, "ctr run sh -c 'echo hi; uname -r'")
    assert r.stdout == "hi\n4.4.0\n", ctr.diag(cid, r)


def test_exit_code_propagates(ctr):
    cid = ctr.new_id()
    r = ctr.run_container(cid, "sh", "-c", "exit 3")
    _ok(ctr, r, cid, "ctr run sh -c 'exit 3'", status=3)


def test_stdin_is_piped(ctr):
    """`echo abc | ctr run ... cat` prints abc.

    ctr (1.6) passes EOF on stdin to the task with a CloseIO request, but only
    once its task exists: an EOF read before that is lost and the task's stdin
    never ends (containerd issue #4489, with runc too).  So the data is written
    and stdin closed after the task runs, as a slower producer would."""
    cid = ctr.new_id()
    p = subprocess.Popen(ctr.run_argv(cid, "cat"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ctr.engine.env(), start_new_session=True)
    try:
        status = ctr.wait_status(cid, {"RUNNING", "STOPPED"}, timeout=30)
        if status != "RUNNING":
            os.killpg(p.pid, 9)
            out, err = p.communicate(timeout=10)
            pytest.fail(f"the task of `ctr run ... cat` never ran (status {status})\n"
                        + ctr.diag(cid, Result(p.args, p.returncode, out.decode(), err.decode())),
                        pytrace=False)
        out, err = p.communicate(b"abc\n", timeout=30)
        res = Result(p.args, p.returncode, out.decode(errors="replace"),
                     err.decode(errors="replace"))
    except subprocess.TimeoutExpired:
        res = None
    if res is None:
        report = ctr.diag(cid)
        os.killpg(p.pid, 9)
        out, err = p.communicate(timeout=10)
        res = Result(p.args, None, out.decode(errors="replace"), err.decode(errors="replace"),
                     timed_out=True)
        pytest.fail(f"`ctr run ... cat` did not end after its stdin was closed\n{res}\n{report}",
                    pytrace=False)
    _ok(ctr, res, cid, "echo abc | ctr run ... cat")
    assert res.stdout == "abc\n", ctr.diag(cid, res)


def test_detached_task_exec_and_kill(ctr):
    cid = ctr.new_id()
    r = ctr.run_container(cid, "sleep", "1000", flags=("-d",))
    _ok(ctr, r, cid, "ctr run -d ... sleep 1000")
    status = ctr.wait_status(cid, {"RUNNING"}, timeout=20)
    assert status == "RUNNING", f"ctr tasks ls: {status}\n{ctr.diag(cid)}"

    r = ctr.exec_(cid, "e1", "sh", "-c", "echo from exec")
    _ok(ctr, r, cid, "ctr tasks exec sh -c 'echo from exec'")
    assert r.stdout == "from exec\n", ctr.diag(cid, r)

    r = ctr.exec_(cid, "e2", "sh", "-c", "exit 5")
    _ok(ctr, r, cid, "ctr tasks exec sh -c 'exit 5'", status=5)

    r = ctr.run("tasks", "kill", "-s", "SIGKILL", cid)
    _ok(ctr, r, cid, "ctr tasks kill -s SIGKILL")
    status = ctr.wait_status(cid, {"STOPPED"}, timeout=20)
    assert status == "STOPPED", f"after SIGKILL, ctr tasks ls says {status}\n{ctr.diag(cid)}"

    r = ctr.run("tasks", "rm", cid)
    _ok(ctr, r, cid, "ctr tasks rm")
    r = ctr.run("containers", "rm", cid)
    _ok(ctr, r, cid, "ctr containers rm")
    assert cid not in ctr.run("containers", "ls", "-q").stdout.split()
    # pysc's own record of the container is gone too
    r = ctr.pysc("list", "-q")
    assert cid not in (r.stdout or "").split(), f"pysc still lists {cid}\n{r}\n{ctr.diag(cid)}"


def test_task_ps_pause_resume(ctr):
    cid = ctr.new_id()
    r = ctr.run_container(cid, "sleep", "1000", flags=("-d",))
    _ok(ctr, r, cid, "ctr run -d ... sleep 1000")
    assert ctr.wait_status(cid, {"RUNNING"}) == "RUNNING", ctr.diag(cid)

    r = ctr.run("tasks", "ps", cid)  # the shim runs `pysc ps --format json ID`
    _ok(ctr, r, cid, "ctr tasks ps")
    rows = (r.stdout or "").strip().splitlines()[1:]
    assert rows and rows[0].split()[0].isdigit(), ctr.diag(cid, r)

    r = ctr.run("tasks", "pause", cid)
    _ok(ctr, r, cid, "ctr tasks pause")
    assert ctr.wait_status(cid, {"PAUSED"}, timeout=10) == "PAUSED", ctr.diag(cid)
    r = ctr.run("tasks", "resume", cid)
    _ok(ctr, r, cid, "ctr tasks resume")
    assert ctr.wait_status(cid, {"RUNNING"}, timeout=10) == "RUNNING", ctr.diag(cid)

    r = ctr.run("tasks", "kill", "-s", "SIGKILL", cid)
    _ok(ctr, r, cid, "ctr tasks kill -s SIGKILL")
    assert ctr.wait_status(cid, {"STOPPED"}) == "STOPPED", ctr.diag(cid)


def test_force_remove_stopped_task(ctr):
    """`ctr tasks rm -f` of a task that has ended (as `docker rm -f` of an
    exited container): the shim first runs `kill --all ID 9`, which must
    succeed, or fail in words it maps to "not found" (runc's "container not
    running"), for the removal to go on."""
    cid = ctr.new_id()
    r = ctr.run_container(cid, "sh", "-c", "exit 0", flags=("-d",))
    _ok(ctr, r, cid, "ctr run -d ... sh -c 'exit 0'")
    status = ctr.wait_status(cid, {"STOPPED"}, timeout=20)
    assert status == "STOPPED", f"ctr tasks ls: {status}\n{ctr.diag(cid)}"
    r = ctr.run("tasks", "rm", "-f", cid)
    _ok(ctr, r, cid, "ctr tasks rm -f (of a stopped task)")
    assert cid not in ctr.tasks(), ctr.diag(cid)


def test_processes_run_while_one_reads_stdin(ctr):
    """A background process blocked reading the container's stdin (a host
    pipe) while the foreground one keeps starting processes: each of those
    must still run to its end.  (Every ptrace event reaches the tracer as a
    SIGCHLD; none may be lost while it also watches a host fd.)"""
    cid = ctr.new_id()
    script = ("exec 3<&0; cat <&3 >/dev/null & i=0; "
              "while [ $i -lt 30 ]; do /bin/true; i=$((i+1)); done; echo loop-done $i; kill $!")
    p = subprocess.Popen(ctr.run_argv(cid, "sh", "-c", script), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ctr.engine.env(),
                         start_new_session=True)
    try:  # stdin stays open: cat stays blocked on it
        out, err = p.communicate(timeout=30)
        res = Result(p.args, p.returncode, out.decode(errors="replace"),
                     err.decode(errors="replace"))
    except subprocess.TimeoutExpired:
        res = None
    if res is None:
        report = ctr.diag(cid)  # while the processes are still there
        os.killpg(p.pid, 9)
        out, err = p.communicate(timeout=10)
        res = Result(p.args, None, out.decode(errors="replace"), err.decode(errors="replace"),
                     timed_out=True, seconds=30)
        pytest.fail(f"the container stalled while a process read its stdin\n{res}\n{report}",
                    pytrace=False)
    assert "loop-done 30" in res.stdout, ctr.diag(cid, res)
    _ok(ctr, res, cid, "sh -c 'cat & loop of /bin/true; kill cat'")


def _pty_session(argv, env, send: bytes, timeout: float = 40.0):
    """Run ARGV on a new pty; send SEND once the shell prompt shows (or after
    5 s); read until the pty closes.  Returns (exit status or None, output)."""
    master, slave = os.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                         start_new_session=True, close_fds=True)
    os.close(slave)
    out = b""
    sent = False
    start = time.monotonic()
    try:
        while time.monotonic() - start < timeout:
            if not sent and (b"# " in out or time.monotonic() - start > 5):
                os.write(master, send)
                sent = True
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: every slave closed
                    break
                if not data:
                    break
                out += data
            elif p.poll() is not None and sent:
                break
        try:
            status = p.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait(10)
            status = None
    finally:
        os.close(master)
    return status, out.decode(errors="replace")


def test_tty_session(ctr):
    cid = ctr.new_id()
    argv = ctr.run_argv(cid, "sh", flags=("--rm", "-t"))
    # $((6*7)) so that the echo of the typed line does not match
    status, out = _pty_session(argv, ctr.engine.env(), b"echo tty-$((6*7)); tty; exit\n")
    res = Result(argv, status, out, "", timed_out=status is None)
    assert status == 0, "`ctr run -t ... sh` did not exit cleanly\n" + ctr.diag(cid, res)
    assert "tty-42" in out, ctr.diag(cid, res)
    assert "/dev/pts/" in out, f"`tty` inside: not a pty\n{ctr.diag(cid, res)}"


def test_every_runtime_call_succeeds(ctr):
    """Each pysc command the shim runs for a plain `ctr run --rm` exits 0,
    the shim's last-resort `delete --force` of the container it has just
    deleted included: runc exits 0 there (an unknown id with --force is not
    an error), and the shim logs a warning "failed to remove runc container"
    otherwise."""
    cid = ctr.new_id()
    r = ctr.run_container(cid, "true")
    _ok(ctr, r, cid, "ctr run ... true")
    calls = ctr.calls_of(cid).splitlines()
    failed = [ln for ln in calls if " exit=" in ln and " exit=0:" not in ln]
    assert not failed, ("pysc commands run by the shim that failed:\n" + "\n".join(failed)
                        + "\n" + ctr.diag(cid, r))
