"""The VFS: inodes, dentries, mounts and path resolution (Linux's namei)."""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Iterable

from pysc.core.abi import consts as C
from pysc.core.abi.structs import Stat
from pysc.core.errors import SyscallError

if TYPE_CHECKING:
    from pysc.core.file import File
    from pysc.core.task import Credentials, Task

MAX_SYMLINKS = 40
NAME_MAX = 255
PATH_MAX = 4096

_dev_numbers = itertools.count(1)


class Filesystem:
    """A mounted filesystem instance; ``dev`` is its st_dev."""
    name = "none"
    readonly = False

    def __init__(self) -> None:
        self.dev = (0 << 8) | next(_dev_numbers)  # anonymous block device numbers, as Linux's
        self._ino = itertools.count(1)

    def next_ino(self) -> int:
        return next(self._ino)

    def statfs(self) -> tuple:
        """(f_type, bsize, blocks, bfree, bavail, files, ffree, namelen)."""
        return (0x01021994, 4096, 1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, NAME_MAX)


class Inode:
    """A file of some filesystem.  Every operation a filesystem does not
    support fails with the errno Linux gives for it."""

    fs: Filesystem

    def stat(self) -> Stat:
        raise SyscallError(C.EIO)  # every filesystem overrides this

    @property
    def mode(self) -> int:
        return self.stat().mode

    def is_dir(self) -> bool:
        return self.mode & C.S_IFMT == C.S_IFDIR

    def is_symlink(self) -> bool:
        return self.mode & C.S_IFMT == C.S_IFLNK

    # --- directories ---
    def lookup(self, name: bytes) -> "Inode":
        raise SyscallError(C.ENOTDIR)

    def readdir(self) -> Iterable[tuple[bytes, int, int]]:
        """(name, ino, DT_*) for every entry but . and .."""
        raise SyscallError(C.ENOTDIR)

    def create(self, name: bytes, mode: int, creds: "Credentials") -> "Inode":
        raise SyscallError(C.EPERM if self.is_dir() else C.ENOTDIR)

    def mkdir(self, name: bytes, mode: int, creds: "Credentials") -> "Inode":
        raise SyscallError(C.EPERM if self.is_dir() else C.ENOTDIR)

    def mknod(self, name: bytes, mode: int, rdev: int, creds: "Credentials") -> "Inode":
        raise SyscallError(C.EPERM if self.is_dir() else C.ENOTDIR)

    def symlink(self, name: bytes, target: bytes, creds: "Credentials") -> "Inode":
        raise SyscallError(C.EPERM if self.is_dir() else C.ENOTDIR)

    def link(self, name: bytes, target: "Inode") -> None:
        raise SyscallError(C.EPERM if self.is_dir() else C.ENOTDIR)

    def unlink(self, name: bytes) -> None:
        raise SyscallError(C.EPERM if self.is_dir() else C.ENOTDIR)

    def rmdir(self, name: bytes) -> None:
        raise SyscallError(C.EPERM if self.is_dir() else C.ENOTDIR)

    def rename(self, oldname: bytes, newdir: "Inode", newname: bytes, flags: int) -> None:
        raise SyscallError(C.EPERM if self.is_dir() else C.ENOTDIR)

    # --- links ---
    def readlink(self) -> bytes:
        raise SyscallError(C.EINVAL)

    def magic_link(self, task: "Task") -> "Dentry | None":
        """For /proc's magic links: the dentry the link stands for, followed
        without reading its text.  None for ordinary symlinks."""
        return None

    # --- files ---
    def open(self, flags: int, dentry: "Dentry", task: "Task") -> "File":
        raise SyscallError(C.ENXIO)

    def setattr(self, *, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                size: int | None = None, atime_ns: int | None = None,
                mtime_ns: int | None = None) -> None:
        raise SyscallError(C.EPERM)

    def listxattr(self) -> list[bytes]:
        return []

    def getxattr(self, name: bytes) -> bytes:
        raise SyscallError(C.ENODATA)

    def setxattr(self, name: bytes, value: bytes, flags: int) -> None:
        raise SyscallError(C.ENOTSUP)

    def removexattr(self, name: bytes) -> None:
        raise SyscallError(C.ENODATA)


