"""pysc as a runc-compatible OCI runtime (issue 4, DESIGN §8): every
subcommand, driven as containerd's runc shim and runc users drive it, on
bundles with a busybox rootfs.

Expectations taken from runc: ``run`` exits with the container's status
(128+N when its init is killed by signal N) and removes the container when
it was not detached; ``create`` leaves a container in status ``created``
whose ``--pid-file`` names a live host process and whose process has not run
yet; ``kill`` takes signal names with or without ``SIG`` and numbers
(default TERM) and reaches only init unless ``--all``; ``delete`` refuses a
running container without ``--force``; errors are a message on stderr and a
non-zero status, never a Python traceback.
"""
from __future__ import annotations

import json
import os
import re
import select
import socket
import time

import pytest
from terminal import talk

from .conftest import (TEST_ENV, TMPFS_TMP, assert_clear_error, assert_no_traceback, assert_ok, entries_naming,
                       parse_json, pid_alive, show, wait_until)

pytestmark = pytest.mark.integration

NOT_FOUND = ("does not exist", "not exist", "not found", "no such", "unknown container")


def _bind(source, dest, *options):
    return {"destination": dest, "type": "bind", "source": str(source), "options": ["rbind", *options]}


def wait_exit_status(cp) -> int | None:
    """The status ``pysc wait`` reports: ``{"exitStatus": N}`` (runsc) or a
    bare number on stdout, else its own exit status."""
    out = (cp.stdout or "").strip()
    if out:
        try:
            data = json.loads(out.splitlines()[-1])
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("exitStatus", "exit_status", "status"):
                if isinstance(data.get(key), int):
                    return data[key]
        elif isinstance(data, int) and not isinstance(data, bool):
            return data
    return cp.returncode


# ---------------------------------------------------------------- spec

def test_spec_writes_a_starter_config(runtime, tmp_path):
    for flag in ("-b", "--bundle"):
        d = tmp_path / f"spec{flag.strip('-')}"
        d.mkdir()
        cp = runtime.run("spec", flag, d)
        assert_ok(cp, what=f"spec {flag} DIR")
        path = d / "config.json"
        assert path.is_file(), f"`spec {flag} {d}` wrote no config.json\n{show(cp)}"
        cfg = json.loads(path.read_text())
        assert re.match(r"^1\.\d+\.\d+", cfg.get("ociVersion", "")), f"ociVersion: {cfg.get('ociVersion')!r}"
        proc = cfg.get("process")
        assert isinstance(proc, dict), f"no process object: {cfg}"
        assert isinstance(proc.get("args"), list) and proc["args"], f"process.args: {proc.get('args')!r}"
        assert proc.get("cwd") == "/", f"process.cwd: {proc.get('cwd')!r}"
        assert any(e.startswith("PATH=") for e in proc.get("env", [])), f"process.env: {proc.get('env')!r}"
        assert cfg.get("root", {}).get("path") == "rootfs", f"root: {cfg.get('root')!r}"
        dests = [m.get("destination") for m in cfg.get("mounts", [])]
        assert "/proc" in dests and "/dev" in dests, f"mounts: {dests}"
        ns = [n.get("type") for n in cfg.get("linux", {}).get("namespaces", [])]
        assert {"pid", "mount"} <= set(ns), f"linux.namespaces: {ns}"


def test_spec_without_bundle_writes_in_the_current_directory(runtime, tmp_path):
    d = tmp_path / "here"
    d.mkdir()
    cp = runtime.run("spec", cwd=d)
    assert_ok(cp, what="spec (no -b)")
    assert (d / "config.json").is_file(), f"`spec` wrote no ./config.json\n{show(cp)}"
    json.loads((d / "config.json").read_text())


def test_spec_refuses_to_overwrite(runtime, tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    mine = '{"mine": true}\n'
    (d / "config.json").write_text(mine)
    cp = runtime.run("spec", "-b", d)
    assert_clear_error(cp, "config.json", any_of=("exist",), what="spec over an existing config.json")
    assert (d / "config.json").read_text() == mine, "`spec` overwrote an existing config.json"


# ---------------------------------------------------------------- run

def test_run_echo(runtime, bundle):
    b = bundle(["echo", "hi"])
    cid = runtime.new_id()
    cp = runtime.run("run", "--bundle", b, cid)
    assert_ok(cp, what="run echo hi")
    assert cp.stdout == "hi\n", show(cp)
    # run (not detached) = create + start + wait + delete, as runc does
    cp2 = runtime.run("state", cid)
    assert cp2.returncode != 0, f"the container is still there after `run` returned\n{show(cp2)}"
    assert entries_naming(runtime.root, cid) == [], \
        f"`run` left state under --root: {entries_naming(runtime.root, cid)}"


@pytest.mark.parametrize("args,status", [
    (["sh", "-c", "exit 7"], 7),
    (["false"], 1),
    (["true"], 0),
    (["sh", "-c", "exit 255"], 255),
], ids=["exit7", "false", "true", "exit255"])
def test_run_exit_status(runtime, bundle, args, status):
    b = bundle(args)
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, status, what=f"run {args}")


