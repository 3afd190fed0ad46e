"""Filesystem syscalls: names, paths, metadata (Linux's fs/namei.c, fs/stat.c, ...)."""
from __future__ import annotations

import struct
import sys
import time

from pysc.core.abi import consts as C
from pysc.core.abi.structs import OPEN_HOW, STATFS, TIMESPEC, TIMEVAL, pack_dirent64
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError
from pysc.core.file import File
from pysc.core.hookspecs import hookimpl
from pysc.core.pathutil import parent_of, read_path, resolve, resolve_at
from pysc.core.task import CAP_CHOWN, CAP_FOWNER
from pysc.core.vfs import Dentry, may_access


@hookimpl
def pysc_syscalls(table, platform):
    table.register_module(sys.modules[__name__])


class OPathFile(File):
    """An fd opened with O_PATH: names a file without giving access to it."""

    def read(self, task, count):
        raise SyscallError(C.EBADF)

    def write(self, task, data):
        raise SyscallError(C.EBADF)

    def getdents(self):
        raise SyscallError(C.EBADF)

    def ioctl(self, task, cmd, arg):
        raise SyscallError(C.EBADF)


VALID_OPEN_FLAGS = (C.O_ACCMODE | C.O_CREAT | C.O_EXCL | C.O_NOCTTY | C.O_TRUNC | C.O_APPEND
                    | C.O_NONBLOCK | C.O_DSYNC | C.O_ASYNC | C.O_DIRECT | C.O_LARGEFILE
                    | C.O_DIRECTORY | C.O_NOFOLLOW | C.O_NOATIME | C.O_CLOEXEC | C.O_SYNC
                    | C.O_PATH | C.O_TMPFILE)


def _check_writable_mount(d: Dentry) -> None:
    if d.mount.readonly:
        raise SyscallError(C.EROFS)


def _may_write_dir(t, parent: Dentry) -> None:
    _check_writable_mount(parent)
    if not may_access(t.creds, parent.inode.stat(), C.W_OK | C.X_OK):
        raise SyscallError(C.EACCES)


def _sticky_ok(t, parent: Dentry, child: Dentry) -> None:
    pst = parent.inode.stat()
    if pst.mode & C.S_ISVTX and t.creds.fsuid != 0:
        if t.creds.fsuid not in (pst.uid, child.inode.stat().uid):
            raise SyscallError(C.EPERM)


def lookup_or_none(t, parent: Dentry, name: bytes) -> Dentry | None:
    try:
        return t.vfs.child(parent, name)
    except SyscallError as e:
        if e.errno == C.ENOENT:
            return None
        raise


def do_open(t, dirfd: int, path: bytes, flags: int, mode: int, resolve_flags: int = 0) -> int:
    if flags & ~VALID_OPEN_FLAGS & 0xFFFFFFFF and resolve_flags:
        raise SyscallError(C.EINVAL)
    if flags & C.O_PATH:
        flags &= C.O_PATH | C.O_DIRECTORY | C.O_NOFOLLOW | C.O_CLOEXEC
    acc = flags & C.O_ACCMODE
    if acc == 3 and not flags & C.O_PATH:
        raise SyscallError(C.EINVAL)
    if flags & C.O_CREAT and flags & C.O_DIRECTORY:
        raise SyscallError(C.EINVAL)  # as Linux since 6.4
    vfs = t.vfs
    created = False
    if flags & C.O_TMPFILE == C.O_TMPFILE:
        return open_tmpfile(t, dirfd, path, flags, mode)
    if flags & C.O_CREAT:
        if not path:
            raise SyscallError(C.ENOENT)
        parent, name = parent_of(t, dirfd, path)
        if path.endswith(b"/") or name in (b".", b".."):
            raise SyscallError(C.EISDIR)
        d = lookup_or_none(t, parent, name)
        if d is None:
            _may_write_dir(t, parent)
            parent.inode.create(name, mode & ~t.fs.umask & 0o7777, t.creds)
            parent.invalidate(name)
            d = vfs.child(parent, name)
            created = True
        else:
            if flags & C.O_EXCL:
                raise SyscallError(C.EEXIST)
            if d.inode.is_symlink():
                if flags & C.O_NOFOLLOW:
                    raise SyscallError(C.ELOOP)
                d = vfs.walk(t, parent, name, True)
    else:
        d = resolve(t, dirfd, path, follow=not flags & C.O_NOFOLLOW, resolve_flags=resolve_flags)
    inode = d.inode
    st = inode.stat()
    fmt = st.mode & C.S_IFMT
    if fmt == C.S_IFLNK and not flags & C.O_PATH:
        raise SyscallError(C.ELOOP)
    if flags & C.O_DIRECTORY and fmt != C.S_IFDIR:
        raise SyscallError(C.ENOTDIR)
    if flags & C.O_PATH:
        f = OPathFile(flags, d)
        return t.fdtable.install(f, bool(flags & C.O_CLOEXEC))
    if fmt == C.S_IFDIR and (acc != C.O_RDONLY or flags & C.O_CREAT):
        raise SyscallError(C.EISDIR)
    if not created:
        want = {C.O_RDONLY: C.R_OK, C.O_WRONLY: C.W_OK, C.O_RDWR: C.R_OK | C.W_OK}[acc]
        if flags & C.O_TRUNC:
            want |= C.W_OK
        if not may_access(t.creds, st, want):
            raise SyscallError(C.EACCES)
    if (acc != C.O_RDONLY or flags & C.O_TRUNC) and fmt == C.S_IFREG:
        _check_writable_mount(d)
    f = inode.open(flags, d, t)
    try:
        return t.fdtable.install(f, bool(flags & C.O_CLOEXEC))
    except SyscallError:
        f.decref()
        raise


