"""Unit tests of the synthetic /proc and /sys (core/fs/procfs.py, sysfs.py, synthetic.py)."""
from __future__ import annotations

import os
import time
import types
import uuid

import pytest

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.fdtable import FDTable
from pysc.core.file import File
from pysc.core.fs.procfs import ProcFS
from pysc.core.fs.sysfs import SysFS
from pysc.core.fs.tmpfs import TmpFS
from pysc.core.pidns import PIDNamespace
from pysc.core.task import Credentials, FSContext, Task, ThreadGroup
from pysc.core.vfs import VFS, Mount


class FakeKernel:
    """The attributes procfs uses, without a config or plugin manager."""
    release = "4.4.0"
    version = "#1 SMP Sun Jan 10 15:06:54 PST 2016"
    hostname = "sandbox-host"
    domainname = "(none)"

    def __init__(self):
        self.tasks = {}
        self.root_pidns = PIDNamespace(self)
        self.thread_groups = {}
        self.current = None
        self.vfs = None
        self.boot_mono = time.monotonic() - 12.5
        self.boot_wall = time.time() - 12.5

    def uptime(self):
        return time.monotonic() - self.boot_mono

    def clock_ticks(self):
        return int(self.uptime() * 100)


class AnonFile(File):
    """A file without inode or dentry (like a netstack socket)."""

    def path_for_proc(self):
        return b"socket:[4242]"


def errno_of(fn, *a):
    with pytest.raises(SyscallError) as ei:
        fn(*a)
    return ei.value.errno


@pytest.fixture
def sb():
    k = FakeKernel()
    rootfs = TmpFS(mode=0o755)
    creds = Credentials()
    for d in (b"proc", b"sys", b"tmp", b"bin"):
        rootfs.root.mkdir(d, 0o755, creds)
    vfs = VFS(Mount(rootfs, rootfs.root, b"/", "rootfs", "tmpfs"))
    k.vfs = vfs
    proc = ProcFS(k)
    vfs.mount(b"/proc", Mount(proc, proc.root, b"/proc", "proc", "proc", "nosuid,nodev,noexec"))
    sysfs = SysFS(k, ncpus=2)
    vfs.mount(b"/sys", Mount(sysfs, sysfs.root, b"/sys", "sysfs", "sysfs", readonly=True))

    def spawn(pid, parent=None, host=None, uid=0):
        tg = ThreadGroup(k, pid, parent)
        tg.comm = b"proc%d" % pid
        fs = FSContext(vfs.root, vfs.root)
        t = Task(k, tg, pid, Credentials.for_ids(uid, uid), fs, FDTable(),
                 types.SimpleNamespace(tid=host) if host else None)
        k.thread_groups[pid] = tg
        k.tasks[pid] = t
        return t

    init = spawn(1, host=os.getpid())  # backed by this very process on the host
    child = spawn(5, init.tg, uid=1000)
    thr = Task(k, child.tg, 6, child.creds.copy(), child.fs, child.fdtable, None)
    k.tasks[6] = thr
    k.current = init
    ns = types.SimpleNamespace(k=k, vfs=vfs, proc=proc, rootfs=rootfs, init=init, child=child,
                               thr=thr, spawn=spawn, creds=creds)
    return ns


def walk(sb, path, task=None, follow=True):
    task = task or sb.k.current
    return sb.vfs.walk(task, sb.vfs.root, path, follow)


def read(sb, path, task=None):
    task = task or sb.k.current
    d = walk(sb, path, task)
    f = d.inode.open(C.O_RDONLY, d, task)
    out = b""
    while True:
        b = f.read(task, 100)
        if not b:
            return out
        out += b


def listdir(sb, path):
    d = walk(sb, path)
    return sorted(n for n, _, _ in d.inode.readdir())


def status_dict(text: bytes):
    return {k: v.strip() for k, _, v in (l.partition(":") for l in text.decode().splitlines())}


