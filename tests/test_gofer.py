"""The gofer: a real gofer process over a temporary tree, driven by messages
and through GoferFS; confinement; fd donation; a gofer that dies."""
import errno
import fcntl
import gc
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
import zmq

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.task import Credentials
from pysc.fsproxy import client as gclient
from pysc.fsproxy import protocol as P
from pysc.fsproxy.client import GoferClient, GoferFS, GoferInode
from pysc.fsproxy.donation import recv_donation
from pysc.fsproxy.gofer import GoferError, start_gofer

ROOT_CREDS = Credentials.for_ids(0, 0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("gofer")
    root = base / "root"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "f").write_bytes(b"hello\n")
    (root / "sub" / "deeper" / "g").write_bytes(b"g" * 100)
    os.symlink("../../../../etc/shadow", root / "escape")
    os.symlink("/etc/passwd", root / "abs")
    os.symlink("/etc", root / "dirlink")
    (base / "outside").mkdir()
    (base / "outside" / "secret").write_bytes(b"secret")
    os.chmod(base / "outside" / "secret", 0o600)
    os.symlink("../outside/secret", root / "out")
    ro = base / "ro"
    ro.mkdir()
    (ro / "file").write_bytes(b"ro data")
    work = base / "w"
    work.mkdir()
    return base


@pytest.fixture(scope="module")
def gofer(tree):
    g = start_gofer([(str(tree / "root"), False), (str(tree / "ro"), True)], str(tree / "w"),
                    str(tree / "w" / "gofer.log"))
    yield g
    g.stop(close_fds=True)


@pytest.fixture(scope="module")
def cl(gofer):
    c = gofer.client(timeout=5)
    yield c
    c.close()


@pytest.fixture()
def root(cl):
    r = cl.call(P.Attach("0"))
    yield r.handle
    cl.call(P.Close((r.handle,)))


def err(fn, *a):
    with pytest.raises(SyscallError) as ei:
        fn(*a)
    return ei.value.errno


# ------------------------------------------------------------------ messages

def test_attach(cl, tree, gofer):
    r = cl.call(P.Attach("0"))
    assert stat.S_ISDIR(r.stat[0]) and r.stat[1] == os.stat(tree / "root").st_ino
    assert not r.readonly
    assert {"Walk", "Read", "Write", "Create", "Close", "Rename", "Setattr"} <= set(r.messages)
    r2 = cl.call(P.Attach(str(tree / "root")))
    assert r2.stat[1] == r.stat[1] and r2.handle != r.handle
    assert cl.call(P.Attach("1")).readonly
    assert err(cl.call, P.Attach("/nonexistent")) == errno.ENOENT
    assert gofer.alive()
    cl.call(P.Close((r.handle, r2.handle)))


def test_walk_several_components(cl, root, tree):
    r = cl.call(P.Walk(root, (b"sub", b"deeper", b"g")))
    assert r.errno == 0 and len(r.entries) == 3
    kinds = [stat.S_IFMT(st[0]) for _, st in r.entries]
    assert kinds == [stat.S_IFDIR, stat.S_IFDIR, stat.S_IFREG]
    assert r.entries[2][1][1] == os.stat(tree / "root/sub/deeper/g").st_ino
    assert r.entries[2][1][7] == 100
    st = cl.call(P.Stat(r.entries[2][0])).stat
    assert st[1] == r.entries[2][1][1]
    cl.call(P.Close(tuple(h for h, _ in r.entries)))


def test_walk_missing_and_notdir(cl, root):
    r = cl.call(P.Walk(root, (b"sub", b"nope", b"x")))
    assert len(r.entries) == 1 and r.errno == errno.ENOENT
    r2 = cl.call(P.Walk(root, (b"sub", b"f", b"x")))
    assert len(r2.entries) == 2 and r2.errno == errno.ENOTDIR
    cl.call(P.Close(tuple(h for h, _ in r.entries + r2.entries)))