def open_tmpfile(t, dirfd, path, flags, mode) -> int:
    from pysc.core.fs.tmpfs import MemFile, TmpInode
    d = resolve(t, dirfd, path)
    if not d.inode.is_dir():
        raise SyscallError(C.ENOTDIR)
    if flags & C.O_ACCMODE == C.O_RDONLY:
        raise SyscallError(C.EINVAL)
    _may_write_dir(t, d)
    fs = getattr(d.inode.fs, "upper", None) or d.inode.fs
    if not hasattr(fs, "root") or not isinstance(fs.root, TmpInode):
        raise SyscallError(C.EOPNOTSUPP)
    ino = TmpInode(fs, C.S_IFREG | (mode & ~t.fs.umask & 0o7777), t.creds.fsuid, t.creds.fsgid)
    ino.st.nlink = 0
    anon = Dentry(b"#%d (deleted)" % ino.st.ino, d, ino, d.mount)
    f = MemFile(flags & ~C.O_TMPFILE | C.O_DIRECTORY * 0, anon, ino)
    f.tmpfile_linkable = not flags & C.O_EXCL
    f.proc_name = d.path() + b"/" + anon.name
    return t.fdtable.install(f, bool(flags & C.O_CLOEXEC))


@syscall("open")
def open_(t, path, flags, mode, *_):
    return do_open(t, C.AT_FDCWD, read_path(t, path), s32(flags) & 0xFFFFFFFF, mode)


@syscall()
def openat(t, dirfd, path, flags, mode, *_):
    return do_open(t, dirfd, read_path(t, path), flags & 0xFFFFFFFF, mode)


@syscall()
def creat(t, path, mode, *_):
    return do_open(t, C.AT_FDCWD, read_path(t, path), C.O_CREAT | C.O_WRONLY | C.O_TRUNC, mode)


@syscall()
def openat2(t, dirfd, path, how, size, *_):
    if size < OPEN_HOW.size:
        raise SyscallError(C.EINVAL)
    flags, mode, res = OPEN_HOW.unpack(t.mem.read(how, OPEN_HOW.size))
    if flags & ~VALID_OPEN_FLAGS or res & ~0x3F:
        raise SyscallError(C.EINVAL)
    if mode and not flags & (C.O_CREAT | C.O_TMPFILE):
        raise SyscallError(C.EINVAL)
    return do_open(t, dirfd, read_path(t, path), flags, mode, res or 0)


# --- stat ---
def _stat_of(d: Dentry):
    st = d.inode.stat()
    st.mnt_id = d.mount.id
    return st


