"""directfs: a host directory served by the Sentry itself, below a directory
fd the gofer donated.  Every host call names a single component relative to
an fd of its parent directory and never follows a symlink, so no path the app
controls can lead outside the mount; symlinks are resolved by the VFS."""
from __future__ import annotations

import os
import stat as pystat

from pysc.core.abi import consts as C
from pysc.core.abi.structs import Stat
from pysc.core.errors import SyscallError
from pysc.core.file import HostFDFile
from pysc.core.fs.tmpfs import DirFile
from pysc.core.vfs import Filesystem, Inode

OPEN_PASS = C.O_ACCMODE | C.O_APPEND | C.O_TRUNC | C.O_NONBLOCK | C.O_DSYNC | C.O_SYNC | C.O_DIRECT \
    | C.O_NOATIME | C.O_LARGEFILE


def _dtype(entry: os.DirEntry) -> int:
    try:
        if entry.is_symlink():
            return C.DT_LNK
        if entry.is_dir(follow_symlinks=False):
            return C.DT_DIR
        if entry.is_file(follow_symlinks=False):
            return C.DT_REG
        return (entry.stat(follow_symlinks=False).st_mode & C.S_IFMT) >> 12
    except OSError:
        return C.DT_UNKNOWN


def host_call(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except OSError as e:
        raise SyscallError(e.errno or C.EIO) from None


class HostFS(Filesystem):
    name = "9p"  # as runsc reports gofer-backed mounts

    def __init__(self, root_fd: int, readonly: bool = False, exclusive: bool = True, source: str = ""):
        super().__init__()
        self.readonly = readonly
        self.exclusive = exclusive
        self.source = source
        self.root = HostInode(self, None, b"", os.fstat(root_fd))
        self.root._dirfd = root_fd
        self.dev = os.fstat(root_fd).st_dev

    def statfs(self):
        try:
            s = os.fstatvfs(self.root._dirfd)
        except OSError:
            return super().statfs()
        return (0x01021997, s.f_bsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree,
                s.f_namemax)


class HostInode(Inode):
    __slots__ = ("fs", "parent", "name", "_st", "_stat", "_dirfd", "_children")

    def __init__(self, fs: HostFS, parent: "HostInode | None", name: bytes, st: os.stat_result):
        self.fs = fs
        self.parent = parent
        self.name = name
        self._st = st
        self._stat: Stat | None = None  # _st converted, while it is valid
        self._dirfd = -1
        self._children: dict[bytes, HostInode] = {}

    def __del__(self) -> None:
        """Its O_PATH fd goes with it: a pod's container leaves no fds behind
        in the Sentry once its mount tree is dropped."""
        if self._dirfd >= 0:
            try:
                os.close(self._dirfd)
            except OSError:
                pass

    # --- host helpers ---
    def dirfd(self) -> int:
        """An O_PATH fd of this directory, opened one component below its parent's."""
        if self._dirfd < 0:
            if self.parent is None:
                raise SyscallError(C.EIO)
            self._dirfd = host_call(os.open, self.name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                    | os.O_CLOEXEC, dir_fd=self.parent.dirfd())
        return self._dirfd

    def _host_stat(self) -> os.stat_result:
        if self.parent is None:
            return host_call(os.fstat, self._dirfd)
        return host_call(os.stat, self.name, dir_fd=self.parent.dirfd(), follow_symlinks=False)

    def _writable(self) -> None:
        if self.fs.readonly:
            raise SyscallError(C.EROFS)

    def _forget(self, name: bytes) -> None:
        self._children.pop(name, None)
        self._st = None

    def revalidate(self) -> bool:
        """With --file-access=shared, something else may have replaced or
        removed this name since the VFS cached it."""
        if self.fs.exclusive or self.parent is None:
            return True
        try:
            st = os.stat(self.name, dir_fd=self.parent.dirfd(), follow_symlinks=False)
        except OSError:
            return False
        return self._st is None or (st.st_ino == self._st.st_ino and st.st_dev == self._st.st_dev)

    # --- Inode ---
    def stat(self) -> Stat:
        st = self._st
        if st is None or not self.fs.exclusive:
            st = self._st = self._host_stat()
            self._stat = None
        if self._stat is None:
            self._stat = Stat.from_host(st)
        return self._stat.copy()

    @property
    def mode(self) -> int:
        st = self._st
        if st is None or not self.fs.exclusive:
            st = self._st = self._host_stat()
        return st.st_mode

    def lookup(self, name: bytes) -> Inode:
        if not pystat.S_ISDIR(self.mode):
            raise SyscallError(C.ENOTDIR)
        child = self._children.get(name) if self.fs.exclusive else None
        if child is None:
            st = host_call(os.stat, name, dir_fd=self.dirfd(), follow_symlinks=False)
            child = HostInode(self.fs, self, name, st)
            if self.fs.exclusive:
                self._children[name] = child
        return child

    def readdir(self):
        fd = host_call(os.open, b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.dirfd())
        try:
            with os.scandir(fd) as it:
                return [(os.fsencode(e.name), e.inode(), _dtype(e)) for e in it]
        except OSError as e:
            raise SyscallError(e.errno) from None
        finally:
            os.close(fd)

    def readlink(self) -> bytes:
        if not pystat.S_ISLNK(self.mode):
            raise SyscallError(C.EINVAL)
        return host_call(os.readlink, self.name, dir_fd=self.parent.dirfd())

    def open(self, flags, dentry, task):
        mode = self.mode
        fmt = mode & C.S_IFMT
        acc = flags & C.O_ACCMODE
        if fmt == C.S_IFDIR:
            if acc != C.O_RDONLY:
                raise SyscallError(C.EISDIR)
            return DirFile(flags, dentry, self)
        if fmt != C.S_IFREG:
            raise SyscallError(C.ENXIO)
        if acc != C.O_RDONLY or flags & C.O_TRUNC:
            self._writable()
            self._st = None
        hostflags = (flags & OPEN_PASS & ~C.O_NONBLOCK) | os.O_NOFOLLOW | os.O_CLOEXEC
        return HostFile(self._open_host(hostflags), flags, dentry, self)

    def _open_host(self, hostflags: int) -> int:
        if self.parent is None:  # a mount of a single file: reopen the donated O_PATH fd
            return host_call(os.open, f"/proc/self/fd/{self._dirfd}", hostflags & ~os.O_NOFOLLOW)
        return host_call(os.open, self.name, hostflags, dir_fd=self.parent.dirfd())

    def host_file(self) -> int:
        """A read-only host fd of this file (for exec)."""
        return self._open_host(os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)

    # --- modifications (only without the overlay, or on writable bind mounts) ---
    def _new_child(self, name: bytes) -> "HostInode":
        self._forget(name)
        return self.lookup(name)

    def _own(self, name: bytes, creds) -> None:
        try:
            os.chown(name, creds.fsuid, creds.fsgid, dir_fd=self.dirfd(), follow_symlinks=False)
        except OSError:
            pass

    def create(self, name, mode, creds):
        self._writable()
        fd = host_call(os.open, name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       mode & 0o7777, dir_fd=self.dirfd())
        os.close(fd)
        self._own(name, creds)
        return self._new_child(name)

    def mkdir(self, name, mode, creds):
        self._writable()
        host_call(os.mkdir, name, mode & 0o7777, dir_fd=self.dirfd())
        self._own(name, creds)
        return self._new_child(name)

    def mknod(self, name, mode, rdev, creds):
        self._writable()
        if mode & C.S_IFMT == C.S_IFSOCK:
            raise SyscallError(C.EPERM)
        host_call(os.mknod, name, mode, rdev, dir_fd=self.dirfd())
        self._own(name, creds)
        return self._new_child(name)

    def symlink(self, name, target, creds):
        self._writable()
        host_call(os.symlink, target, name, dir_fd=self.dirfd())
        self._own(name, creds)
        return self._new_child(name)

    def link(self, name, target):
        self._writable()
        if not isinstance(target, HostInode) or target.fs is not self.fs:
            raise SyscallError(C.EXDEV)
        host_call(os.link, target.name, name, src_dir_fd=target.parent.dirfd(), dst_dir_fd=self.dirfd(),
                  follow_symlinks=False)
        target._st = None
        self._forget(name)

    def unlink(self, name):
        self._writable()
        host_call(os.unlink, name, dir_fd=self.dirfd())
        self._forget(name)

    def rmdir(self, name):
        self._writable()
        host_call(os.rmdir, name, dir_fd=self.dirfd())
        self._forget(name)

    def rename(self, oldname, newdir, newname, flags):
        self._writable()
        if not isinstance(newdir, HostInode) or newdir.fs is not self.fs:
            raise SyscallError(C.EXDEV)
        if flags & ~C.RENAME_NOREPLACE:
            raise SyscallError(C.EINVAL)
        if flags & C.RENAME_NOREPLACE:
            try:
                newdir.lookup(newname)
                raise SyscallError(C.EEXIST)
            except SyscallError as e:
                if e.errno != C.ENOENT:
                    raise
        host_call(os.rename, oldname, newname, src_dir_fd=self.dirfd(), dst_dir_fd=newdir.dirfd())
        moved = self._children.pop(oldname, None)
        self._forget(oldname)
        newdir._forget(newname)
        if moved is not None and moved._dirfd >= 0:
            os.close(moved._dirfd)
            moved._dirfd = -1  # so that neither it nor __del__ uses a recycled fd number

    def setattr(self, *, mode=None, uid=None, gid=None, size=None, atime_ns=None, mtime_ns=None):
        self._writable()
        if self.parent is None:
            raise SyscallError(C.EPERM)
        dfd, name = self.parent.dirfd(), self.name
        if mode is not None and not pystat.S_ISLNK(self.mode):
            host_call(os.chmod, name, mode & 0o7777, dir_fd=dfd)
        if uid is not None or gid is not None:
            host_call(os.chown, name, -1 if uid is None else uid, -1 if gid is None else gid,
                      dir_fd=dfd, follow_symlinks=False)
        if size is not None:
            fd = host_call(os.open, name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                host_call(os.ftruncate, fd, size)
            finally:
                os.close(fd)
        if atime_ns is not None or mtime_ns is not None:
            st = self._host_stat()
            host_call(os.utime, name, dir_fd=dfd, follow_symlinks=False,
                      ns=(st.st_atime_ns if atime_ns is None else atime_ns,
                          st.st_mtime_ns if mtime_ns is None else mtime_ns))
        self._st = None

    def listxattr(self):
        return []


class HostFile(HostFDFile):
    """An open regular file of a HostFS."""
    seekable = True

    def __init__(self, fd, flags, dentry, inode):
        super().__init__(fd, flags, dentry, inode, seekable=True, is_tty=False)

    def write(self, task, data):
        self.inode._st = None
        return super().write(task, data)

    def pwrite(self, data, offset):
        self.inode._st = None
        return super().pwrite(data, offset)

    def truncate(self, size):
        self.inode._st = None
        super().truncate(size)

    def stat(self):
        return self.inode.stat()