def test_run_status_of_a_process_killed_by_a_signal(runtime, bundle):
    # The inner shell kills itself with SIGKILL; the outer one (init) sees a
    # signal death (128+9) and exits with it.
    script = 'sh -c "kill -9 \\$\\$"; s=$?; echo "inner=$s"; exit $s'
    b = bundle(["sh", "-c", script])
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert "inner=137" in cp.stdout, f"a child killed by SIGKILL: expected status 137\n{show(cp)}"
    assert_ok(cp, 137, what="run: init exits with 137")


def test_run_exits_128_plus_signal_when_init_is_killed(runtime, bundle):
    d = runtime.unique_secs()
    b = bundle(["sleep", d])
    cid = runtime.new_id()
    bg = runtime.popen("run", "--bundle", b, cid)
    runtime.wait_status(cid, "running", timeout=60)
    cp = runtime.run("kill", cid, "KILL")
    assert_ok(cp, what="kill ID KILL")
    res = bg.wait(30)
    assert_no_traceback(res)
    assert_ok(res, 137, what="`run` of a container whose init got SIGKILL")
    assert wait_until(lambda: not runtime.sleep_processes(d), 10), "the container's sleep is still alive"


def test_run_passes_stdin(runtime, bundle):
    b = bundle(["cat"])
    cp = runtime.run("run", "-b", b, runtime.new_id(), input="line one\nline two\n")
    assert_ok(cp, what="run cat < input")
    assert cp.stdout == "line one\nline two\n", show(cp)


def test_uname_release(runtime, bundle):
    cp = runtime.run("run", "-b", bundle(["uname", "-r"]), runtime.new_id())
    assert_ok(cp, what="uname -r")
    assert cp.stdout == "4.4.0\n", show(cp)


def test_hostname_from_config(runtime, bundle):
    b = bundle(["hostname"], hostname="oci-host-x7")
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, what="hostname")
    assert cp.stdout == "oci-host-x7\n", show(cp)


def test_user_from_config(runtime, bundle):
    b = bundle(["sh", "-c", "id -u; id -g"], uid=1000, gid=1000)
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, what="id -u; id -g as uid 1000 gid 1000")
    assert cp.stdout == "1000\n1000\n", show(cp)


def test_additional_gids_from_config(runtime, bundle):
    b = bundle(["id", "-G"], uid=1000, gid=1000, additional_gids=[2000, 3000])
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, what="id -G")
    assert set(cp.stdout.split()) == {"1000", "2000", "3000"}, show(cp)


def test_env_and_cwd_from_config(runtime, bundle):
    b = bundle(["sh", "-c", "env; echo cwd=$(pwd)"], env={"FOO": "bar baz", "EMPTY": ""}, cwd="/tmp")
    env = dict(TEST_ENV, PYSC_HOST_ONLY_VAR="leaked-from-host")
    cp = runtime.run("run", "-b", b, runtime.new_id(), env=env)
    assert_ok(cp, what="env; pwd")
    lines = cp.stdout.splitlines()
    assert "FOO=bar baz" in lines, show(cp)
    assert "EMPTY=" in lines, show(cp)
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in lines, show(cp)
    assert "cwd=/tmp" in lines, show(cp)
    assert "PYSC_HOST_ONLY_VAR" not in cp.stdout, f"pysc's own environment leaked into the container\n{show(cp)}"


def test_rlimits_from_config(runtime, bundle):
    b = bundle(["sh", "-c", "ulimit -n; ulimit -Hn"],
               rlimits=[{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000}])
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, what="ulimit -n")
    assert cp.stdout == "512\n1000\n", show(cp)


def test_capabilities_from_config(runtime, bundle):
    def caps(cfg):
        cfg["process"]["capabilities"] = {k: ["CAP_CHOWN", "CAP_KILL"]
                                          for k in ("bounding", "effective", "permitted")}
    b = bundle(["grep", "^Cap[EB]", "/proc/self/status"], edit=caps)
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, what="capabilities")
    fields = dict(line.split(":", 1) for line in cp.stdout.splitlines() if ":" in line)
    got = {k: v.strip() for k, v in fields.items()}
    # CAP_CHOWN (0) | CAP_KILL (5)
    assert got == {"CapEff": "0000000000000021", "CapBnd": "0000000000000021"}, show(cp)


