"""Pipes and FIFOs."""
from __future__ import annotations

from pysc.core.abi import consts as C
from pysc.core.abi.structs import Stat
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.file import File
from pysc.core.vfs import Filesystem, Inode
from pysc.core.waitqueue import WaitQueue


class PipeFS(Filesystem):
    name = "pipefs"


_PIPEFS = PipeFS()


class Pipe(Inode):
    """The pipe itself: a bounded byte buffer with reader and writer counts.
    As an inode, it lets /proc/PID/fd/N reopen either end."""

    def __init__(self, capacity: int = C.PIPE_DEFAULT_SIZE):
        self.fs = _PIPEFS
        self.ino = _PIPEFS.next_ino()
        self.buf = bytearray()
        self.capacity = capacity
        self.readers = 0
        self.writers = 0
        self.waiting_readers = 0
        self.waiting_writers = 0
        self.wq = WaitQueue()  # any change: data, space, an end opened or closed
        self.opened = WaitQueue()

    def stat(self) -> Stat:
        return Stat(mode=C.S_IFIFO | 0o600, ino=self.ino, dev=self.fs.dev, size=len(self.buf),
                    blksize=4096)

    def open(self, flags, dentry, task):
        return PipeFile(self, flags, dentry)

    def changed(self) -> None:
        self.wq.notify()


class PipeFile(File):
    """One end of a pipe (or both, for a FIFO opened O_RDWR)."""

    def __init__(self, pipe: Pipe, flags: int, dentry=None):
        super().__init__(flags, dentry, pipe)
        self.pipe = pipe
        self.wq = pipe.wq
        if self.readable:
            pipe.readers += 1
        if self.writable:
            pipe.writers += 1
        pipe.opened.notify()
        pipe.changed()

    def release(self):
        p = self.pipe
        if self.readable:
            p.readers -= 1
        if self.writable:
            p.writers -= 1
        p.changed()

    def read(self, task, count):
        if not self.readable:
            raise SyscallError(C.EBADF)
        p = self.pipe
        if not p.buf:
            if p.writers == 0:
                return b""
            if self.nonblocking:
                raise SyscallError(C.EAGAIN)
            raise WouldBlock([p.wq])
        data = bytes(p.buf[:count])
        del p.buf[:count]
        p.changed()
        return data

    def write(self, task, data):
        if not self.writable:
            raise SyscallError(C.EBADF)
        p = self.pipe
        if p.readers == 0:
            send_sigpipe(task)
            raise SyscallError(C.EPIPE)
        if not data:
            return 0
        space = p.capacity - len(p.buf)
        need = len(data) if len(data) <= C.PIPE_BUF else 1  # small writes are atomic
        if space < need:
            if self.nonblocking:
                raise SyscallError(C.EAGAIN)
            raise WouldBlock([p.wq])
        n = min(space, len(data))
        p.buf += data[:n]
        p.changed()
        return n

    def poll(self):
        p = self.pipe
        mask = 0
        if self.readable:
            if p.buf:
                mask |= C.POLLIN | C.POLLRDNORM
            if p.writers == 0:
                mask |= C.POLLHUP
        if self.writable:
            if p.capacity - len(p.buf) >= C.PIPE_BUF:
                mask |= C.POLLOUT | C.POLLWRNORM
            if p.readers == 0:
                mask |= C.POLLERR
        return mask

    def ioctl(self, task, cmd, arg):
        if cmd == C.FIONREAD:
            task.mem.write_u32(arg, len(self.pipe.buf))
            return 0
        raise SyscallError(C.ENOTTY)

    def stat(self):
        return self.pipe.stat() if self.dentry is None else self.dentry.inode.stat()

    def path_for_proc(self):
        if self.dentry is not None:
            return self.dentry.path()
        return b"pipe:[%d]" % self.pipe.ino


def send_sigpipe(task) -> None:
    from pysc.core.unix import send_sigpipe as send
    send(task)


def make_pipe(flags: int) -> tuple[PipeFile, PipeFile]:
    p = Pipe()
    st = flags & (C.O_NONBLOCK | C.O_DIRECT)
    return PipeFile(p, C.O_RDONLY | st), PipeFile(p, C.O_WRONLY | st)


def open_fifo(inode, flags: int, dentry, task) -> PipeFile:
    """open(2) of a FIFO: a reader or writer waits until the other end is
    opened (or is waiting), as Linux does; O_RDWR never waits."""
    pipe = inode.special
    if pipe is None:
        pipe = inode.special = Pipe()
    acc = flags & C.O_ACCMODE
    waiting = getattr(task, "fifo_wait", None)
    if acc == C.O_RDONLY:
        if pipe.writers == 0 and pipe.waiting_writers == 0 and not flags & C.O_NONBLOCK:
            if waiting is not pipe:
                task.fifo_wait = pipe
                pipe.waiting_readers += 1
                pipe.opened.notify()
            raise WouldBlock([pipe.opened])
    elif acc == C.O_WRONLY:
        if pipe.readers == 0 and pipe.waiting_readers == 0:
            if flags & C.O_NONBLOCK:
                raise SyscallError(C.ENXIO)
            if waiting is not pipe:
                task.fifo_wait = pipe
                pipe.waiting_writers += 1
                pipe.opened.notify()
            raise WouldBlock([pipe.opened])
    if waiting is pipe:
        task.fifo_wait = None
        if acc == C.O_RDONLY:
            pipe.waiting_readers -= 1
        else:
            pipe.waiting_writers -= 1
    return PipeFile(pipe, flags, dentry)
