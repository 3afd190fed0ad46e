"""I/O on file descriptors: read/write, fd table, fcntl, ioctl, pipes, memfd, locks."""
from __future__ import annotations

import struct
import sys

from pysc.core.abi import consts as C
from pysc.core.abi.structs import IOVEC
from pysc.core.dispatch import s32, s64, syscall
from pysc.core.errors import SyscallError
from pysc.core.hookspecs import hookimpl
from pysc.core.locks import END, LockTable
from pysc.core.pipe import make_pipe

MAX_RW = 0x7FFFF000
IOV_MAX = 1024
FLOCK = struct.Struct("<hhqqi4x")  # type, whence, start, len, pid


@hookimpl
def pysc_syscalls(table, platform):
    table.register_module(sys.modules[__name__])


def _readable(t, fd):
    f = t.fdtable.get(s32(fd))
    if not f.readable:
        raise SyscallError(C.EBADF)
    return f


def _writable(t, fd):
    f = t.fdtable.get(s32(fd))
    if not f.writable:
        raise SyscallError(C.EBADF)
    return f


@syscall()
def read(t, fd, buf, count, *_):
    f = _readable(t, fd)
    if count == 0:
        return 0
    data = f.read(t, min(count, MAX_RW))
    t.mem.write(buf, data)
    return len(data)


@syscall()
def write(t, fd, buf, count, *_):
    f = _writable(t, fd)
    if count == 0:
        return f.write(t, b"") if not f.seekable else 0
    return f.write(t, t.mem.read(buf, min(count, MAX_RW)))


def _offset(off: int) -> int:
    off = s64(off)
    if off < 0:
        raise SyscallError(C.EINVAL)
    return off


@syscall()
def pread64(t, fd, buf, count, off, *_):
    f = _readable(t, fd)
    data = f.pread(min(count, MAX_RW), _offset(off))
    t.mem.write(buf, data)
    return len(data)


@syscall()
def pwrite64(t, fd, buf, count, off, *_):
    f = _writable(t, fd)
    return f.pwrite(t.mem.read(buf, min(count, MAX_RW)), _offset(off))


def _iovecs(t, iov, iovcnt) -> list[tuple[int, int]]:
    iovcnt = s32(iovcnt)
    if iovcnt < 0 or iovcnt > IOV_MAX:
        raise SyscallError(C.EINVAL)
    raw = t.mem.read(iov, 16 * iovcnt) if iovcnt else b""
    out = [IOVEC.unpack_from(raw, 16 * i) for i in range(iovcnt)]
    if sum(n for _, n in out) > MAX_RW or any(n >> 63 for _, n in out):
        raise SyscallError(C.EINVAL)
    return out


def _scatter(t, vecs, data: bytes) -> None:
    pos = 0
    for base, n in vecs:
        if pos >= len(data):
            break
        chunk = data[pos:pos + n]
        t.mem.write(base, chunk)
        pos += len(chunk)


def _gather(t, vecs) -> bytes:
    return b"".join(t.mem.read(base, n) for base, n in vecs if n)


@syscall()
def readv(t, fd, iov, iovcnt, *_):
    f = _readable(t, fd)
    vecs = _iovecs(t, iov, iovcnt)
    total = sum(n for _, n in vecs)
    if total == 0:
        return 0
    data = f.read(t, total)
    _scatter(t, vecs, data)
    return len(data)


@syscall()
def writev(t, fd, iov, iovcnt, *_):
    f = _writable(t, fd)
    return f.write(t, _gather(t, _iovecs(t, iov, iovcnt)))


@syscall("preadv", "preadv2")
def preadv(t, fd, iov, iovcnt, off, _hi=0, flags=0, *_):
    f = _readable(t, fd)
    vecs = _iovecs(t, iov, iovcnt)
    total = sum(n for _, n in vecs)
    if s64(off) == -1:
        data = f.read(t, total)
    else:
        data = f.pread(total, _offset(off))
    _scatter(t, vecs, data)
    return len(data)


@syscall("pwritev", "pwritev2")
def pwritev(t, fd, iov, iovcnt, off, _hi=0, flags=0, *_):
    f = _writable(t, fd)
    data = _gather(t, _iovecs(t, iov, iovcnt))
    if s64(off) == -1:
        return f.write(t, data)
    return f.pwrite(data, _offset(off))


@syscall()
def lseek(t, fd, offset, whence, *_):
    return t.fdtable.get(s32(fd)).seek(s64(offset), s32(whence))


# --- the fd table ---
@syscall()
def close(t, fd, *_):
    fd = s32(fd)
    f = t.fdtable.get(fd)
    _drop_posix_locks(t, f)
    t.fdtable.close(fd)
    return 0