# ---------------------------------------------------------------- create / start / state

def test_create_then_state_is_created(runtime, bundle, tmp_path):
    d = runtime.unique_secs()
    b = bundle(["sleep", d], annotations={"org.example.key": "value-1"})
    cid = runtime.new_id()
    pid = runtime.create(b, cid, tmp_path / "init.pid")
    assert pid_alive(pid), f"the --pid-file process {pid} is not alive after create"
    st = runtime.state(cid)
    assert st.get("status") == "created", st
    assert st.get("id") == cid, st
    assert st.get("pid") == pid, f"state's pid {st.get('pid')} != --pid-file's {pid}"
    assert st.get("bundle") == str(b), st
    assert re.match(r"^1\.\d+\.\d+", str(st.get("ociVersion", ""))), st
    assert st.get("annotations") == {"org.example.key": "value-1"}, st
    # created, not started: the process of config.json has not run
    time.sleep(1)
    assert runtime.sleep_processes(d) == [], "`create` already started the container's process"
    assert runtime.state(cid).get("status") == "created"


def test_start_then_state_is_running(runtime, bundle):
    d = runtime.unique_secs()
    b = bundle(["sleep", d])
    cid, pid = runtime.create_and_start(b)
    st = runtime.state(cid)
    assert st.get("status") == "running", st
    assert st.get("pid") == pid and pid_alive(pid), f"state {st}, --pid-file {pid}"
    if runtime.platform == "ptrace":  # app processes are host processes
        assert wait_until(lambda: runtime.sleep_processes(d), 20), \
            f"no host process runs the container's `sleep {d}`"
    time.sleep(1)
    assert runtime.state(cid).get("status") == "running"
    # a second start is refused
    cp = runtime.run("start", cid)
    assert_clear_error(cp, what="start of a running container")


def test_ps_lists_sandbox_processes(runtime, bundle):
    d = runtime.unique_secs()
    b = bundle(["sh", "-c", f"sleep {d} & wait"])
    cid, _ = runtime.create_and_start(b)
    if runtime.platform == "ptrace":
        wait_until(lambda: runtime.sleep_processes(d), 20)
    else:
        time.sleep(2)
    cp = runtime.run("ps", "--format", "json", cid)
    assert_ok(cp, what="ps --format json")
    pids = parse_json(cp, "ps --format json")
    assert isinstance(pids, list) and all(isinstance(p, int) for p in pids), \
        f"ps --format json: expected a list of pids\n{show(cp)}"
    assert 1 in pids and len(pids) >= 2, f"expected sandbox pids 1 (sh) and the sleep\n{show(cp)}"
    for args in (("ps", cid), ("ps", "--format", "table", cid)):
        cp = runtime.run(*args)
        assert_ok(cp, what=" ".join(args[:-1]))
        lines = cp.stdout.splitlines()
        assert lines and "PID" in lines[0].split() and "CMD" in lines[0].split(), \
            f"ps table: expected a header with PID and CMD\n{show(cp)}"
        assert any("sleep" in line for line in lines[1:]), f"ps table does not show the sleep\n{show(cp)}"


# ---------------------------------------------------------------- kill

@pytest.mark.parametrize("sig", ["KILL", "SIGKILL", "9"])
def test_kill_stops_the_container(runtime, bundle, sig):
    d = runtime.unique_secs()
    cid, pid = runtime.create_and_start(bundle(["sleep", d]))
    cp = runtime.run("kill", cid, sig)
    assert_ok(cp, what=f"kill ID {sig}")
    runtime.wait_status(cid, "stopped", timeout=30)
    assert wait_until(lambda: not pid_alive(pid), 15), f"the --pid-file process {pid} outlived the container"
    assert wait_until(lambda: not runtime.sleep_processes(d), 15), "the container's sleep is still alive"


@pytest.mark.parametrize("sig", ["TERM", "SIGTERM", "15", None], ids=["TERM", "SIGTERM", "15", "default"])
def test_kill_term_reaches_the_trap(runtime, bundle, sig):
    d = runtime.unique_secs()
    script = f'trap "echo got-TERM; exit 3" TERM; echo ready; sleep {d} & wait'
    b = bundle(["sh", "-c", script])
    cid = runtime.new_id()
    bg = runtime.popen("run", "--bundle", b, cid)
    wait_until(lambda: "ready" in bg.stdout() or bg.proc.poll() is not None, 60)
    assert "ready" in bg.stdout(), f"the container did not start\n{show(bg.result())}"
    cp = runtime.run("kill", cid, *([sig] if sig else []))
    assert_ok(cp, what=f"kill ID {sig or '(default signal)'}")
    res = bg.wait(30)
    assert "got-TERM" in res.stdout, f"the TERM trap did not run\n{show(res)}"
    assert_ok(res, 3, what="`run` exits with the trap's status")
    assert wait_until(lambda: not runtime.sleep_processes(d), 15), \
        "a process of the container outlived its init"