@pytest.mark.parametrize("names", [(b"..",), (b".",), (b"a/b",), (b"",), (b"sub", b"..", b".."),
                                   (b"/etc",), (b"x\0",)])
def test_walk_refuses_non_components(cl, root, names):
    r = cl.call(P.Walk(root, names))
    assert r.errno == errno.EINVAL
    assert all(stat.S_ISDIR(st[0]) for _, st in r.entries)
    cl.call(P.Close(tuple(h for h, _ in r.entries)))


@pytest.mark.parametrize("link,target", [(b"escape", b"../../../../etc/shadow"),
                                         (b"abs", b"/etc/passwd"), (b"dirlink", b"/etc"),
                                         (b"out", b"../outside/secret")])
def test_symlinks_are_never_followed(cl, root, link, target, tree):
    r = cl.call(P.Walk(root, (link, b"passwd", b"x")))
    assert len(r.entries) == 1 and r.errno == 0  # stopped at the symlink
    h, st = r.entries[0]
    assert stat.S_ISLNK(st[0])
    assert st[1] == os.lstat(tree / "root" / link.decode()).st_ino
    assert cl.call(P.Readlink(h)).target == target
    assert stat.S_ISLNK(cl.call(P.Stat(h)).stat[0])
    # Opening it, walking through it, reading it as a directory: refused.
    assert err(cl.call, P.Open(h, os.O_RDONLY)) == errno.ELOOP
    assert err(cl.call, P.Open(h, os.O_RDWR | os.O_TRUNC)) == errno.ELOOP
    w = cl.call(P.Walk(h, (b"passwd",)))
    assert w.entries == () and w.errno == errno.ENOTDIR
    assert err(cl.call, P.Readdir(h)) == errno.ENOTDIR
    assert err(cl.call, P.Create(h, b"x", os.O_RDWR, 0o644)) == errno.ENOTDIR
    # Creating over it never writes through it.
    assert err(cl.call, P.Create(root, link, os.O_RDWR, 0o644)) == errno.EEXIST
    assert err(cl.call, P.Mkdir(root, link, 0o755)) == errno.EEXIST
    # Attributes of the link handle are the link's own.
    assert err(cl.call, P.Setattr(h, mode=0o777)) == errno.EOPNOTSUPP
    assert err(cl.call, P.Setattr(h, size=0)) == errno.EINVAL
    cl.call(P.Close((h,)))
    secret = tree / "outside" / "secret"
    assert secret.read_bytes() == b"secret" and stat.S_IMODE(os.stat(secret).st_mode) == 0o600


def test_symlink_times_and_owner_stay_on_the_link(cl, root, tree):
    secret = tree / "outside" / "secret"
    before = os.stat(secret)
    h, _ = cl.call(P.Walk(root, (b"out",))).entries[0]
    st = cl.call(P.Setattr(h, uid=4321, gid=4321, atime_ns=10**9, mtime_ns=2 * 10**9)).stat
    assert st[11] == 2 * 10**9 and st[4] == 4321
    after = os.stat(secret)
    assert (after.st_mtime_ns, after.st_uid) == (before.st_mtime_ns, before.st_uid)
    assert os.lstat(tree / "root" / "out").st_mtime_ns == 2 * 10**9
    cl.call(P.Close((h,)))