@syscall()
def stat(t, path, buf, *_):
    t.mem.write(buf, _stat_of(resolve(t, C.AT_FDCWD, read_path(t, path))).pack_stat())
    return 0


@syscall()
def lstat(t, path, buf, *_):
    t.mem.write(buf, _stat_of(resolve(t, C.AT_FDCWD, read_path(t, path), follow=False)).pack_stat())
    return 0


@syscall()
def fstat(t, fd, buf, *_):
    f = t.fdtable.get(s32(fd))
    t.mem.write(buf, f.stat().pack_stat())
    return 0


@syscall()
def newfstatat(t, dirfd, path, buf, flags, *_):
    if flags & ~(C.AT_SYMLINK_NOFOLLOW | C.AT_EMPTY_PATH | C.AT_NO_AUTOMOUNT):
        raise SyscallError(C.EINVAL)
    t.mem.write(buf, _stat_fd_or_path(t, dirfd, path, flags).pack_stat())
    return 0


def _stat_fd_or_path(t, dirfd, path, flags):
    p = read_path(t, path) if path else b""
    if not p and flags & C.AT_EMPTY_PATH and s32(dirfd) != C.AT_FDCWD:
        return t.fdtable.get(s32(dirfd)).stat()
    d = resolve(t, dirfd, p, follow=not flags & C.AT_SYMLINK_NOFOLLOW,
                empty_path=bool(flags & C.AT_EMPTY_PATH))
    return _stat_of(d)


@syscall()
def statx(t, dirfd, path, flags, mask, buf, *_):
    if flags & ~(C.AT_SYMLINK_NOFOLLOW | C.AT_EMPTY_PATH | C.AT_NO_AUTOMOUNT | C.AT_STATX_SYNC_TYPE):
        raise SyscallError(C.EINVAL)
    if flags & C.AT_STATX_SYNC_TYPE == C.AT_STATX_SYNC_TYPE or mask & C.STATX__RESERVED:
        raise SyscallError(C.EINVAL)
    st = _stat_fd_or_path(t, dirfd, path, flags)
    t.mem.write(buf, st.pack_statx(mask))
    return 0


@syscall("access")
def access(t, path, mode, *_):
    return _access(t, C.AT_FDCWD, path, mode, 0)


@syscall("faccessat")
def faccessat(t, dirfd, path, mode, *_):
    return _access(t, dirfd, path, mode, 0)


@syscall()
def faccessat2(t, dirfd, path, mode, flags, *_):
    return _access(t, dirfd, path, mode, flags)


def _access(t, dirfd, path, mode, flags):
    if mode & ~7 or flags & ~(C.AT_EACCESS | C.AT_SYMLINK_NOFOLLOW | C.AT_EMPTY_PATH):
        raise SyscallError(C.EINVAL)
    d = resolve_at(t, dirfd, path, flags)
    if mode == C.F_OK:
        return 0
    creds = t.creds
    if not flags & C.AT_EACCESS:
        creds = creds.copy()
        creds.fsuid, creds.fsgid = creds.uid, creds.gid
    if mode & C.W_OK and d.mount.readonly and d.inode.stat().type in (C.S_IFREG, C.S_IFDIR, C.S_IFLNK):
        raise SyscallError(C.EROFS)
    if not may_access(creds, d.inode.stat(), mode):
        raise SyscallError(C.EACCES)
    return 0


# --- directories ---
@syscall()
def getdents64(t, fd, buf, count, *_):
    return _getdents(t, fd, buf, count, pack_dirent64)


def _pack_dirent(ino, off, dtype, name):
    reclen = (18 + len(name) + 2 + 7) & ~7
    return struct.pack("<QqH", ino, off, reclen) + name + b"\0" * (reclen - 18 - len(name) - 1) \
        + bytes([dtype])


@syscall()
def getdents(t, fd, buf, count, *_):
    return _getdents(t, fd, buf, count, _pack_dirent)


def _getdents(t, fd, buf, count, pack):
    f = t.fdtable.get(s32(fd))
    entries = f.getdents()
    out = bytearray()
    i = f.offset
    while i < len(entries):
        name, ino, dtype = entries[i]
        rec = pack(ino, i + 1, dtype, name)
        if len(out) + len(rec) > count:
            if not out:
                raise SyscallError(C.EINVAL)
            break
        out += rec
        i += 1
    t.mem.write(buf, bytes(out))
    f.offset = i
    return len(out)