def _drop_posix_locks(t, f) -> None:
    locks = t.kernel.objects.get("locks")
    if locks is not None and f.inode is not None:
        locks.release_owner(t.tg, id(f.inode))


@syscall()
def close_range(t, first, last, flags, *_):
    first, last = first & 0xFFFFFFFF, last & 0xFFFFFFFF
    if flags & ~(C.CLOSE_RANGE_CLOEXEC | C.CLOSE_RANGE_UNSHARE) or first > last:
        raise SyscallError(C.EINVAL)
    if flags & C.CLOSE_RANGE_UNSHARE and any(
            o is not t and o.fdtable is t.fdtable for o in t.kernel.tasks.values()):
        t.fdtable = t.fdtable.copy()
    for fd, f, _ in list(t.fdtable.items()):
        if first <= fd <= last:
            if flags & C.CLOSE_RANGE_CLOEXEC:
                t.fdtable.set_cloexec(fd, True)
            else:
                _drop_posix_locks(t, f)
                t.fdtable.close(fd)
    return 0


@syscall()
def dup(t, fd, *_):
    f = t.fdtable.get(s32(fd))
    newfd = t.fdtable.install(f)
    f.incref()
    return newfd


def _nofile(t) -> int:
    return t.tg.rlimits.get(C.RLIMIT_NOFILE)[0]


@syscall()
def dup2(t, oldfd, newfd, *_):
    oldfd, newfd = s32(oldfd), s32(newfd)
    f = t.fdtable.get(oldfd)
    if oldfd == newfd:
        return newfd
    return _dup_to(t, f, newfd, False)


@syscall()
def dup3(t, oldfd, newfd, flags, *_):
    oldfd, newfd = s32(oldfd), s32(newfd)
    if flags & ~C.O_CLOEXEC or oldfd == newfd:
        raise SyscallError(C.EINVAL)
    return _dup_to(t, t.fdtable.get(oldfd), newfd, bool(flags & C.O_CLOEXEC))


def _dup_to(t, f, newfd, cloexec):
    if newfd < 0 or newfd >= _nofile(t):
        raise SyscallError(C.EBADF)
    f.incref()
    t.fdtable.install_at(newfd, f, cloexec)
    return newfd


@syscall()
def fcntl(t, fd, cmd, arg, *_):
    fd, cmd = s32(fd), s32(cmd)
    tbl = t.fdtable
    f = tbl.get(fd)
    if cmd in (C.F_DUPFD, C.F_DUPFD_CLOEXEC):
        start = s32(arg)
        if start < 0 or start >= _nofile(t):
            raise SyscallError(C.EINVAL)
        newfd = tbl.install(f, cmd == C.F_DUPFD_CLOEXEC, start)
        f.incref()
        return newfd
    if cmd == C.F_GETFD:
        return C.FD_CLOEXEC if tbl.cloexec(fd) else 0
    if cmd == C.F_SETFD:
        tbl.set_cloexec(fd, bool(arg & C.FD_CLOEXEC))
        return 0
    if cmd == C.F_GETFL:
        return f.flags | (C.O_LARGEFILE if f.seekable else 0)
    if cmd == C.F_SETFL:
        settable = C.O_APPEND | C.O_NONBLOCK | C.O_ASYNC | C.O_DIRECT | C.O_NOATIME
        f.flags = (f.flags & ~settable) | (arg & settable)
        return 0
    if cmd in (C.F_GETLK, C.F_SETLK, C.F_SETLKW, C.F_OFD_GETLK, C.F_OFD_SETLK, C.F_OFD_SETLKW):
        return _record_lock(t, f, cmd, arg)
    if cmd == C.F_GETPIPE_SZ:
        pipe = getattr(f, "pipe", None)
        if pipe is None:
            raise SyscallError(C.EBADF)
        return pipe.capacity
    if cmd == C.F_SETPIPE_SZ:
        pipe = getattr(f, "pipe", None)
        if pipe is None:
            raise SyscallError(C.EBADF)
        size = max(4096, 1 << (max(1, arg) - 1).bit_length())
        if size > 1 << 20:
            raise SyscallError(C.EPERM)
        if size < len(pipe.buf):
            raise SyscallError(C.EBUSY)
        pipe.capacity = size
        pipe.changed()
        return size
    if cmd in (C.F_ADD_SEALS, C.F_GET_SEALS):
        ino = getattr(f, "tmp", None)
        if ino is None or not hasattr(ino, "seals"):
            raise SyscallError(C.EINVAL)
        if cmd == C.F_GET_SEALS:
            return ino.seals
        if ino.seals & C.F_SEAL_SEAL:
            raise SyscallError(C.EPERM)
        ino.seals |= arg & 0x1F
        return 0
    if cmd == C.F_GETOWN:
        return getattr(f, "owner_pid", 0)
    if cmd == C.F_SETOWN:
        f.owner_pid = s32(arg)
        return 0
    if cmd == C.F_GETSIG:
        return getattr(f, "io_signal", 0)
    if cmd == C.F_SETSIG:
        f.io_signal = s32(arg)
        return 0
    if cmd == C.F_GETLEASE:
        return C.F_UNLCK
    raise SyscallError(C.EINVAL)