def test_read_write_create(cl, root, tree):
    r = cl.call(P.Create(root, b"new", os.O_RDWR, 0o640, 1234, 5678))
    path = tree / "root" / "new"
    hst = os.stat(path)
    assert stat.S_IMODE(hst.st_mode) == 0o640 and (hst.st_uid, hst.st_gid) == (1234, 5678)
    assert r.stat[1] == hst.st_ino
    assert cl.call(P.Write(r.fh, 0, b"abcdef")).count == 6
    assert cl.call(P.Read(r.fh, 2, 100)).data == b"cdef"
    assert cl.call(P.WriteV(r.fh, ((6, b"gh"), (8, b"ij")))).counts == (2, 2)
    assert cl.call(P.ReadV(r.fh, ((0, 3), (8, 10), (50, 5)))).chunks == (b"abc", b"ij", b"")
    assert cl.call(P.Stat(r.handle)).stat[7] == 10
    assert path.read_bytes() == b"abcdefghij"
    cl.call(P.Fsync(r.fh, False))
    cl.call(P.Fsync(r.fh, True))
    # Exclusive: an existing name fails and is left alone.
    assert err(cl.call, P.Create(root, b"new", os.O_RDWR, 0o600)) == errno.EEXIST
    assert path.read_bytes() == b"abcdefghij" and stat.S_IMODE(os.stat(path).st_mode) == 0o640
    # Open an existing file, read-only: writes fail.
    o = cl.call(P.Open(r.handle, os.O_RDONLY))
    assert cl.call(P.Read(o.fh, 0, 3)).data == b"abc"
    assert err(cl.call, P.Write(o.fh, 0, b"x")) == errno.EBADF
    # A path handle is not an open file.
    assert err(cl.call, P.Read(r.handle, 0, 3)) == errno.EBADF
    # O_TRUNC
    t = cl.call(P.Open(r.handle, os.O_WRONLY | os.O_TRUNC))
    assert t.stat[7] == 0 and path.read_bytes() == b""
    cl.call(P.Close((r.handle, r.fh, o.fh, t.fh)))
    assert err(cl.call, P.Read(r.fh, 0, 1)) == errno.EBADF
    cl.call(P.Unlink(root, b"new"))
    assert not path.exists()


def test_batch(cl, root):
    r = cl.call(P.Batch((P.Walk(root, (b"sub", b"f")), P.Stat(root), P.Walk(root, (b"nope",)))))
    assert [type(x) for x in r.replies] == [P.WalkReply, P.StatReply, P.WalkReply]
    hs = tuple(h for h, _ in r.replies[0].entries)
    r2 = cl.call(P.Batch((P.Open(hs[1], os.O_RDONLY), P.Stat(99999), P.Stat(root))))
    assert type(r2.replies[-1]) is P.ErrorReply and r2.replies[-1].errno == errno.EBADF
    assert len(r2.replies) == 2  # stopped at the failure
    cl.call(P.Close(hs + (r2.replies[0].fh,)))


def test_mkdir_readdir_rename_unlink(cl, root, tree):
    d = cl.call(P.Mkdir(root, b"newdir", 0o700, 42, 43))
    assert stat.S_ISDIR(d.stat[0]) and stat.S_IMODE(d.stat[0]) == 0o700 and d.stat[4] == 42
    f = cl.call(P.Create(d.handle, b"x", os.O_WRONLY, 0o600))
    ents = {n: (ino, dt) for n, ino, dt in cl.call(P.Readdir(root)).entries}
    assert ents[b"sub"][1] == C.DT_DIR and ents[b"escape"][1] == C.DT_LNK
    assert ents[b"newdir"] == (d.stat[1], C.DT_DIR)
    assert b"." not in ents and b".." not in ents
    assert cl.call(P.Readdir(d.handle)).entries == ((b"x", f.stat[1], C.DT_REG),)
    sub = cl.call(P.Walk(root, (b"sub",))).entries[0][0]
    cl.call(P.Rename(d.handle, b"x", sub, b"moved"))
    assert (tree / "root/sub/moved").exists() and not (tree / "root/newdir/x").exists()
    # the handle follows the inode, not the name
    assert cl.call(P.Stat(f.handle)).stat[1] == f.stat[1]
    assert err(cl.call, P.Rename(sub, b"moved", root, b"sub", C.RENAME_NOREPLACE)) == errno.EEXIST
    assert err(cl.call, P.Unlink(root, b"newdir", 0)) in (errno.EISDIR, errno.EPERM)
    assert err(cl.call, P.Unlink(root, b"nope", 0)) == errno.ENOENT
    cl.call(P.Unlink(sub, b"moved", 0))
    cl.call(P.Unlink(root, b"newdir", C.AT_REMOVEDIR))
    assert not (tree / "root/newdir").exists() and not (tree / "root/sub/moved").exists()
    cl.call(P.Close((d.handle, f.handle, f.fh, sub)))