def test_kill_term_stops_a_detached_container(runtime, bundle, tmp_path):
    """create + start (as the runc shim does), TERM trapped by init."""
    hd = tmp_path / "log"
    hd.mkdir()
    log = hd / "log"
    d = runtime.unique_secs()
    script = (f'trap "echo got-TERM >> /data/log; exit 3" TERM; echo ready >> /data/log; '
              f'sleep {d} & wait')
    b = bundle(["sh", "-c", script], dirs=["data"], mounts=[_bind(hd, "/data", "rw")])
    cid, pid = runtime.create_and_start(b)
    assert wait_until(lambda: log.exists() and "ready" in log.read_text(), 30), \
        f"the container did not start; state: {runtime.state(cid)}"
    assert_ok(runtime.run("kill", cid, "TERM"), what="kill ID TERM")
    runtime.wait_status(cid, "stopped", timeout=30)
    assert "got-TERM" in log.read_text(), f"the TERM trap did not run: {log.read_text()!r}"
    assert wait_until(lambda: not pid_alive(pid), 15), f"the --pid-file process {pid} outlived the container"
    assert wait_until(lambda: not runtime.sleep_processes(d), 15), "a process of the container outlived its init"
    assert_ok(runtime.run("delete", cid), what="delete after TERM")
    assert entries_naming(runtime.root, cid) == []


def test_kill_all_reaches_every_process(runtime, bundle):
    d = runtime.unique_secs()
    # init survives TERM (trapped); its child sleep does not.
    script = (f'trap "echo init-got-TERM" TERM; sleep {d} & echo ready; '
              'while :; do wait; s=$?; [ $s -lt 128 ] && break; done; echo all-done')
    b = bundle(["sh", "-c", script])
    cid = runtime.new_id()
    bg = runtime.popen("run", "--bundle", b, cid)
    wait_until(lambda: "ready" in bg.stdout() or bg.proc.poll() is not None, 60)
    assert "ready" in bg.stdout(), f"the container did not start\n{show(bg.result())}"
    assert_ok(runtime.run("kill", cid, "TERM"), what="kill ID TERM")
    assert wait_until(lambda: "init-got-TERM" in bg.stdout(), 20), f"init got no TERM\n{show(bg.result())}"
    time.sleep(1)
    assert bg.proc.poll() is None and runtime.state(cid).get("status") == "running", \
        f"`kill` without --all reached more than init\n{show(bg.result())}"
    assert_ok(runtime.run("kill", "--all", cid, "TERM"), what="kill --all ID TERM")
    res = bg.wait(30)
    assert "all-done" in res.stdout, f"the sleep did not get TERM from kill --all\n{show(res)}"
    assert_ok(res, 0)


# ---------------------------------------------------------------- delete

def test_delete_removes_a_stopped_container(runtime, bundle):
    d = runtime.unique_secs()
    cid, pid = runtime.create_and_start(bundle(["sleep", d]))
    assert entries_naming(runtime.root, cid), f"no state of {cid} under --root {runtime.root}"
    assert_ok(runtime.run("kill", cid, "KILL"), what="kill")
    runtime.wait_status(cid, "stopped", timeout=30)
    cp = runtime.run("delete", cid)
    assert_ok(cp, what="delete of a stopped container")
    cp = runtime.run("state", cid)
    assert_clear_error(cp, cid, any_of=NOT_FOUND, what="state after delete")
    assert entries_naming(runtime.root, cid) == [], \
        f"delete left state under --root: {entries_naming(runtime.root, cid)}"
    assert cid not in [c.get("id") for c in runtime.list_json()]
    assert not pid_alive(pid)


def test_delete_of_a_created_container(runtime, bundle, tmp_path):
    # containerd deletes a container whose start failed or never came.
    d = runtime.unique_secs()
    cid = runtime.new_id()
    pid = runtime.create(bundle(["sleep", d]), cid, tmp_path / "c.pid")
    cp = runtime.run("delete", cid)
    assert_ok(cp, what="delete of a created container")
    assert wait_until(lambda: not pid_alive(pid), 15), f"the --pid-file process {pid} outlived delete"
    assert runtime.run("state", cid).returncode != 0
    assert entries_naming(runtime.root, cid) == []
    assert runtime.sleep_processes(d) == []


