"""Path arguments of syscalls: dirfd + path (+ AT_* flags) to a dentry."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pysc.core.abi import consts as C
from pysc.core.dispatch import s32
from pysc.core.errors import SyscallError
from pysc.core.vfs import PATH_MAX, Dentry

if TYPE_CHECKING:
    from pysc.core.task import Task


def read_path(t: "Task", addr: int) -> bytes:
    if addr == 0:
        raise SyscallError(C.EFAULT)
    return t.mem.read_cstr(addr, PATH_MAX)


def at_dentry(t: "Task", dirfd: int) -> Dentry:
    """The directory a relative path starts from."""
    dirfd = s32(dirfd)
    if dirfd == C.AT_FDCWD:
        return t.fs.cwd
    f = t.fdtable.get(dirfd)
    if f.dentry is None:
        raise SyscallError(C.ENOTDIR)
    return f.dentry


def resolve(t: "Task", dirfd: int, path: bytes, follow: bool = True, empty_path: bool = False,
            resolve_flags: int = 0) -> Dentry:
    """Resolve ``path`` relative to ``dirfd``.  With ``empty_path`` (AT_EMPTY_PATH),
    an empty path names the file ``dirfd`` refers to (of any kind)."""
    if not path:
        if not empty_path:
            raise SyscallError(C.ENOENT)
        dirfd = s32(dirfd)
        if dirfd == C.AT_FDCWD:
            return t.fs.cwd
        f = t.fdtable.get(dirfd)
        if f.dentry is None:
            return anon_dentry(f)
        return f.dentry
    start = at_dentry(t, dirfd) if not path.startswith(b"/") else t.fs.root
    root = t.fs.root
    if resolve_flags & (C.RESOLVE_IN_ROOT | C.RESOLVE_BENEATH):
        if resolve_flags & C.RESOLVE_IN_ROOT:
            root = at_dentry(t, dirfd)
            start = root
    return t.vfs.walk(t, start, path, follow, root=root, resolve=resolve_flags)


def resolve_at(t: "Task", dirfd: int, path_addr: int, flags: int = 0, follow_default: bool = True
               ) -> Dentry:
    """For the *at() calls with AT_SYMLINK_NOFOLLOW / AT_SYMLINK_FOLLOW / AT_EMPTY_PATH."""
    path = read_path(t, path_addr) if not (flags & C.AT_EMPTY_PATH and path_addr == 0) else b""
    follow = follow_default
    if flags & C.AT_SYMLINK_NOFOLLOW:
        follow = False
    if flags & C.AT_SYMLINK_FOLLOW:
        follow = True
    return resolve(t, dirfd, path, follow, bool(flags & C.AT_EMPTY_PATH))


def parent_of(t: "Task", dirfd: int, path: bytes) -> tuple[Dentry, bytes]:
    """(parent directory, last name) for calls that create or remove a name."""
    start = at_dentry(t, dirfd) if not path.startswith(b"/") else t.fs.root
    return t.vfs.walk_parent(t, start, path)


class _AnonMount:
    id = 0
    readonly = False
    fstype = "anon"


def anon_dentry(f) -> Dentry:
    """A dentry for a file with no name (pipe, socket, eventfd...)."""
    if f.inode is None:
        raise SyscallError(C.EBADF)
    return Dentry(f.path_for_proc(), None, f.inode, _AnonMount())