@syscall()
def mkdir(t, path, mode, *_):
    return _mkdirat(t, C.AT_FDCWD, path, mode)


@syscall()
def mkdirat(t, dirfd, path, mode, *_):
    return _mkdirat(t, dirfd, path, mode)


def _mkdirat(t, dirfd, path_addr, mode):
    parent, name = parent_of(t, dirfd, read_path(t, path_addr))
    if name in (b".", b".."):
        raise SyscallError(C.EEXIST)
    if lookup_or_none(t, parent, name) is not None:
        raise SyscallError(C.EEXIST)
    _may_write_dir(t, parent)
    parent.inode.mkdir(name, mode & ~t.fs.umask & 0o7777, t.creds)
    parent.invalidate(name)
    return 0


@syscall()
def mknod(t, path, mode, dev, *_):
    return _mknodat(t, C.AT_FDCWD, path, mode, dev)


@syscall()
def mknodat(t, dirfd, path, mode, dev, *_):
    return _mknodat(t, dirfd, path, mode, dev)


def _mknodat(t, dirfd, path_addr, mode, dev):
    mode &= 0xFFFFFFFF
    fmt = mode & C.S_IFMT
    if fmt in (C.S_IFCHR, C.S_IFBLK):
        raise SyscallError(C.EPERM)
    if fmt not in (0, C.S_IFREG, C.S_IFIFO, C.S_IFSOCK):
        raise SyscallError(C.EINVAL)
    parent, name = parent_of(t, dirfd, read_path(t, path_addr))
    if name in (b".", b"..") or lookup_or_none(t, parent, name) is not None:
        raise SyscallError(C.EEXIST)
    _may_write_dir(t, parent)
    perm = mode & ~t.fs.umask & 0o7777
    if fmt in (0, C.S_IFREG):
        parent.inode.create(name, perm, t.creds)
    else:
        parent.inode.mknod(name, fmt | perm, 0, t.creds)
    parent.invalidate(name)
    return 0


@syscall()
def unlink(t, path, *_):
    return _unlinkat(t, C.AT_FDCWD, path, 0)


@syscall()
def rmdir(t, path, *_):
    return _unlinkat(t, C.AT_FDCWD, path, C.AT_REMOVEDIR)


@syscall()
def unlinkat(t, dirfd, path, flags, *_):
    if flags & ~C.AT_REMOVEDIR:
        raise SyscallError(C.EINVAL)
    return _unlinkat(t, dirfd, path, flags)


def _unlinkat(t, dirfd, path_addr, flags):
    path = read_path(t, path_addr)
    if flags & C.AT_REMOVEDIR and path.startswith(b"/") and not path.strip(b"/"):
        raise SyscallError(C.EBUSY)  # the root
    parent, name = parent_of(t, dirfd, path)
    if flags & C.AT_REMOVEDIR:
        if name == b".":
            raise SyscallError(C.EINVAL)
        if name == b"..":
            raise SyscallError(C.ENOTEMPTY)
    elif name in (b".", b"..") or path.endswith(b"/"):
        d = resolve(t, dirfd, path)
        raise SyscallError(C.EISDIR if d.inode.is_dir() else C.ENOTDIR)
    child = t.vfs.child(parent, name)
    if child.mount is not parent.mount:
        raise SyscallError(C.EBUSY)
    _may_write_dir(t, parent)
    _sticky_ok(t, parent, child)
    if flags & C.AT_REMOVEDIR:
        if not child.inode.is_dir():
            raise SyscallError(C.ENOTDIR)
        parent.inode.rmdir(name)
    else:
        if child.inode.is_dir():
            raise SyscallError(C.EISDIR)
        parent.inode.unlink(name)
    parent.invalidate(name)
    return 0


@syscall()
def rename(t, old, new, *_):
    return _renameat2(t, C.AT_FDCWD, old, C.AT_FDCWD, new, 0)


@syscall()
def renameat(t, olddirfd, old, newdirfd, new, *_):
    return _renameat2(t, olddirfd, old, newdirfd, new, 0)


