"""An overlay of a writable tmpfs upper layer over a read-only lower layer
(``--overlay2=root:memory``): the app may write anywhere, the host files
below never change."""
from __future__ import annotations

import os

from pysc.core.abi import consts as C
from pysc.core.abi.structs import dtype_of_mode
from pysc.core.errors import SyscallError
from pysc.core.file import copy_to_fd
from pysc.core.fs.tmpfs import DirFile, TmpFS, TmpInode
from pysc.core.vfs import Filesystem, Inode


class OverlayFS(Filesystem):
    name = "overlay"

    def __init__(self, lower_root: Inode, upper: TmpFS | None = None):
        super().__init__()
        self.upper = upper or TmpFS(mode=0o755)
        self.lower_fs = lower_root.fs
        self.root = OverlayInode(self, None, b"", self.upper.root, lower_root)
        st = lower_root.stat()
        up = self.upper.root.st
        up.mode, up.uid, up.gid = st.mode, st.uid, st.gid
        up.atime_ns, up.mtime_ns, up.ctime_ns = st.atime_ns, st.mtime_ns, st.ctime_ns

    def statfs(self):
        return self.lower_fs.statfs()


class OverlayInode(Inode):
    def __init__(self, fs: OverlayFS, parent: "OverlayInode | None", name: bytes,
                 upper: TmpInode | None, lower: Inode | None):
        self.fs = fs
        self.parent = parent or self
        self.name = name
        self.upper = upper
        self.lower = lower
        self._children: dict[bytes, OverlayInode] = {}

    @property
    def layer(self) -> Inode:
        return self.upper if self.upper is not None else self.lower

    def stat(self):
        st = self.layer.stat()
        if self.lower is not None and self.upper is not None:
            lst = self.lower.stat()
            st.ino = lst.ino
            if self.is_dir():  # a copied-up directory still lists the lower entries
                st.size, st.nlink = lst.size, max(st.nlink, lst.nlink)
        if self.is_dir():
            st.dev = self.fs.dev
        return st

    @property
    def mode(self) -> int:
        return self.layer.mode

    def is_dir(self) -> bool:
        return self.layer.mode & C.S_IFMT == C.S_IFDIR

    # --- lookup and listing ---
    def _merged_lower(self) -> bool:
        return self.lower is not None and (self.upper is None or not self.upper.opaque)

    def lookup(self, name: bytes) -> Inode:
        child = self._children.get(name)
        if child is not None:
            return child
        if not self.is_dir():
            raise SyscallError(C.ENOTDIR)
        up = lo = None
        if self.upper is not None:
            if name in self.upper.whiteouts:
                raise SyscallError(C.ENOENT)
            up = self.upper.children.get(name)
        if self._merged_lower() and (up is None or (up.is_dir() and not up.opaque)):
            try:
                lo = self.lower.lookup(name)
            except SyscallError as e:
                if e.errno not in (C.ENOENT, C.ENOTDIR):
                    raise
            if lo is not None and up is not None and not lo.is_dir():
                lo = None
        if up is None and lo is None:
            raise SyscallError(C.ENOENT)
        child = OverlayInode(self.fs, self, name, up, lo)
        self._children[name] = child
        return child

    def readdir(self):
        entries: dict[bytes, tuple[int, int]] = {}
        if self._merged_lower():
            for name, ino, dt in self.lower.readdir():
                entries[name] = (ino, dt)
        if self.upper is not None:
            for name in self.upper.whiteouts:
                entries.pop(name, None)
            for name, ino_obj in self.upper.children.items():
                ino = entries[name][0] if name in entries else ino_obj.st.ino
                entries[name] = (ino, dtype_of_mode(ino_obj.st.mode))
        return [(n, i, d) for n, (i, d) in entries.items()]

    def readlink(self):
        return self.layer.readlink()

    # --- copy up ---
    def copy_up(self) -> TmpInode:
        if self.upper is not None:
            return self.upper
        parent_upper = self.parent.copy_up()
        lo = self.lower
        st = lo.stat()
        fmt = st.mode & C.S_IFMT
        up = TmpInode(self.fs.upper, st.mode, st.uid, st.gid, st.rdev)
        if fmt == C.S_IFLNK:
            up.target = lo.readlink()
        elif fmt == C.S_IFREG and st.size:
            src = lo.host_file() if hasattr(lo, "host_file") else None
            dst = up._fd()
            if src is not None:
                try:
                    off = 0
                    while off < st.size:
                        n = os.sendfile(dst, src, off, st.size - off)
                        if n == 0:
                            break
                        off += n
                finally:
                    os.close(src)
            else:
                f = lo.open(C.O_RDONLY, None, None)
                try:
                    copy_to_fd(f, dst)
                finally:
                    f.decref()
        up.st.atime_ns, up.st.mtime_ns, up.st.ctime_ns = st.atime_ns, st.mtime_ns, st.ctime_ns
        parent_upper.children[self.name] = up
        up.parent = parent_upper
        if fmt == C.S_IFDIR:
            parent_upper.st.nlink += 1
        self.upper = up
        return up

    # --- modifications ---
    def _child_exists(self, name: bytes) -> "OverlayInode | None":
        try:
            return self.lookup(name)
        except SyscallError as e:
            if e.errno == C.ENOENT:
                return None
            raise

    def _lower_has(self, name: bytes) -> bool:
        if not self._merged_lower():
            return False
        try:
            self.lower.lookup(name)
            return True
        except SyscallError:
            return False

    def _created(self, name: bytes, up: TmpInode) -> Inode:
        self._children.pop(name, None)
        return self.lookup(name)

    def create(self, name, mode, creds):
        if self._child_exists(name) is not None:
            raise SyscallError(C.EEXIST)
        return self._created(name, self.copy_up().create(name, mode, creds))

    def mkdir(self, name, mode, creds):
        if self._child_exists(name) is not None:
            raise SyscallError(C.EEXIST)
        opaque = self._lower_has(name)
        up = self.copy_up().mkdir(name, mode, creds)
        up.opaque = opaque
        return self._created(name, up)

    def mknod(self, name, mode, rdev, creds):
        if self._child_exists(name) is not None:
            raise SyscallError(C.EEXIST)
        return self._created(name, self.copy_up().mknod(name, mode, rdev, creds))

    def symlink(self, name, target, creds):
        if self._child_exists(name) is not None:
            raise SyscallError(C.EEXIST)
        return self._created(name, self.copy_up().symlink(name, target, creds))

    def link(self, name, target):
        if not isinstance(target, OverlayInode) or target.fs is not self.fs:
            raise SyscallError(C.EXDEV)
        if self._child_exists(name) is not None:
            raise SyscallError(C.EEXIST)
        self.copy_up().link(name, target.copy_up())
        self._children.pop(name, None)

    def _remove(self, name: bytes, child: "OverlayInode") -> None:
        up = self.copy_up()
        if child.upper is not None:
            del up.children[name]
            if child.upper.is_dir():
                up.st.nlink -= 1
            child.upper.st.nlink -= 1
        if self._lower_has(name):
            up.whiteouts.add(name)
        up.touch()
        self._children.pop(name, None)

    def unlink(self, name):
        child = self.lookup(name)
        if child.is_dir():
            raise SyscallError(C.EISDIR)
        self._remove(name, child)

    def rmdir(self, name):
        child = self.lookup(name)
        if not child.is_dir():
            raise SyscallError(C.ENOTDIR)
        if child.readdir():
            raise SyscallError(C.ENOTEMPTY)
        self._remove(name, child)

    def rename(self, oldname, newdir, newname, flags):
        if not isinstance(newdir, OverlayInode) or newdir.fs is not self.fs:
            raise SyscallError(C.EXDEV)
        if flags & C.RENAME_EXCHANGE:
            raise SyscallError(C.EINVAL)
        src = self.lookup(oldname)
        if src.is_dir() and src.lower is not None:
            raise SyscallError(C.EXDEV)  # as overlayfs without redirect_dir: mv copies instead
        dst = newdir._child_exists(newname)
        if dst is not None:
            if flags & C.RENAME_NOREPLACE:
                raise SyscallError(C.EEXIST)
            if dst is src:
                return
            if dst.is_dir():
                if not src.is_dir():
                    raise SyscallError(C.EISDIR)
                if dst.readdir():
                    raise SyscallError(C.ENOTEMPTY)
            elif src.is_dir():
                raise SyscallError(C.ENOTDIR)
        src_up = src.copy_up()
        dst_up = newdir.copy_up()
        if dst is not None:
            newdir._remove(newname, dst)
            dst_up.whiteouts.discard(newname)
        up = self.copy_up()
        del up.children[oldname]
        dst_up.children[newname] = src_up
        src_up.parent = dst_up
        if src_up.is_dir():
            up.st.nlink -= 1
            dst_up.st.nlink += 1
            src_up.opaque = True
        if self._lower_has(oldname):
            up.whiteouts.add(oldname)
        if newdir._lower_has(newname) and not src_up.is_dir():
            pass  # the upper entry hides the lower one
        self._children.pop(oldname, None)
        newdir._children.pop(newname, None)
        up.touch()
        dst_up.touch()

    def setattr(self, **kw):
        self.copy_up().setattr(**kw)

    def listxattr(self):
        return self.layer.listxattr()

    def getxattr(self, name):
        return self.layer.getxattr(name)

    def setxattr(self, name, value, flags):
        self.copy_up().setxattr(name, value, flags)

    def removexattr(self, name):
        self.copy_up().removexattr(name)

    def open(self, flags, dentry, task):
        if self.is_dir():
            if flags & C.O_ACCMODE != C.O_RDONLY:
                raise SyscallError(C.EISDIR)
            return DirFile(flags, dentry, self)
        if flags & C.O_ACCMODE != C.O_RDONLY or flags & C.O_TRUNC:
            return self.copy_up().open(flags, dentry, task)
        return self.layer.open(flags, dentry, task)

    def host_file(self) -> int | None:
        """A read-only host fd of a lower file (for exec), or None."""
        if self.upper is None and hasattr(self.lower, "host_file"):
            return self.lower.host_file()
        return None

    @property
    def special(self):
        return self.upper.special if self.upper is not None else None

    @special.setter
    def special(self, value):
        self.copy_up().special = value
