"""A container sees its rootfs and nothing of the host (issue 4).

The rootfs a bundle brings is untrusted: symlinks in it that point outside
(relative ``..`` chains, absolute links to host paths, links to the bundle
directory itself) must resolve inside the container's root, whether they are
read by the app, used as the process's cwd, or used as a mount
destination.  ``/proc/self/root``, ``/proc/1/cwd`` and ``..`` from ``/``
stay inside, and the host's processes are not visible.

Every test first checks (on the host) that its links really do reach the
secret when followed naively, so that a pass means something; and every test
needs the container to run (a marker at the end of its script), so that a
runtime that runs nothing does not pass.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import BUSYBOX, TEST_ENV, TMPFS_TMP, assert_no_traceback, assert_ok, section_output, show

pytestmark = pytest.mark.integration


def _script(checks: list[tuple[str, str]]) -> str:
    parts = [f'echo "== {name}"; {cmd} 2>&1; echo "rc=$?"' for name, cmd in checks]
    return "; ".join(parts) + '; echo "== end"'


def _body(sections: dict[str, str], name: str) -> str:
    return sections.get(name, "").rsplit("rc=", 1)[0]


def _rc(sections: dict[str, str], name: str) -> str:
    text = sections.get(name, "")
    return text.rsplit("rc=", 1)[1].strip() if "rc=" in text else "?"


def _listing(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("rc=")}


def test_symlinks_in_the_rootfs_do_not_reach_the_host(runtime, bundle, tmp_path):
    secret = f"HOST-SECRET-{uuid.uuid4().hex}"
    shadow = f"CONTAINER-SHADOW-{uuid.uuid4().hex}"
    secret_path = tmp_path / "secret.txt"
    secret_path.write_text(secret + "\n")
    bdir = tmp_path / "b"
    links = {
        "etc/x": "../../../../etc/shadow",
        "etc/abs": "/etc/shadow",
        "etc/dots": "../../../../../../../../etc",
        "etc/up": "../../host-only.txt",            # on the host: BUNDLE/host-only.txt
        "etc/rel_secret": "../../../secret.txt",    # on the host: tmp_path/secret.txt
        "etc/abs_secret": str(secret_path),
        "etc/abs_bundle": str(bdir),
        "etc/chain1": "chain2",
        "etc/chain2": "../../../secret.txt",
        "escape": "../..",                          # on the host: tmp_path
    }
    checks = [
        ("x", "cat /etc/x"),
        ("abs", "cat /etc/abs"),
        ("dots", "cat /etc/dots/shadow"),
        ("dots_ls", "ls -1 /etc/dots"),
        ("up", "cat /etc/up"),
        ("rel_secret", "cat /etc/rel_secret"),
        ("abs_secret", "cat /etc/abs_secret"),
        ("abs_bundle_cat", "cat /etc/abs_bundle/host-only.txt"),
        ("abs_bundle_ls", "ls -1 /etc/abs_bundle/"),
        ("chain", "cat /etc/chain1"),
        ("escape_cat", "cat /escape/secret.txt"),
        ("escape_up_cat", "cat /escape/b/host-only.txt"),
        ("escape_ls", "ls -1 /escape/"),
        ("root_ls", "ls -1 /"),
        ("readlink_x", "readlink /etc/x"),
    ]
    b = bundle(["sh", "-c", _script(checks)], name="b", files={"etc/shadow": shadow + "\n"},
               symlinks=links)
    assert b == bdir
    (b / "host-only.txt").write_text(secret + "\n")
    rootfs = b / "rootfs"
    # On the host, these links do reach the secret: the test means something.
    real = os.path.realpath
    assert real(rootfs / "etc/rel_secret") == real(secret_path)
    assert real(rootfs / "etc/chain1") == real(secret_path)
    assert real(rootfs / "etc/up") == real(b / "host-only.txt")
    assert real(rootfs / "escape/secret.txt") == real(secret_path)

    cp = runtime.run("run", "-b", b, runtime.new_id())
    out = cp.stdout + cp.stderr
    assert secret not in out, f"a symlink in the rootfs reached a host file\n{show(cp)}"
    try:
        with open("/etc/shadow") as f:
            host_root_line = next((ln.strip() for ln in f if ln.startswith("root:")), None)
    except OSError:
        host_root_line = None
    if host_root_line:
        assert host_root_line not in out, f"the host's /etc/shadow was read\n{show(cp)}"
    s = section_output(cp.stdout)
    assert "end" in s, f"the container's script did not run to the end\n{show(cp)}"
    assert_ok(cp, what="the script's last command is echo")
    for name in ("x", "abs", "dots"):
        assert _rc(s, name) == "0" and _body(s, name).strip() == shadow, \
            f"{name}: expected the container's own /etc/shadow\n{show(cp)}"
    assert {"passwd", "group", "shadow"} <= _listing(_body(s, "dots_ls")), show(cp)
    for name in ("up", "rel_secret", "abs_secret", "abs_bundle_cat", "chain", "escape_cat", "escape_up_cat"):
        assert _rc(s, name) != "0", f"{name}: reading through the link should fail inside\n{show(cp)}"
    bundle_ls = _listing(_body(s, "abs_bundle_ls"))
    assert not ({"config.json", "rootfs", "host-only.txt"} & bundle_ls), \
        f"an absolute link to the bundle directory listed the host's bundle\n{show(cp)}"
    root_ls = _listing(_body(s, "root_ls"))
    assert root_ls == set(os.listdir(rootfs)), \
        f"/ inside is not the rootfs: {sorted(root_ls)} vs {sorted(os.listdir(rootfs))}\n{show(cp)}"
    assert _listing(_body(s, "escape_ls")) == root_ls, f"/escape (-> ../..) should be /\n{show(cp)}"
    assert _body(s, "readlink_x").strip() == "../../../../etc/shadow", show(cp)


def test_cwd_through_an_escaping_symlink_stays_inside(runtime, bundle, tmp_path):
    secret = f"HOST-SECRET-{uuid.uuid4().hex}"
    (tmp_path / "secret.txt").write_text(secret + "\n")
    script = _script([("pwd", "pwd -P"), ("ls", "ls -1"), ("cat", "cat secret.txt"), ("root", "ls -1 /")])
    b = bundle(["sh", "-c", script], name="b", symlinks={"esc": "../.."}, cwd="/esc")
    assert os.path.realpath(b / "rootfs" / "esc") == os.path.realpath(tmp_path)
    cp = runtime.run("run", "-b", b, runtime.new_id())
    assert secret not in cp.stdout + cp.stderr, f"cwd followed a link out of the rootfs\n{show(cp)}"
    s = section_output(cp.stdout)
    assert "end" in s, f"the container's script did not run to the end\n{show(cp)}"
    assert_ok(cp)
    assert _body(s, "pwd").strip() == "/", show(cp)
    assert _listing(_body(s, "ls")) == _listing(_body(s, "root")) == set(os.listdir(b / "rootfs")), show(cp)
    assert _rc(s, "cat") != "0", show(cp)


def test_mount_destination_through_a_symlink_stays_inside(runtime, bundle, tmp_path):
    hd1, hd2 = tmp_path / "hostdir1", tmp_path / "hostdir2"
    for hd in (hd1, hd2):
        hd.mkdir()
        (hd / "keep.txt").write_text("host file\n")
    script = _script([
        ("w1", "echo pwned > /evil1/pwned.txt"), ("ls1", "ls -1 /evil1/"),
        ("w2", "echo pwned > /evil2/pwned.txt"), ("ls2", "ls -1 /evil2/"),
    ])
    mounts = [dict(TMPFS_TMP, destination="/evil1"), dict(TMPFS_TMP, destination="/evil2")]
    b = bundle(["sh", "-c", script], name="b", mounts=mounts,
               symlinks={"evil1": str(hd1), "evil2": "../../hostdir2"})
    assert os.path.realpath(b / "rootfs" / "evil2") == os.path.realpath(hd2)
    before = sorted(os.listdir(tmp_path))
    cp = runtime.run("run", "-b", b, runtime.new_id(), check_traceback=False)
    for hd in (hd1, hd2):
        assert sorted(os.listdir(hd)) == ["keep.txt"], \
            f"a mount whose destination is a symlink reached host dir {hd}: {os.listdir(hd)}\n{show(cp)}"
        assert (hd / "keep.txt").read_text() == "host file\n"
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    assert str(hd1) not in mountinfo and str(hd2) not in mountinfo, "something was mounted on the host"
    assert sorted(os.listdir(tmp_path)) == before, \
        f"the run changed the host outside the rootfs: {before} -> {sorted(os.listdir(tmp_path))}"
    assert_no_traceback(cp)
    if cp.returncode != 0:
        # Refusing such a bundle is fine, with a clear message naming the mount.
        assert "evil" in cp.stderr, f"refused without a clear message naming the mount\n{show(cp)}"
        return
    s = section_output(cp.stdout)
    assert "end" in s, show(cp)
    for n in ("1", "2"):
        assert _rc(s, "w" + n) == "0", f"the tmpfs at /evil{n} is not writable inside\n{show(cp)}"
        assert _listing(_body(s, "ls" + n)) == {"pwned.txt"}, \
            f"/evil{n} inside should be the fresh tmpfs\n{show(cp)}"


def test_proc_root_cwd_and_dotdot_stay_inside(runtime, bundle):
    marker = f"I-AM-THE-ROOTFS-{uuid.uuid4().hex[:12]}"
    checks = [
        ("root", "ls -1 /"),
        ("self_root", "ls -1 /proc/self/root/"),
        ("self_root_up", "ls -1 /proc/self/root/../../"),
        ("one_root", "ls -1 /proc/1/root/"),
        ("one_cwd", "ls -1 /proc/1/cwd/"),
        ("one_cwd_up", "ls -1 /proc/1/cwd/../.."),
        ("dotdot", "(cd / && cd .. && cd ../.. && ls -1)"),
        ("dotdot_path", "ls -1 /../../.."),
        ("cd_proc_root", "(cd -P /proc/self/root && cd -P ../.. && ls -1)"),
        ("tmp_up", "(cd /tmp && cd ../../.. && ls -1)"),
        ("links", "readlink /proc/self/root; readlink /proc/1/root; readlink /proc/1/cwd; "
                  "(cd / && cd .. && pwd -P)"),
    ]
    b = bundle(["sh", "-c", _script(checks)], files={marker: "x\n"})
    cp = runtime.run("run", "-b", b, runtime.new_id())
    s = section_output(cp.stdout)
    assert "end" in s, f"the container's script did not run to the end\n{show(cp)}"
    assert_ok(cp)
    host = set(os.listdir(b / "rootfs"))
    root = _listing(_body(s, "root"))
    assert marker in root and root == host, \
        f"/ inside is not the rootfs: {sorted(root)} vs {sorted(host)}\n{show(cp)}"
    for name, _ in checks[1:-1]:
        assert _rc(s, name) == "0", f"{name} failed\n{show(cp)}"
        assert _listing(_body(s, name)) == root, f"{name} does not list the container's /\n{show(cp)}"
    assert _body(s, "links").split() == ["/", "/", "/", "/"], show(cp)


def test_host_processes_are_invisible(runtime, bundle):
    unique = str(700000 + uuid.uuid4().int % 99999)
    host = subprocess.Popen([BUSYBOX, "sleep", unique], env=TEST_ENV, stdin=subprocess.DEVNULL)
    try:
        hp = host.pid
        checks = [
            ("pids", "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '"),
            ("hostpid", f"test -e /proc/{hp} && echo visible || echo hidden"),
            ("ps", "ps -o pid,args"),
            ("cmdlines", "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"),
            ("kill", f"kill -0 {hp} && echo allowed || echo refused"),
        ]
        b = bundle(["sh", "-c", _script(checks)])
        cp = runtime.run("run", "-b", b, runtime.new_id())
        s = section_output(cp.stdout)
        assert "end" in s, f"the container's script did not run to the end\n{show(cp)}"
        assert_ok(cp)
        out = cp.stdout
        assert unique not in out, f"the container sees the host's `sleep {unique}`\n{show(cp)}"
        assert "pytest" not in out and "python" not in out, f"the container sees host processes\n{show(cp)}"
        pids = [int(p) for p in _body(s, "pids").split() if p.isdigit()]
        assert 1 in pids and len(pids) < 20, f"/proc lists pids that are not the container's: {pids}\n{show(cp)}"
        if hp > 1000:
            assert hp not in pids and _body(s, "hostpid").strip() == "hidden", show(cp)
            assert "refused" in _body(s, "kill"), f"the container could signal a host process\n{show(cp)}"
        assert host.poll() is None, "the container killed a host process"
    finally:
        host.kill()
        host.wait(timeout=10)


def test_racing_a_path_after_the_check_reaches_no_host_file(runtime, bundle, tmp_path):
    """A second thread rewrites the path string of execve and openat after the
    call was made, between a container file and a host file (absolute paths
    that exist only on the host).  The check the Sentry made must be the one
    that counts: never the host's executable or the host's file."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    src = Path(__file__).resolve().parent.parent / "integration" / "c" / "race.c"
    host_exe, host_file = tmp_path / "host-exe", tmp_path / "host-file.txt"
    exit42 = tmp_path / "exit42.c"
    exit42.write_text("int main(void) { return 42; }\n")
    subprocess.run([gcc, "-static", "-O", "-o", str(host_exe), str(exit42)], check=True)
    host_file.write_text("HOST\n")
    assert subprocess.run([str(host_exe)]).returncode == 42  # the bait works on the host
    b = bundle(["/race", "/bin/true", str(host_exe), "/inside.txt", str(host_file), "150"],
               files={"inside.txt": "INSIDE\n"})
    subprocess.run([gcc, "-static", "-O", "-pthread", "-o", str(b / "rootfs" / "race"), str(src)], check=True)
    cp = runtime.run("run", "-b", b, runtime.new_id(), timeout=120)
    assert_no_traceback(cp)
    assert_ok(cp)
    got = dict(re.findall(r"^(exec|open): (.*)$", cp.stdout, re.M))
    assert set(got) == {"exec", "open"}, show(cp)
    for what, counts in got.items():
        n = dict(kv.split("=") for kv in counts.split())
        assert n["host"] == "0", f"{what} reached the host's file\n{show(cp)}"
        assert int(n["inside"]) > 0, f"{what} never ran the container's file: the test proves nothing\n{show(cp)}"
