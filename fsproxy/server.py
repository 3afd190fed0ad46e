"""The gofer: the only process of a sandbox that opens the container's host paths.

``GoferServer`` serves the mounts it was started with over a ZeroMQ REP
socket (the protocol of ``pysc.fsproxy.protocol``) and donates each mount's
root fd to the Sentry (``pysc.fsproxy.donation``).  The process around it,
its command line and its start are ``pysc.fsproxy.gofer``.

Confinement: a mount root is opened once at start (from the host's root,
following symlinks, as the runtime resolved it); below it every name is
opened one component at a time with ``openat2(dirfd, name, O_PATH |
O_NOFOLLOW, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` (or ``openat`` of the
single component where openat2 is missing), and names with ``/``, ``.`` or
``..`` are refused, so no walk ever follows a symlink or leaves the mount.
Symlinks are returned, never followed: following them is the Sentry's job.
Open files are reopened from their O_PATH fd through ``/proc/self/fd`` (the
same inode, not a path).
"""
from __future__ import annotations

import ctypes
import errno as E
import logging
import os
import socket
import stat as S
import struct
import traceback


from pysc.fsproxy import protocol as P
from pysc.fsproxy.donation import root_fd, send_donation

log = logging.getLogger("pysc.gofer")

O_PATH = os.O_PATH
O_NOFOLLOW = os.O_NOFOLLOW
O_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_REMOVEDIR = 0x200
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
UTIME_OMIT = (1 << 30) - 2
SYS_openat2 = 437
SYS_renameat2 = 316
MAX_IO = 16 << 20          # largest single read the gofer answers
NAME_MAX = 255
PATH_MAX = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


_have_openat2 = True


def _oserror() -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err))