@syscall()
def renameat2(t, olddirfd, old, newdirfd, new, flags, *_):
    return _renameat2(t, olddirfd, old, newdirfd, new, flags)


def _renameat2(t, olddirfd, old_addr, newdirfd, new_addr, flags):
    if flags & ~(C.RENAME_NOREPLACE | C.RENAME_EXCHANGE | C.RENAME_WHITEOUT) or (
            flags & C.RENAME_NOREPLACE and flags & C.RENAME_EXCHANGE):
        raise SyscallError(C.EINVAL)
    if flags & C.RENAME_WHITEOUT:
        raise SyscallError(C.EPERM)
    old = read_path(t, old_addr)
    new = read_path(t, new_addr)
    op, oname = parent_of(t, olddirfd, old)
    np, nname = parent_of(t, newdirfd, new)
    if oname in (b".", b"..") or nname in (b".", b".."):
        raise SyscallError(C.EBUSY if oname in (b".", b"..") else C.EINVAL)
    src = t.vfs.child(op, oname)
    if op.mount is not np.mount:
        raise SyscallError(C.EXDEV)
    if src.mount is not op.mount:
        raise SyscallError(C.EBUSY)
    if (old.endswith(b"/") or new.endswith(b"/")) and not src.inode.is_dir():
        raise SyscallError(C.ENOTDIR)
    _may_write_dir(t, op)
    _may_write_dir(t, np)
    if src.inode.is_dir():  # not into itself
        d = np
        while True:
            if d is src:
                raise SyscallError(C.EINVAL)
            if d.is_root():
                break
            d = d.parent
    op.inode.rename(oname, np.inode, nname, flags)
    moved = op.children.pop(oname, None)
    np.invalidate(nname)
    if moved is not None and not flags & C.RENAME_EXCHANGE:
        moved.parent, moved.name = np, nname
        np.children[nname] = moved
        try:
            moved.inode = np.inode.lookup(nname)
        except SyscallError:
            np.children.pop(nname, None)
    op.invalidate(oname)
    return 0


@syscall()
def link(t, old, new, *_):
    return _linkat(t, C.AT_FDCWD, old, C.AT_FDCWD, new, 0)


@syscall()
def linkat(t, olddirfd, old, newdirfd, new, flags, *_):
    if flags & ~(C.AT_SYMLINK_FOLLOW | C.AT_EMPTY_PATH):
        raise SyscallError(C.EINVAL)
    return _linkat(t, olddirfd, old, newdirfd, new, flags)


def _linkat(t, olddirfd, old_addr, newdirfd, new_addr, flags):
    src = resolve_at(t, olddirfd, old_addr, flags, follow_default=False)
    if src.inode.is_dir():
        raise SyscallError(C.EPERM)
    np, nname = parent_of(t, newdirfd, read_path(t, new_addr))
    if nname in (b".", b"..") or lookup_or_none(t, np, nname) is not None:
        raise SyscallError(C.EEXIST)
    if src.mount is not np.mount and src.mount.fstype != "anon":
        raise SyscallError(C.EXDEV)
    _may_write_dir(t, np)
    np.inode.link(nname, src.inode)
    np.invalidate(nname)
    return 0


@syscall()
def symlink(t, target, new, *_):
    return _symlinkat(t, target, C.AT_FDCWD, new)


@syscall()
def symlinkat(t, target, newdirfd, new, *_):
    return _symlinkat(t, target, newdirfd, new)


def _symlinkat(t, target_addr, dirfd, new_addr):
    target = read_path(t, target_addr)
    if not target:
        raise SyscallError(C.ENOENT)
    parent, name = parent_of(t, dirfd, read_path(t, new_addr))
    if name in (b".", b"..") or lookup_or_none(t, parent, name) is not None:
        raise SyscallError(C.EEXIST)
    _may_write_dir(t, parent)
    parent.inode.symlink(name, target, t.creds)
    parent.invalidate(name)
    return 0


@syscall()
def readlink(t, path, buf, size, *_):
    return _readlinkat(t, C.AT_FDCWD, path, buf, size)


@syscall()
def readlinkat(t, dirfd, path, buf, size, *_):
    return _readlinkat(t, dirfd, path, buf, size)


