"""Containers of a pod in one sandbox (issue 4): a container whose
config.json says, as containerd's CRI plugin writes it, that it is a
``container`` of pod sandbox X joins X's sandbox instead of getting one of
its own.  It has its own root filesystem and pid namespace (as Kubernetes
gives each container of a pod unless shareProcessNamespace is set) and shares
the rest (kernel, network, hostname) with the pod."""
from __future__ import annotations

import json
import os
import time

from .conftest import assert_clear_error, assert_no_traceback, assert_ok, pid_alive, show, wait_until
from terminal import talk

from .test_lifecycle import create_with_console, wait_exit_status

CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"


def pod_of(sandbox_id: str) -> dict:
    return {CRI_TYPE: "container", CRI_SANDBOX: sandbox_id}


def start_pod(runtime, bundle, tmp_path) -> str:
    sid = runtime.new_id("pod")
    b = bundle(["sleep", runtime.unique_secs()], hostname="pod-host", files={"only-pod": "pod\n"},
               annotations={CRI_TYPE: "sandbox", CRI_SANDBOX: sid})
    runtime.create_and_start(b, sid)
    return sid


def out_mount(tmp_path):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return out, {"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind", "rw"]}


def test_a_pod_container_runs_in_the_pod_sandbox(runtime, bundle, tmp_path):
    sid = start_pod(runtime, bundle, tmp_path)
    out, mount = out_mount(tmp_path)
    script = ("cat /marker; hostname; test -e /only-pod && echo sees-pod-root; "
              "echo $$ > /out/pid; sleep 1; exit 5")
    b = bundle(["sh", "-c", f"{{ {script}; }} > /out/log 2>&1"], files={"marker": "container-b\n"},
               mounts=[mount], annotations=pod_of(sid))
    cid = runtime.new_id("b")
    pid = runtime.create(b, cid, tmp_path / "b.pid")
    assert runtime.state(cid).get("status") == "created"
    assert pid_alive(pid), "the pid in --pid-file must stand for the container"
    runtime.start(cid)
    cp = runtime.run("wait", cid, timeout=60)
    assert_no_traceback(cp)
    assert wait_exit_status(cp) == 5, f"the pod's container should exit 5\n{show(cp)}"
    assert wait_until(lambda: not pid_alive(pid)), "the --pid-file process outlived the container"
    assert (out / "log").read_text() == "container-b\npod-host\n", \
        "own root filesystem, the pod's hostname, not the pod's root"
    assert int((out / "pid").read_text()) == 1, "the container's init is pid 1 of its own namespace"
    assert runtime.state(sid).get("status") == "running", "the pod's sandbox went on"
    assert_ok(runtime.run("delete", cid), what="delete the pod's container")
    assert_ok(runtime.run("delete", "--force", sid), what="delete the pod")


def test_exec_kill_and_delete_of_a_pod_container(runtime, bundle, tmp_path):
    sid = start_pod(runtime, bundle, tmp_path)
    secs = runtime.unique_secs()
    b = bundle(["sleep", secs], files={"marker": "container-c\n"}, annotations=pod_of(sid))
    cid, pid = runtime.create_and_start(b, runtime.new_id("c"))
    runtime.wait_status(cid, "running")
    cp = runtime.run("exec", cid, "cat", "/marker")
    assert_ok(cp, what="exec into the pod's container")
    assert cp.stdout == "container-c\n", f"exec must see the container's root\n{show(cp)}"
    cp = runtime.run("exec", cid, "sh", "-c", "echo $$ $PPID; cat /proc/1/cmdline; echo")
    assert_ok(cp, what="exec into the pod's container")
    pid_here, ppid_here, init_cmd = cp.stdout.split("\n")[0].split(" ") + [cp.stdout.split("\n")[1]]
    assert int(pid_here) > 1 and ppid_here == "0", f"exec joins the container's pid namespace\n{show(cp)}"
    assert init_cmd == f"sleep\0{secs}\0", f"its pid 1 is the container's init\n{show(cp)}"
    cp = runtime.run("ps", sid)
    assert_ok(cp, what="ps of the pod")
    assert f"sleep {secs}" in cp.stdout, f"the pod's sandbox runs the container\n{show(cp)}"
    assert_ok(runtime.run("kill", cid, "KILL"), what="kill the pod's container")
    runtime.wait_status(cid, "stopped")
    assert wait_until(lambda: not pid_alive(pid))
    assert runtime.state(sid).get("status") == "running", "killing a container ended the pod"
    assert_ok(runtime.run("delete", cid))
    assert_ok(runtime.run("delete", "--force", sid))