def openat_one(dirfd: int, name: bytes, flags: int, mode: int = 0) -> int:
    """Open the single component ``name`` below ``dirfd``, confined: openat2
    with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, else plain openat of the one
    component (``name`` never holds a slash, so that is as safe)."""
    global _have_openat2
    flags |= O_CLOEXEC
    if _have_openat2:
        how = _OpenHow(flags, mode if flags & os.O_CREAT else 0,
                       RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        fd = _syscall(ctypes.c_long(SYS_openat2), ctypes.c_long(dirfd), ctypes.c_char_p(name),
                      ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err not in (E.ENOSYS, E.EPERM) or err == E.EPERM and not _probe_openat2_blocked():
            raise OSError(err, os.strerror(err))
        _have_openat2 = False
        log.warning("openat2 unavailable (%s); falling back to single-component openat",
                    os.strerror(err))
    return os.open(name, flags, mode, dir_fd=dirfd)


def _probe_openat2_blocked() -> bool:
    """EPERM from openat2 may be a seccomp filter refusing it: probe with '/'."""
    how = _OpenHow(O_PATH | O_CLOEXEC, 0, 0)
    fd = _syscall(ctypes.c_long(SYS_openat2), ctypes.c_long(-100), ctypes.c_char_p(b"/"),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd >= 0:
        os.close(fd)
        return False
    return True


def _check(res: int) -> int:
    if res < 0:
        raise _oserror()
    return res


def check_name(name) -> bytes:
    """A single, ordinary directory entry name, or EINVAL/ENAMETOOLONG."""
    if type(name) is not bytes or not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise OSError(E.EINVAL, "bad file name")
    if len(name) > NAME_MAX:
        raise OSError(E.ENAMETOOLONG, "name too long")
    return name


def _int(v) -> int:
    if type(v) is not int:
        raise OSError(E.EINVAL, "integer expected")
    return v


class MountRoot:
    __slots__ = ("index", "path", "readonly", "fd", "stat")

    def __init__(self, index: int, path: str, readonly: bool):
        self.index = index
        self.path = path
        self.readonly = readonly
        self.fd = os.open(path, O_PATH | O_CLOEXEC)
        self.stat = os.fstat(self.fd)


class Handle:
    __slots__ = ("fd", "mount", "readonly", "opened")

    def __init__(self, fd: int, mount: int, readonly: bool, opened: bool = False):
        self.fd = fd
        self.mount = mount
        self.readonly = readonly
        self.opened = opened


class GoferServer:
    """The gofer's state: mounts and handles; ``handle(msg)`` answers one message.

    Usable in-process (tests) as well as by ``serve``."""

    def __init__(self, mounts: list[tuple[str, bool]]):
        self.mounts = [MountRoot(i, p, ro) for i, (p, ro) in enumerate(mounts)]
        self.handles: dict[int, Handle] = {}
        self._next = 1
        self.procfd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | O_CLOEXEC)
        self.running = True
        self.dispatch = {
            P.Attach: self.attach, P.Walk: self.walk, P.Stat: self.stat, P.Open: self.open,
            P.Create: self.create, P.Read: self.read, P.ReadV: self.readv, P.Write: self.write,
            P.WriteV: self.writev, P.Readdir: self.readdir, P.Mkdir: self.mkdir,
            P.Mknod: self.mknod, P.Symlink: self.symlink, P.Link: self.link,
            P.Unlink: self.unlink, P.Rename: self.rename, P.Readlink: self.readlink,
            P.Setattr: self.setattr, P.Statfs: self.statfs, P.Fsync: self.fsync,
            P.Getxattr: self.getxattr, P.Listxattr: self.listxattr, P.Setxattr: self.setxattr,
            P.Removexattr: self.removexattr, P.Close: self.close, P.Shutdown: self.shutdown,
            P.Batch: self.batch,
        }
        self.supported = tuple(sorted(c.__name__ for c in self.dispatch))

    # ------------------------------------------------------------ plumbing
    def close_all(self) -> None:
        """Release every handle, mount root and the /proc/self/fd fd."""
        fds = [h.fd for h in self.handles.values()] + [m.fd for m in self.mounts] + [self.procfd]
        self.handles.clear()
        self.mounts = []
        self.procfd = -1
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def handle(self, msg) -> object:
        """Answer one decoded message (never raises)."""
        fn = self.dispatch.get(type(msg))
        if fn is None:
            return P.ErrorReply(E.ENOSYS)
        try:
            return fn(msg)
        except OSError as e:
            return P.ErrorReply(e.errno or E.EIO)
        except (TypeError, ValueError, OverflowError, AttributeError) as e:
            log.info("bad %s: %s", type(msg).__name__, e)
            return P.ErrorReply(E.EINVAL)
        except Exception:  # a bug: report, do not die
            log.error("error serving %r:\n%s", msg, traceback.format_exc())
            return P.ErrorReply(E.EIO)

    def handle_raw(self, raw: bytes) -> bytes:
        try:
            msg = P.decode(raw)
        except P.ProtocolError as e:
            log.info("protocol error: %s", e)
            return P.encode(P.ErrorReply(E.ENOSYS if "unknown message tag" in str(e) else E.EINVAL))
        reply = self.handle(msg)
        try:
            return P.encode(reply)
        except P.ProtocolError:
            log.error("cannot encode reply %r", reply)
            return P.encode(P.ErrorReply(E.EIO))

    def _get(self, handle) -> Handle:
        h = self.handles.get(handle) if type(handle) is int else None
        if h is None:
            raise OSError(E.EBADF, "unknown handle")
        return h

    def _new(self, fd: int, mount: int, readonly: bool, opened: bool = False) -> int:
        n = self._next
        self._next += 1
        self.handles[n] = Handle(fd, mount, readonly, opened)
        return n

    @staticmethod
    def _rw(h: Handle) -> None:
        if h.readonly:
            raise OSError(E.EROFS, "read-only mount")

    def _reopen(self, fd: int, flags: int) -> int:
        """A new open file description of the inode of O_PATH ``fd``."""
        return os.open(str(fd), flags | O_CLOEXEC | os.O_NOCTTY, dir_fd=self.procfd)

    def _chown_new(self, fd: int, uid: int, gid: int) -> None:
        uid = -1 if uid is None else _int(uid)
        gid = -1 if gid is None else _int(gid)
        if uid == -1 and gid == -1:
            return
        if _libc.fchownat(fd, b"", uid, gid, AT_EMPTY_PATH) < 0:
            err = ctypes.get_errno()
            if err == E.EPERM and os.geteuid() != 0:
                return  # an unprivileged gofer: files stay owned by its user
            raise OSError(err, os.strerror(err))

    def _entry(self, d: Handle, name: bytes, undo) -> P.EntryReply:
        """Open the just-created ``name`` of ``d`` as a path handle; ``undo`` on failure."""
        try:
            fd = openat_one(d.fd, name, O_PATH | O_NOFOLLOW)
        except OSError:
            undo()
            raise
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            undo()
            raise
        return P.EntryReply(self._new(fd, d.mount, d.readonly), P.stat_to_wire(st))

    # ------------------------------------------------------------ messages
    def attach(self, m: P.Attach) -> P.AttachReply:
        mount = None
        for mr in self.mounts:
            if m.mount in (mr.path, str(mr.index)) or (
                    m.mount and os.path.normpath(m.mount) == os.path.normpath(mr.path)):
                mount = mr
                break
        if mount is None:
            raise OSError(E.ENOENT, "no such mount")
        readonly = mount.readonly or bool(m.readonly)
        fd = os.dup(mount.fd)
        st = os.fstat(fd)
        h = self._new(fd, mount.index, readonly)
        return P.AttachReply(h, P.stat_to_wire(st), self.supported, readonly)

    def walk(self, m: P.Walk) -> P.WalkReply:
        cur = self._get(m.handle)
        entries = []
        err = 0
        names = m.names
        if not isinstance(names, (tuple, list)):
            raise OSError(E.EINVAL, "names")
        for name in names:
            try:
                check_name(name)
                fd = openat_one(cur.fd, name, O_PATH | O_NOFOLLOW)
            except OSError as e:
                err = e.errno
                break
            try:
                st = os.fstat(fd)
            except OSError as e:
                os.close(fd)
                err = e.errno
                break
            h = self._new(fd, cur.mount, cur.readonly)
            entries.append((h, P.stat_to_wire(st)))
            if S.S_ISLNK(st.st_mode):
                break
            cur = self.handles[h]
        return P.WalkReply(tuple(entries), err)

    def stat(self, m: P.Stat) -> P.StatReply:
        return P.StatReply(P.stat_to_wire(os.fstat(self._get(m.handle).fd)))

    def open(self, m: P.Open) -> P.OpenReply:
        h = self._get(m.handle)
        flags = _int(m.flags)
        st = os.fstat(h.fd)
        fmt = S.S_IFMT(st.st_mode)
        acc = flags & os.O_ACCMODE
        if fmt == S.S_IFLNK:
            raise OSError(E.ELOOP, "is a symlink")
        if fmt == S.S_IFSOCK:
            raise OSError(E.ENXIO, "socket")
        if fmt not in (S.S_IFREG, S.S_IFDIR):
            raise OSError(E.EPERM, "special files are served by the Sentry")
        if acc == os.O_ACCMODE:
            raise OSError(E.EINVAL, "bad access mode")
        if flags & os.O_DIRECTORY and fmt != S.S_IFDIR:
            raise OSError(E.ENOTDIR, "not a directory")
        if fmt == S.S_IFDIR and (acc != os.O_RDONLY or flags & os.O_TRUNC):
            raise OSError(E.EISDIR, "is a directory")
        if (acc != os.O_RDONLY or flags & os.O_TRUNC) and h.readonly:
            raise OSError(E.EROFS, "read-only mount")
        hostflags = acc | (flags & (os.O_TRUNC | os.O_SYNC | os.O_DSYNC | os.O_DIRECTORY))
        fd = self._reopen(h.fd, hostflags)
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        return P.OpenReply(self._new(fd, h.mount, h.readonly, True), P.stat_to_wire(st))

    def create(self, m: P.Create) -> P.CreateReply:
        d = self._get(m.handle)
        name = check_name(m.name)
        self._rw(d)
        flags, mode = _int(m.flags), _int(m.mode)
        acc = flags & os.O_ACCMODE
        if acc == os.O_ACCMODE:
            raise OSError(E.EINVAL, "bad access mode")
        hostflags = (acc | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | os.O_NOCTTY
                     | (flags & (os.O_SYNC | os.O_DSYNC)))
        fd = openat_one(d.fd, name, hostflags, mode & 0o7777)
        pfd = -1
        try:
            self._chown_new(fd, m.uid, m.gid)
            pfd = self._reopen(fd, O_PATH)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            if pfd >= 0:
                os.close(pfd)
            try:
                os.unlink(name, dir_fd=d.fd)
            except OSError:
                pass
            raise
        h = self._new(pfd, d.mount, d.readonly)
        fh = self._new(fd, d.mount, d.readonly, True)
        return P.CreateReply(h, fh, P.stat_to_wire(st))

    def _open_fd(self, fh) -> int:
        h = self._get(fh)
        if not h.opened:
            raise OSError(E.EBADF, "not an open handle")
        return h.fd

    def read(self, m: P.Read) -> P.ReadReply:
        fd = self._open_fd(m.fh)
        off, count = _int(m.offset), _int(m.count)
        if count < 0 or off < 0:
            raise OSError(E.EINVAL, "negative")
        return P.ReadReply(os.pread(fd, min(count, MAX_IO), off))

    def readv(self, m: P.ReadV) -> P.ReadVReply:
        fd = self._open_fd(m.fh)
        exts = [(_int(o), _int(c)) for o, c in m.extents]
        if any(o < 0 or c < 0 for o, c in exts) or sum(c for _, c in exts) > 4 * MAX_IO:
            raise OSError(E.EINVAL, "bad extents")
        return P.ReadVReply(tuple(os.pread(fd, c, o) for o, c in exts))

    def write(self, m: P.Write) -> P.WriteReply:
        fd = self._open_fd(m.fh)
        if type(m.data) is not bytes or _int(m.offset) < 0:
            raise OSError(E.EINVAL, "bad write")
        return P.WriteReply(os.pwrite(fd, m.data, m.offset))

    def writev(self, m: P.WriteV) -> P.WriteVReply:
        fd = self._open_fd(m.fh)
        exts = [(_int(o), d) for o, d in m.extents]
        if any(o < 0 or type(d) is not bytes for o, d in exts):
            raise OSError(E.EINVAL, "bad extents")
        counts = []
        for off, data in exts:
            try:
                n = os.pwrite(fd, data, off)
            except OSError:
                if not counts:
                    raise
                break
            counts.append(n)
            if n < len(data):
                break
        return P.WriteVReply(tuple(counts))

    def readdir(self, m: P.Readdir) -> P.ReaddirReply:
        h = self._get(m.handle)
        fd = self._reopen(h.fd, os.O_RDONLY | os.O_DIRECTORY)
        out = []
        try:
            with os.scandir(fd) as it:
                for e in it:
                    if e.is_symlink():
                        dt = 10
                    elif e.is_dir(follow_symlinks=False):
                        dt = 4
                    elif e.is_file(follow_symlinks=False):
                        dt = 8
                    else:
                        try:
                            dt = S.S_IFMT(e.stat(follow_symlinks=False).st_mode) >> 12
                        except OSError:
                            dt = 0
                    out.append((os.fsencode(e.name), e.inode(), dt))
        finally:
            os.close(fd)
        return P.ReaddirReply(tuple(out))

    def mkdir(self, m: P.Mkdir) -> P.EntryReply:
        d = self._get(m.handle)
        name = check_name(m.name)
        self._rw(d)
        os.mkdir(name, _int(m.mode) & 0o7777, dir_fd=d.fd)
        undo = lambda: os.rmdir(name, dir_fd=d.fd)  # noqa: E731
        r = self._entry(d, name, undo)
        try:
            self._chown_new(self.handles[r.handle].fd, m.uid, m.gid)
        except OSError:
            self._close_one(r.handle)
            undo()
            raise
        return P.EntryReply(r.handle, P.stat_to_wire(os.fstat(self.handles[r.handle].fd)))

    def mknod(self, m: P.Mknod) -> P.EntryReply:
        d = self._get(m.handle)
        name = check_name(m.name)
        self._rw(d)
        mode = _int(m.mode)
        fmt = S.S_IFMT(mode) or S.S_IFREG
        if fmt in (S.S_IFCHR, S.S_IFBLK):
            raise OSError(E.EPERM, "no device nodes on host mounts")
        if fmt not in (S.S_IFREG, S.S_IFIFO, S.S_IFSOCK):
            raise OSError(E.EINVAL, "bad file type")
        os.mknod(name, fmt | (mode & 0o7777), 0, dir_fd=d.fd)
        undo = lambda: os.unlink(name, dir_fd=d.fd)  # noqa: E731
        r = self._entry(d, name, undo)
        try:
            self._chown_new(self.handles[r.handle].fd, m.uid, m.gid)
        except OSError:
            self._close_one(r.handle)
            undo()
            raise
        return P.EntryReply(r.handle, P.stat_to_wire(os.fstat(self.handles[r.handle].fd)))

    def symlink(self, m: P.Symlink) -> P.EntryReply:
        d = self._get(m.handle)
        name = check_name(m.name)
        self._rw(d)
        target = m.target
        if type(target) is not bytes or not target or b"\0" in target:
            raise OSError(E.EINVAL if target else E.ENOENT, "bad target")
        if len(target) >= PATH_MAX:
            raise OSError(E.ENAMETOOLONG, "target too long")
        os.symlink(target, name, dir_fd=d.fd)
        undo = lambda: os.unlink(name, dir_fd=d.fd)  # noqa: E731
        r = self._entry(d, name, undo)
        try:
            self._chown_new(self.handles[r.handle].fd, m.uid, m.gid)
        except OSError:
            self._close_one(r.handle)
            undo()
            raise
        return P.EntryReply(r.handle, P.stat_to_wire(os.fstat(self.handles[r.handle].fd)))

    def link(self, m: P.Link) -> P.EntryReply:
        d = self._get(m.handle)
        t = self._get(m.target)
        name = check_name(m.name)
        self._rw(d)
        if t.mount != d.mount:
            raise OSError(E.EXDEV, "cross-mount link")
        if S.S_ISDIR(os.fstat(t.fd).st_mode):
            raise OSError(E.EPERM, "hard link to a directory")
        if _libc.linkat(t.fd, b"", d.fd, name, AT_EMPTY_PATH) < 0:
            err = ctypes.get_errno()
            if err not in (E.EPERM, E.ENOENT, E.EINVAL):
                raise OSError(err, os.strerror(err))
            # Without CAP_DAC_READ_SEARCH: through the fd's magic link.
            os.link(str(t.fd), name, src_dir_fd=self.procfd, dst_dir_fd=d.fd, follow_symlinks=True)
        return self._entry(d, name, lambda: os.unlink(name, dir_fd=d.fd))

    def unlink(self, m: P.Unlink) -> P.OkReply:
        d = self._get(m.handle)
        name = check_name(m.name)
        flags = _int(m.flags)
        self._rw(d)
        if flags & ~AT_REMOVEDIR:
            raise OSError(E.EINVAL, "bad flags")
        if flags & AT_REMOVEDIR:
            os.rmdir(name, dir_fd=d.fd)
        else:
            os.unlink(name, dir_fd=d.fd)
        return P.OkReply()

    def rename(self, m: P.Rename) -> P.OkReply:
        d = self._get(m.handle)
        nd = self._get(m.newhandle)
        name, newname = check_name(m.name), check_name(m.newname)
        flags = _int(m.flags)
        self._rw(d)
        self._rw(nd)
        if d.mount != nd.mount:
            raise OSError(E.EXDEV, "cross-mount rename")
        if flags == 0:
            os.rename(name, newname, src_dir_fd=d.fd, dst_dir_fd=nd.fd)
        else:
            _check(_syscall(ctypes.c_long(SYS_renameat2), ctypes.c_long(d.fd), ctypes.c_char_p(name),
                            ctypes.c_long(nd.fd), ctypes.c_char_p(newname), ctypes.c_long(flags)))
        return P.OkReply()

    def readlink(self, m: P.Readlink) -> P.ReadlinkReply:
        h = self._get(m.handle)
        if not S.S_ISLNK(os.fstat(h.fd).st_mode):
            raise OSError(E.EINVAL, "not a symlink")
        return P.ReadlinkReply(os.readlink(b"", dir_fd=h.fd))

    def setattr(self, m: P.Setattr) -> P.StatReply:
        h = self._get(m.handle)
        self._rw(h)
        old = os.fstat(h.fd)
        fmt = S.S_IFMT(old.st_mode)
        uid = -1 if m.uid is None else _int(m.uid)
        gid = -1 if m.gid is None else _int(m.gid)
        # Validate everything before changing anything.
        if m.size is not None:
            if _int(m.size) < 0:
                raise OSError(E.EINVAL, "negative size")
            if fmt == S.S_IFDIR:
                raise OSError(E.EISDIR, "is a directory")
            if fmt != S.S_IFREG:
                raise OSError(E.EINVAL, "not a regular file")
        if m.mode is not None:
            _int(m.mode)
            if fmt == S.S_IFLNK:
                raise OSError(E.EOPNOTSUPP, "chmod of a symlink")
        times = None
        if m.atime_ns is not None or m.mtime_ns is not None:
            times = (_Timespec * 2)()
            for i, v in enumerate((m.atime_ns, m.mtime_ns)):
                if v is None:
                    times[i].sec, times[i].nsec = 0, UTIME_OMIT
                else:
                    times[i].sec, times[i].nsec = divmod(_int(v), 10**9)
        done = []
        try:
            if uid != -1 or gid != -1:
                _check(_libc.fchownat(h.fd, b"", uid, gid, AT_EMPTY_PATH))
                done.append("owner")
            if m.mode is not None:
                os.chmod(str(h.fd), m.mode & 0o7777, dir_fd=self.procfd)
                done.append("mode")
            if m.size is not None and m.size != old.st_size:
                wfd = self._reopen(h.fd, os.O_WRONLY)
                try:
                    os.ftruncate(wfd, m.size)
                finally:
                    os.close(wfd)
                done.append("size")
            if times is not None:
                _check(_libc.utimensat(h.fd, b"", times, AT_EMPTY_PATH))
        except OSError:
            self._undo_setattr(h, old, done)
            raise
        return P.StatReply(P.stat_to_wire(os.fstat(h.fd)))

    def _undo_setattr(self, h: Handle, old: os.stat_result, done: list) -> None:
        try:
            if "size" in done:
                wfd = self._reopen(h.fd, os.O_WRONLY)
                try:
                    os.ftruncate(wfd, old.st_size)
                finally:
                    os.close(wfd)
            if "mode" in done:
                os.chmod(str(h.fd), S.S_IMODE(old.st_mode), dir_fd=self.procfd)
            if "owner" in done:
                _libc.fchownat(h.fd, b"", old.st_uid, old.st_gid, AT_EMPTY_PATH)
        except OSError:
            log.warning("could not undo a partial setattr")

    def statfs(self, m: P.Statfs) -> P.StatfsReply:
        h = self._get(m.handle)
        buf = ctypes.create_string_buffer(120)
        _check(_libc.fstatfs(h.fd, buf))
        f_type, bsize, blocks, bfree, bavail, files, ffree, _f1, _f2, namelen = \
            struct.unpack_from("<qqQQQQQiiq", buf.raw)
        return P.StatfsReply(f_type, bsize, blocks, bfree, bavail, files, ffree, namelen)

    def fsync(self, m: P.Fsync) -> P.OkReply:
        fd = self._open_fd(m.fh)
        (os.fdatasync if m.datasync else os.fsync)(fd)
        return P.OkReply()

    def _xattr_path(self, h: Handle) -> str | None:
        if S.S_ISLNK(os.fstat(h.fd).st_mode):
            return None
        return f"/proc/self/fd/{h.fd}"

    def getxattr(self, m: P.Getxattr) -> P.XattrReply:
        h = self._get(m.handle)
        name = m.name.decode("utf-8", "surrogateescape")
        path = self._xattr_path(h)
        if path is None:
            raise OSError(E.ENODATA, "no xattrs on symlinks")
        return P.XattrReply(os.getxattr(path, name))

    def listxattr(self, m: P.Listxattr) -> P.ListxattrReply:
        path = self._xattr_path(self._get(m.handle))
        if path is None:
            return P.ListxattrReply(())
        return P.ListxattrReply(tuple(os.fsencode(n) for n in os.listxattr(path)))

    def setxattr(self, m: P.Setxattr) -> P.OkReply:
        h = self._get(m.handle)
        self._rw(h)
        path = self._xattr_path(h)
        if path is None:
            raise OSError(E.EPERM, "no xattrs on symlinks")
        if type(m.value) is not bytes:
            raise OSError(E.EINVAL, "value")
        os.setxattr(path, m.name.decode("utf-8", "surrogateescape"), m.value, _int(m.flags))
        return P.OkReply()

    def removexattr(self, m: P.Removexattr) -> P.OkReply:
        h = self._get(m.handle)
        self._rw(h)
        path = self._xattr_path(h)
        if path is None:
            raise OSError(E.ENODATA, "no xattrs on symlinks")
        os.removexattr(path, m.name.decode("utf-8", "surrogateescape"))
        return P.OkReply()

    def _close_one(self, handle) -> None:
        h = self.handles.pop(handle, None) if type(handle) is int else None
        if h is not None:
            try:
                os.close(h.fd)
            except OSError:
                pass

    def close(self, m: P.Close) -> P.OkReply:
        for handle in m.handles:
            self._close_one(handle)
        return P.OkReply()

    def shutdown(self, m: P.Shutdown) -> P.OkReply:
        self.running = False
        return P.OkReply()

    def batch(self, m: P.Batch) -> P.BatchReply:
        replies = []
        for sub in m.messages:
            if type(sub) is P.Batch:
                r = P.ErrorReply(E.EINVAL)
            else:
                r = self.handle(sub)
            replies.append(r)
            if type(r) is P.ErrorReply:
                break
        return P.BatchReply(tuple(replies))

    # ------------------------------------------------------------ donation
    def donate(self, sock: socket.socket) -> None:
        """Send every mount's root fd (a directory opened O_RDONLY|O_DIRECTORY,
        other files O_PATH) over the connected unix stream ``sock``, in mount
        order: a length-prefixed msgpack header, then the fds in chunks."""
        fds = []
        try:
            for mr in self.mounts:
                fds.append(root_fd(mr.fd, S.S_ISDIR(mr.stat.st_mode)))
            send_donation(sock, [(mr.path, mr.readonly, S.S_ISDIR(mr.stat.st_mode))
                                 for mr in self.mounts], fds)
        finally:
            for fd in fds:
                os.close(fd)


# ---------------------------------------------------------------- process

def serve(server: GoferServer, address: str) -> None:
    """Answer requests on a ZeroMQ REP socket bound at ``address`` until Shutdown."""
    import zmq
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.bind(address)
    _serve_loop(server, sock)


def _serve_loop(server: GoferServer, sock) -> None:
    log.info("serving %d mount(s)", len(server.mounts))
    debug = log.isEnabledFor(logging.DEBUG)
    while server.running:
        raw = sock.recv()
        reply = server.handle_raw(raw)
        if debug:
            log.debug("%.200r -> %.200r", raw, reply)
        sock.send(reply)
    log.info("shutdown")