def test_symlink_readlink_link_mknod(cl, root, tree):
    s = cl.call(P.Symlink(root, b"ln", b"sub/f", 7, 8))
    assert stat.S_ISLNK(s.stat[0]) and os.readlink(tree / "root/ln") == "sub/f"
    assert os.lstat(tree / "root/ln").st_uid == 7
    assert cl.call(P.Readlink(s.handle)).target == b"sub/f"
    f = cl.call(P.Walk(root, (b"sub", b"f"))).entries
    assert err(cl.call, P.Readlink(f[1][0])) == errno.EINVAL
    lk = cl.call(P.Link(root, b"hard", f[1][0]))
    assert lk.stat[1] == f[1][1][1] and lk.stat[3] == 2
    assert err(cl.call, P.Link(root, b"hard2", f[0][0])) == errno.EPERM  # a directory
    n = cl.call(P.Mknod(root, b"fifo", stat.S_IFIFO | 0o644))
    assert stat.S_ISFIFO(os.lstat(tree / "root/fifo").st_mode)
    assert err(cl.call, P.Open(n.handle, os.O_RDONLY)) == errno.EPERM  # never blocks the gofer
    assert err(cl.call, P.Mknod(root, b"dev", stat.S_IFCHR | 0o644, os.makedev(1, 3))) == errno.EPERM
    assert not (tree / "root/dev").exists()
    for name in (b"ln", b"hard", b"fifo"):
        cl.call(P.Unlink(root, name))
    cl.call(P.Close((s.handle, lk.handle, n.handle) + tuple(h for h, _ in f)))


def test_setattr_statfs_xattr(cl, root, tree):
    c = cl.call(P.Create(root, b"attr", os.O_RDWR, 0o644))
    cl.call(P.Write(c.fh, 0, b"0123456789"))
    st = cl.call(P.Setattr(c.handle, mode=0o600, size=4, atime_ns=5 * 10**9, mtime_ns=6 * 10**9)).stat
    assert stat.S_IMODE(st[0]) == 0o600 and st[7] == 4 and st[10] == 5 * 10**9 and st[11] == 6 * 10**9
    st = cl.call(P.Setattr(c.handle, mtime_ns=7 * 10**9)).stat  # atime left alone
    assert st[10] == 5 * 10**9 and st[11] == 7 * 10**9
    assert (tree / "root/attr").read_bytes() == b"0123"
    # Validation happens before any change: a failed setattr changes nothing.
    sub = cl.call(P.Walk(root, (b"sub",))).entries[0][0]
    mode = os.stat(tree / "root/sub").st_mode
    assert err(cl.call, P.Setattr(sub, mode=0o700, size=0)) == errno.EISDIR
    assert os.stat(tree / "root/sub").st_mode == mode
    sf = cl.call(P.Statfs(root))
    vfs = os.statvfs(tree / "root")
    assert sf.bsize == vfs.f_bsize and sf.namelen == vfs.f_namemax and sf.f_type != 0
    try:
        cl.call(P.Setxattr(c.handle, b"user.k", b"v", 0))
    except SyscallError as e:
        assert e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)  # a filesystem without user xattrs
    else:
        assert cl.call(P.Getxattr(c.handle, b"user.k")).value == b"v"
        assert b"user.k" in cl.call(P.Listxattr(c.handle)).names
        cl.call(P.Removexattr(c.handle, b"user.k"))
    assert err(cl.call, P.Getxattr(c.handle, b"user.none")) in (errno.ENODATA, errno.ENOTSUP)
    cl.call(P.Unlink(root, b"attr"))
    cl.call(P.Close((c.handle, c.fh, sub)))


