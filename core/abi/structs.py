"""x86-64 struct layouts the Sentry reads from or writes to app memory."""
from __future__ import annotations

import ctypes
import struct

from pysc.core.abi import consts as C
from pysc.core.record import Record

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


class Timespec(Record):
    sec: int
    nsec: int


class Stat(Record):
    """What every filesystem reports about an inode; packed into stat or statx.
    Made on every stat call, so it writes its own ``__init__`` (a third of
    the generic one's cost)."""
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

    def __init__(self, mode: int, ino: int = 0, dev: int = 0, nlink: int = 1, uid: int = 0, gid: int = 0,
                 rdev: int = 0, size: int = 0, blksize: int = 4096, blocks: int = 0, atime_ns: int = 0,
                 mtime_ns: int = 0, ctime_ns: int = 0, btime_ns: int = 0, mnt_id: int = 0):
        self.mode, self.ino, self.dev, self.nlink, self.uid, self.gid = mode, ino, dev, nlink, uid, gid
        self.rdev, self.size, self.blksize, self.blocks = rdev, size, blksize, blocks
        self.atime_ns, self.mtime_ns, self.ctime_ns, self.btime_ns = atime_ns, mtime_ns, ctime_ns, btime_ns
        self.mnt_id = mnt_id

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


# --- ELF64 (include/uapi/linux/elf.h) ---------------------------------------------
# e_ident, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags,
# e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
ELF64_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # 64 bytes
# p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
ELF64_PHDR = struct.Struct("<IIQQQQQQ")  # 56 bytes
AUXV_ENTRY = struct.Struct("<QQ")

# --- x86-64 signal frame (arch/x86/include/uapi/asm/sigcontext.h, asm/sigframe.h) ---
STACK_T = struct.Struct("<Qi4xQ")  # ss_sp, ss_flags, ss_size: 24 bytes
# struct sigcontext (64-bit), 256 bytes; the names are its fields in order.
SIGCONTEXT_FIELDS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                     "rdi", "rsi", "rbp", "rbx", "rdx", "rax", "rcx", "rsp", "rip",
                     "eflags", "cs", "gs", "fs", "ss", "err", "trapno", "oldmask", "cr2", "fpstate")
# r8..rip and eflags (u64), cs gs fs ss (u16), err trapno oldmask cr2 fpstate (u64), reserved1[8]
SIGCONTEXT_FORMAT = "18Q4H5Q64x"
SIGCONTEXT = struct.Struct("<" + SIGCONTEXT_FORMAT)
# The kernel's struct ucontext (not glibc's ucontext_t, which is longer):
# uc_flags, uc_link, uc_stack, uc_mcontext, uc_sigmask (the kernel's 8-byte sigset).
UCONTEXT_FIELDS = (("uc_flags", "uc_link", "ss_sp", "ss_flags", "ss_size") + SIGCONTEXT_FIELDS
                   + ("uc_sigmask",))
UCONTEXT = struct.Struct("<QQQi4xQ" + SIGCONTEXT_FORMAT + "Q")  # 304 bytes
UC_STACK_OFFSET, UC_MCONTEXT_OFFSET, UC_SIGMASK_OFFSET = 16, 40, 296
SIGINFO_SIZE = 128
# struct rt_sigframe: pretcode (the restorer), struct ucontext uc, struct siginfo info.
RT_SIGFRAME_UC, RT_SIGFRAME_INFO = 8, 8 + 304
RT_SIGFRAME_SIZE = RT_SIGFRAME_INFO + SIGINFO_SIZE  # 440
SIGFRAME_ALIGN = 16  # FRAME_ALIGNMENT
XSAVE_ALIGN = 64
REDZONE = 128

