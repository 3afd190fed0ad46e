"""System V IPC (shared memory, semaphores, message queues) where the
Sentry owns the address spaces and runs the app's threads (kvm).

On the host-process platforms the host kernel serves System V IPC in the
sandbox's own IPC namespace (syscalls/ipc.py).  Here a segment is a memfd,
and shmat maps it MAP_SHARED like any shared file mapping.  A segment's
attach count is, as in Linux, the number of mappings of it in all address
spaces, so fork, exec, exit and munmap need no bookkeeping of their own.
A semaphore operation, or a message send or receive, that cannot complete
parks its task on the object's wait queue and runs again, whole, when the
object changes.
"""
from __future__ import annotations

import os
import sys
import time

from pysc.core.abi import consts as C
from pysc.core.abi.structs import (IPC64_PERM, MSGINFO, MSQID64_DS, SEMBUF, SEMID64_DS, SEMINFO,
                                   SHM_INFO, SHMID64_DS, SHMINFO64, TIMESPEC)
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.eventpoll import call_deadline, clear_deadline, expired
from pysc.core.file import HostFDFile
from pysc.core.hookspecs import hookimpl
from pysc.core.waitqueue import WaitQueue

CAP_IPC_LOCK, CAP_IPC_OWNER, CAP_SYS_ADMIN = 14, 15, 21


@hookimpl
def pysc_syscalls(table, platform):
    if table.sentry_owned:
        table.register_module(sys.modules[__name__])


class IPCObject:
    """What every System V object has: a key, an owner, permissions, an id."""

    def __init__(self, key: int, mode: int, creds, index: int, seq: int):
        self.key, self.mode = key, mode & 0o777
        self.uid = self.cuid = creds.euid
        self.gid = self.cgid = creds.egid
        self.ctime = int(time.time())
        self.index, self.seq = index, seq
        self.removed = False  # IPC_RMID'd (semaphore sets, message queues)

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

    def perm(self) -> bytes:
        return IPC64_PERM.pack(self.key, self.uid, self.gid, self.cuid, self.cgid, self.mode, self.seq, 0, 0)

    def set_perm(self, data: bytes) -> None:
        """IPC_SET: the new owner and permission bits."""
        perm = IPC64_PERM.unpack(data)
        self.uid, self.gid = perm[1], perm[2]
        self.mode = (self.mode & ~0o777) | (perm[5] & 0o777)
        self.ctime = int(time.time())


class IPCIds:
    """One kind of object of the sandbox's IPC namespace, by index."""

    def __init__(self, limit: int):
        self.objects: dict = {}
        self.limit = limit
        self.seq = 0

    def next_slot(self) -> tuple[int, int]:
        index = next((i for i in range(self.limit) if i not in self.objects), None)
        if index is None:
            raise SyscallError(C.ENOSPC)
        seq, self.seq = self.seq, (self.seq + 1) % (1 << 16)
        return index, seq

    def by_id(self, ident: int, waited: "IPCObject | None" = None):
        """The object ``ident`` names; EIDRM when it is ``waited``, the one a
        blocked call of the caller waits on, and was removed meanwhile."""
        obj = self.objects.get(ident % C.IPCMNI) if ident >= 0 else None
        if obj is None or obj.id != ident:
            removed = waited is not None and waited.removed and waited.id == ident
            raise SyscallError(C.EIDRM if removed else C.EINVAL)
        return obj

    def by_index(self, t, index: int, check: bool):
        """SHM_STAT, SEM_STAT: the object in slot ``index``, as ipcs walks
        them; with ``check``, only if the caller may read it."""
        obj = self.objects.get(index)
        if obj is None:
            raise SyscallError(C.EINVAL)
        if check and not obj.allows(t.creds, 4):
            raise SyscallError(C.EACCES)
        return obj

    def by_key(self, t, key: int, flags: int, create):
        """shmget/semget: the object of ``key`` (checked against ``flags``),
        or ``create()``'s when IPC_CREAT allows it."""
        if key != C.IPC_PRIVATE:
            obj = next((o for o in self.objects.values() if o.key == key), None)
            if obj is not None:
                if flags & C.IPC_CREAT and flags & C.IPC_EXCL:
                    raise SyscallError(C.EEXIST)
                if not obj.allows(t.creds, (flags >> 6) & 7):
                    raise SyscallError(C.EACCES)
                return obj
            if not flags & C.IPC_CREAT:
                raise SyscallError(C.ENOENT)
        obj = create(*self.next_slot())
        self.objects[obj.index] = obj
        return obj