def test_delete_refuses_running_and_force_deletes(runtime, bundle):
    d = runtime.unique_secs()
    cid, pid = runtime.create_and_start(bundle(["sleep", d]))
    cp = runtime.run("delete", cid)
    assert_clear_error(cp, any_of=("running", "not stopped", "force"), what="delete of a running container")
    assert runtime.state(cid).get("status") == "running", "a refused delete changed the container"
    cp = runtime.run("delete", "--force", cid)
    assert_ok(cp, what="delete --force of a running container")
    assert runtime.run("state", cid).returncode != 0, "the container survived delete --force"
    assert wait_until(lambda: not pid_alive(pid), 15), f"the --pid-file process {pid} outlived delete --force"
    assert wait_until(lambda: not runtime.sleep_processes(d), 15), "the container's sleep outlived delete --force"
    assert entries_naming(runtime.root, cid) == [], \
        f"delete --force left state under --root: {entries_naming(runtime.root, cid)}"


# ---------------------------------------------------------------- list, detach, ids

def test_list_two_containers(runtime, bundle, tmp_path):
    b1 = bundle(["sleep", runtime.unique_secs()])
    b2 = bundle(["sleep", runtime.unique_secs()])
    c1 = runtime.new_id("a")
    pid1 = runtime.create(b1, c1, tmp_path / "1.pid")
    c2, pid2 = runtime.create_and_start(b2, runtime.new_id("b"))
    data = runtime.list_json()
    by_id = {c.get("id"): c for c in data if isinstance(c, dict)}
    assert set(by_id) == {c1, c2}, f"list --format json: {data}"
    for cid, status, pid, b in ((c1, "created", pid1, b1), (c2, "running", pid2, b2)):
        c = by_id[cid]
        assert c.get("status") == status, c
        assert c.get("pid") == pid, c
        assert c.get("bundle") == str(b), c
        assert isinstance(c.get("created"), str) and c["created"], c
    for args in (("list",), ("list", "--format", "table")):
        cp = runtime.run(*args)
        assert_ok(cp, what=" ".join(args))
        lines = [line for line in cp.stdout.splitlines() if line.strip()]
        assert lines and lines[0].split()[:4] == ["ID", "PID", "STATUS", "BUNDLE"], \
            f"{' '.join(args)}: expected a header ID PID STATUS BUNDLE ...\n{show(cp)}"
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        assert set(rows) == {c1, c2}, show(cp)
        assert rows[c1][1:4] == [str(pid1), "created", str(b1)], show(cp)
        assert rows[c2][1:4] == [str(pid2), "running", str(b2)], show(cp)


def test_run_detach_returns_at_once(runtime, bundle, tmp_path):
    d = runtime.unique_secs()
    b = bundle(["sleep", d])
    cid = runtime.new_id()
    pf = tmp_path / "d.pid"
    t0 = time.monotonic()
    cp = runtime.run("run", "--detach", "--bundle", b, "--pid-file", pf, cid, timeout=60)
    assert_ok(cp, what="run --detach")
    assert time.monotonic() - t0 < 45
    pid = int(pf.read_text().strip())
    assert runtime.state(cid).get("status") == "running"
    time.sleep(1.5)
    st = runtime.state(cid)
    assert st.get("status") == "running" and st.get("pid") == pid and pid_alive(pid), st
    assert_ok(runtime.run("kill", cid, "KILL"), what="kill")
    runtime.wait_status(cid, "stopped", timeout=30)
    assert wait_until(lambda: not pid_alive(pid), 15)
    assert_ok(runtime.run("delete", cid), what="delete")


def test_duplicate_id_is_refused(runtime, bundle, tmp_path):
    b1 = bundle(["sleep", runtime.unique_secs()])
    b2 = bundle(["sleep", runtime.unique_secs()])
    cid = runtime.new_id()
    pid = runtime.create(b1, cid, tmp_path / "1.pid")
    for cmd in ("create", "run"):
        cp = runtime.run(cmd, "--bundle", b2, cid, timeout=60)
        assert_clear_error(cp, cid, any_of=("exist", "in use"), what=f"{cmd} with a duplicate id")
        st = runtime.state(cid)
        assert st.get("status") == "created" and st.get("pid") == pid and st.get("bundle") == str(b1), \
            f"a refused {cmd} changed the first container: {st}"
    assert pid_alive(pid)


