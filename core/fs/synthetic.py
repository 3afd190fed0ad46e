"""A small toolkit for synthetic filesystems (procfs, sysfs): trees whose
directories, file contents and link targets are computed by functions.

* :class:`SynthFS` hands out *stable* inode numbers: the same key (any
  hashable, e.g. ``("pid", 12, "status")``) always gets the same number for
  the life of the filesystem, so that ``stat`` twice gives the same ``st_ino``
  even though the inode objects are rebuilt on each lookup.
* :class:`SynthDir` lists entries that a function returns (name -> inode),
  optionally with a separate ``lookup`` function for big or open-ended
  directories (``/proc`` finds a pid without listing all of them).
* :class:`SynthFile` is a read-only (optionally writable) regular file whose
  bytes come from a function evaluated when the file is opened; the bytes are
  snapshotted into the open file, which is seekable and supports pread.
* :class:`SynthSymlink` has a target computed by a function and, for
  ``/proc``'s magic links, an optional function giving the dentry the link
  stands for.

Each inode may carry a ``valid`` function: once it returns False (the process
a ``/proc/PID`` entry describes has exited) every operation fails with
ENOENT, which also makes stale dentries the VFS may have cached harmless.
``revalidate()`` exposes the same check for a VFS that wants to drop them.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Hashable, Iterable, Mapping, Union

from pysc.core.abi import consts as C
from pysc.core.abi.structs import Stat, dtype_of_mode
from pysc.core.errors import SyscallError
from pysc.core.file import File
from pysc.core.fs.tmpfs import DirFile
from pysc.core.vfs import Filesystem, Inode

if TYPE_CHECKING:
    from pysc.core.task import Task
    from pysc.core.vfs import Dentry

Content = Union[bytes, str]
Owner = Callable[[], "tuple[int, int]"]


class SynthFS(Filesystem):
    """A filesystem whose inodes are built on demand; ``ino_for(key)`` is stable."""
    name = "synthetic"
    magic = 0x01021994  # TMPFS_MAGIC unless a subclass says otherwise
    file_size = 0       # st_size of generated files (procfs: 0, sysfs: 4096)

    def __init__(self) -> None:
        super().__init__()
        self._inos: dict[Hashable, int] = {}
        self.created_ns = time.time_ns()

    def ino_for(self, key: Hashable) -> int:
        ino = self._inos.get(key)
        if ino is None:
            ino = self._inos[key] = self.next_ino()
        return ino

    def statfs(self) -> tuple:
        return (self.magic, 4096, 0, 0, 0, 0, 0, 255)

    # --- builders -----------------------------------------------------------
    def dir(self, key: Hashable, entries, lookup=None, **kw) -> "SynthDir":
        return SynthDir(self, key, entries, lookup, **kw)

    def file(self, key: Hashable, content, write=None, **kw) -> "SynthFile":
        return SynthFile(self, key, content, write, **kw)

    def symlink(self, key: Hashable, target, magic=None, **kw) -> "SynthSymlink":
        return SynthSymlink(self, key, target, magic, **kw)


class SynthInode(Inode):
    """Common part: stable ino, mode, owner, liveness."""
    ftype = C.S_IFREG

    def __init__(self, fs: SynthFS, key: Hashable, perm: int, *, owner: Owner | None = None,
                 valid: Callable[[], bool] | None = None, time_ns: Callable[[], int] | None = None):
        self.fs = fs
        self.key = key
        self.ino = fs.ino_for(key)
        self.perm = perm
        self.owner = owner
        self.valid = valid
        self.time_ns = time_ns

    def revalidate(self) -> bool:
        """False once the object this inode describes is gone."""
        if self.valid is None:
            return True
        try:
            return bool(self.valid())
        except Exception:
            return False

    def check(self) -> None:
        if not self.revalidate():
            raise SyscallError(C.ENOENT)

    @property
    def mode(self) -> int:
        return self.ftype | self.perm

    def size(self) -> int:
        return 0

    def stat(self) -> Stat:
        self.check()
        uid, gid = self.owner() if self.owner is not None else (0, 0)
        t = self.time_ns() if self.time_ns is not None else self.fs.created_ns
        return Stat(mode=self.mode, ino=self.ino, dev=self.fs.dev,
                    nlink=2 if self.ftype == C.S_IFDIR else 1, uid=uid, gid=gid,
                    size=self.size(), blksize=4096, atime_ns=t, mtime_ns=t, ctime_ns=t, btime_ns=t)

    def _open_path(self, flags: int, dentry: "Dentry") -> File | None:
        if flags & C.O_PATH:
            return File(flags, dentry, self)
        return None

    def setattr(self, *, mode=None, uid=None, gid=None, size=None, atime_ns=None, mtime_ns=None):
        self.check()
        if size is not None and self.ftype == C.S_IFREG and getattr(self, "writer", None):
            return  # O_TRUNC / truncate of a writable control file: accepted, as Linux
        raise SyscallError(C.EPERM)


class SynthDir(SynthInode):
    """A directory listing ``entries()`` (a mapping name -> Inode, or a callable
    returning one).  ``lookup(name)`` may be given for open-ended
    directories; it returns an Inode or None."""
    ftype = C.S_IFDIR

    def __init__(self, fs: SynthFS, key: Hashable,
                 entries: "Mapping[bytes, Inode] | Callable[[], Mapping[bytes, Inode]]",
                 lookup: Callable[[bytes], Inode | None] | None = None, perm: int = 0o555, **kw):
        super().__init__(fs, key, perm, **kw)
        self._entries = entries
        self._lookup = lookup

    def entries(self) -> Mapping[bytes, Inode]:
        e = self._entries
        return e() if callable(e) else e

    def lookup(self, name: bytes) -> Inode:
        self.check()
        ino = None
        if self._lookup is not None:
            ino = self._lookup(name)
        else:
            ino = self.entries().get(name)
        if ino is None:
            raise SyscallError(C.ENOENT)
        return ino

    def readdir(self) -> Iterable[tuple[bytes, int, int]]:
        self.check()
        out = []
        for name, ino in self.entries().items():
            try:
                st = ino.stat()
            except SyscallError:
                continue  # vanished while listing
            out.append((name, st.ino, dtype_of_mode(st.mode)))
        return out

    def open(self, flags: int, dentry: "Dentry", task: "Task") -> File:
        self.check()
        f = self._open_path(flags, dentry)
        if f is not None:
            return f
        if (flags & C.O_ACCMODE) != C.O_RDONLY or flags & C.O_CREAT:
            raise SyscallError(C.EISDIR)
        return DirFile(flags, dentry, self)

    # A synthetic directory cannot be changed.
    def _ro(self, *a, **kw):
        self.check()
        raise SyscallError(C.EACCES)

    create = mkdir = mknod = symlink = _ro

    def link(self, name, target):
        raise SyscallError(C.EACCES)

    def unlink(self, name):
        self.lookup(name)
        raise SyscallError(C.EACCES)

    def rmdir(self, name):
        self.lookup(name)
        raise SyscallError(C.EACCES)

    def rename(self, oldname, newdir, newname, flags):
        self.lookup(oldname)
        raise SyscallError(C.EACCES)


def _to_bytes(data: Content) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


class SynthFile(SynthInode):
    """A regular file whose bytes ``content()`` computes at open time.

    Read-only unless ``write`` is given: ``write(data: bytes) -> None`` is
    called with each chunk written (Linux's control files take one write at
    a time; the offset is ignored) and may raise SyscallError.
    """
    ftype = C.S_IFREG

    def __init__(self, fs: SynthFS, key: Hashable, content: "Callable[[], Content] | Content",
                 write: Callable[[bytes], None] | None = None, perm: int | None = None, **kw):
        super().__init__(fs, key, perm if perm is not None else (0o644 if write else 0o444), **kw)
        self.content = content
        self.writer = write

    def size(self) -> int:
        return self.fs.file_size

    def generate(self) -> bytes:
        c = self.content
        return _to_bytes(c() if callable(c) else c)

    def open(self, flags: int, dentry: "Dentry", task: "Task") -> File:
        self.check()
        f = self._open_path(flags, dentry)
        if f is not None:
            return f
        if flags & C.O_DIRECTORY:
            raise SyscallError(C.ENOTDIR)
        wants_write = (flags & C.O_ACCMODE) != C.O_RDONLY
        if wants_write and self.writer is None:
            raise SyscallError(C.EACCES)
        data = self.generate() if (flags & C.O_ACCMODE) != C.O_WRONLY else b""
        return SnapshotFile(flags, dentry, self, data, self.writer)


class SnapshotFile(File):
    """An open synthetic file: the bytes generated at open, seekable."""
    seekable = True

    def __init__(self, flags: int, dentry: "Dentry | None", inode: Inode, data: bytes,
                 writer: Callable[[bytes], None] | None = None):
        super().__init__(flags, dentry, inode)
        self.data = data
        self.writer = writer

    def pread(self, count: int, offset: int) -> bytes:
        if offset < 0:
            raise SyscallError(C.EINVAL)
        return self.data[offset:offset + count]

    def pwrite(self, data: bytes, offset: int) -> int:
        if self.writer is None:
            raise SyscallError(C.EINVAL)
        self.writer(bytes(data))
        return len(data)

    def write(self, task, data):
        if not self.writable:
            raise SyscallError(C.EBADF)
        n = self.pwrite(data, self.offset)
        self.offset += n
        return n

    def read(self, task, count):
        if not self.readable:
            raise SyscallError(C.EBADF)
        return super().read(task, count)

    def seek(self, offset: int, whence: int) -> int:
        if whence == C.SEEK_END:  # size is reported 0 as on Linux; SEEK_END uses the real length
            new = len(self.data) + offset
            if new < 0:
                raise SyscallError(C.EINVAL)
            self.offset = new
            return new
        return super().seek(offset, whence)

    def truncate(self, size: int) -> None:
        if self.writer is None:
            raise SyscallError(C.EINVAL)

    def poll(self) -> int:
        return C.POLLIN | C.POLLOUT | C.POLLRDNORM | C.POLLWRNORM


class SynthSymlink(SynthInode):
    """A symlink whose target ``target()`` computes; ``magic(task)`` may
    return the Dentry the link stands for (a /proc magic link)."""
    ftype = C.S_IFLNK

    def __init__(self, fs: SynthFS, key: Hashable, target: "Callable[[], Content] | Content",
                 magic: "Callable[[Task], Dentry | None] | None" = None, perm: int = 0o777, **kw):
        super().__init__(fs, key, perm, **kw)
        self.target = target
        self.magic = magic

    def size(self) -> int:
        try:
            return len(self.readlink())
        except SyscallError:
            return 0

    def readlink(self) -> bytes:
        self.check()
        t = self.target
        return _to_bytes(t() if callable(t) else t)

    def magic_link(self, task: "Task") -> "Dentry | None":
        if self.magic is None:
            return None
        self.check()
        return self.magic(task)

    def open(self, flags: int, dentry: "Dentry", task: "Task") -> File:
        self.check()
        f = self._open_path(flags, dentry)
        if f is not None:
            return f
        raise SyscallError(C.ELOOP)
