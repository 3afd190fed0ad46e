"""Container benchmarks for bench/run.py: pysc run beside runc run and runsc run.

Two workloads, both on one busybox OCI bundle built under the runner's temp
dir:

* ``container_true``: wall time (ms) of ``X run -b BUNDLE ID`` with the
  container running ``true``, from the start of the runtime's command to its
  exit (creation, start, the process, its exit and the runtime's own
  clean-up all count).  ``delete --force`` follows every run, untimed.
* ``container_memory``: the PSS (MiB) of every host process of a container
  running ``sleep 1000``, started detached.  The processes are the state
  pid (``X state ID`` -> ``pid``), every process whose command line names
  the runtime's private ``--root`` (runsc's gofer is not a child of its
  sandbox), and all their descendants.

Each runtime gets its own ``--root`` under the temp dir and every container
a fresh ID, so nothing here touches containers that are not the runner's.
A failure never raises: it becomes the cell's error text.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from typing import Optional

# --------------------------------------------------------------------------
# Runtimes


@dataclasses.dataclass
class Runtime:
    """How to drive one column's runtime with runc's command-line shape."""

    column: str
    kind: str            # 'pysc', 'runc' or 'runsc'
    base: list[str]      # the executable and its global flags, before --root
    root: str = ""       # private state dir, set by prepare_runtime()

    def cmd(self, *sub: str) -> list[str]:
        return self.base + ["--root", self.root] + list(sub)

    def run_argv(self, bundle: str, cid: str, detach: bool) -> list[str]:
        if self.kind == "runsc":
            return self.cmd("run", *(["--detach"] if detach else []), "--bundle", bundle, cid)
        return self.cmd("run", *(["-d"] if detach else []), "-b", bundle, cid)


def pysc_runtime(column: str, pysc_cmd: list[str], platform: str) -> Runtime:
    # --network=none: the same network set-up as the runsc column.
    return Runtime(column, "pysc", pysc_cmd + [f"--platform={platform}", "--network=none"])


def runc_runtime(exe: str) -> Runtime:
    return Runtime("runc", "runc", [exe])


def runsc_runtime(exe: str, platform: str) -> Runtime:
    return Runtime("runsc", "runsc", [exe, "--network=none", f"--platform={platform}"])


def prepare_runtime(rt: Runtime, state_dir: str) -> None:
    name = rt.column.replace(":", "-").replace("/", "-")
    rt.root = os.path.join(state_dir, name)
    os.makedirs(rt.root, mode=0o711, exist_ok=True)


# --------------------------------------------------------------------------
# The bundle


def is_static_elf(path: str) -> bool:
    """True if path is an ELF executable without a PT_INTERP (no dynamic loader)."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2:  # ELFCLASS64
                return False
            end = "<" if hdr[5] == 1 else ">"
            phoff, = struct.unpack_from(end + "Q", hdr, 32)
            phentsize, phnum = struct.unpack_from(end + "HH", hdr, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        p_type, = struct.unpack_from(end + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def default_config(args: list[str]) -> dict:
    """A config.json in the shape of `runc spec`, for when `pysc spec` is unavailable."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in
                             ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in
                           ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list",
                            "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }


def make_rootfs(rootfs: str, busybox: str) -> None:
    os.makedirs(os.path.join(rootfs, "bin"))
    for d in ("proc", "sys", "dev", "tmp", "etc", "root"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    target = os.path.join(rootfs, "bin", "busybox")
    shutil.copy2(busybox, target)
    os.chmod(target, 0o755)
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=30)
    for applet in out.stdout.split():
        if applet and applet != "busybox" and "/" not in applet:
            link = os.path.join(rootfs, "bin", applet)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")


@dataclasses.dataclass
class Bundles:
    true: str = ""     # bundle whose process is ["true"]
    sleep: str = ""    # bundle whose process is ["sleep", "1000"]
    state_dir: str = ""
    error: Optional[str] = None   # set when the bundles could not be built
    config_source: str = ""       # 'pysc spec' or 'built-in'


def build_bundles(dirpath: str, busybox: str, pysc_cmd: Optional[list[str]]) -> Bundles:
    """Build two bundles (true, sleep 1000) under dirpath; never raises.

    The runtimes' state dirs go to a separate short /tmp/pb-XXXX (removed by
    remove_state_dir()): pysc puts unix sockets under ROOT/ID/, and a
    sun_path holds at most 107 bytes.
    """
    b = Bundles()
    try:
        os.makedirs(dirpath, exist_ok=True)
        b.state_dir = tempfile.mkdtemp(prefix="pb-", dir="/tmp")
        os.chmod(b.state_dir, 0o711)
        if not is_static_elf(busybox):
            b.error = f"{busybox} is not a static executable (install busybox-static)"
            return b
        base = None
        if pysc_cmd:
            spec_dir = tempfile.mkdtemp(prefix="spec-", dir=dirpath)
            try:
                proc = subprocess.run(pysc_cmd + ["spec", "-b", spec_dir], capture_output=True,
                                      text=True, timeout=60, stdin=subprocess.DEVNULL)
                if proc.returncode == 0:
                    with open(os.path.join(spec_dir, "config.json")) as f:
                        base = json.load(f)
                    b.config_source = "pysc spec"
            except (OSError, ValueError, subprocess.TimeoutExpired):
                base = None
        for name, args in (("true", ["true"]), ("sleep", ["sleep", "1000"])):
            bundle = os.path.join(dirpath, f"bundle-{name}")
            os.makedirs(bundle)
            os.chmod(bundle, 0o755)
            make_rootfs(os.path.join(bundle, "rootfs"), busybox)
            if base is not None:
                config = json.loads(json.dumps(base))
                config.setdefault("process", {})
                config["process"]["terminal"] = False
                config["process"]["args"] = args
                config["root"] = {"path": "rootfs", "readonly": True}
            else:
                config = default_config(args)
                b.config_source = "built-in"
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(config, f, indent=2)
            setattr(b, name, bundle)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        b.error = f"cannot build the bundle: {e}"
    return b


# --------------------------------------------------------------------------
# Running commands


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback"):
        return lines[-1][:200]
    return lines[0][:200]


_counter = 0


def new_id(rt: Runtime) -> str:
    global _counter
    _counter += 1
    return f"pb{os.getpid()}-{rt.kind}-{_counter}"


def _run(argv: list[str], cwd: str, timeout: float) -> tuple[int, str, str]:
    """Run argv to completion, stdio in files (a detached child may keep them open)."""
    with tempfile.TemporaryFile("w+", errors="replace") as out, \
            tempfile.TemporaryFile("w+", errors="replace") as err:
        proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              timeout=timeout)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read()


def _quiet(argv: list[str], cwd: str, timeout: float = 30.0) -> None:
    try:
        _run(argv, cwd, timeout)
    except (OSError, subprocess.SubprocessError):
        pass


def state(rt: Runtime, cid: str, cwd: str) -> Optional[dict]:
    try:
        rc, out, _ = _run(rt.cmd("state", cid), cwd, 30.0)
        if rc != 0:
            return None
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


# --------------------------------------------------------------------------
# Host processes


def proc_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (ppid, argv) for every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except (OSError, ValueError, IndexError):
            continue
        table[pid] = (ppid, argv)
    return table


def container_pids(rt: Runtime, state_pid: Optional[int]) -> set[int]:
    """The state pid, every process naming rt.root, and all their descendants."""
    table = proc_table()
    me = os.getpid()
    seeds = set()
    if state_pid and state_pid in table:
        seeds.add(state_pid)
    for pid, (_, argv) in table.items():
        if pid != me and any(a == rt.root or a.endswith("=" + rt.root) for a in argv):
            seeds.add(pid)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(seeds)
    while todo:
        pid = todo.pop()
        if pid in found or pid == me:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def pss_kib(pid: int) -> Optional[int]:
    """The PSS of pid in KiB (smaps_rollup, else the sum over smaps); None if gone."""
    for name in ("smaps_rollup", "smaps"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                total, seen = 0, False
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        seen = True
            if seen:
                return total
            if name == "smaps_rollup":
                return 0  # no mappings (a zombie)
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return None
    return None


def _alive(pid: int) -> bool:
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return False


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _alive(p)}
        if alive:
            time.sleep(0.05)
    return alive


def cleanup(rt: Runtime, cid: str, cwd: str, pids: Optional[set[int]] = None) -> None:
    """kill KILL, delete --force; then SIGKILL any of the container's processes left."""
    if pids is None:
        st = state(rt, cid, cwd)
        pids = container_pids(rt, st.get("pid") if st else None)
    if pids:
        _quiet(rt.cmd("kill", cid, "KILL"), cwd)
        _wait_gone(pids, 5.0)
    _quiet(rt.cmd("delete", "--force", cid), cwd)
    left = _wait_gone(pids | container_pids(rt, None), 2.0)
    for pid in left:  # processes of this benchmark's own containers only
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _wait_gone(left, 2.0)


# --------------------------------------------------------------------------
# The two measurements.  Each returns (samples, error, notes).


def measure_true(rt: Runtime, bundles: Bundles, repeat: int, timeout: float,
                 warmup: bool = True) -> tuple[list[float], Optional[str], str]:
    """Start-to-exit ms of `run` of the `true` bundle, repeat times (+1 untimed warm-up)."""
    samples: list[float] = []
    cwd = os.path.dirname(bundles.true)
    for i in range((1 if warmup else 0) + repeat):
        cid = new_id(rt)
        argv = rt.run_argv(bundles.true, cid, detach=False)
        try:
            t0 = time.perf_counter()
            rc, out, err = _run(argv, cwd, timeout)
            wall = time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            cleanup(rt, cid, cwd)
            return samples, f"timeout after {timeout:g}s", ""
        except OSError as e:
            return samples, f"cannot run {argv[0]}: {e}", ""
        cleanup(rt, cid, cwd, pids=set())
        if rc != 0:
            return samples, f"exit {rc}: {first_line(err) or first_line(out)}", ""
        if i >= (1 if warmup else 0):
            samples.append(wall * 1e3)
    return samples, None, ""


def measure_memory(rt: Runtime, bundles: Bundles, repeat: int, timeout: float,
                   settle: float) -> tuple[list[float], Optional[str], str]:
    """PSS MiB of a detached `sleep 1000` container's host processes, repeat times."""
    samples: list[float] = []
    notes = []
    cwd = os.path.dirname(bundles.sleep)
    for _ in range(repeat):
        cid = new_id(rt)
        argv = rt.run_argv(bundles.sleep, cid, detach=True)
        try:
            rc, out, err = _run(argv, cwd, timeout)
        except subprocess.TimeoutExpired:
            cleanup(rt, cid, cwd)
            return samples, f"timeout after {timeout:g}s starting the container", ""
        except OSError as e:
            return samples, f"cannot run {argv[0]}: {e}", ""
        if rc != 0:
            cleanup(rt, cid, cwd)
            return samples, f"exit {rc}: {first_line(err) or first_line(out)}", ""
        try:
            # Running, with `sleep` among the container's processes (`X ps ID`).
            deadline = time.monotonic() + min(timeout, 60.0)
            st = None
            while True:
                st = state(rt, cid, cwd)
                if st and st.get("status") == "running" and st.get("pid"):
                    try:
                        prc, pout, _ = _run(rt.cmd("ps", cid), cwd, 30.0)
                    except (OSError, subprocess.SubprocessError):
                        prc, pout = 1, ""
                    if prc == 0 and "sleep" in pout:
                        break
                if time.monotonic() > deadline:
                    status = st.get("status") if st else "no state"
                    return samples, f"container not running with sleep ({status})", ""
                time.sleep(0.05)
            time.sleep(settle)
            pids = container_pids(rt, int(st["pid"]))
            total = 0
            for pid in pids:
                kib = pss_kib(pid)
                if kib is not None:
                    total += kib
            samples.append(total / 1024.0)
            notes.append(f"{len(pids)} procs")
        finally:
            cleanup(rt, cid, cwd)
    return samples, None, ", ".join(sorted(set(notes)))


def sweep(rt: Runtime, cwd: str) -> None:
    """Kill and delete every container still listed under rt.root (an interrupted run)."""
    try:
        rc, out, _ = _run(rt.cmd("list", "-q"), cwd, 30.0)
    except (OSError, subprocess.SubprocessError):
        rc, out = 1, ""
    for cid in (out.split() if rc == 0 else []):
        cleanup(rt, cid, cwd)
    left = container_pids(rt, None)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def remove_state_dir(bundles: Optional[Bundles]) -> None:
    if bundles and bundles.state_dir:
        shutil.rmtree(bundles.state_dir, ignore_errors=True)