@pytest.mark.parametrize("argv", [
    ("state", "@"), ("kill", "@"), ("kill", "@", "KILL"), ("delete", "@"), ("start", "@"),
    ("ps", "@"), ("pause", "@"), ("resume", "@"), ("wait", "@"), ("events", "--stats", "@"),
    ("exec", "@", "true"),
], ids=lambda a: "-".join(x for x in a if x != "@"))
def test_unknown_id_is_a_clear_error(runtime, argv):
    cid = runtime.new_id("nope")
    args = [cid if a == "@" else a for a in argv]
    cp = runtime.run(*args, timeout=30)
    assert_clear_error(cp, cid, any_of=NOT_FOUND, what=" ".join(args))
    assert entries_naming(runtime.root, cid) == [], f"`{' '.join(args)}` created state under --root"


# ---------------------------------------------------------------- pause, wait, events, exec

def test_pause_and_resume(runtime, bundle, tmp_path):
    hd = tmp_path / "ticks"
    hd.mkdir()
    ticks = hd / "t"
    b = bundle(["sh", "-c", "while :; do echo x >> /data/t; sleep 0.1; done"], dirs=["data"],
               mounts=[_bind(hd, "/data", "rw")])
    cid, pid = runtime.create_and_start(b)

    def count() -> int:
        try:
            return len(ticks.read_text().splitlines())
        except FileNotFoundError:
            return 0
    assert wait_until(lambda: count() >= 3, 30), f"the container does not tick ({count()} lines)"
    assert_ok(runtime.run("pause", cid), what="pause")
    assert runtime.state(cid).get("status") == "paused"
    assert {c.get("id"): c.get("status") for c in runtime.list_json()}.get(cid) == "paused"
    time.sleep(0.5)
    n = count()
    time.sleep(1.5)
    assert count() == n, f"the container kept running while paused ({n} -> {count()} ticks)"
    assert pid_alive(pid)
    assert_ok(runtime.run("resume", cid), what="resume")
    assert runtime.state(cid).get("status") == "running"
    assert wait_until(lambda: count() > n + 2, 30), "the container does not run again after resume"
    assert_ok(runtime.run("kill", cid, "KILL"), what="kill after resume")
    runtime.wait_status(cid, "stopped", timeout=30)


def test_wait_returns_the_exit_status(runtime, bundle):
    b = bundle(["sh", "-c", "sleep 2; exit 5"])
    cid, _ = runtime.create_and_start(b)
    cp = runtime.run("wait", cid, timeout=60)
    assert_no_traceback(cp)
    assert wait_exit_status(cp) == 5, f"`wait` should report exit status 5\n{show(cp)}"
    assert runtime.state(cid).get("status") == "stopped", "`wait` returned before the container stopped"
    cp = runtime.run("wait", cid, timeout=30)   # already stopped: the same status at once
    assert wait_exit_status(cp) == 5, f"`wait` on a stopped container\n{show(cp)}"


def test_events_stats(runtime, bundle):
    cid, _ = runtime.create_and_start(bundle(["sleep", runtime.unique_secs()]))
    cp = runtime.run("events", "--stats", cid, timeout=60)
    assert_ok(cp, what="events --stats")
    lines = [line for line in cp.stdout.splitlines() if line.strip()]
    assert lines, f"events --stats printed nothing\n{show(cp)}"
    try:
        ev = json.loads(lines[0])
    except ValueError:
        raise AssertionError(f"events --stats: not a JSON line\n{show(cp)}") from None
    assert ev.get("type") == "stats" and ev.get("id") == cid, show(cp)
    data = ev.get("data")
    assert isinstance(data, dict) and {"cpu", "memory", "pids"} <= set(data), \
        f"events --stats: data should hold cpu, memory and pids\n{show(cp)}"


def test_exec_into_a_running_container(runtime, bundle, tmp_path):
    d = runtime.unique_secs()
    cid, _ = runtime.create_and_start(bundle(["sleep", d], hostname="exec-host"))
    cp = runtime.run("exec", cid, "sh", "-c",
                     "echo in-exec; tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; exit 4")
    assert "in-exec" in cp.stdout, show(cp)
    assert f"sleep {d}" in cp.stdout, f"exec does not see the container's init as pid 1\n{show(cp)}"
    assert "exec-host" in cp.stdout, show(cp)
    assert_ok(cp, 4, what="exec exit status")
    cp = runtime.run("exec", "--env", "FOO=bar", "--cwd", "/tmp", "--user", "1000:1000", cid,
                     "sh", "-c", 'echo "$FOO $(pwd) $(id -u):$(id -g)"')
    assert_ok(cp, what="exec --env --cwd --user")
    assert cp.stdout == "bar /tmp 1000:1000\n", show(cp)
    # containerd's shim: exec --process FILE --detach --pid-file P
    proc = {"terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/",
            "args": ["sh", "-c", "echo via-process-file"], "env": ["PATH=/bin", "X=1"]}
    pfile = tmp_path / "process.json"
    pfile.write_text(json.dumps(proc))
    cp = runtime.run("exec", "--process", pfile, cid)
    assert_ok(cp, what="exec --process FILE")
    assert cp.stdout == "via-process-file\n", show(cp)
    assert runtime.state(cid).get("status") == "running", "exec disturbed the container"


