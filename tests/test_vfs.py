"""The VFS, tmpfs, the overlay and directfs, without a sandbox."""
from __future__ import annotations

import os

import pytest

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.fs.hostfs import HostFS
from pysc.core.fs.overlay import OverlayFS
from pysc.core.fs.tmpfs import TmpFS
from pysc.core.task import Credentials
from pysc.core.vfs import VFS, Mount

ROOT = Credentials.for_ids(0, 0)


def errno_of(fn, *a, **kw):
    with pytest.raises(SyscallError) as e:
        fn(*a, **kw)
    return e.value.errno


@pytest.fixture
def tmpvfs():
    fs = TmpFS()
    return VFS(Mount(fs, fs.root, b"/", "none", "tmpfs"))


def test_walk_symlinks_dotdot_and_loops(tmpvfs):
    r = tmpvfs.root.inode
    a = r.mkdir(b"a", 0o755, ROOT)
    a.mkdir(b"b", 0o755, ROOT)
    r.symlink(b"lnk", b"a/b", ROOT)
    r.symlink(b"abs", b"/a", ROOT)
    r.symlink(b"loop", b"loop", ROOT)
    w = lambda p, follow=True: tmpvfs.walk(None, tmpvfs.root, p, follow)
    assert w(b"/lnk").path() == b"/a/b"
    assert w(b"/lnk/../b").path() == b"/a/b"
    assert w(b"/abs/b/../..").path() == b"/"
    assert w(b"/../../a").path() == b"/a"  # .. at the root stays there
    assert w(b"/lnk", follow=False).inode.is_symlink()
    assert errno_of(w, b"/loop") == C.ELOOP
    assert errno_of(w, b"/nope") == C.ENOENT
    assert w(b"/a/b/").path() == b"/a/b"
    r.create(b"f", 0o644, ROOT)
    assert errno_of(w, b"/f/") == C.ENOTDIR
    assert errno_of(w, b"/f/x") == C.ENOTDIR


def test_mount_crossing(tmpvfs):
    tmpvfs.root.inode.mkdir(b"mnt", 0o755, ROOT)
    other = TmpFS()
    other.root.create(b"inside", 0o644, ROOT)
    tmpvfs.mount(b"/mnt", Mount(other, other.root, b"/mnt", "x", "tmpfs"))
    d = tmpvfs.walk(None, tmpvfs.root, b"/mnt/inside")
    assert d.mount.fs is other
    assert tmpvfs.walk(None, d.parent, b"..").path() == b"/"


def test_tmpfs_rename_and_rmdir(tmpvfs):
    r = tmpvfs.root.inode
    d = r.mkdir(b"d", 0o755, ROOT)
    d.create(b"x", 0o644, ROOT)
    assert errno_of(r.rmdir, b"d") == C.ENOTEMPTY
    r.rename(b"d", r, b"e", 0)
    assert r.lookup(b"e") is d
    assert errno_of(r.rename, b"e", d, b"sub", 0) == C.EINVAL  # into itself
    f = d.lookup(b"x").open(C.O_RDWR, None, None)
    f.write(None, b"hello")
    assert f.pread(5, 0) == b"hello"
    assert d.lookup(b"x").stat().size == 5
    f.decref()


@pytest.fixture
def hostdir(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "file").write_bytes(b"lower data")
    (tmp_path / "gone").write_bytes(b"x")
    os.symlink("../../../../etc/passwd", tmp_path / "escape")
    os.symlink("/etc/shadow", tmp_path / "abs")
    # HostFS owns the fd it is given (its root inode closes it when collected),
    # so the fixture does not close it: a second close could hit a later test's fd.
    yield tmp_path, os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)


def test_hostfs_symlinks_stay_inside(hostdir):
    path, fd = hostdir
    fs = HostFS(fd, readonly=True)
    vfs = VFS(Mount(fs, fs.root, b"/", str(path), "9p", readonly=True))
    # Both links resolve inside the mount, where /etc does not exist.
    assert errno_of(vfs.walk, None, vfs.root, b"/escape") == C.ENOENT
    assert errno_of(vfs.walk, None, vfs.root, b"/abs") == C.ENOENT
    assert vfs.walk(None, vfs.root, b"/escape", follow=False).inode.readlink() == b"../../../../etc/passwd"
    f = vfs.walk(None, vfs.root, b"/dir/file").inode.open(C.O_RDONLY, None, None)
    assert f.pread(100, 0) == b"lower data"
    f.decref()
    assert errno_of(fs.root.create, b"new", 0o644, ROOT) == C.EROFS


def test_overlay_copy_up_whiteout_and_host_untouched(hostdir):
    path, fd = hostdir
    lower = HostFS(fd, readonly=True)
    ov = OverlayFS(lower.root)
    root = ov.root
    d = root.lookup(b"dir")
    f = d.lookup(b"file").open(C.O_WRONLY | C.O_APPEND, None, None)
    f.write(None, b" + upper")
    f.decref()
    g = d.lookup(b"file").open(C.O_RDONLY, None, None)
    assert g.pread(100, 0) == b"lower data + upper"
    g.decref()
    assert (path / "dir" / "file").read_bytes() == b"lower data"
    root.unlink(b"gone")
    assert errno_of(root.lookup, b"gone") == C.ENOENT
    assert b"gone" not in [n for n, _, _ in root.readdir()]
    assert (path / "gone").exists()
    root.create(b"gone", 0o600, ROOT)  # recreated over the whiteout
    assert root.lookup(b"gone").stat().size == 0
    root.mkdir(b"newdir", 0o755, ROOT)
    assert not (path / "newdir").exists()
    names = {n for n, _, _ in root.readdir()}
    assert {b"dir", b"gone", b"newdir", b"escape", b"abs"} <= names