def test_root_lists_only_sandbox_pids(sb):
    names = listdir(sb, b"/proc")
    pids = [n for n in names if n.isdigit()]
    assert pids == [b"1", b"5"]  # the thread 6 is not listed
    for n in (b"self", b"thread-self", b"meminfo", b"cpuinfo", b"version", b"uptime", b"sys",
              b"mounts", b"filesystems", b"loadavg", b"stat"):
        assert n in names
    # A thread's tid can still be looked up, as on Linux.
    assert walk(sb, b"/proc/6").inode.is_dir()
    assert errno_of(walk, sb, b"/proc/7") == C.ENOENT
    if os.getpid() not in (1, 5, 6):  # the host pid of the app is not a sandbox pid
        assert errno_of(walk, sb, b"/proc/%d" % os.getpid()) == C.ENOENT


def test_exited_process_disappears(sb):
    d = walk(sb, b"/proc/5/status")  # the dentry is cached by the VFS
    tg = sb.child.tg
    del sb.k.thread_groups[5]
    tg.exit_status = 0
    assert b"5" not in listdir(sb, b"/proc")
    assert errno_of(walk, sb, b"/proc/5/status") == C.ENOENT
    assert errno_of(d.inode.open, C.O_RDONLY, d, sb.init) == C.ENOENT
    assert not d.inode.revalidate()


def test_self_and_thread_self(sb):
    assert walk(sb, b"/proc/self", follow=False).inode.readlink() == b"1"
    sb.k.current = sb.thr
    assert walk(sb, b"/proc/self", follow=False).inode.readlink() == b"5"
    assert walk(sb, b"/proc/thread-self", follow=False).inode.readlink() == b"5/task/6"
    st = status_dict(read(sb, b"/proc/self/status"))
    assert st["Tgid"] == "5" and st["Pid"] == "5"
    st = status_dict(read(sb, b"/proc/thread-self/status"))
    assert st["Tgid"] == "5" and st["Pid"] == "6"
    assert walk(sb, b"/proc/self").inode is not None
    assert walk(sb, b"/proc/mounts", follow=False).inode.readlink() == b"self/mounts"


def test_status_fields(sb):
    st = status_dict(read(sb, b"/proc/5/status"))
    assert st["Name"] == "proc5"
    assert st["PPid"] == "1"
    assert st["TracerPid"] == "0"
    assert st["Uid"].split() == ["1000"] * 4
    assert st["Gid"].split() == ["1000"] * 4
    assert st["Threads"] == "2"
    assert st["NSpid"] == "5" and st["NStgid"] == "5" and st["NSsid"] == "1"
    assert st["Seccomp"] == "0"
    assert st["CapEff"] == "0000000000000000"
    assert st["Umask"] == "0022"
    assert st["FDSize"] == "64"
    st1 = status_dict(read(sb, b"/proc/1/status"))
    assert st1["PPid"] == "0"
    assert st1["CapEff"] == "000001ffffffffff"
    assert st1["State"].startswith("R")
    assert "VmRSS" in st1  # taken from the host process behind pid 1
    assert str(os.getpid()) not in (st1["Pid"], st1["Tgid"], st1["PPid"])
    # A parked task sleeps.
    sb.child.parked = object()
    assert status_dict(read(sb, b"/proc/5/status"))["State"] == "S (sleeping)"


def test_stat_replaces_host_ids(sb):
    data = read(sb, b"/proc/1/stat").decode()
    head, _, rest = data.rpartition(")")
    assert head == "1 (proc1"
    f = ["", "1", "(proc1)"] + rest.split()
    assert len(f) == 53
    assert f[4] == "0" and f[5] == "1" and f[6] == "1" and f[7] == "0"
    assert f[20] == "1"
    host = open(f"/proc/{os.getpid()}/stat").read().rpartition(")")[2].split()
    assert f[23] != "0" and abs(int(f[23]) - int(host[20])) < 1 << 30  # vsize from the host
    t = read(sb, b"/proc/5/task/6/stat").decode()
    assert t.startswith("6 (proc5) ") and t.split()[3] == "1"


def test_task_dir(sb):
    assert listdir(sb, b"/proc/5/task") == [b"5", b"6"]
    assert read(sb, b"/proc/5/task/6/comm") == b"proc5\n"
    assert errno_of(walk, sb, b"/proc/5/task/1") == C.ENOENT
    assert b"task" not in listdir(sb, b"/proc/5/task/6")


