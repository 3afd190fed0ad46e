"""Unit tests of /dev (core/fs/devfs.py)."""
from __future__ import annotations

import os
import time
import types

import pytest

from pysc.core.abi import consts as C
from pysc.core.abi.structs import makedev
from pysc.core.errors import SyscallError
from pysc.core.fdtable import FDTable
from pysc.core.file import HostFDFile
from pysc.core.fs import devfs
from pysc.core.fs.devfs import DEVICES, make_devfs, open_device
from pysc.core.fs.procfs import ProcFS
from pysc.core.fs.tmpfs import TmpFS
from pysc.core.pidns import PIDNamespace
from pysc.core.task import Credentials, FSContext, Task, ThreadGroup
from pysc.core.vfs import VFS, Mount


class FakeKernel:
    release = "4.4.0"
    version = "#1 SMP Sun Jan 10 15:06:54 PST 2016"
    hostname = "pysc"

    def __init__(self):
        self.tasks, self.thread_groups, self.current, self.vfs = {}, {}, None, None
        self.objects = {}
        self.root_pidns = PIDNamespace(self)
        self.t0 = time.monotonic()

    def uptime(self):
        return time.monotonic() - self.t0

    def clock_ticks(self):
        return int(self.uptime() * 100)


def errno_of(fn, *a):
    with pytest.raises(SyscallError) as ei:
        fn(*a)
    return ei.value.errno


@pytest.fixture
def sb():
    k = FakeKernel()
    rootfs = TmpFS(mode=0o755)
    creds = Credentials()
    for d in (b"proc", b"dev"):
        rootfs.root.mkdir(d, 0o755, creds)
    vfs = VFS(Mount(rootfs, rootfs.root, b"/", "rootfs", "tmpfs"))
    k.vfs = vfs
    dfs, droot = make_devfs(k)
    vfs.mount(b"/dev", Mount(dfs, droot, b"/dev", "tmpfs", "tmpfs", "mode=755"))
    proc = ProcFS(k)
    vfs.mount(b"/proc", Mount(proc, proc.root, b"/proc", "proc", "proc"))
    tg = ThreadGroup(k, 1, None)
    t = Task(k, tg, 1, Credentials(), FSContext(vfs.root, vfs.root), FDTable(), None)
    k.thread_groups[1], k.tasks[1], k.current = tg, t, t
    return types.SimpleNamespace(k=k, vfs=vfs, t=t, creds=creds)


def walk(sb, path, follow=True):
    return sb.vfs.walk(sb.t, sb.vfs.root, path, follow)


def open_(sb, path, flags=C.O_RDWR):
    d = walk(sb, path)
    return d.inode.open(flags, d, sb.t)


def test_nodes(sb):
    assert DEVICES == (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                       ("urandom", 1, 9), ("tty", 5, 0))
    for name, major, minor in DEVICES:
        st = walk(sb, b"/dev/" + name.encode()).inode.stat()
        assert st.mode == C.S_IFCHR | 0o666, name
        assert st.rdev == makedev(major, minor), name
    names = {n for n, _, _ in walk(sb, b"/dev").inode.readdir()}
    assert {b"fd", b"stdin", b"stdout", b"stderr", b"ptmx", b"shm", b"pts", b"mqueue"} <= names
    assert walk(sb, b"/dev/shm").inode.stat().mode == C.S_IFDIR | 0o1777
    assert walk(sb, b"/dev/pts").inode.is_dir()
    assert walk(sb, b"/dev/mqueue").inode.is_dir()


def test_symlinks(sb):
    links = {b"fd": b"/proc/self/fd", b"stdin": b"/proc/self/fd/0",
             b"stdout": b"/proc/self/fd/1", b"stderr": b"/proc/self/fd/2", b"ptmx": b"pts/ptmx"}
    for name, target in links.items():
        assert walk(sb, b"/dev/" + name, follow=False).inode.readlink() == target
    # /dev/stdout follows through /proc/self/fd/1 to the file on fd 1.
    null = open_(sb, b"/dev/null")
    sb.t.fdtable.install_at(1, null)
    assert walk(sb, b"/dev/stdout") is null.dentry
    assert walk(sb, b"/dev/fd").inode.is_dir()
    assert errno_of(walk, sb, b"/dev/stdin") == C.ENOENT


def test_null(sb):
    f = open_(sb, b"/dev/null")
    assert f.read(sb.t, 100) == b""
    assert f.write(sb.t, b"x" * 1000) == 1000
    assert f.pread(10, 5) == b""
    assert f.seek(100, C.SEEK_SET) == 0
    assert f.poll() & (C.POLLIN | C.POLLOUT) == C.POLLIN | C.POLLOUT
    assert f.stat().rdev == makedev(1, 3)
    assert f.path_for_proc() == b"/dev/null"


def test_zero(sb):
    f = open_(sb, b"/dev/zero")
    assert f.read(sb.t, 4096) == bytes(4096)
    assert f.write(sb.t, b"abc") == 3
    assert len(f.read(sb.t, 1 << 30)) <= devfs.MAX_CHUNK
    hfd = f.host_fd()
    assert hfd is None or hfd >= 0
    f.decref()


def test_full(sb):
    f = open_(sb, b"/dev/full")
    assert f.read(sb.t, 10) == bytes(10)
    assert errno_of(f.write, sb.t, b"x") == C.ENOSPC
    f.decref()


def test_random(sb):
    for p in (b"/dev/random", b"/dev/urandom"):
        f = open_(sb, p)
        a, b = f.read(sb.t, 32), f.read(sb.t, 32)
        assert len(a) == 32 and a != b
        assert f.write(sb.t, b"entropy") == 7
        assert f.poll() & C.POLLIN


def test_access_mode_enforced(sb):
    f = open_(sb, b"/dev/null", C.O_RDONLY)
    assert errno_of(f.write, sb.t, b"x") == C.EBADF
    f = open_(sb, b"/dev/zero", C.O_WRONLY)
    assert errno_of(f.read, sb.t, 1) == C.EBADF


def test_unknown_device(sb):
    assert errno_of(open_device, makedev(8, 0), C.O_RDONLY, None, sb.t) == C.ENXIO
    assert errno_of(open_device, makedev(1, 1), C.O_RDONLY, None, sb.t) == C.ENXIO


def test_tty_without_terminal(sb):
    assert errno_of(open_, sb, b"/dev/tty") == C.ENXIO
    r, w = os.pipe()
    sb.t.fdtable.install_at(0, HostFDFile(r, C.O_RDONLY))
    sb.t.fdtable.install_at(1, HostFDFile(w, C.O_WRONLY))
    assert errno_of(open_, sb, b"/dev/tty") == C.ENXIO
    sb.t.fdtable.close_all()


def test_tty_with_terminal(sb):
    try:
        master, slave = os.openpty()
    except OSError:
        pytest.skip("no pty available")
    try:
        sb.t.fdtable.install_at(2, HostFDFile(slave, C.O_RDWR))
        f = open_(sb, b"/dev/tty")
        assert isinstance(f, HostFDFile) and os.isatty(f.fd)
        assert f.stat().rdev == makedev(5, 0)
        assert f.path_for_proc() == b"/dev/tty"
        f.decref()
    finally:
        sb.t.fdtable.close_all()
        os.close(master)


def test_o_path_does_not_open_driver(sb):
    f = open_(sb, b"/dev/tty", C.O_PATH)
    assert not f.readable and f.stat().rdev == makedev(5, 0)