def _readlinkat(t, dirfd, path_addr, buf, size):
    size = s32(size)
    if size <= 0:
        raise SyscallError(C.EINVAL)
    path = read_path(t, path_addr)
    d = resolve(t, dirfd, path, follow=False, empty_path=True)
    if not d.inode.is_symlink():
        raise SyscallError(C.EINVAL)
    target = d.inode.readlink()[:size]
    t.mem.write(buf, target)
    return len(target)


# --- cwd / root / umask ---
@syscall()
def getcwd(t, buf, size, *_):
    cwd = t.fs.cwd
    path = _path_from_root(cwd, t.fs.root) + b"\0"
    if len(path) > size:
        raise SyscallError(C.ERANGE)
    t.mem.write(buf, path)
    return len(path)


def _path_from_root(d: Dentry, root: Dentry) -> bytes:
    parts = []
    while d is not root:
        if d.is_root():
            return b"(unreachable)" + (b"/" + b"/".join(reversed(parts)) if parts else b"/")
        parts.append(d.name)
        d = d.parent
    return b"/" + b"/".join(reversed(parts))


@syscall()
def chdir(t, path, *_):
    d = resolve(t, C.AT_FDCWD, read_path(t, path))
    _set_cwd(t, d)
    return 0


@syscall()
def fchdir(t, fd, *_):
    f = t.fdtable.get(s32(fd))
    if f.dentry is None:
        raise SyscallError(C.ENOTDIR)
    _set_cwd(t, f.dentry)
    return 0


def _set_cwd(t, d: Dentry) -> None:
    if not d.inode.is_dir():
        raise SyscallError(C.ENOTDIR)
    if not may_access(t.creds, d.inode.stat(), C.X_OK):
        raise SyscallError(C.EACCES)
    t.fs.cwd = d


@syscall()
def chroot(t, path, *_):
    if not t.creds.has_cap(18):  # CAP_SYS_CHROOT
        raise SyscallError(C.EPERM)
    d = resolve(t, C.AT_FDCWD, read_path(t, path))
    if not d.inode.is_dir():
        raise SyscallError(C.ENOTDIR)
    t.fs.root = d
    return 0


@syscall()
def umask(t, mask, *_):
    old = t.fs.umask
    t.fs.umask = mask & 0o777
    return old


# --- attributes ---
def _owner_or_cap(t, d: Dentry) -> None:
    if t.creds.fsuid != d.inode.stat().uid and not t.creds.has_cap(CAP_FOWNER):
        raise SyscallError(C.EPERM)


def _chmod(t, d: Dentry, mode: int) -> int:
    _owner_or_cap(t, d)
    _check_writable_mount(d)
    d.inode.setattr(mode=mode & 0o7777)
    return 0


@syscall()
def chmod(t, path, mode, *_):
    return _chmod(t, resolve(t, C.AT_FDCWD, read_path(t, path)), mode)


@syscall()
def fchmod(t, fd, mode, *_):
    f = t.fdtable.get(s32(fd))
    if f.dentry is None:
        f.inode.setattr(mode=mode & 0o7777)
        return 0
    return _chmod(t, f.dentry, mode)


@syscall()
def fchmodat(t, dirfd, path, mode, *_):
    return _chmod(t, resolve(t, dirfd, read_path(t, path)), mode)


def _chown(t, d: Dentry, uid: int, gid: int) -> int:
    uid, gid = s32(uid), s32(gid)
    st = d.inode.stat()
    creds = t.creds
    if not creds.has_cap(CAP_CHOWN):
        if uid != -1 and uid != st.uid:
            raise SyscallError(C.EPERM)
        if gid != -1 and (creds.fsuid != st.uid or (gid != creds.fsgid and gid not in creds.groups)):
            raise SyscallError(C.EPERM)
    _check_writable_mount(d)
    d.inode.setattr(uid=None if uid == -1 else uid, gid=None if gid == -1 else gid)
    return 0


@syscall()
def chown(t, path, uid, gid, *_):
    return _chown(t, resolve(t, C.AT_FDCWD, read_path(t, path)), uid, gid)


@syscall()
def lchown(t, path, uid, gid, *_):
    return _chown(t, resolve(t, C.AT_FDCWD, read_path(t, path), follow=False), uid, gid)