# ---------------------------------------------------------------- logs

def test_debug_log_names_the_container_and_the_command(runtime, bundle, tmp_path):
    """--debug-log's %ID% is the container's id and %COMMAND% the subcommand,
    so each container, and each command on it, logs to a file of its own."""
    logs = tmp_path / "logs"
    logs.mkdir()
    cid = runtime.new_id()
    cp = runtime.run("run", "--bundle", bundle(["true"]), cid,
                     flags=[f"--debug-log={logs}/%ID%.%COMMAND%.log"])
    assert_ok(cp, what="run with --debug-log")
    sentry_log = logs / f"{cid}.run.log"
    assert sentry_log.exists(), f"no {sentry_log.name} in {sorted(p.name for p in logs.iterdir())}"
    assert "sandbox: platform" in sentry_log.read_text()


def test_log_json_on_error(runtime, bundle, tmp_path):
    b = bundle()
    (b / "config.json").write_text('{"ociVersion": "1.0.2", "process": {')
    log = tmp_path / "pysc-log.json"
    cid = runtime.new_id()
    cp = runtime.run("create", "--bundle", b, cid, flags=["--log", log, "--log-format", "json"])
    assert cp.returncode != 0, show(cp)
    assert "config.json" in cp.stderr, f"the error should reach stderr too\n{show(cp)}"
    assert log.exists(), f"--log {log} was not written\n{show(cp)}"
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, f"--log {log} is empty\n{show(cp)}"
    entries = []
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            raise AssertionError(f"--log-format json: a line is not JSON: {line!r}") from None
        assert isinstance(e, dict) and {"level", "msg", "time"} <= set(e), \
            f"--log-format json: each line needs level, msg and time: {line!r}"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", str(e["time"])), \
            f"time should be RFC 3339: {line!r}"
        entries.append(e)
    errors = [e for e in entries if e["level"] == "error" and "config.json" in str(e["msg"])]
    assert errors, "no level=error line naming config.json in the log:\n" + "\n".join(lines)
    assert "Traceback" not in log.read_text()
    assert runtime.run("state", cid).returncode != 0, "a failed create left a container"


# ---------------------------------------------------------------- root and mounts

def test_readonly_root_and_tmpfs(runtime, bundle):
    script = ('touch /x; echo "root-rc=$?"; touch /tmp/y && echo tmp-ok; '
              'echo hello > /tmp/y; cat /tmp/y')
    b = bundle(["sh", "-c", script], readonly=True, mounts=[TMPFS_TMP])
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, what="readonly root")
    out = cp.stdout + cp.stderr
    assert "Read-only file system" in out and "root-rc=1" in cp.stdout, \
        f"touch /x on a read-only root should fail with EROFS\n{show(cp)}"
    assert "tmp-ok" in cp.stdout and "hello" in cp.stdout, f"the tmpfs at /tmp is not writable\n{show(cp)}"
    assert not (b / "rootfs" / "x").exists()


def test_writable_root(runtime, bundle):
    b = bundle(["sh", "-c", "touch /x && echo root-ok; ls /x"], readonly=False)
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, what="writable root")
    assert "root-ok" in cp.stdout, show(cp)


def test_bind_mount_read_write(runtime, bundle, tmp_path):
    hd = tmp_path / "hostdata"
    hd.mkdir()
    (hd / "in.txt").write_text("from-host\n")
    script = "cat /data/in.txt; echo written-inside > /data/out.txt && echo write-ok"
    b = bundle(["sh", "-c", script], dirs=["data"], mounts=[_bind(hd, "/data", "rw")])
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, what="bind mount rw")
    assert "from-host" in cp.stdout, f"the host's file is not visible at /data\n{show(cp)}"
    assert "write-ok" in cp.stdout, show(cp)
    assert (hd / "out.txt").exists(), f"a file written at /data inside is not on the host\n{show(cp)}"
    assert (hd / "out.txt").read_text() == "written-inside\n"