class Mount:
    """A filesystem attached at a path of the sandbox's tree."""
    _ids = itertools.count(1)

    def __init__(self, fs: Filesystem, root: Inode, mountpoint: bytes, source: str, fstype: str,
                 options: str = "rw", readonly: bool = False):
        self.id = next(Mount._ids)
        self.fs = fs
        self.root = root
        self.mountpoint = mountpoint
        self.source = source
        self.fstype = fstype
        self.readonly = readonly
        self.options = ("ro" if readonly else "rw") + ("," + options if options and options != "rw" else "")
        self.vfs: "VFS | None" = None  # the mount tree (namespace) it is attached in


class Dentry:
    """A name in the tree: (parent, name) -> inode, on a mount."""
    __slots__ = ("name", "parent", "inode", "mount", "children", "__weakref__")

    def __init__(self, name: bytes, parent: "Dentry | None", inode: Inode, mount: Mount):
        self.name = name
        self.parent = parent if parent is not None else self
        self.inode = inode
        self.mount = mount
        self.children: dict[bytes, Dentry] = {}

    def is_root(self) -> bool:
        return self.parent is self

    def path(self) -> bytes:
        parts = []
        d = self
        while not d.is_root():
            parts.append(d.name)
            d = d.parent
        return b"/" + b"/".join(reversed(parts))

    def invalidate(self, name: bytes | None = None) -> None:
        if name is None:
            self.children.clear()
        else:
            self.children.pop(name, None)

    def __repr__(self) -> str:
        return f"Dentry({self.path()!r})"


def may_access(creds: "Credentials", st: Stat, mask: int) -> bool:
    """DAC check of R_OK/W_OK/X_OK against an inode's mode, as generic_permission()."""
    if mask == 0:
        return True
    if creds.fsuid == 0 or creds.has_cap_dac_override():
        if mask & C.X_OK and st.type != C.S_IFDIR and not st.mode & 0o111:
            return False
        return True
    if creds.fsuid == st.uid:
        bits = (st.mode >> 6) & 7
    elif st.gid == creds.fsgid or st.gid in creds.groups:
        bits = (st.mode >> 3) & 7
    else:
        bits = st.mode & 7
    return mask & bits == mask


