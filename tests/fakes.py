"""Stand-ins for unit tests of syscall handlers: app memory backed by a
bytearray, a kernel with a tmpfs root, and tasks, without a sandbox."""
from __future__ import annotations

import itertools
import struct
from types import SimpleNamespace

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.fdtable import FDTable
from pysc.core.fs.tmpfs import TmpFS
from pysc.core.pidns import PIDNamespace
from pysc.core.task import Credentials, FSContext, Rlimits
from pysc.core.vfs import VFS, Mount


class FakeMem:
    """App memory: addresses base.. base+size; anything else is EFAULT."""

    def __init__(self, size=1 << 20, base=0x10000):
        self.base, self.buf, self.top = base, bytearray(size), base

    def _off(self, addr, n):
        if addr < self.base or addr + n > self.base + len(self.buf):
            raise SyscallError(C.EFAULT)
        return addr - self.base

    def read(self, addr, n):
        o = self._off(addr, n)
        return bytes(self.buf[o:o + n])

    def read_cstr(self, addr, limit=4096):
        o = self._off(addr, 1)
        return bytes(self.buf[o:self.buf.index(0, o)])

    def write(self, addr, data):
        o = self._off(addr, len(data))
        self.buf[o:o + len(data)] = data
        return len(data)

    def read_u32(self, addr):
        return struct.unpack("<I", self.read(addr, 4))[0]

    def read_u64(self, addr):
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def write_u32(self, addr, v):
        self.write(addr, struct.pack("<I", v & 0xFFFFFFFF))

    def write_u64(self, addr, v):
        self.write(addr, struct.pack("<Q", v & (1 << 64) - 1))

    def alloc(self, n):
        a = self.top
        self.top += (n + 15) & ~15
        return a

    def put(self, data):
        a = self.alloc(max(len(data), 1))
        self.write(a, data)
        return a


def make_kernel(network="host"):
    fs = TmpFS()
    vfs = VFS(Mount(fs, fs.root, b"/", "tmpfs", "tmpfs"))
    kernel = SimpleNamespace(objects={}, network=network, vfs=vfs, anon_ino=itertools.count(5000),
                             config={}, tasks={}, thread_groups={})
    kernel.root_pidns = PIDNamespace(kernel)
    return kernel


_pids = itertools.count(100)


def make_task(kernel=None, uid=0, network="host"):
    kernel = kernel or make_kernel(network)
    pid = next(_pids)
    return SimpleNamespace(
        kernel=kernel, fdtable=FDTable(), mem=FakeMem(), creds=Credentials.for_ids(uid, uid),
        tg=SimpleNamespace(pid=pid, rlimits=Rlimits()), tid=pid,
        fs=FSContext(kernel.vfs.root, kernel.vfs.root), ctx=SimpleNamespace(), vfs=kernel.vfs,
        pidns=kernel.root_pidns)


def sc(fn, t, *args):
    """Run a handler as the dispatcher does: -errno on failure; WouldBlock propagates."""
    args = tuple(args) + (0,) * (6 - len(args))
    try:
        return fn(t, *args)
    except SyscallError as e:
        return -e.errno
