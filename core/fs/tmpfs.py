"""tmpfs: files in Sentry memory.  Regular files live in host memfds, so that
read/write, mmap (MAP_SHARED too) and exec all see the same bytes."""
from __future__ import annotations

import os
import time


from pysc.core.abi import consts as C
from pysc.core.abi.structs import Stat, dtype_of_mode
from pysc.core.errors import SyscallError
from pysc.core.file import File
from pysc.core.vfs import Filesystem, Inode


def now_ns() -> int:
    return time.time_ns()


class TmpFS(Filesystem):
    name = "tmpfs"

    def __init__(self, mode: int = 0o1777, uid: int = 0, gid: int = 0):
        super().__init__()
        self.root = TmpInode(self, C.S_IFDIR | mode, uid, gid)
        self.root.parent = self.root

    def statfs(self):
        return (0x01021994, 4096, 1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, 255)


class TmpInode(Inode):
    def __init__(self, fs: TmpFS, mode: int, uid: int = 0, gid: int = 0, rdev: int = 0):
        self.fs = fs
        t = now_ns()
        self.st = Stat(mode=mode, ino=fs.next_ino(), dev=fs.dev, nlink=2 if mode & C.S_IFMT == C.S_IFDIR else 1,
                       uid=uid, gid=gid, rdev=rdev, atime_ns=t, mtime_ns=t, ctime_ns=t, btime_ns=t)
        self.children: dict[bytes, TmpInode] | None = {} if self.is_dir() else None
        self.parent: TmpInode | None = None
        self.target = b""
        self.memfd = -1
        self.xattrs: dict[bytes, bytes] = {}
        self.whiteouts: set[bytes] = set()  # used when this is an overlay's upper layer
        self.opaque = False
        self.special = None  # for FIFOs and sockets: the kernel object behind the name

    def is_dir(self) -> bool:
        return self.st.mode & C.S_IFMT == C.S_IFDIR

    def is_symlink(self) -> bool:
        return self.st.mode & C.S_IFMT == C.S_IFLNK

    @property
    def mode(self) -> int:
        return self.st.mode

    def _fd(self) -> int:
        if self.memfd < 0:
            self.memfd = os.memfd_create("pysc-tmpfs", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        return self.memfd

    def stat(self) -> Stat:
        st = self.st
        if self.memfd >= 0:
            st.size = os.fstat(self.memfd).st_size
            st.blocks = (st.size + 511) // 512
        elif self.is_dir():
            st.size = 4096 if self.children is None else 40 + 20 * len(self.children)
        elif self.is_symlink():
            st.size = len(self.target)
        return st.copy()

    def touch(self, m: bool = True, c: bool = True) -> None:
        t = now_ns()
        if m:
            self.st.mtime_ns = t
        if c:
            self.st.ctime_ns = t

    # --- directory operations ---
    def _dir(self) -> dict:
        if self.children is None:
            raise SyscallError(C.ENOTDIR)
        return self.children

    def lookup(self, name: bytes) -> Inode:
        try:
            return self._dir()[name]
        except KeyError:
            raise SyscallError(C.ENOENT) from None

    def readdir(self):
        return [(n, i.st.ino, dtype_of_mode(i.st.mode)) for n, i in self._dir().items()]

    def _add(self, name: bytes, inode: "TmpInode") -> "TmpInode":
        d = self._dir()
        if name in d:
            raise SyscallError(C.EEXIST)
        d[name] = inode
        inode.parent = self
        self.whiteouts.discard(name)
        if inode.is_dir():
            self.st.nlink += 1
        self.touch()
        return inode

    def create(self, name, mode, creds):
        return self._add(name, TmpInode(self.fs, C.S_IFREG | (mode & 0o7777), creds.fsuid, creds.fsgid))

    def mkdir(self, name, mode, creds):
        return self._add(name, TmpInode(self.fs, C.S_IFDIR | (mode & 0o7777), creds.fsuid, creds.fsgid))

    def mknod(self, name, mode, rdev, creds):
        return self._add(name, TmpInode(self.fs, mode, creds.fsuid, creds.fsgid, rdev))

    def symlink(self, name, target, creds):
        ino = TmpInode(self.fs, C.S_IFLNK | 0o777, creds.fsuid, creds.fsgid)
        ino.target = target
        return self._add(name, ino)

    def link(self, name, target):
        if not isinstance(target, TmpInode) or target.fs is not self.fs:
            raise SyscallError(C.EXDEV)
        if target.is_dir():
            raise SyscallError(C.EPERM)
        self._add(name, target)
        target.st.nlink += 1
        target.touch(m=False)

    def unlink(self, name):
        d = self._dir()
        ino = d.get(name)
        if ino is None:
            raise SyscallError(C.ENOENT)
        if ino.is_dir():
            raise SyscallError(C.EISDIR)
        del d[name]
        ino.st.nlink -= 1
        ino.touch(m=False)
        self.touch()

    def rmdir(self, name):
        d = self._dir()
        ino = d.get(name)
        if ino is None:
            raise SyscallError(C.ENOENT)
        if not ino.is_dir():
            raise SyscallError(C.ENOTDIR)
        if ino.children:
            raise SyscallError(C.ENOTEMPTY)
        del d[name]
        ino.st.nlink = 0
        self.st.nlink -= 1
        self.touch()

    def rename(self, oldname, newdir, newname, flags):
        if not isinstance(newdir, TmpInode) or newdir.fs is not self.fs:
            raise SyscallError(C.EXDEV)
        src = self.lookup(oldname)
        dst = newdir._dir().get(newname)
        if flags & C.RENAME_NOREPLACE and dst is not None:
            raise SyscallError(C.EEXIST)
        if flags & C.RENAME_EXCHANGE:
            if dst is None:
                raise SyscallError(C.ENOENT)
            self.children[oldname], newdir.children[newname] = dst, src
            src.parent, dst.parent = newdir, self
            return
        if src is dst:
            return
        if src.is_dir():
            p = newdir
            while True:  # a directory cannot move below itself
                if p is src:
                    raise SyscallError(C.EINVAL)
                if p.parent is None or p.parent is p:
                    break
                p = p.parent
        if dst is not None:
            if dst.is_dir():
                if not src.is_dir():
                    raise SyscallError(C.EISDIR)
                if dst.children:
                    raise SyscallError(C.ENOTEMPTY)
                newdir.st.nlink -= 1
            elif src.is_dir():
                raise SyscallError(C.ENOTDIR)
            dst.st.nlink -= 1
        del self.children[oldname]
        if src.is_dir():
            self.st.nlink -= 1
            newdir.st.nlink += 1
        newdir.children[newname] = src
        newdir.whiteouts.discard(newname)
        src.parent = newdir
        src.touch(m=False)
        self.touch()
        newdir.touch()

    # --- links and attributes ---
    def readlink(self):
        if not self.is_symlink():
            raise SyscallError(C.EINVAL)
        return self.target

    def setattr(self, *, mode=None, uid=None, gid=None, size=None, atime_ns=None, mtime_ns=None):
        st = self.st
        if mode is not None:
            st.mode = (st.mode & C.S_IFMT) | (mode & 0o7777)
        if uid is not None and uid != -1:
            st.uid = uid
        if gid is not None and gid != -1:
            st.gid = gid
        if size is not None:
            if self.is_dir():
                raise SyscallError(C.EISDIR)
            if st.mode & C.S_IFMT != C.S_IFREG:
                raise SyscallError(C.EINVAL)
            os.ftruncate(self._fd(), size)
            st.mtime_ns = now_ns()
        if atime_ns is not None:
            st.atime_ns = atime_ns
        if mtime_ns is not None:
            st.mtime_ns = mtime_ns
        st.ctime_ns = now_ns()

    def listxattr(self):
        return list(self.xattrs)

    def getxattr(self, name):
        try:
            return self.xattrs[name]
        except KeyError:
            raise SyscallError(C.ENODATA) from None

    def setxattr(self, name, value, flags):
        if not name.startswith((b"user.", b"trusted.")):
            # No POSIX ACLs or security labels: their users fall back to the mode bits.
            raise SyscallError(C.EOPNOTSUPP)
        if flags == 1 and name in self.xattrs:  # XATTR_CREATE
            raise SyscallError(C.EEXIST)
        if flags == 2 and name not in self.xattrs:  # XATTR_REPLACE
            raise SyscallError(C.ENODATA)
        self.xattrs[name] = value

    def removexattr(self, name):
        if self.xattrs.pop(name, None) is None:
            raise SyscallError(C.ENODATA)

    # --- open ---
    def open(self, flags, dentry, task):
        fmt = self.st.mode & C.S_IFMT
        if fmt == C.S_IFDIR:
            return DirFile(flags, dentry, self)
        if fmt == C.S_IFREG:
            if flags & C.O_TRUNC and (flags & C.O_ACCMODE) != C.O_RDONLY:
                self.setattr(size=0)
            return MemFile(flags, dentry, self)
        if fmt == C.S_IFIFO:
            from pysc.core.pipe import open_fifo
            return open_fifo(self, flags, dentry, task)
        if fmt in (C.S_IFCHR, C.S_IFBLK):
            from pysc.core.fs.devfs import open_device
            return open_device(self.st.rdev, flags, dentry, task)
        raise SyscallError(C.ENXIO)


class MemFile(File):
    """An open regular tmpfs file."""
    seekable = True

    def __init__(self, flags, dentry, inode: TmpInode):
        super().__init__(flags, dentry, inode)
        self.tmp = inode  # self.inode may become an overlay inode above it
        self.fd = inode._fd()

    def pread(self, count, offset):
        return os.pread(self.fd, count, offset)

    def pwrite(self, data, offset):
        n = os.pwrite(self.fd, data, offset)
        self.tmp.touch()
        return n

    def truncate(self, size):
        self.tmp.setattr(size=size)

    def host_fd(self):
        return self.fd


class DirFile(File):
    """An open directory of any filesystem: getdents over inode.readdir()."""
    seekable = True

    def __init__(self, flags, dentry, inode):
        super().__init__(flags, dentry, inode)
        self.entries: list[tuple[bytes, int, int]] | None = None

    def getdents(self):
        if self.entries is None or self.offset == 0:
            ino = self.inode.stat().ino
            parent = self.dentry.parent.inode if self.dentry is not None else self.inode
            try:
                pino = parent.stat().ino
            except SyscallError:
                pino = ino
            self.entries = [(b".", ino, C.DT_DIR), (b"..", pino, C.DT_DIR)] + list(self.inode.readdir())
        return self.entries

    def read(self, task, count):
        raise SyscallError(C.EISDIR)

    def write(self, task, data):
        raise SyscallError(C.EISDIR)

    def pread(self, count, offset):
        raise SyscallError(C.EISDIR)

    def seek(self, offset, whence):
        if whence == C.SEEK_SET and offset >= 0:
            self.offset = offset
            return offset
        if whence == C.SEEK_CUR and self.offset + offset >= 0:
            self.offset += offset
            return self.offset
        raise SyscallError(C.EINVAL)