def test_fd_links(sb):
    t = sb.init
    f = sb.rootfs.root.create(b"data", 0o644, sb.creds)
    d = walk(sb, b"/data")
    memf = f.open(C.O_RDWR, d, t)
    memf.write(t, b"hello")
    fd = t.fdtable.install(memf)
    sock = AnonFile(C.O_RDWR)
    sfd = t.fdtable.install(sock, cloexec=True)
    names = listdir(sb, b"/proc/self/fd")
    assert names == [b"%d" % fd, b"%d" % sfd]
    link = walk(sb, b"/proc/self/fd/%d" % fd, follow=False)
    assert link.inode.readlink() == b"/data"
    assert link.inode.stat().mode & 0o777 == 0o700
    assert walk(sb, b"/proc/self/fd/%d" % fd) is d
    assert read(sb, b"/proc/self/fd/%d" % fd) == b"hello"
    assert walk(sb, b"/proc/self/fd/%d" % sfd, follow=False).inode.readlink() == b"socket:[4242]"
    sd = walk(sb, b"/proc/self/fd/%d" % sfd)
    assert sd.path() == b"socket:[4242]"
    assert errno_of(sd.inode.open, C.O_RDONLY, sd, t) == C.ENXIO
    info = read(sb, b"/proc/self/fdinfo/%d" % fd).decode()
    assert info.startswith("pos:\t5\nflags:\t02\n")
    assert f"ino:\t{f.stat().ino}\n" in info
    info = read(sb, b"/proc/self/fdinfo/%d" % sfd).decode()
    assert "flags:\t02000002\n" in info
    # Closing the fd makes a cached link dentry fail.
    t.fdtable.close(fd)
    assert errno_of(walk, sb, b"/proc/self/fd/%d" % fd) == C.ENOENT
    # /dev/stdin-like paths through a symlink to /proc/self/fd/N work too.
    assert errno_of(walk, sb, b"/proc/5/fd/0") == C.ENOENT


def test_fd_link_of_inode_without_dentry(sb):
    """A file with an inode but no name (a pipe) is reopened through its inode."""
    from pysc.core.fs.synthetic import SynthFS
    fs = SynthFS()
    ino = fs.file(("p",), b"pipe-ish")
    pf = File(C.O_RDONLY, None, ino)
    pf.path_for_proc = lambda: b"pipe:[77]"
    fd = sb.init.fdtable.install(pf)
    d = walk(sb, b"/proc/1/fd/%d" % fd)
    assert d.inode is ino and d.path() == b"pipe:[77]"
    assert d.inode.open(C.O_RDONLY, d, sb.init).read(sb.init, 100) == b"pipe-ish"


def test_magic_links_exe_cwd_root(sb):
    sb.rootfs.root.lookup(b"bin").create(b"sh", 0o755, sb.creds)
    exe = walk(sb, b"/bin/sh")
    sb.child.tg.exe = exe
    sb.child.fs.cwd = walk(sb, b"/tmp")
    assert walk(sb, b"/proc/5/exe", follow=False).inode.readlink() == b"/bin/sh"
    assert walk(sb, b"/proc/5/exe") is exe
    assert walk(sb, b"/proc/5/cwd", follow=False).inode.readlink() == b"/tmp"
    assert walk(sb, b"/proc/5/cwd") is sb.child.fs.cwd
    assert walk(sb, b"/proc/5/root", follow=False).inode.readlink() == b"/"
    assert errno_of(walk, sb, b"/proc/1/exe") == C.ENOENT  # no exe recorded