def _locks(t) -> LockTable:
    return t.kernel.objects.setdefault("locks", LockTable())


def _record_lock(t, f, cmd, arg):
    typ, whence, start, length, _ = FLOCK.unpack(t.mem.read(arg, FLOCK.size))
    if typ not in (C.F_RDLCK, C.F_WRLCK, C.F_UNLCK):
        raise SyscallError(C.EINVAL)
    base = {C.SEEK_SET: 0, C.SEEK_CUR: f.offset}.get(whence)
    if base is None:
        if whence != C.SEEK_END:
            raise SyscallError(C.EINVAL)
        base = f.stat().size
    start += base
    if length < 0:
        start, length = start + length, -length
    if start < 0:
        raise SyscallError(C.EINVAL)
    end = END if length == 0 else start + length
    ofd = cmd in (C.F_OFD_GETLK, C.F_OFD_SETLK, C.F_OFD_SETLKW)
    owner = f if ofd else t.tg
    key = id(f.inode)
    table = _locks(t)
    if cmd in (C.F_GETLK, C.F_OFD_GETLK):
        lk = table.conflict(key, owner, start, end, typ == C.F_WRLCK)
        if lk is None:
            out = FLOCK.pack(C.F_UNLCK, C.SEEK_SET, start, length, 0)
        else:
            out = FLOCK.pack(C.F_WRLCK if lk.write else C.F_RDLCK, C.SEEK_SET, lk.start,
                             0 if lk.end == END else lk.end - lk.start, -1 if ofd else t.pidns.id_of(lk.pid))
        t.mem.write(arg, out)
        return 0
    if typ == C.F_RDLCK and not f.readable or typ == C.F_WRLCK and not f.writable:
        raise SyscallError(C.EBADF)
    table.setlk(key, owner, start, end, typ, cmd in (C.F_SETLKW, C.F_OFD_SETLKW), t.tg.pid)
    if ofd:
        f.on_release(lambda file: table.release_owner(file))
    return 0


@syscall()
def flock(t, fd, op, *_):
    f = t.fdtable.get(s32(fd))
    table = _locks(t)
    table.flock(id(f.inode), f, op, t.tg.pid)
    f.on_release(lambda file: table.release_owner(file))
    return 0


@syscall()
def ioctl(t, fd, cmd, arg, *_):
    fd = s32(fd)
    f = t.fdtable.get(fd)
    cmd &= 0xFFFFFFFF
    if cmd == C.FIOCLEX:
        t.fdtable.set_cloexec(fd, True)
        return 0
    if cmd == C.FIONCLEX:
        t.fdtable.set_cloexec(fd, False)
        return 0
    if cmd == C.FIONBIO:
        on = t.mem.read_u32(arg)
        f.flags = f.flags | C.O_NONBLOCK if on else f.flags & ~C.O_NONBLOCK
        return 0
    if cmd == C.FIOASYNC:
        on = t.mem.read_u32(arg)
        f.flags = f.flags | C.O_ASYNC if on else f.flags & ~C.O_ASYNC
        return 0
    return f.ioctl(t, cmd, arg)


# --- pipes ---
@syscall()
def pipe(t, fds, *_):
    return _pipe2(t, fds, 0)


@syscall()
def pipe2(t, fds, flags, *_):
    if flags & ~(C.O_CLOEXEC | C.O_NONBLOCK | C.O_DIRECT):
        raise SyscallError(C.EINVAL)
    return _pipe2(t, fds, flags)


def _pipe2(t, fds, flags):
    t.mem.read(fds, 8)  # fail with EFAULT before creating anything
    r, w = make_pipe(flags)
    ce = bool(flags & C.O_CLOEXEC)
    rfd = t.fdtable.install(r, ce)
    try:
        wfd = t.fdtable.install(w, ce)
    except SyscallError:
        t.fdtable.close(rfd)
        w.decref()
        raise
    t.mem.write(fds, struct.pack("<ii", rfd, wfd))
    return 0