@syscall()
def fchown(t, fd, uid, gid, *_):
    f = t.fdtable.get(s32(fd))
    from pysc.core.pathutil import anon_dentry
    return _chown(t, f.dentry or anon_dentry(f), uid, gid)


@syscall()
def fchownat(t, dirfd, path, uid, gid, flags, *_):
    if flags & ~(C.AT_SYMLINK_NOFOLLOW | C.AT_EMPTY_PATH):
        raise SyscallError(C.EINVAL)
    return _chown(t, resolve_at(t, dirfd, path, flags), uid, gid)


@syscall()
def truncate(t, path, length, *_):
    length = s32(length) if length >> 63 else length
    if length < 0:
        raise SyscallError(C.EINVAL)
    d = resolve(t, C.AT_FDCWD, read_path(t, path))
    if d.inode.is_dir():
        raise SyscallError(C.EISDIR)
    if not may_access(t.creds, d.inode.stat(), C.W_OK):
        raise SyscallError(C.EACCES)
    _check_writable_mount(d)
    d.inode.setattr(size=length)
    return 0


def _set_times(t, d: Dentry, times: list[tuple[int, int]] | None) -> int:
    now = time.time_ns()
    if times is None:
        if t.creds.fsuid != d.inode.stat().uid and not may_access(t.creds, d.inode.stat(), C.W_OK):
            raise SyscallError(C.EACCES)
        d.inode.setattr(atime_ns=now, mtime_ns=now)
        return 0
    vals = []
    for sec, nsec in times:
        if nsec == C.UTIME_OMIT:
            vals.append(None)
        elif nsec == C.UTIME_NOW:
            vals.append(now)
        elif not 0 <= nsec < 10**9:
            raise SyscallError(C.EINVAL)
        else:
            vals.append(sec * 10**9 + nsec)
    if vals == [None, None]:
        return 0
    _owner_or_cap(t, d)
    _check_writable_mount(d)
    d.inode.setattr(atime_ns=vals[0], mtime_ns=vals[1])
    return 0


@syscall()
def utimensat(t, dirfd, path, times, flags, *_):
    if flags & ~(C.AT_SYMLINK_NOFOLLOW | C.AT_EMPTY_PATH):
        raise SyscallError(C.EINVAL)
    if path == 0:
        f = t.fdtable.get(s32(dirfd))
        from pysc.core.pathutil import anon_dentry
        d = f.dentry or anon_dentry(f)
    else:
        d = resolve_at(t, dirfd, path, flags)
    tv = None
    if times:
        raw = t.mem.read(times, 32)
        tv = [TIMESPEC.unpack_from(raw, 0), TIMESPEC.unpack_from(raw, 16)]
    return _set_times(t, d, tv)


@syscall()
def utimes(t, path, times, *_):
    return _utimes(t, C.AT_FDCWD, path, times)


@syscall()
def futimesat(t, dirfd, path, times, *_):
    return _utimes(t, dirfd, path, times)


def _utimes(t, dirfd, path, times):
    d = resolve(t, dirfd, read_path(t, path))
    tv = None
    if times:
        raw = t.mem.read(times, 32)
        tv = []
        for off in (0, 16):
            sec, usec = TIMEVAL.unpack_from(raw, off)
            if not 0 <= usec < 10**6:
                raise SyscallError(C.EINVAL)
            tv.append((sec, usec * 1000))
    return _set_times(t, d, tv)


@syscall()
def utime(t, path, times, *_):
    d = resolve(t, C.AT_FDCWD, read_path(t, path))
    tv = None
    if times:
        a, m = struct.unpack("<qq", t.mem.read(times, 16))
        tv = [(a, 0), (m, 0)]
    return _set_times(t, d, tv)


# --- statfs ---
def _statfs(t, d: Dentry, buf: int) -> int:
    ftype, bsize, blocks, bfree, bavail, files, ffree, namelen = d.inode.fs.statfs()
    flags = 0x20 | (1 if d.mount.readonly else 0)  # ST_VALID | ST_RDONLY
    t.mem.write(buf, STATFS.pack(ftype, bsize, blocks, bfree, bavail, files, ffree,
                                 d.mount.id, 0, namelen, bsize, flags))
    return 0