def test_read_only_and_writable_files(sb):
    t = sb.init
    d = walk(sb, b"/proc/1/status")
    assert errno_of(d.inode.open, C.O_WRONLY, d, t) == C.EACCES
    assert errno_of(d.inode.open, C.O_RDWR, d, t) == C.EACCES
    d = walk(sb, b"/proc/sys/kernel/hostname")
    assert errno_of(d.inode.open, C.O_WRONLY, d, t) == C.EACCES
    d = walk(sb, b"/proc/1")
    assert errno_of(d.inode.open, C.O_WRONLY, d, t) == C.EISDIR
    assert errno_of(d.inode.mkdir, b"x", 0o755, sb.creds) == C.EACCES

    d = walk(sb, b"/proc/5/comm")
    f = d.inode.open(C.O_WRONLY | C.O_TRUNC, d, t)
    assert f.write(t, b"renamed-process-name\n") == 21
    assert sb.child.tg.comm == b"renamed-process"
    assert read(sb, b"/proc/5/comm") == b"renamed-process\n"

    assert read(sb, b"/proc/5/oom_score_adj") == b"0\n"
    d = walk(sb, b"/proc/5/oom_score_adj")
    f = d.inode.open(C.O_WRONLY, d, t)
    assert f.write(t, b"500\n") == 4
    assert read(sb, b"/proc/5/oom_score_adj") == b"500\n"
    assert errno_of(f.write, t, b"abc") == C.EINVAL
    assert errno_of(f.write, t, b"5000") == C.EINVAL


def test_snapshot_file_is_seekable(sb):
    t = sb.init
    d = walk(sb, b"/proc/version")
    f = d.inode.open(C.O_RDONLY, d, t)
    full = b"Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n"
    assert f.pread(5, 6) == full[6:11]
    assert f.read(t, 5) == b"Linux"
    assert f.seek(0, C.SEEK_SET) == 0
    assert f.read(t, 1000) == full
    assert f.read(t, 1000) == b""
    assert f.seek(-5, C.SEEK_END) == len(full) - 5
    assert f.poll() & C.POLLIN
    st = d.inode.stat()
    assert st.mode == C.S_IFREG | 0o444 and st.size == 0


def test_stable_inode_numbers(sb):
    a = walk(sb, b"/proc/1/status").inode.stat().ino
    sb.vfs.root.children.clear()  # drop the dentry cache: inodes are rebuilt
    b = walk(sb, b"/proc/1/status").inode.stat().ino
    c = walk(sb, b"/proc/5/status").inode.stat().ino
    assert a == b and a != c
    assert walk(sb, b"/proc/1").inode.stat().ino == walk(sb, b"/proc/1").inode.stat().ino
    ents = dict((n, i) for n, i, _ in walk(sb, b"/proc/1").inode.readdir())
    assert ents[b"status"] == a


def test_per_process_files(sb):
    assert read(sb, b"/proc/1/comm") == b"proc1\n"
    assert read(sb, b"/proc/1/cgroup") == b"0::/\n"
    assert read(sb, b"/proc/1/loginuid") == b"4294967295"
    with open("/proc/self/cmdline", "rb") as fh:
        assert read(sb, b"/proc/1/cmdline") == fh.read()
    sb.child.tg.argv = [b"/bin/sh", b"-c", b"true"]
    assert read(sb, b"/proc/5/cmdline") == b"/bin/sh\0-c\0true\0"
    assert read(sb, b"/proc/5/environ") == b""
    maps = read(sb, b"/proc/1/maps")
    assert b"r-xp" in maps or b"r--p" in maps
    limits = read(sb, b"/proc/1/limits").decode().splitlines()
    assert limits[0].split() == ["Limit", "Soft", "Limit", "Hard", "Limit", "Units"]
    assert limits[0].startswith("Limit                     Soft Limit           Hard Limit ")
    nofile = [l for l in limits if l.startswith("Max open files")][0]
    assert nofile.split()[3:] == ["1024", "1048576", "files"]
    stack = [l for l in limits if l.startswith("Max stack size")][0]
    assert stack.split()[3:] == ["8388608", "unlimited", "bytes"]
    mounts = read(sb, b"/proc/1/mounts").decode().splitlines()
    assert mounts[0] == "rootfs / tmpfs rw 0 0"
    assert "proc /proc proc rw,nosuid,nodev,noexec 0 0" in mounts
    assert "sysfs /sys sysfs ro 0 0" in mounts
    assert read(sb, b"/proc/mounts") == read(sb, b"/proc/1/mounts")
    mi = read(sb, b"/proc/1/mountinfo").decode().splitlines()
    root_id = mi[0].split()[0]
    proc_line = [l for l in mi if " /proc " in l][0].split()
    assert proc_line[1] == root_id and proc_line[4] == "/proc" and "-" in proc_line