class VFS:
    """A mount tree and path resolution: a mount namespace.  The sandbox's
    first container has one; each container that joins a pod sandbox gets
    its own.  A task's is ``task.vfs``."""

    def __init__(self, root_mount: Mount):
        root_mount.vfs = self
        self.mounts: dict[bytes, Mount] = {b"/": root_mount}
        self.root = Dentry(b"/", None, root_mount.root, root_mount)

    # --- mounts ---
    def mount(self, path: bytes, mount: Mount) -> None:
        """Attach ``mount`` at the absolute, canonical ``path`` (an existing directory)."""
        mount.mountpoint = path
        mount.vfs = self
        self.mounts[path] = mount
        # Drop a cached dentry for the covered directory.
        d = self.root
        parts = [p for p in path.split(b"/") if p]
        for p in parts[:-1]:
            d = d.children.get(p)
            if d is None:
                return
        if parts:
            d.children.pop(parts[-1], None)

    def umount(self, path: bytes) -> None:
        if path == b"/" or path not in self.mounts:
            raise SyscallError(C.EINVAL)
        del self.mounts[path]
        self.root.children.clear()

    def mount_list(self) -> list[Mount]:
        return sorted(self.mounts.values(), key=lambda m: (m.mountpoint.count(b"/"), m.mountpoint))

    # --- walking ---
    def child(self, parent: Dentry, name: bytes) -> Dentry:
        """Look ``name`` up in ``parent`` (cached), crossing onto a mount there."""
        d = parent.children.get(name)
        if d is not None:
            revalidate = getattr(d.inode, "revalidate", None)
            if revalidate is None or revalidate():
                return d
            del parent.children[name]
        if len(name) > NAME_MAX:
            raise SyscallError(C.ENAMETOOLONG)
        path = parent.path()
        path = path + name if path == b"/" else path + b"/" + name
        m = self.mounts.get(path)
        if m is not None:
            d = Dentry(name, parent, m.root, m)
        else:
            d = Dentry(name, parent, parent.inode.lookup(name), parent.mount)
        parent.children[name] = d
        return d

    def walk(self, task: "Task | None", start: Dentry, path: bytes, follow: bool = True,
             root: Dentry | None = None, _links: list[int] | None = None,
             resolve: int = 0) -> Dentry:
        """Resolve ``path`` from ``start`` (ignored for absolute paths)."""
        if not path:
            raise SyscallError(C.ENOENT)
        if len(path) >= PATH_MAX:
            raise SyscallError(C.ENAMETOOLONG)
        if b"\0" in path:
            raise SyscallError(C.EINVAL)
        if root is None:
            root = task.fs.root if task is not None else self.root
        links = _links if _links is not None else [0]
        if path.startswith(b"/"):
            if resolve & C.RESOLVE_BENEATH:
                raise SyscallError(C.EXDEV)
            cur = root
        else:
            cur = start
        comps = path.split(b"/")
        trailing = path.endswith(b"/")
        names = [c for c in comps if c and c != b"."]
        if trailing:
            follow = True
        creds = task.creds if task is not None else None
        if creds is not None and creds.fsuid == 0 and creds.cap_effective & 0b110:
            creds = None  # CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: may search any directory
        for i, name in enumerate(names):
            last = i == len(names) - 1
            if not cur.inode.is_dir():
                raise SyscallError(C.ENOTDIR)
            if creds is not None and not may_access(creds, cur.inode.stat(), C.X_OK):
                raise SyscallError(C.EACCES)
            if name == b"..":
                if cur is root or cur.is_root():
                    continue
                if resolve & C.RESOLVE_BENEATH and cur is start:
                    raise SyscallError(C.EXDEV)
                cur = cur.parent
                continue
            child = self.child(cur, name)
            if (not last or follow) and child.inode.is_symlink():
                if resolve & C.RESOLVE_NO_SYMLINKS:
                    raise SyscallError(C.ELOOP)
                links[0] += 1
                if links[0] > MAX_SYMLINKS:
                    raise SyscallError(C.ELOOP)
                magic = child.inode.magic_link(task) if task is not None else None
                if magic is not None:
                    if resolve & C.RESOLVE_NO_MAGICLINKS:
                        raise SyscallError(C.ELOOP)
                    cur = magic
                else:
                    cur = self.walk(task, cur, child.inode.readlink(), True, root, links, resolve)
                continue
            cur = child
        if trailing and not cur.inode.is_dir():
            raise SyscallError(C.ENOTDIR)
        return cur

    def walk_parent(self, task: "Task | None", start: Dentry, path: bytes,
                    root: Dentry | None = None) -> tuple[Dentry, bytes]:
        """Resolve all but the last component; return (parent dentry, last name).

        The last name is ``.`` or ``..`` for paths ending so; callers that
        create or remove names reject those.
        """
        if not path:
            raise SyscallError(C.ENOENT)
        stripped = path.rstrip(b"/")
        if not stripped:  # "/" itself
            return (root or (task.fs.root if task else self.root)), b"."
        head, _, last = stripped.rpartition(b"/")
        if not _:
            parent = start if not path.startswith(b"/") else (root or (task.fs.root if task else self.root))
            if task is not None and not parent.inode.is_dir():
                raise SyscallError(C.ENOTDIR)
            return parent, last
        parent = self.walk(task, start, head or b"/", True, root)
        if not parent.inode.is_dir():
            raise SyscallError(C.ENOTDIR)
        return parent, last