def test_pod_containers_do_not_see_each_others_processes(runtime, bundle, tmp_path):
    """Each container of the pod has a pid namespace of its own: /proc, ps
    and kill reach only its own processes, never the pod's or a sibling's."""
    sid = start_pod(runtime, bundle, tmp_path)
    secs = runtime.unique_secs()
    sibling, _ = runtime.create_and_start(bundle(["sleep", secs], annotations=pod_of(sid)),
                                          runtime.new_id("s"))
    runtime.wait_status(sibling, "running")
    out, mount = out_mount(tmp_path)
    script = ("sleep 30 & ls /proc | grep '^[0-9]' | sort -n | tr '\\n' ' '; echo; "
              "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; ps -o pid,comm | tail -n +2 | sort -n; "
              "for p in $(seq 2 20); do kill -0 $p 2>/dev/null && echo killable $p; done; "
              "kill $!; wait $!; echo waited $?")
    b = bundle(["sh", "-c", f"{{ {script}; }} > /out/log 2>&1"], mounts=[mount], annotations=pod_of(sid))
    cid = runtime.new_id("b")
    runtime.create(b, cid, tmp_path / "b.pid")
    runtime.start(cid)
    cp = runtime.run("wait", cid, timeout=60)
    assert wait_exit_status(cp) == 0, show(cp)
    log = (out / "log").read_text()
    pids, cmdlines, *rest = log.split("\n")
    assert pids.split()[:2] == ["1", "2"] and all(int(p) < 20 for p in pids.split()), \
        f"/proc lists its own sh, sleep and pipeline only: {log!r}"
    assert secs not in log, f"it sees the pod's or its sibling's processes: {log!r}"
    assert rest[:2] == ["    1 sh", "    2 sleep"] or rest[:2] == ["1 sh", "2 sleep"], log
    assert "killable 2" in log and "killable 3" not in log, log
    assert "waited 143" in log, log
    assert runtime.state(sibling).get("status") == "running"
    cp = runtime.run("ps", "--format", "json", sibling)
    assert_ok(cp, what="ps of a pod container")
    assert json.loads(cp.stdout) == [1], f"ps lists the container's own init, as it numbers it\n{show(cp)}"
    assert_ok(runtime.run("kill", "--all", sibling, "KILL"), what="kill --all of a pod container")
    runtime.wait_status(sibling, "stopped")
    assert runtime.state(sid).get("status") == "running", "kill --all of a container reached the pod"
    assert_ok(runtime.run("delete", "--force", sibling))
    assert_ok(runtime.run("delete", "--force", sid))


def test_deleting_the_pod_ends_its_containers(runtime, bundle, tmp_path):
    sid = start_pod(runtime, bundle, tmp_path)
    b = bundle(["sleep", runtime.unique_secs()], annotations=pod_of(sid))
    cid, pid = runtime.create_and_start(b, runtime.new_id("d"))
    runtime.wait_status(cid, "running")
    assert_ok(runtime.run("delete", "--force", sid))
    runtime.wait_status(cid, "stopped")
    assert wait_until(lambda: not pid_alive(pid))
    assert_ok(runtime.run("delete", cid))