def test_readonly(cl, tree):
    r = cl.call(P.Attach("1"))
    assert r.readonly
    f = cl.call(P.Walk(r.handle, (b"file",))).entries[0][0]
    o = cl.call(P.Open(f, os.O_RDONLY))
    assert cl.call(P.Read(o.fh, 0, 100)).data == b"ro data"
    for m in (P.Open(f, os.O_RDWR), P.Open(f, os.O_RDONLY | os.O_TRUNC),
              P.Create(r.handle, b"n", os.O_RDWR, 0o644), P.Mkdir(r.handle, b"d", 0o755),
              P.Symlink(r.handle, b"s", b"x"), P.Unlink(r.handle, b"file"),
              P.Rename(r.handle, b"file", r.handle, b"f2"), P.Setattr(f, mode=0o777),
              P.Link(r.handle, b"l", f), P.Mknod(r.handle, b"p", stat.S_IFIFO | 0o600)):
        assert err(cl.call, m) == errno.EROFS, m
    assert sorted(os.listdir(tree / "ro")) == ["file"]
    # A read-only view of a writable mount.
    w = cl.call(P.Attach("0", True))
    assert w.readonly and err(cl.call, P.Mkdir(w.handle, b"d", 0o755)) == errno.EROFS
    cl.call(P.Close((r.handle, f, o.fh, w.handle)))


def test_bad_wire_messages(gofer):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    s.connect(gofer.zmq_address)
    try:
        s.send(P.encode(P.Attach("0")))
        h = P.decode(s.recv()).handle
        for raw, want in ((b"\xc1", errno.EINVAL), (P.msgpack.packb([999]), errno.ENOSYS),
                          (P.msgpack.packb([P.Stat.TAG, "x"]), errno.EBADF),
                          (P.msgpack.packb([P.Walk.TAG, h, 5]), errno.EINVAL),
                          (P.msgpack.packb([P.Read.TAG, h, "x", 1]), errno.EBADF),
                          (P.msgpack.packb([P.Close.TAG, 5]), errno.EINVAL),
                          (P.encode(P.OkReply()), errno.ENOSYS)):
            s.send(raw)
            rep = P.decode(s.recv())
            assert rep == P.ErrorReply(want), raw
        s.send(P.encode(P.Close((h,))))
        assert P.decode(s.recv()) == P.OkReply()
    finally:
        s.close()
    assert gofer.alive()


def test_in_process_server_without_openat2(tree, monkeypatch):
    from pysc.fsproxy import server as S
    monkeypatch.setattr(S, "_have_openat2", False)  # the single-component openat fallback
    srv = S.GoferServer([(str(tree / "root"), False)])
    try:
        root = srv.handle(P.Attach("0")).handle
        w = srv.handle(P.Walk(root, (b"dirlink", b"passwd")))
        assert len(w.entries) == 1 and stat.S_ISLNK(w.entries[0][1][0])
        assert srv.handle(P.Walk(w.entries[0][0], (b"passwd",))).errno == errno.ENOTDIR
        assert srv.handle(P.Open(w.entries[0][0], os.O_RDONLY)) == P.ErrorReply(errno.ELOOP)
        w = srv.handle(P.Walk(root, (b"sub", b"f")))
        o = srv.handle(P.Open(w.entries[1][0], os.O_RDONLY))
        assert srv.handle(P.Read(o.fh, 0, 5)).data == b"hello"
        assert srv.handle(P.Create(root, b"abs", os.O_RDWR, 0o644)) == P.ErrorReply(errno.EEXIST)
        nested = srv.handle(P.Batch((P.Stat(root), P.Batch(()))))
        assert nested.replies[-1] == P.ErrorReply(errno.EINVAL)
        assert srv.handle(P.Shutdown()) == P.OkReply() and not srv.running
    finally:
        srv.close_all()
    assert srv.handles == {}