def test_global_files(sb):
    assert read(sb, b"/proc/version") == b"Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n"
    up = float(read(sb, b"/proc/uptime").split()[0])
    assert 12 <= up < 60
    fss = read(sb, b"/proc/filesystems").decode()
    assert "nodev\tproc\n" in fss and "nodev\ttmpfs\n" in fss
    assert b"MemTotal:" in read(sb, b"/proc/meminfo")
    assert b"processor" in read(sb, b"/proc/cpuinfo")
    la = read(sb, b"/proc/loadavg").split()
    assert la[3].endswith(b"/3") and la[4] == b"5"
    btime = [l for l in read(sb, b"/proc/stat").splitlines() if l.startswith(b"btime")][0]
    assert abs(int(btime.split()[1]) - sb.k.boot_wall) <= 1
    sk = b"/proc/sys/kernel/"
    assert read(sb, sk + b"hostname") == b"sandbox-host\n"
    assert read(sb, sk + b"osrelease") == b"4.4.0\n"
    assert read(sb, sk + b"ostype") == b"Linux\n"
    assert read(sb, sk + b"cap_last_cap") == b"40\n"
    assert read(sb, sk + b"yama/ptrace_scope") in (b"0\n", b"1\n")
    bid = read(sb, sk + b"random/boot_id")
    assert bid == read(sb, sk + b"random/boot_id") and len(bid) == 37
    assert read(sb, sk + b"random/uuid") != read(sb, sk + b"random/uuid")
    for text in (bid, read(sb, sk + b"random/uuid")):
        u = uuid.UUID(text.strip().decode())
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == text.strip().decode()
    assert read(sb, b"/proc/sys/vm/overcommit_memory") == b"0\n"
    assert read(sb, b"/proc/sys/fs/nr_open") == b"1048576\n"
    assert read(sb, b"/proc/sys/net/core/somaxconn") == b"4096\n"
    for p in (b"/proc/sys/kernel/pid_max", b"/proc/sys/kernel/threads-max",
              b"/proc/sys/vm/max_map_count", b"/proc/sys/vm/mmap_min_addr",
              b"/proc/sys/fs/file-max", b"/proc/sys/fs/pipe-max-size",
              b"/proc/sys/kernel/shmmax", b"/proc/sys/kernel/shmall",
              b"/proc/sys/kernel/ngroups_max", b"/proc/sys/kernel/domainname",
              b"/proc/sys/kernel/version"):
        assert read(sb, p).endswith(b"\n")


def test_no_host_pids_leak(sb):
    hp = str(os.getpid()).encode()
    for p in (b"/proc/1/stat", b"/proc/1/status", b"/proc/loadavg"):
        data = read(sb, p)
        fields = data.replace(b"\t", b" ").replace(b"\n", b" ").replace(b"/", b" ").split(b" ")
        if sb.init.ctx.tid not in (1, 5, 6):
            assert hp not in fields, p


def test_procfs_statfs(sb):
    assert sb.proc.statfs()[0] == 0x9FA0


def test_sysfs(sb):
    assert read(sb, b"/sys/devices/system/cpu/online") == b"0-1\n"
    assert read(sb, b"/sys/devices/system/cpu/possible") == b"0-1\n"
    assert read(sb, b"/sys/devices/system/cpu/present") == b"0-1\n"
    names = listdir(sb, b"/sys/devices/system/cpu")
    assert b"cpu0" in names and b"cpu1" in names and b"cpu2" not in names
    assert walk(sb, b"/sys/fs/cgroup").inode.is_dir()
    assert listdir(sb, b"/sys/fs/cgroup") == []
    assert read(sb, b"/sys/kernel/mm/transparent_hugepage/enabled") == b"always [madvise] never\n"
    st = walk(sb, b"/sys/devices/system/cpu/online").inode.stat()
    assert st.size == 4096 and st.mode == C.S_IFREG | 0o444
    assert SysFS(None, ncpus=1).root.lookup(b"devices").lookup(b"system").lookup(b"cpu") \
        .lookup(b"online").generate() == b"0\n"