# --- sync, size, copying ---
@syscall("fsync", "fdatasync")
def fsync(t, fd, *_):
    t.fdtable.get(s32(fd)).fsync()
    return 0


@syscall()
def ftruncate(t, fd, length, *_):
    f = t.fdtable.get(s32(fd))
    length = s64(length)
    if length < 0 or not f.writable:
        raise SyscallError(C.EINVAL)
    if f.inode is not None and f.inode.is_dir():
        raise SyscallError(C.EISDIR)
    f.truncate(length)
    return 0


@syscall()
def fallocate(t, fd, mode, offset, length, *_):
    f = t.fdtable.get(s32(fd))
    offset, length = s64(offset), s64(length)
    if offset < 0 or length <= 0:
        raise SyscallError(C.EINVAL)
    if not f.writable:
        raise SyscallError(C.EBADF)
    if mode & ~1:  # only plain allocation and FALLOC_FL_KEEP_SIZE
        raise SyscallError(C.EOPNOTSUPP)
    if not mode & 1 and f.stat().size < offset + length:
        f.truncate(offset + length)
    return 0


@syscall()
def fadvise64(t, fd, offset, length, advice, *_):
    t.fdtable.get(s32(fd))
    if not 0 <= s32(advice) <= 5:
        raise SyscallError(C.EINVAL)
    return 0


@syscall()
def readahead(t, fd, *_):
    f = _readable(t, fd)
    if not f.seekable:
        raise SyscallError(C.EINVAL)
    return 0


def _copy(t, fin, fout, off_ptr, count):
    if not fin.readable or not fout.writable:
        raise SyscallError(C.EBADF)
    count = min(count, 1 << 20)
    if off_ptr:
        off = s64(t.mem.read_u64(off_ptr))
        data = fin.pread(count, off)
    else:
        data = fin.read(t, count)
    if not data:
        return 0
    n = fout.write(t, data)
    if off_ptr:
        t.mem.write_u64(off_ptr, off + n)
    elif n < len(data) and fin.seekable:
        fin.offset -= len(data) - n
    return n


@syscall()
def sendfile(t, out_fd, in_fd, offset, count, *_):
    fin = t.fdtable.get(s32(in_fd))
    fout = t.fdtable.get(s32(out_fd))
    if not fin.seekable:
        raise SyscallError(C.EINVAL)
    return _copy(t, fin, fout, offset, count)


@syscall()
def copy_file_range(t, fd_in, off_in, fd_out, off_out, length, flags, *_):
    if flags:
        raise SyscallError(C.EINVAL)
    fin = t.fdtable.get(s32(fd_in))
    fout = t.fdtable.get(s32(fd_out))
    if not fin.seekable or not fout.seekable:
        raise SyscallError(C.EINVAL)
    count = min(length, 1 << 20)
    off = s64(t.mem.read_u64(off_in)) if off_in else fin.offset
    data = fin.pread(count, off)
    if not data:
        return 0
    if off_out:
        woff = s64(t.mem.read_u64(off_out))
        n = fout.pwrite(data, woff)
        t.mem.write_u64(off_out, woff + n)
    else:
        n = fout.write(t, data)
    if off_in:
        t.mem.write_u64(off_in, off + n)
    else:
        fin.offset = off + n
    return n


# --- memfd ---
@syscall()
def memfd_create(t, name, flags, *_):
    from pysc.core.fs.tmpfs import MemFile, TmpFS, TmpInode
    from pysc.core.vfs import Dentry
    if flags & ~(C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING | C.MFD_NOEXEC_SEAL | C.MFD_EXEC):
        raise SyscallError(C.EINVAL)
    raw = t.mem.read_cstr(name, 250)
    fs = t.kernel.objects.get("memfd_fs")
    if fs is None:
        fs = t.kernel.objects["memfd_fs"] = TmpFS()
    ino = TmpInode(fs, C.S_IFREG | 0o777, t.creds.fsuid, t.creds.fsgid)
    ino.seals = 0 if flags & C.MFD_ALLOW_SEALING else C.F_SEAL_SEAL
    ino.st.nlink = 0
    d = Dentry(b"memfd:" + raw, None, ino, _MemfdMount)
    f = MemFile(C.O_RDWR | C.O_LARGEFILE, d, ino)
    f.proc_name = b"/memfd:" + raw + b" (deleted)"
    return t.fdtable.install(f, bool(flags & C.MFD_CLOEXEC))


class _MemfdMount:
    id = 0
    readonly = False
    fstype = "tmpfs"
