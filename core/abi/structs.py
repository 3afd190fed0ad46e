"""x86-64 struct layouts the Sentry reads from or writes to app memory."""
from __future__ import annotations

import struct

import attrs

from pysc.core.abi import consts as C

TIMESPEC = struct.Struct("<qq")
TIMEVAL = struct.Struct("<qq")
RLIMIT = struct.Struct("<QQ")
IOVEC = struct.Struct("<QQ")
POLLFD = struct.Struct("<ihh")
EPOLL_EVENT = struct.Struct("<IQ")  # packed on x86-64: 12 bytes
MSGHDR = struct.Struct("<QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
CMSGHDR = struct.Struct("<QII")  # len, level, type
UCRED = struct.Struct("<iII")
WINSIZE = struct.Struct("<HHHH")
SIGSET = struct.Struct("<Q")
OPEN_HOW = struct.Struct("<QQQ")
ITIMERVAL = struct.Struct("<qqqq")
CLONE_ARGS = struct.Struct("<QQQQQQQQQQQ")
KERNEL_SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask
TMS = struct.Struct("<qqqq")
SYSINFO = struct.Struct("<q3Q6QHH4xQQI4x")  # 112 bytes
RUSAGE = struct.Struct("<qqqq14q")
STAT = struct.Struct("<QQQIIIiqqqq6q24x")  # 144 bytes
STATX = struct.Struct("<IIQIIIHHQQQQqI4xqI4xqI4xqI4xIIIIQQ96x")  # 256 bytes
STATFS = struct.Struct("<qqQQQQQiiqqq32x")  # 120 bytes
SIGINFO_CHLD = struct.Struct("<iii4xiIi4xqq80x")  # signo, errno, code, pid, uid, status, utime, stime


def cmsg_align(n: int) -> int:
    return (n + 7) & ~7


def cmsg_space(n: int) -> int:
    return CMSGHDR.size + cmsg_align(n)


@attrs.define(slots=True)
class Timespec:
    sec: int
    nsec: int


@attrs.define(slots=True)
class Stat:
    """What every filesystem reports about an inode; packed into stat or statx."""
    mode: int
    ino: int = 0
    dev: int = 0
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    rdev: int = 0
    size: int = 0
    blksize: int = 4096
    blocks: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    btime_ns: int = 0
    mnt_id: int = 0

    @classmethod
    def from_host(cls, st, dev: int | None = None) -> "Stat":
        return cls(mode=st.st_mode, ino=st.st_ino, dev=st.st_dev if dev is None else dev,
                   nlink=st.st_nlink, uid=st.st_uid, gid=st.st_gid, rdev=st.st_rdev,
                   size=st.st_size, blksize=st.st_blksize, blocks=st.st_blocks,
                   atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)

    @property
    def type(self) -> int:
        return self.mode & C.S_IFMT

    def copy(self) -> "Stat":
        return Stat(self.mode, self.ino, self.dev, self.nlink, self.uid, self.gid, self.rdev,
                    self.size, self.blksize, self.blocks, self.atime_ns, self.mtime_ns,
                    self.ctime_ns, self.btime_ns, self.mnt_id)

    def pack_stat(self) -> bytes:
        a, m, c = self.atime_ns, self.mtime_ns, self.ctime_ns
        return STAT.pack(self.dev, self.ino, self.nlink, self.mode, self.uid, self.gid, 0,
                         self.rdev, self.size, self.blksize, self.blocks,
                         a // 10**9, a % 10**9, m // 10**9, m % 10**9, c // 10**9, c % 10**9)

    def pack_statx(self, mask: int = C.STATX_BASIC_STATS) -> bytes:
        a, m, c, b = self.atime_ns, self.mtime_ns, self.ctime_ns, self.btime_ns or self.ctime_ns
        got = C.STATX_BASIC_STATS | C.STATX_BTIME | C.STATX_MNT_ID
        return STATX.pack(got, self.blksize, 0, self.nlink, self.uid, self.gid, self.mode & 0xFFFF, 0,
                          self.ino, self.size, self.blocks, 0,
                          a // 10**9, a % 10**9, b // 10**9, b % 10**9,
                          c // 10**9, c % 10**9, m // 10**9, m % 10**9,
                          os_major(self.rdev), os_minor(self.rdev),
                          os_major(self.dev), os_minor(self.dev), self.mnt_id, 0)


def os_major(dev: int) -> int:
    return ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF)


def os_minor(dev: int) -> int:
    return (dev & 0xFF) | ((dev >> 12) & ~0xFF)


def makedev(major: int, minor: int) -> int:
    return ((major & 0xFFF) << 8) | ((major & ~0xFFF) << 32) | (minor & 0xFF) | ((minor & ~0xFF) << 12)


def pack_dirent64(ino: int, off: int, dtype: int, name: bytes) -> bytes:
    reclen = (19 + len(name) + 1 + 7) & ~7
    return struct.pack("<QqHB", ino, off, reclen, dtype) + name + b"\0" * (reclen - 19 - len(name))


def pack_utsname(sysname: str, nodename: str, release: str, version: str, machine: str,
                 domain: str) -> bytes:
    return b"".join(s.encode()[:64].ljust(65, b"\0")
                    for s in (sysname, nodename, release, version, machine, domain))


def dtype_of_mode(mode: int) -> int:
    return (mode & C.S_IFMT) >> 12


def sigset_bits(mask: int) -> list[int]:
    return [sig for sig in range(1, 65) if mask & (1 << (sig - 1))]