# siginfo_t, one struct per member of the _sifields union (Linux's siginfo_layout);
# each starts with si_signo, si_errno, si_code and is padded to 128 bytes.
SIGINFO_KILL = struct.Struct("<iii4xiI104x")  # pid, uid
SIGINFO_TIMER = struct.Struct("<iii4xiiQ96x")  # tid, overrun, sigval
SIGINFO_RT = struct.Struct("<iii4xiIQ96x")  # pid, uid, sigval
SIGINFO_FAULT = struct.Struct("<iii4xQ104x")  # addr
SIGINFO_MCEERR = struct.Struct("<iii4xQh102x")  # addr, addr_lsb
SIGINFO_BNDERR = struct.Struct("<iii4xQ8xQQ80x")  # addr, lower, upper
SIGINFO_PKUERR = struct.Struct("<iii4xQ8xI92x")  # addr, pkey
SIGINFO_POLL = struct.Struct("<iii4xqi100x")  # band, fd
SIGINFO_SYS = struct.Struct("<iii4xQiI96x")  # call_addr, syscall, arch
# SIGINFO_CHLD (above): pid, uid, status, utime, stime

# The xsave area, standard (non-compacted) format, as KVM_GET_XSAVE returns it
# and as a signal frame holds it.
FXSAVE_MXCSR, FXSAVE_MXCSR_MASK = 24, 28
FPX_SW_OFFSET = 464  # struct _fpx_sw_bytes in the fxsave area's sw_reserved
FPX_SW_BYTES = struct.Struct("<IIQI28x")  # magic1, extended_size, xfeatures, xstate_size
XSAVE_HDR_OFFSET = 512
XSAVE_HDR = struct.Struct("<QQ48x")  # xstate_bv, xcomp_bv, reserved
XSAVE_LEGACY_SIZE, XSAVE_MIN_SIZE = 512, 576
KVM_XSAVE_SIZE = 4096
# Offset and size of each user state component above SSE, architectural in the
# standard format (CPUID leaf 0xD reports the same numbers).
XSTATE_STD_LAYOUT = {2: (576, 256), 3: (960, 64), 4: (1024, 64), 5: (1088, 64),
                     6: (1152, 512), 7: (1664, 1024), 9: (2688, 8)}


def xstate_size(xfeatures: int) -> int:
    """Bytes of the standard-format xsave area holding ``xfeatures`` (an XCR0 value)."""
    end = XSAVE_MIN_SIZE
    for bit, (off, size) in XSTATE_STD_LAYOUT.items():
        if xfeatures & (1 << bit):
            end = max(end, off + size)
    return end


class user_regs_struct(ctypes.Structure):
    """A thread's general registers as PTRACE_GETREGS/SETREGS pass them (<sys/user.h>)."""
    _fields_ = [(name, ctypes.c_ulong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
        "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
        "gs_base", "ds", "es", "fs", "gs")]

# System V IPC, x86-64: struct ipc64_perm, shmid64_ds, shminfo64, shm_info
IPC64_PERM = struct.Struct("<iIIIIHxxHxx4xQQ")  # key uid gid cuid cgid mode seq
SHMID64_DS = struct.Struct("<48sQqqqiiQQQ")  # perm segsz atime dtime ctime cpid lpid nattch
SHMINFO64 = struct.Struct("<9Q")  # shmmax shmmin shmmni shmseg shmall, 4 unused
SHM_INFO = struct.Struct("<ixxxx5Q")  # used_ids shm_tot shm_rss shm_swp swap_attempts swap_successes
SEMID64_DS = struct.Struct("<48sqQqQQQQ")  # perm otime - ctime - nsems - -
SEMINFO = struct.Struct("<10i")  # semmap semmni semmns semmnu semmsl semopm semume semusz semvmx semaem
SEMBUF = struct.Struct("<Hhh")  # sem_num sem_op sem_flg
MSQID64_DS = struct.Struct("<48sqqqQQQiiQQ")  # perm stime rtime ctime cbytes qnum qbytes lspid lrpid - -
MSGINFO = struct.Struct("<7iHxx")  # msgpool msgmap msgmax msgmnb msgmni msgssz msgtql msgseg
SCHED_ATTR = struct.Struct("<IIQiIQQQII")  # size policy flags nice priority runtime deadline period util_min/max
SIGEVENT = struct.Struct("<QiiI44x")  # sigev_value sigev_signo sigev_notify sigev_notify_thread_id
ITIMERSPEC = struct.Struct("<qqqq")  # it_interval, it_value (timespecs)
