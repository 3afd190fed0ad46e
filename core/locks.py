"""Advisory file locks: flock(2) and POSIX/OFD record locks (fcntl)."""
from __future__ import annotations

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.record import Record
from pysc.core.waitqueue import WaitQueue

END = 1 << 63


class Lock(Record):
    owner: object
    start: int
    end: int  # exclusive
    write: bool
    pid: int


class LockTable:
    """All locks of one sandbox, keyed by the inode they lock."""

    def __init__(self) -> None:
        self.flocks: dict[int, list[Lock]] = {}
        self.records: dict[int, list[Lock]] = {}
        self.changed = WaitQueue()

    # --- flock ---
    def flock(self, key: int, owner, op: int, pid: int) -> None:
        locks = self.flocks.setdefault(key, [])
        mine = [lk for lk in locks if lk.owner is owner]
        kind = op & ~C.LOCK_NB
        if kind == C.LOCK_UN:
            for lk in mine:
                locks.remove(lk)
            self.changed.notify()
            return
        if kind not in (C.LOCK_SH, C.LOCK_EX):
            raise SyscallError(C.EINVAL)
        write = kind == C.LOCK_EX
        if any(lk.owner is not owner and (write or lk.write) for lk in locks):
            if op & C.LOCK_NB:
                raise SyscallError(C.EWOULDBLOCK)
            raise WouldBlock([self.changed])
        for lk in mine:
            locks.remove(lk)
        locks.append(Lock(owner, 0, END, write, pid))
        self.changed.notify()

    # --- POSIX and OFD record locks ---
    def conflict(self, key: int, owner, start: int, end: int, write: bool) -> Lock | None:
        for lk in self.records.get(key, ()):
            if lk.owner is not owner and lk.start < end and start < lk.end and (write or lk.write):
                return lk
        return None

    def setlk(self, key: int, owner, start: int, end: int, typ: int, wait: bool, pid: int) -> None:
        if typ != C.F_UNLCK:
            if self.conflict(key, owner, start, end, typ == C.F_WRLCK) is not None:
                if not wait:
                    raise SyscallError(C.EAGAIN)
                raise WouldBlock([self.changed])
        locks = self.records.setdefault(key, [])
        kept = []
        for lk in locks:  # cut our own locks out of [start, end)
            if lk.owner is not owner or lk.end <= start or end <= lk.start:
                kept.append(lk)
                continue
            if lk.start < start:
                kept.append(Lock(owner, lk.start, start, lk.write, lk.pid))
            if end < lk.end:
                kept.append(Lock(owner, end, lk.end, lk.write, lk.pid))
        if typ != C.F_UNLCK:
            kept.append(Lock(owner, start, end, typ == C.F_WRLCK, pid))
        self.records[key] = kept
        self.changed.notify()

    def release_owner(self, owner, key: int | None = None) -> None:
        for table in (self.flocks, self.records):
            for k, locks in table.items():
                if key is None or k == key:
                    locks[:] = [lk for lk in locks if lk.owner is not owner]
        self.changed.notify()