# ------------------------------------------------------------------ donation

def test_fd_donation(gofer, tree):
    assert len(gofer.root_fds) == 2
    fd = gofer.root_fds[0]
    assert os.fstat(fd).st_ino == os.stat(tree / "root").st_ino
    assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert {"sub", "escape"} <= set(os.listdir(fd))
    st = os.stat("f", dir_fd=os.open("sub", os.O_PATH | os.O_DIRECTORY, dir_fd=fd))
    assert st.st_size == 6
    assert os.listdir(gofer.root_fds[1]) == ["file"]
    assert [m[0] for m in gofer.mounts] == [str(tree / "root"), str(tree / "ro")]
    assert [m[1] for m in gofer.mounts] == [False, True]
    assert "gofer up" in (tree / "w" / "gofer.log").read_text()


def test_command_line_donate_sock(tree):
    sockpath = str(tree / "w" / "donate.sock")
    zaddr = "ipc://" + str(tree / "w" / "cli.zmq")
    proc = subprocess.Popen([sys.executable, "-m", "pysc.fsproxy", "--zmq", zaddr,
                             "--donate-sock", sockpath, "--mount", str(tree / "ro") + ":ro"])
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 10
        while True:
            try:
                s.connect(sockpath)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.01)
        s.settimeout(10)
        mounts, fds = recv_donation(s)
        assert mounts == [(str(tree / "ro"), True, True)] and os.listdir(fds[0]) == ["file"]
        c = GoferClient(zaddr, timeout=5)
        assert c.call(P.Attach(str(tree / "ro"))).readonly
        c.call(P.Shutdown())
        c.close()
        assert proc.wait(5) == 0
        os.close(fds[0])
        s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ GoferFS

@pytest.fixture()
def fs(gofer, cl):
    return GoferFS(cl, "0")


def test_gofer_fs_lookup_read(fs, tree):
    root = fs.root
    assert root.is_dir() and root.stat().ino == os.stat(tree / "root").st_ino
    assert root.stat().dev == fs.dev
    f = root.lookup(b"sub").lookup(b"f")
    assert isinstance(f, GoferInode) and f.stat().size == 6 and not f.is_dir()
    fl = f.open(C.O_RDONLY, None, None)
    assert fl.seekable and fl.read(None, 3) == b"hel" and fl.read(None, 100) == b"lo\n"
    assert fl.pread(2, 1) == b"el"
    assert fl.seek(0, C.SEEK_END) == 6
    assert err(fl.write, None, b"x") == errno.EBADF
    fl.decref()
    assert err(root.lookup, b"missing") == errno.ENOENT
    assert err(f.lookup, b"x") == errno.ENOTDIR
    inos, e = root.walk([b"sub", b"deeper", b"g"])
    assert e == 0 and [i.is_dir() for i in inos] == [True, True, False]
    assert {n for n, _, _ in root.readdir()} >= {b"sub", b"escape", b"abs"}
    assert fs.statfs()[1] == os.statvfs(tree / "root").f_bsize


def test_gofer_fs_symlinks(fs):
    ln = fs.root.lookup(b"escape")
    assert ln.is_symlink() and ln.readlink() == b"../../../../etc/shadow"
    assert err(ln.open, C.O_RDONLY, None, None) == errno.ELOOP
    assert err(ln.lookup, b"x") == errno.ENOTDIR