def _namespace(t, name: str, make):
    ns = t.kernel.objects.get(name)
    if ns is None:
        ns = t.kernel.objects[name] = make(t.kernel)
    return ns


# ---------------------------------------------------------------- shared memory
class Segment(IPCObject):
    """One shared memory segment: its memfd, size, times and pids."""

    def __init__(self, key: int, size: int, mode: int, creds, pid: int, index: int, seq: int):
        super().__init__(key, mode, creds, index, seq)
        self.size = size
        self.cpid, self.lpid = pid, 0
        self.atime = self.dtime = 0
        self.fd = os.memfd_create(f"SYSV{key & 0xFFFFFFFF:08x}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, (size + C.PAGE_SIZE - 1) & ~(C.PAGE_SIZE - 1))
        except OSError as e:
            os.close(self.fd)
            raise SyscallError(e.errno or C.ENOMEM) from None


class ShmNamespace(IPCIds):
    """The sandbox's segments."""

    def __init__(self, kernel):
        super().__init__(C.SHMMNI)
        self.kernel = kernel

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
        for seg in [s for s in self.objects.values() if s.mode & C.SHM_DEST]:
            if not self.attaches(seg):
                self.drop(seg)

    def drop(self, seg: Segment) -> None:
        self.objects.pop(seg.index, None)
        os.close(seg.fd)


def _shm(t) -> ShmNamespace:
    ns = _namespace(t, "sysv_shm", ShmNamespace)
    ns.reap()
    return ns


@syscall()
def shmget(t, key, size, shmflg, *_):
    key, shmflg = s32(key), s32(shmflg)

    def create(index: int, seq: int) -> Segment:
        if not C.SHMMIN <= size <= C.SHMMAX:
            raise SyscallError(C.EINVAL)
        return Segment(key, size, shmflg, t.creds, t.pidns.id_of(t.tg.pid), index, seq)

    seg = _shm(t).by_key(t, key, shmflg, create)
    if size > seg.size:
        raise SyscallError(C.EINVAL)
    return seg.id


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
    seg = _shm(t).by_id(s32(shmid))
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
    _shm(t)  # a removed segment may go now
    return 0


def _shmid_ds(ns: ShmNamespace, seg: Segment) -> bytes:
    return SHMID64_DS.pack(seg.perm(), seg.size, seg.atime, seg.dtime, seg.ctime, seg.cpid, seg.lpid,
                           ns.attaches(seg), 0, 0)


@syscall()
def shmctl(t, shmid, cmd, buf, *_):
    shmid, cmd = s32(shmid), s32(cmd)
    ns = _shm(t)
    if cmd == C.IPC_INFO:
        t.mem.write(buf, SHMINFO64.pack(C.SHMMAX, C.SHMMIN, C.SHMMNI, C.SHMMNI, C.SHMALL, 0, 0, 0, 0))
        return max(ns.objects, default=0)
    if cmd == C.SHM_INFO:
        pages = sum((s.size + C.PAGE_SIZE - 1) // C.PAGE_SIZE for s in ns.objects.values())
        t.mem.write(buf, SHM_INFO.pack(len(ns.objects), pages, pages, 0, 0, 0))
        return max(ns.objects, default=0)
    if cmd in (C.SHM_STAT, C.SHM_STAT_ANY):
        seg = ns.by_index(t, shmid, cmd == C.SHM_STAT)
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
            seg.set_perm(t.mem.read(buf, IPC64_PERM.size))
        else:
            seg.mode |= C.SHM_DEST
            seg.key = C.IPC_PRIVATE
            seg.ctime = int(time.time())
            if not ns.attaches(seg):
                ns.drop(seg)
        return 0
    if cmd in (C.SHM_LOCK, C.SHM_UNLOCK):
        # Guest memory is never swapped out by the Sentry: the flag is all there is to it.
        if not (t.creds.has_cap(CAP_IPC_LOCK) or seg.owned_by(t.creds)):
            raise SyscallError(C.EPERM)
        seg.mode = seg.mode | C.SHM_LOCKED if cmd == C.SHM_LOCK else seg.mode & ~C.SHM_LOCKED
        return 0
    raise SyscallError(C.EINVAL)


# ---------------------------------------------------------------- semaphores
class SemSet(IPCObject):
    """A semaphore set: values, the pid of each one's last operation, and
    the queue its blocked operations wait on."""

    def __init__(self, key: int, nsems: int, mode: int, creds, index: int, seq: int):
        super().__init__(key, mode, creds, index, seq)
        self.values = [0] * nsems
        self.pids = [0] * nsems
        self.otime = 0
        self.wq = WaitQueue()

    def changed(self) -> None:
        self.wq.notify()

    def semid_ds(self) -> bytes:
        return SEMID64_DS.pack(self.perm(), self.otime, 0, self.ctime, 0, len(self.values), 0, 0)


def _sem(t) -> IPCIds:
    return _namespace(t, "sysv_sem", lambda kernel: IPCIds(C.SEMMNI))


@syscall()
def semget(t, key, nsems, semflg, *_):
    key, nsems, semflg = s32(key), s32(nsems), s32(semflg)
    if nsems < 0 or nsems > C.SEMMSL:
        raise SyscallError(C.EINVAL)

    def create(index: int, seq: int) -> SemSet:
        if nsems == 0:
            raise SyscallError(C.EINVAL)
        return SemSet(key, nsems, semflg, t.creds, index, seq)

    sems = _sem(t).by_key(t, key, semflg, create)
    if nsems > len(sems.values):
        raise SyscallError(C.EINVAL)
    return sems.id


def _undo_of(tg) -> dict:
    """SEM_UNDO adjustments of a process: (set, semaphore) -> amount."""
    undo = getattr(tg, "sem_undo", None)
    if undo is None:
        undo = tg.sem_undo = {}
    return undo


def _semop(t, semid: int, sops: int, nsops: int, timeout: float | None) -> int:
    if nsops < 1:
        raise SyscallError(C.EINVAL)
    if nsops > C.SEMOPM:
        raise SyscallError(C.E2BIG)
    raw = t.mem.read(sops, SEMBUF.size * nsops)
    ops = [SEMBUF.unpack_from(raw, i * SEMBUF.size) for i in range(nsops)]
    waiting = getattr(t, "sem_wait", None)
    try:
        sems = _sem(t).by_id(semid, waiting[0] if waiting else None)
    except SyscallError:
        t.sem_wait = None
        raise
    if any(num >= len(sems.values) for num, _, _ in ops):
        raise SyscallError(C.EFBIG)
    if not sems.allows(t.creds, 2 if any(op for _, op, _ in ops) else 4):
        raise SyscallError(C.EACCES)
    key = ("semop", semid, sops, nsops)
    values = list(sems.values)
    for num, op, flg in ops:  # all or nothing: tried on a copy first
        if op > 0 and values[num] + op > C.SEMVMX:
            t.sem_wait = None
            raise SyscallError(C.ERANGE)
        if (op < 0 and values[num] + op < 0) or (op == 0 and values[num]):
            if flg & C.IPC_NOWAIT:
                t.sem_wait = None
                clear_deadline(t, key)
                raise SyscallError(C.EAGAIN)
            deadline = call_deadline(t, key, timeout)
            if expired(deadline):
                t.sem_wait = None
                clear_deadline(t, key)
                raise SyscallError(C.EAGAIN)
            t.sem_wait = (sems, num, op == 0)  # for GETNCNT and GETZCNT
            raise WouldBlock((sems.wq,), deadline=deadline, restart="nohand")
        values[num] += op
    t.sem_wait = None
    clear_deadline(t, key)
    pid = t.pidns.id_of(t.tg.pid)
    undo = None
    for num, op, flg in ops:
        sems.pids[num] = pid
        if flg & C.SEM_UNDO and op:
            undo = undo if undo is not None else _undo_of(t.tg)
            undo[(sems, num)] = undo.get((sems, num), 0) - op
    sems.values = values
    sems.otime = int(time.time())
    sems.changed()
    return 0


@syscall()
def semop(t, semid, sops, nsops, *_):
    return _semop(t, s32(semid), sops, nsops, None)


@syscall()
def semtimedop(t, semid, sops, nsops, timeout, *_):
    limit = None
    if timeout:
        sec, nsec = TIMESPEC.unpack(t.mem.read(timeout, TIMESPEC.size))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise SyscallError(C.EINVAL)
        limit = sec + nsec / 1e9
    return _semop(t, s32(semid), sops, nsops, limit)


def _waiters(t, sems: SemSet, num: int, for_zero: bool) -> int:
    """GETNCNT/GETZCNT: the tasks blocked in semop on semaphore ``num``."""
    return sum(1 for task in list(t.kernel.tasks.values())
               if task.parked is not None and getattr(task, "sem_wait", None) is not None
               and task.sem_wait[0] is sems and task.sem_wait[1] == num and task.sem_wait[2] == for_zero)


def _forget_undo(kernel, sems: SemSet, num: int | None) -> None:
    """SETVAL/SETALL/IPC_RMID: the adjustments recorded for these semaphores lapse."""
    for tg in list(kernel.thread_groups.values()):
        undo = getattr(tg, "sem_undo", None)
        if undo:
            for k in [k for k in undo if k[0] is sems and (num is None or k[1] == num)]:
                del undo[k]


@syscall()
def semctl(t, semid, semnum, cmd, arg, *_):
    semid, semnum, cmd = s32(semid), s32(semnum), s32(cmd)
    ns = _sem(t)
    if cmd in (C.IPC_INFO, C.SEM_INFO):
        usz, aem = 20, C.SEMVMX  # SEM_INFO: the sets and semaphores in use instead
        if cmd == C.SEM_INFO:
            usz, aem = len(ns.objects), sum(len(s.values) for s in ns.objects.values())
        t.mem.write(arg, SEMINFO.pack(C.SEMMNS, C.SEMMNI, C.SEMMNS, C.SEMMNS, C.SEMMSL, C.SEMOPM,
                                      C.SEMOPM, usz, C.SEMVMX, aem))
        return max(ns.objects, default=0)
    if cmd in (C.SEM_STAT, C.SEM_STAT_ANY):
        sems = ns.by_index(t, semid, cmd == C.SEM_STAT)
        t.mem.write(arg, sems.semid_ds())
        return sems.id
    sems = ns.by_id(semid)
    n = len(sems.values)
    if cmd in (C.IPC_SET, C.IPC_RMID):
        if not sems.owned_by(t.creds):
            raise SyscallError(C.EPERM)
        if cmd == C.IPC_SET:
            sems.set_perm(t.mem.read(arg, IPC64_PERM.size))
        else:
            del ns.objects[sems.index]
            sems.removed = True
            _forget_undo(t.kernel, sems, None)
            sems.changed()  # its waiters fail with EIDRM
        return 0
    if not sems.allows(t.creds, 2 if cmd in (C.SETVAL, C.SETALL) else 4):
        raise SyscallError(C.EACCES)
    if cmd == C.IPC_STAT:
        t.mem.write(arg, sems.semid_ds())
        return 0
    if cmd == C.GETALL:
        t.mem.write(arg, b"".join(v.to_bytes(2, "little") for v in sems.values))
        return 0
    if cmd == C.SETALL:
        data = t.mem.read(arg, 2 * n)
        values = [int.from_bytes(data[2 * i:2 * i + 2], "little") for i in range(n)]
        if any(v > C.SEMVMX for v in values):
            raise SyscallError(C.ERANGE)
        sems.values = values
        sems.pids = [t.pidns.id_of(t.tg.pid)] * n
    elif not 0 <= semnum < n:
        raise SyscallError(C.EINVAL)
    elif cmd == C.GETVAL:
        return sems.values[semnum]
    elif cmd == C.GETPID:
        return sems.pids[semnum]
    elif cmd in (C.GETNCNT, C.GETZCNT):
        return _waiters(t, sems, semnum, cmd == C.GETZCNT)
    elif cmd == C.SETVAL:
        val = s32(arg)  # the union semun, passed by value: its int
        if not 0 <= val <= C.SEMVMX:
            raise SyscallError(C.ERANGE)
        sems.values[semnum] = val
        sems.pids[semnum] = t.pidns.id_of(t.tg.pid)
    else:
        raise SyscallError(C.EINVAL)
    _forget_undo(t.kernel, sems, None if cmd == C.SETALL else semnum)
    sems.ctime = int(time.time())
    sems.changed()
    return 0


@hookimpl
def pysc_task_exit(task):
    """The last thread of a process is gone: its SEM_UNDO adjustments apply."""
    tg = task.tg
    undo = getattr(tg, "sem_undo", None)
    if not undo or tg.tasks:
        return
    pid = tg.pidns.id_of(tg.pid)
    for (sems, num), adj in list(undo.items()):
        if not sems.removed:
            sems.values[num] = min(C.SEMVMX, max(0, sems.values[num] + adj))
            sems.pids[num] = pid
            sems.changed()
    undo.clear()


# ---------------------------------------------------------------- message queues
CAP_SYS_RESOURCE = 24


class MsgQueue(IPCObject):
    """A message queue: (type, text) pairs in order, and the queue its
    blocked senders and receivers wait on."""

    def __init__(self, key: int, mode: int, creds, index: int, seq: int):
        super().__init__(key, mode, creds, index, seq)
        self.messages: list[tuple[int, bytes]] = []
        self.qbytes = C.MSGMNB
        self.stime = self.rtime = 0
        self.lspid = self.lrpid = 0
        self.wq = WaitQueue()

    @property
    def cbytes(self) -> int:
        return sum(len(text) for _, text in self.messages)

    def msqid_ds(self) -> bytes:
        return MSQID64_DS.pack(self.perm(), self.stime, self.rtime, self.ctime, self.cbytes,
                               len(self.messages), self.qbytes, self.lspid, self.lrpid, 0, 0)

    def pick(self, msgtyp: int, except_: bool) -> int | None:
        """The index of the message msgrcv takes, None if there is none."""
        if msgtyp < 0:
            best = None
            for i, (mtype, _) in enumerate(self.messages):
                if mtype <= -msgtyp and (best is None or mtype < self.messages[best][0]):
                    best = i
            return best
        for i, (mtype, _) in enumerate(self.messages):
            if msgtyp == 0 or (mtype != msgtyp if except_ else mtype == msgtyp):
                return i
        return None


def _msg(t) -> IPCIds:
    return _namespace(t, "sysv_msg", lambda kernel: IPCIds(C.MSGMNI))


@syscall()
def msgget(t, key, msgflg, *_):
    key, msgflg = s32(key), s32(msgflg)
    return _msg(t).by_key(t, key, msgflg, lambda index, seq: MsgQueue(key, msgflg, t.creds, index, seq)).id


def _queue(t, msqid: int) -> MsgQueue:
    """The queue, or EIDRM for a task that was waiting on it when it went."""
    try:
        return _msg(t).by_id(msqid, getattr(t, "msg_wait", None))
    except SyscallError:
        t.msg_wait = None
        raise


def _block(t, q: MsgQueue, flags: int, empty_errno: int):
    if flags & C.IPC_NOWAIT:
        t.msg_wait = None
        raise SyscallError(empty_errno)
    t.msg_wait = q
    raise WouldBlock((q.wq,), restart="nohand")


@syscall()
def msgsnd(t, msqid, msgp, msgsz, msgflg, *_):
    msgflg = s32(msgflg)
    if msgsz > C.MSGMAX or s32(msqid) < 0:
        raise SyscallError(C.EINVAL)
    q = _queue(t, s32(msqid))
    if not q.allows(t.creds, 2):
        raise SyscallError(C.EACCES)
    mtype = int.from_bytes(t.mem.read(msgp, 8), "little", signed=True)
    if mtype < 1:
        raise SyscallError(C.EINVAL)
    text = t.mem.read(msgp + 8, msgsz) if msgsz else b""
    if q.cbytes + msgsz > q.qbytes or len(q.messages) + 1 > q.qbytes:
        _block(t, q, msgflg, C.EAGAIN)
    t.msg_wait = None
    q.messages.append((mtype, text))
    q.lspid, q.stime = t.pidns.id_of(t.tg.pid), int(time.time())
    q.wq.notify()
    return 0


@syscall()
def msgrcv(t, msqid, msgp, msgsz, msgtyp, msgflg, *_):
    msgflg = s32(msgflg)
    msgtyp = int.from_bytes(msgtyp.to_bytes(8, "little"), "little", signed=True)
    if msgsz >> 63 or s32(msqid) < 0:
        raise SyscallError(C.EINVAL)
    if msgflg & C.MSG_COPY:
        raise SyscallError(C.ENOSYS)  # as a Linux built without checkpoint/restore
    q = _queue(t, s32(msqid))
    if not q.allows(t.creds, 4):
        raise SyscallError(C.EACCES)
    i = q.pick(msgtyp, bool(msgflg & C.MSG_EXCEPT))
    if i is None:
        _block(t, q, msgflg, C.ENOMSG)
    t.msg_wait = None
    mtype, text = q.messages[i]
    if len(text) > msgsz:
        if not msgflg & C.MSG_NOERROR:
            raise SyscallError(C.E2BIG)
        text = text[:msgsz]
    t.mem.write(msgp, mtype.to_bytes(8, "little", signed=True) + text)
    del q.messages[i]
    q.lrpid, q.rtime = t.pidns.id_of(t.tg.pid), int(time.time())
    q.wq.notify()
    return len(text)


@syscall()
def msgctl(t, msqid, cmd, buf, *_):
    msqid, cmd = s32(msqid), s32(cmd)
    ns = _msg(t)
    if cmd in (C.IPC_INFO, C.MSG_INFO):
        if cmd == C.MSG_INFO:  # in use: queues, messages, bytes
            qs = list(ns.objects.values())
            info = (len(qs), sum(len(q.messages) for q in qs), C.MSGMAX, C.MSGMNB, C.MSGMNI, 16,
                    sum(q.cbytes for q in qs), 0xFFFF)
        else:
            info = (C.MSGMNI * C.MSGMNB // 1024, C.MSGMNB * C.MSGMNI // 16, C.MSGMAX, C.MSGMNB, C.MSGMNI,
                    16, C.MSGMNB * C.MSGMNI // 16, 0xFFFF)
        t.mem.write(buf, MSGINFO.pack(*info))
        return max(ns.objects, default=0)
    if cmd in (C.MSG_STAT, C.MSG_STAT_ANY):
        q = ns.by_index(t, msqid, cmd == C.MSG_STAT)
        t.mem.write(buf, q.msqid_ds())
        return q.id
    q = ns.by_id(msqid)
    if cmd == C.IPC_STAT:
        if not q.allows(t.creds, 4):
            raise SyscallError(C.EACCES)
        t.mem.write(buf, q.msqid_ds())
        return 0
    if cmd not in (C.IPC_SET, C.IPC_RMID):
        raise SyscallError(C.EINVAL)
    if not q.owned_by(t.creds):
        raise SyscallError(C.EPERM)
    if cmd == C.IPC_SET:
        data = t.mem.read(buf, MSQID64_DS.size)
        qbytes = MSQID64_DS.unpack(data)[6]
        if qbytes > C.MSGMNB and not t.creds.has_cap(CAP_SYS_RESOURCE):
            raise SyscallError(C.EPERM)
        q.set_perm(data[:IPC64_PERM.size])
        q.qbytes = qbytes
    else:
        del ns.objects[q.index]
        q.removed = True
    q.wq.notify()  # senders may fit now; waiters on a removed queue fail with EIDRM
    return 0