def test_bind_mount_read_only(runtime, bundle, tmp_path):
    hd = tmp_path / "hostdata"
    hd.mkdir()
    (hd / "in.txt").write_text("from-host\n")
    script = ('cat /data/in.txt; echo x > /data/out.txt; echo "write-rc=$?"; '
              'rm /data/in.txt; echo "rm-rc=$?"')
    b = bundle(["sh", "-c", script], dirs=["data"], mounts=[_bind(hd, "/data", "ro")])
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert_ok(cp, what="bind mount ro")
    assert "from-host" in cp.stdout, show(cp)
    assert "Read-only file system" in cp.stdout + cp.stderr, show(cp)
    assert "write-rc=0" not in cp.stdout and "rm-rc=0" not in cp.stdout, show(cp)
    assert not (hd / "out.txt").exists(), "a read-only bind mount let a write through to the host"
    assert (hd / "in.txt").read_text() == "from-host\n"


# ---------------------------------------------------------------- terminal

def _accept_console(srv: socket.socket, bg, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([srv], [], [], 0.5)
        if r:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(30)
                _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
            assert len(fds) == 1, f"--console-socket: expected one fd, got {fds}"
            return fds[0]
        if bg.proc.poll() is not None:
            pytest.fail(f"create exited without sending a pty master\n{show(bg.result())}")
    pytest.fail(f"nothing connected to --console-socket within {timeout} s\n{show(bg.result())}")


def with_console(runtime, *args) -> tuple:
    """``pysc ARGS... --console-socket S`` in the background, S a socket of
    the test's own: (the pysc command, the pty master it sent)."""
    sock_path = os.path.join(runtime.short_dir(), "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    bg = runtime.popen(*args[:-1], "--console-socket", sock_path, args[-1])
    try:
        return bg, _accept_console(srv, bg)
    finally:
        srv.close()


def create_with_console(runtime, bundle_dir, cid: str, pid_file) -> tuple:
    """``create --console-socket`` in the background: (the create, the pty master)."""
    return with_console(runtime, "create", "--bundle", bundle_dir, "--pid-file", pid_file, cid)


def test_console_socket_gets_the_pty_master(runtime, bundle, tmp_path):
    cid = runtime.new_id()
    bg, master = create_with_console(runtime, bundle(["sh"], terminal=True), cid, tmp_path / "t.pid")
    try:
        assert_ok(bg.wait(60), what="create --console-socket")
        runtime.start(cid)
        text = talk(master, b"tty; echo typed-$((40+2))\nexit 0\n", b"typed-42")
        assert "typed-42" in text, f"no shell output through the pty master: {text!r}"
        assert "/dev/pts/" in text, f"`tty` inside should name a /dev/pts device: {text!r}"
    finally:
        os.close(master)
    runtime.wait_status(cid, "stopped", timeout=30)


def test_exec_with_a_console_socket(runtime, bundle, tmp_path):
    """containerd's shim for ``docker exec -it``: ``exec --process FILE
    --detach --console-socket S --pid-file P``, then an interactive shell on
    the pty master it was sent; the pid file's process ends with the shell
    (its status goes to the subreaper, the shim; test_exec_into_a_running_container
    checks exec statuses)."""
    d = runtime.unique_secs()
    cid, _ = runtime.create_and_start(bundle(["sleep", d]))
    proc = {"terminal": True, "user": {"uid": 0, "gid": 0, "additionalGids": [0]}, "args": ["sh"],
            "env": ["PATH=/bin", "TERM=xterm"], "cwd": "/",
            "capabilities": {k: ["CAP_CHOWN", "CAP_KILL"] for k in ("bounding", "effective", "permitted")}}
    pfile = tmp_path / "process.json"
    pfile.write_text(json.dumps(proc))
    pid_file = tmp_path / "exec.pid"
    bg, master = with_console(runtime, "exec", "--process", pfile, "--detach", "--pid-file", pid_file, cid)
    try:
        assert_ok(bg.wait(60), what="exec --detach --console-socket")
        waiter = int(pid_file.read_text())
        # The shim reads exec's output to its end before it takes the master:
        # nothing left behind may hold it open.
        held = {os.path.realpath(bg.out_path), os.path.realpath(bg.err_path)}
        for fd in os.listdir(f"/proc/{waiter}/fd"):
            assert os.path.realpath(f"/proc/{waiter}/fd/{fd}") not in held, \
                f"the pid file's process keeps exec's stdout or stderr open (its fd {fd})"
        text = talk(master, b"tty; echo typed-$((40+2)); exit 3\n", b"typed-42", prompt=b"# ")
        assert "typed-42" in text and "/dev/pts/" in text, f"no interactive shell on the pty: {text!r}"
    finally:
        os.close(master)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{waiter}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{waiter}"), "the pid file's process outlived the shell"
    assert runtime.state(cid).get("status") == "running", "the exec disturbed the container"