def test_gofer_fs_modify(fs, tree):
    root = fs.root
    new = root.create(b"gfile", 0o644, ROOT_CREDS)
    f = new.open(C.O_RDWR | C.O_CREAT, None, None)
    assert f.write(None, b"hello world") == 11
    assert (tree / "root/gfile").read_bytes() == b"hello world"
    assert new.stat().size == 11
    f.truncate(5)
    assert (tree / "root/gfile").read_bytes() == b"hello"
    # host_fd: a memfd copy for mmap/exec
    fd = f.host_fd()
    assert fd is not None and fd == f.host_fd() and os.pread(fd, 100, 0) == b"hello"
    f.pwrite(b"!", 5)
    assert os.pread(fd, 100, 0) == b"hello!"
    f.decref()
    r = new.open(C.O_RDONLY, None, None)
    rfd = r.host_fd()
    assert os.pread(rfd, 100, 0) == b"hello!"
    seals = fcntl.fcntl(rfd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_GROW
    with pytest.raises(OSError):
        os.pwrite(rfd, b"x", 0)
    r2 = new.open(C.O_RDONLY, None, None)
    assert os.fstat(r2.host_fd()).st_ino == os.fstat(rfd).st_ino  # one shared copy
    r.decref()
    r2.decref()
    d = root.mkdir(b"gdir", 0o755, ROOT_CREDS)
    assert d.is_dir() and stat.S_IMODE(os.stat(tree / "root/gdir").st_mode) == 0o755
    root.rename(b"gfile", d, b"moved", 0)
    assert (tree / "root/gdir/moved").read_bytes() == b"hello!"
    sl = d.symlink(b"sl", b"moved", ROOT_CREDS)
    assert sl.is_symlink() and sl.readlink() == b"moved"
    moved = d.lookup(b"moved")
    d.link(b"hard", moved)
    assert moved.stat().nlink == 2
    moved.setattr(mode=0o600, mtime_ns=10**9)
    st = moved.stat()
    assert stat.S_IMODE(st.mode) == 0o600 and st.mtime_ns == 10**9
    assert err(root.rmdir, b"gdir") == errno.ENOTEMPTY
    for n in (b"moved", b"hard", b"sl"):
        d.unlink(n)
    root.rmdir(b"gdir")
    assert not (tree / "root/gdir").exists()
    dirf = root.open(C.O_RDONLY | C.O_DIRECTORY, None, None)
    assert b"sub" in {n for n, _, _ in dirf.getdents()}


def test_gofer_fs_large_io(fs, tree, monkeypatch):
    monkeypatch.setattr(gclient, "IO_CHUNK", 7)
    ino = fs.root.create(b"big", 0o644, ROOT_CREDS)
    f = ino.open(C.O_RDWR, None, None)
    data = bytes(range(256)) * 3
    assert f.pwrite(data, 0) == len(data)  # WriteV of 7-byte pieces
    assert (tree / "root/big").read_bytes() == data
    assert f.pread(1000, 0) == data  # ReadV, stopping at the short chunk
    assert f.pread(30, 700) == data[700:730]
    fd = f.host_fd()
    assert os.pread(fd, 1000, 0) == data
    f.decref()
    fs.root.unlink(b"big")


def test_gofer_fs_exclusive_caches_stat(gofer, cl, tree):
    (tree / "root/cached").write_bytes(b"12345")
    shared = GoferFS(cl, "0")
    excl = GoferFS(cl, "0", exclusive=True)
    a = shared.root.lookup(b"cached")
    b = excl.root.lookup(b"cached")
    calls = cl.calls
    assert b.stat().size == 5 and b.stat().size == 5
    assert cl.calls == calls  # no messages
    (tree / "root/cached").write_bytes(b"1234567890")
    assert a.stat().size == 10  # shared: always asks
    assert b.stat().size == 5   # exclusive: the Sentry is the only writer
    f = b.open(C.O_WRONLY, None, None)
    f.pwrite(b"abc", 10)
    assert b.stat().size == 13  # its own writes invalidate
    f.decref()
    excl.root.unlink(b"cached")


def test_readonly_gofer_fs(gofer, cl):
    ro = GoferFS(cl, "1")
    assert ro.readonly
    assert err(ro.root.create, b"x", 0o644, ROOT_CREDS) == errno.EROFS
    f = ro.root.lookup(b"file")
    assert err(f.open, C.O_RDWR, None, None) == errno.EROFS
    assert f.open(C.O_RDONLY, None, None).pread(100, 0) == b"ro data"


def test_released_handles_are_closed(gofer, tree):
    c = gofer.client(timeout=5)
    fs = GoferFS(c, "0")
    for _ in range(3):
        fs.root.lookup(b"sub")
    gc.collect()
    assert len(c.pending) == 3
    c.flush()
    assert c.pending == []
    for _ in range(gclient.CLOSE_BATCH + 1):
        fs.root.lookup(b"sub")
    gc.collect()
    fs.root.stat()  # closes the batch first
    assert len(c.pending) < gclient.CLOSE_BATCH
    c.close()


def test_donate_only_gofer_sends_roots_and_exits(tree):
    """directfs: the gofer opens the roots, donates them and is gone."""
    work = tree / "w-donate-only"
    g = start_gofer([(str(tree / "root"), False), (str(tree / "ro"), True)], str(work), None,
                    serve=False)
    try:
        assert not g.alive() and g.proc.returncode == 0
        assert g.zmq_address is None
        assert [os.fstat(fd).st_ino for fd in g.root_fds] == \
            [os.stat(tree / "root").st_ino, os.stat(tree / "ro").st_ino]
        assert [m[1] for m in g.mounts] == [False, True]
        with pytest.raises(GoferError, match="does not serve"):
            g.client()
        assert not any(n.endswith(".zmq") for n in os.listdir(work))
    finally:
        g.stop(close_fds=True)


def test_donate_only_start_failure_is_reported(tree):
    with pytest.raises(GoferError, match="cannot start"):
        start_gofer([(str(tree / "does-not-exist"), False)], str(tree / "w"), None, serve=False)


# ------------------------------------------------------------------ failures

def test_gofer_death_gives_eio(tree):
    g = start_gofer([(str(tree / "root"), False)], str(tree / "w"), None)
    try:
        fs = g.filesystem(0)
        f = fs.root.lookup(b"sub").lookup(b"f")
        fl = f.open(C.O_RDONLY, None, None)
        os.kill(g.pid, signal.SIGKILL)
        t = time.monotonic()
        assert err(f.stat) == errno.EIO
        assert err(fl.pread, 10, 0) == errno.EIO
        assert err(fs.root.lookup, b"sub") == errno.EIO
        assert time.monotonic() - t < 2.0
        assert fl.host_fd() is None
        fl.decref()  # releasing after death is harmless
        assert not g.alive()
    finally:
        g.stop()


def test_silent_gofer_times_out(tree):
    g = start_gofer([(str(tree / "root"), False)], str(tree / "w"), None)
    try:
        c = g.client(timeout=0.3)
        fs = GoferFS(c, "0")
        os.kill(g.pid, signal.SIGSTOP)
        t = time.monotonic()
        assert err(fs.root.stat) == errno.EIO
        assert 0.25 < time.monotonic() - t < 2.0
        os.kill(g.pid, signal.SIGCONT)
        assert fs.root.stat().ino == os.stat(tree / "root").st_ino  # reconnected
    finally:
        os.kill(g.pid, signal.SIGCONT)
        g.stop()


def test_start_failure_is_reported(tree):
    t = time.monotonic()
    with pytest.raises(GoferError, match="cannot start"):
        start_gofer([(str(tree / "does-not-exist"), False)], str(tree / "w"), None)
    assert time.monotonic() - t < 5


def test_gofer_dies_with_its_parent(tree):
    code = ("import sys, os; from pysc.fsproxy.gofer import start_gofer; "
            f"g = start_gofer([({str(tree / 'ro')!r}, True)], {str(tree / 'w')!r}, None); "
            "print(g.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20, check=True)
    pid = int(out.stdout)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.02)
    pytest.fail(f"gofer {pid} outlived its parent")