@syscall()
def statfs(t, path, buf, *_):
    return _statfs(t, resolve(t, C.AT_FDCWD, read_path(t, path)), buf)


@syscall()
def fstatfs(t, fd, buf, *_):
    f = t.fdtable.get(s32(fd))
    from pysc.core.pathutil import anon_dentry
    return _statfs(t, f.dentry or anon_dentry(f), buf)


# --- xattrs ---
def _xattr_name(t, addr) -> bytes:
    name = t.mem.read_cstr(addr, 256)
    if not name or len(name) > 255:
        raise SyscallError(C.ERANGE)
    return name


def _getxattr(t, d, name_addr, value, size):
    data = d.inode.getxattr(_xattr_name(t, name_addr))
    if size == 0:
        return len(data)
    if len(data) > size:
        raise SyscallError(C.ERANGE)
    t.mem.write(value, data)
    return len(data)


def _listxattr(t, d, buf, size):
    data = b"".join(n + b"\0" for n in d.inode.listxattr())
    if size == 0:
        return len(data)
    if len(data) > size:
        raise SyscallError(C.ERANGE)
    t.mem.write(buf, data)
    return len(data)


def _setxattr(t, d, name_addr, value, size, flags):
    if flags & ~3 or size > 65536:
        raise SyscallError(C.EINVAL if flags & ~3 else C.E2BIG)
    _owner_or_cap(t, d)
    _check_writable_mount(d)
    d.inode.setxattr(_xattr_name(t, name_addr), t.mem.read(value, size) if size else b"", flags)
    return 0


def _fd_dentry(t, fd):
    f = t.fdtable.get(s32(fd))
    from pysc.core.pathutil import anon_dentry
    return f.dentry or anon_dentry(f)


@syscall()
def getxattr(t, path, name, value, size, *_):
    return _getxattr(t, resolve(t, C.AT_FDCWD, read_path(t, path)), name, value, size)


@syscall()
def lgetxattr(t, path, name, value, size, *_):
    return _getxattr(t, resolve(t, C.AT_FDCWD, read_path(t, path), follow=False), name, value, size)


@syscall()
def fgetxattr(t, fd, name, value, size, *_):
    return _getxattr(t, _fd_dentry(t, fd), name, value, size)


@syscall()
def listxattr(t, path, buf, size, *_):
    return _listxattr(t, resolve(t, C.AT_FDCWD, read_path(t, path)), buf, size)


@syscall()
def llistxattr(t, path, buf, size, *_):
    return _listxattr(t, resolve(t, C.AT_FDCWD, read_path(t, path), follow=False), buf, size)


@syscall()
def flistxattr(t, fd, buf, size, *_):
    return _listxattr(t, _fd_dentry(t, fd), buf, size)


@syscall()
def setxattr(t, path, name, value, size, flags, *_):
    return _setxattr(t, resolve(t, C.AT_FDCWD, read_path(t, path)), name, value, size, flags)


@syscall()
def lsetxattr(t, path, name, value, size, flags, *_):
    return _setxattr(t, resolve(t, C.AT_FDCWD, read_path(t, path), follow=False), name, value, size,
                     flags)


@syscall()
def fsetxattr(t, fd, name, value, size, flags, *_):
    return _setxattr(t, _fd_dentry(t, fd), name, value, size, flags)


@syscall()
def removexattr(t, path, name, *_):
    resolve(t, C.AT_FDCWD, read_path(t, path)).inode.removexattr(_xattr_name(t, name))
    return 0


@syscall()
def lremovexattr(t, path, name, *_):
    resolve(t, C.AT_FDCWD, read_path(t, path), follow=False).inode.removexattr(_xattr_name(t, name))
    return 0


@syscall()
def fremovexattr(t, fd, name, *_):
    _fd_dentry(t, fd).inode.removexattr(_xattr_name(t, name))
    return 0


# --- mounts: the sandbox's mount table is fixed at start ---
@syscall("mount", "umount2", "pivot_root")
def mount(t, *_):
    raise SyscallError(C.EPERM)


@syscall()
def sync(t, *_):
    return 0


@syscall()
def syncfs(t, fd, *_):
    t.fdtable.get(s32(fd))
    return 0
