"""System V shared memory where the Sentry owns the address spaces (kvm).

On the host-process platforms the host kernel serves System V IPC in the
sandbox's own IPC namespace (syscalls/ipc.py).  Here a segment is a memfd,
and shmat maps it MAP_SHARED like any shared file mapping.  A segment's
attach count is, as in Linux, the number of mappings of it in all address
spaces, so fork, exec, exit and munmap need no bookkeeping of their own.
Semaphore sets and message queues are not served here (ENOSYS).
"""
from __future__ import annotations

import os
import sys
import time

from pysc.core.abi import consts as C
from pysc.core.abi.structs import IPC64_PERM, SHM_INFO, SHMID64_DS, SHMINFO64
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError
from pysc.core.file import HostFDFile
from pysc.core.hookspecs import hookimpl

CAP_IPC_LOCK, CAP_IPC_OWNER, CAP_SYS_ADMIN = 14, 15, 21


@hookimpl
def pysc_syscalls(table, platform):
    if table.sentry_owned:
        table.register_module(sys.modules[__name__])


class Segment:
    """One shared memory segment: its memfd, permissions and times."""

    def __init__(self, key: int, size: int, mode: int, creds, pid: int, index: int, seq: int):
        self.key, self.size, self.mode = key, size, mode & 0o777
        self.uid = self.cuid = creds.euid
        self.gid = self.cgid = creds.egid
        self.cpid, self.lpid = pid, 0
        self.atime = self.dtime = 0
        self.ctime = int(time.time())
        self.index, self.seq = index, seq
        self.fd = os.memfd_create(f"SYSV{key & 0xFFFFFFFF:08x}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, (size + C.PAGE_SIZE - 1) & ~(C.PAGE_SIZE - 1))
        except OSError as e:
            os.close(self.fd)
            raise SyscallError(e.errno or C.ENOMEM) from None

    @property
    def id(self) -> int:
        return self.seq * C.IPCMNI + self.index

    def allows(self, creds, want: int) -> bool:
        """Linux's ipcperms: ``want`` is 4 (read) and/or 2 (write)."""
        if creds.euid in (self.uid, self.cuid):
            granted = self.mode >> 6
        elif creds.egid in (self.gid, self.cgid) or {self.gid, self.cgid} & set(creds.groups):
            granted = self.mode >> 3
        else:
            granted = self.mode
        return not want & ~granted & 7 or creds.has_cap(CAP_IPC_OWNER)

    def owned_by(self, creds) -> bool:
        return creds.euid in (self.uid, self.cuid) or creds.has_cap(CAP_SYS_ADMIN)


class ShmNamespace:
    """The sandbox's segments (its IPC namespace)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.segments: dict[int, Segment] = {}  # by index
        self.seq = 0

    def attaches(self, seg: Segment) -> int:
        seen, n = set(), 0
        for tg in list(self.kernel.thread_groups.values()):
            mm = tg.mm
            if mm is None or id(mm) in seen or not tg.alive:
                continue
            seen.add(id(mm))
            n += sum(1 for v in mm.vmas if getattr(v.file, "shm_segment", None) is seg)
        return n

    def reap(self) -> None:
        """Segments removed with IPC_RMID go once nothing maps them."""
        for seg in [s for s in self.segments.values() if s.mode & C.SHM_DEST]:
            if not self.attaches(seg):
                self.drop(seg)

    def drop(self, seg: Segment) -> None:
        self.segments.pop(seg.index, None)
        os.close(seg.fd)

    def by_id(self, shmid: int) -> Segment:
        seg = self.segments.get(shmid % C.IPCMNI) if shmid >= 0 else None
        if seg is None or seg.id != shmid:
            raise SyscallError(C.EINVAL)
        return seg

    def create(self, t, key: int, size: int, mode: int) -> Segment:
        if not C.SHMMIN <= size <= C.SHMMAX:
            raise SyscallError(C.EINVAL)
        index = next((i for i in range(C.SHMMNI) if i not in self.segments), None)
        if index is None:
            raise SyscallError(C.ENOSPC)
        seg = Segment(key, size, mode, t.creds, t.pidns.id_of(t.tg.pid), index, self.seq)
        self.seq = (self.seq + 1) % (1 << 16)
        self.segments[index] = seg
        return seg


def _ns(t) -> ShmNamespace:
    ns = t.kernel.objects.get("sysv_shm")
    if ns is None:
        ns = t.kernel.objects["sysv_shm"] = ShmNamespace(t.kernel)
    ns.reap()
    return ns


@syscall()
def shmget(t, key, size, shmflg, *_):
    key, shmflg = s32(key), s32(shmflg)
    ns = _ns(t)
    if key != C.IPC_PRIVATE:
        seg = next((s for s in ns.segments.values() if s.key == key and not s.mode & C.SHM_DEST), None)
        if seg is not None:
            if shmflg & C.IPC_CREAT and shmflg & C.IPC_EXCL:
                raise SyscallError(C.EEXIST)
            if not seg.allows(t.creds, (shmflg >> 6) & 7):
                raise SyscallError(C.EACCES)
            if size > seg.size:
                raise SyscallError(C.EINVAL)
            return seg.id
        if not shmflg & C.IPC_CREAT:
            raise SyscallError(C.ENOENT)
    return ns.create(t, key, size, shmflg).id


class SegmentFile(HostFDFile):
    """An attach of a segment: what its mapping holds."""

    def __init__(self, seg: Segment, writable: bool):
        super().__init__(os.dup(seg.fd), C.O_RDWR if writable else C.O_RDONLY, seekable=True,
                         is_tty=False)
        self.shm_segment = seg

    def path_for_proc(self) -> bytes:
        return b"/SYSV%08x (deleted)" % (self.shm_segment.key & 0xFFFFFFFF)


@syscall()
def shmat(t, shmid, addr, shmflg, *_):
    shmflg = s32(shmflg)
    seg = _ns(t).by_id(s32(shmid))
    readonly = bool(shmflg & C.SHM_RDONLY)
    if not seg.allows(t.creds, 4 if readonly else 6):
        raise SyscallError(C.EACCES)
    flags = C.MAP_SHARED
    if addr:
        if addr & (C.SHMLBA - 1):
            if not shmflg & C.SHM_RND:
                raise SyscallError(C.EINVAL)
            addr &= ~(C.SHMLBA - 1)
        # the address is a demand; an occupied one fails unless SHM_REMAP says replace it
        flags |= C.MAP_FIXED if shmflg & C.SHM_REMAP else C.MAP_FIXED_NOREPLACE
    elif shmflg & C.SHM_REMAP:
        raise SyscallError(C.EINVAL)
    prot = C.PROT_READ | (0 if readonly else C.PROT_WRITE) | (C.PROT_EXEC if shmflg & C.SHM_EXEC else 0)
    f = SegmentFile(seg, not readonly)
    try:
        at = t.mem.mmap(addr, seg.size, prot, flags, f, 0)
    except SyscallError as e:
        raise SyscallError(C.EINVAL if e.errno == C.EEXIST else e.errno) from None
    finally:
        f.decref()  # the mapping holds its own reference
    seg.atime, seg.lpid = int(time.time()), t.pidns.id_of(t.tg.pid)
    return at


@syscall()
def shmdt(t, addr, *_):
    if addr & (C.SHMLBA - 1):
        raise SyscallError(C.EINVAL)
    mm = t.mem
    found = [v for v in mm.vmas if v.start - v.pgoff == addr and getattr(v.file, "shm_segment", None)]
    if not found:
        raise SyscallError(C.EINVAL)
    seg = found[0].file.shm_segment
    for v in [v for v in found if v.file.shm_segment is seg]:
        mm.munmap(v.start, v.end - v.start)
    seg.dtime, seg.lpid = int(time.time()), t.pidns.id_of(t.tg.pid)
    _ns(t)  # a removed segment may go now
    return 0


def _shmid_ds(ns: ShmNamespace, seg: Segment) -> bytes:
    perm = IPC64_PERM.pack(seg.key, seg.uid, seg.gid, seg.cuid, seg.cgid, seg.mode, seg.seq, 0, 0)
    return SHMID64_DS.pack(perm, seg.size, seg.atime, seg.dtime, seg.ctime, seg.cpid, seg.lpid,
                           ns.attaches(seg), 0, 0)


@syscall()
def shmctl(t, shmid, cmd, buf, *_):
    shmid, cmd = s32(shmid), s32(cmd)
    ns = _ns(t)
    if cmd == C.IPC_INFO:
        t.mem.write(buf, SHMINFO64.pack(C.SHMMAX, C.SHMMIN, C.SHMMNI, C.SHMMNI, C.SHMALL, 0, 0, 0, 0))
        return max(ns.segments, default=0)
    if cmd == C.SHM_INFO:
        pages = sum((s.size + C.PAGE_SIZE - 1) // C.PAGE_SIZE for s in ns.segments.values())
        t.mem.write(buf, SHM_INFO.pack(len(ns.segments), pages, pages, 0, 0, 0))
        return max(ns.segments, default=0)
    if cmd in (C.SHM_STAT, C.SHM_STAT_ANY):  # by index, as ipcs walks them
        seg = ns.segments.get(shmid)
        if seg is None:
            raise SyscallError(C.EINVAL)
        if cmd == C.SHM_STAT and not seg.allows(t.creds, 4):
            raise SyscallError(C.EACCES)
        t.mem.write(buf, _shmid_ds(ns, seg))
        return seg.id
    seg = ns.by_id(shmid)
    if cmd == C.IPC_STAT:
        if not seg.allows(t.creds, 4):
            raise SyscallError(C.EACCES)
        t.mem.write(buf, _shmid_ds(ns, seg))
        return 0
    if cmd in (C.IPC_SET, C.IPC_RMID):
        if not seg.owned_by(t.creds):
            raise SyscallError(C.EPERM)
        if cmd == C.IPC_SET:
            perm = IPC64_PERM.unpack(t.mem.read(buf, IPC64_PERM.size))
            seg.uid, seg.gid = perm[1], perm[2]
            seg.mode = (seg.mode & ~0o777) | (perm[5] & 0o777)
        else:
            seg.mode |= C.SHM_DEST
            seg.key = C.IPC_PRIVATE
            if not ns.attaches(seg):
                ns.drop(seg)
        seg.ctime = int(time.time())
        return 0
    if cmd in (C.SHM_LOCK, C.SHM_UNLOCK):
        # Guest memory is never swapped out by the Sentry: the flag is all there is to it.
        if not (t.creds.has_cap(CAP_IPC_LOCK) or seg.owned_by(t.creds)):
            raise SyscallError(C.EPERM)
        seg.mode = seg.mode | C.SHM_LOCKED if cmd == C.SHM_LOCK else seg.mode & ~C.SHM_LOCKED
        return 0
    raise SyscallError(C.EINVAL)