def test_a_created_pod_container_can_be_deleted(runtime, bundle, tmp_path):
    sid = start_pod(runtime, bundle, tmp_path)
    cid = runtime.new_id("e")
    pid = runtime.create(bundle(["true"], annotations=pod_of(sid)), cid, tmp_path / "e.pid")
    assert_ok(runtime.run("delete", "--force", cid))
    assert wait_until(lambda: not pid_alive(pid)), "the waiter of a deleted container is left"
    assert_ok(runtime.run("delete", "--force", sid))


def test_a_missing_pod_sandbox_is_a_clear_error(runtime, bundle, tmp_path):
    cid = runtime.new_id("f")
    cp = runtime.run("create", "--bundle", bundle(["true"], annotations=pod_of("no-such-pod")), cid)
    assert_clear_error(cp, "no-such-pod")
    time.sleep(0.2)
    cp = runtime.run("state", cid)
    assert cp.returncode != 0, f"a failed create left state behind\n{show(cp)}"


def test_the_pod_sandbox_needs_its_own_sandbox_annotation_only(runtime, bundle, tmp_path):
    """The pod's own (pause) container names itself as sandbox: a sandbox of its own."""
    sid = runtime.new_id("g")
    b = bundle(["sh", "-c", "exit 3"], annotations=pod_of(sid) | {CRI_TYPE: "sandbox"})
    cp = runtime.run("run", "--bundle", b, sid, timeout=60)
    assert_ok(cp, 3, what="run of a pod sandbox container")


def test_a_pod_container_with_a_terminal(runtime, bundle, tmp_path):
    sid = start_pod(runtime, bundle, tmp_path)
    cid = runtime.new_id("t")
    b = bundle(["sh"], terminal=True, files={"marker": "with-a-tty\n"}, annotations=pod_of(sid))
    bg, master = create_with_console(runtime, b, cid, tmp_path / "t.pid")
    try:
        assert_ok(bg.wait(60), what="create --console-socket of a pod's container")
        runtime.start(cid)
        text = talk(master, b"tty; cat /marker; exit 0\n", b"with-a-tty")
        assert "/dev/pts/" in text and "with-a-tty" in text, f"through the pty: {text!r}"
    finally:
        os.close(master)
    runtime.wait_status(cid, "stopped", timeout=30)
    assert_ok(runtime.run("delete", cid))
    assert_ok(runtime.run("delete", "--force", sid))


def _sandbox_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_an_ended_pod_container_leaves_nothing_in_the_sandbox(runtime, bundle, tmp_path):
    """Its leftover processes are killed with its init, as when the init of
    a pid namespace dies, and the Sentry drops its mount tree and host fds:
    Kubernetes restarts a failing container in the same pod again and again,
    so the sandbox's fds must not grow with the number of containers it ran."""
    sid = start_pod(runtime, bundle, tmp_path)
    sandbox_pid = runtime.state(sid)["pid"]
    secs = runtime.unique_secs()
    counts = []
    for i in range(4):
        b = bundle(["sh", "-c", f"sleep {secs} & ls -R / > /dev/null; exit 0"], name=f"pod-run{i}",
                   annotations=pod_of(sid))
        cid, _ = runtime.create_and_start(b, runtime.new_id(f"r{i}"))
        cp = runtime.run("wait", cid, timeout=60)
        assert wait_exit_status(cp) == 0, show(cp)
        assert wait_until(lambda: f"sleep {secs}" not in runtime.run("ps", sid).stdout), \
            "a process of the ended container lives on in the pod"
        assert_ok(runtime.run("delete", cid))
        if i == 3:  # against the second: the first may have made one-time fds (vCPUs, /proc)
            assert wait_until(lambda: _sandbox_fds(sandbox_pid) <= counts[1]), \
                f"the sandbox's fds grow with the containers it ran: {counts} -> {_sandbox_fds(sandbox_pid)}"
        counts.append(_sandbox_fds(sandbox_pid))
    assert_ok(runtime.run("delete", "--force", sid))
