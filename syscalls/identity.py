"""User and group ids and capabilities: all Sentry state, never the host's."""
from __future__ import annotations

import struct
import sys

from pysc.core.abi import consts as C
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError
from pysc.core.hookspecs import hookimpl
from pysc.core.task import CAP_SETGID, CAP_SETUID

NGROUPS_MAX = 65536
CAP_V3 = 0x20080522
CAP_V1 = 0x19980330
CAP_V2 = 0x20071026


@hookimpl
def pysc_syscalls(table, platform):
    table.register_module(sys.modules[__name__])


@syscall()
def getuid(t, *_):
    return t.creds.uid


@syscall()
def geteuid(t, *_):
    return t.creds.euid


@syscall()
def getgid(t, *_):
    return t.creds.gid


@syscall()
def getegid(t, *_):
    return t.creds.egid


@syscall()
def getresuid(t, r, e, s, *_):
    c = t.creds
    for addr, v in ((r, c.uid), (e, c.euid), (s, c.suid)):
        t.mem.write_u32(addr, v)
    return 0


@syscall()
def getresgid(t, r, e, s, *_):
    c = t.creds
    for addr, v in ((r, c.gid), (e, c.egid), (s, c.sgid)):
        t.mem.write_u32(addr, v)
    return 0


@syscall()
def getgroups(t, size, lst, *_):
    size = s32(size)
    groups = t.creds.groups
    if size < 0:
        raise SyscallError(C.EINVAL)
    if size == 0:
        return len(groups)
    if size < len(groups):
        raise SyscallError(C.EINVAL)
    if groups:
        t.mem.write(lst, struct.pack(f"<{len(groups)}I", *groups))
    return len(groups)


@syscall()
def setgroups(t, size, lst, *_):
    size = s32(size)
    if size < 0 or size > NGROUPS_MAX:
        raise SyscallError(C.EINVAL)
    if not t.creds.has_cap(CAP_SETGID):
        raise SyscallError(C.EPERM)
    raw = t.mem.read(lst, 4 * size) if size else b""
    t.creds.groups = tuple(struct.unpack(f"<{size}I", raw))
    return 0


def _ids(v: int) -> int:
    v = s32(v)
    if v < -1:
        raise SyscallError(C.EINVAL)
    return v


def _drop_caps_on_uid_change(c, old_ids) -> None:
    # Linux: when all of ruid, euid, suid become non-zero, permitted and
    # effective capabilities are cleared; euid 0 -> non-zero clears effective.
    if 0 in old_ids and 0 not in (c.uid, c.euid, c.suid):
        c.cap_permitted = c.cap_effective = c.cap_ambient = 0
    elif old_ids[1] == 0 and c.euid != 0:
        c.cap_effective = 0
    elif old_ids[1] != 0 and c.euid == 0:
        c.cap_effective = c.cap_permitted


def _apply(t, r: int, e: int, s: int, user: bool) -> int:
    """Set real/effective/saved ids (-1 keeps one), with Linux's capability rules."""
    c = t.creds
    cur = (c.uid, c.euid, c.suid) if user else (c.gid, c.egid, c.sgid)
    new = [cur[i] if v == -1 else v for i, v in enumerate((r, e, s))]
    if user:
        c.uid, c.euid, c.suid = new
        c.fsuid = c.euid
        _drop_caps_on_uid_change(c, cur)
    else:
        c.gid, c.egid, c.sgid = new
        c.fsgid = c.egid
    return 0


def _ids_of(c, user: bool) -> tuple[int, int, int]:
    return (c.uid, c.euid, c.suid) if user else (c.gid, c.egid, c.sgid)


def _privileged(t, user: bool) -> bool:
    return t.creds.has_cap(CAP_SETUID if user else CAP_SETGID)


def _setres(t, r, e, s, user: bool) -> int:
    """setresuid/setresgid: without the capability, each id must be one of the current three."""
    cur = _ids_of(t.creds, user)
    if not _privileged(t, user) and any(v != -1 and v not in cur for v in (r, e, s)):
        raise SyscallError(C.EPERM)
    return _apply(t, r, e, s, user)


@syscall()
def setresuid(t, r, e, s, *_):
    return _setres(t, _ids(r), _ids(e), _ids(s), True)


@syscall()
def setresgid(t, r, e, s, *_):
    return _setres(t, _ids(r), _ids(e), _ids(s), False)


def _setre(t, r, e, user: bool) -> int:
    """setreuid/setregid: the saved id follows the new effective one when the
    real id is set or the effective one changes."""
    r, e = _ids(r), _ids(e)
    real, eff, saved = _ids_of(t.creds, user)
    s = -1
    if r != -1 or (e != -1 and e != real):
        s = e if e != -1 else eff
    if not _privileged(t, user):
        if r != -1 and r not in (real, eff) or e != -1 and e not in (real, eff, saved):
            raise SyscallError(C.EPERM)
    return _apply(t, r, e, s, user)


@syscall()
def setreuid(t, r, e, *_):
    return _setre(t, r, e, True)


@syscall()
def setregid(t, r, e, *_):
    return _setre(t, r, e, False)


def _set1(t, v, user: bool) -> int:
    """setuid/setgid: all three with the capability, else only the effective id."""
    v = _ids(v)
    if v == -1:
        raise SyscallError(C.EINVAL)
    if _privileged(t, user):
        return _apply(t, v, v, v, user)
    real, _, saved = _ids_of(t.creds, user)
    if v not in (real, saved):
        raise SyscallError(C.EPERM)
    return _apply(t, -1, v, -1, user)


@syscall()
def setuid(t, uid, *_):
    return _set1(t, uid, True)


@syscall()
def setgid(t, gid, *_):
    return _set1(t, gid, False)


@syscall()
def setfsuid(t, uid, *_):
    c = t.creds
    old = c.fsuid
    uid = s32(uid)
    if uid != -1 and (c.has_cap(CAP_SETUID) or uid in (c.uid, c.euid, c.suid, c.fsuid)):
        c.fsuid = uid
    return old


@syscall()
def setfsgid(t, gid, *_):
    c = t.creds
    old = c.fsgid
    gid = s32(gid)
    if gid != -1 and (c.has_cap(CAP_SETGID) or gid in (c.gid, c.egid, c.sgid, c.fsgid)):
        c.fsgid = gid
    return old


@syscall()
def capget(t, hdrp, datap, *_):
    version, pid = struct.unpack("<Ii", t.mem.read(hdrp, 8))
    if version not in (CAP_V1, CAP_V2, CAP_V3):
        t.mem.write_u32(hdrp, CAP_V3)
        if datap:
            raise SyscallError(C.EINVAL)
        return 0
    if not datap:
        return 0
    tg = t.tg if pid == 0 else t.pidns.tg(pid)
    if tg is None or not tg.tasks:
        raise SyscallError(C.ESRCH)
    c = tg.tasks[0].creds if pid else t.creds
    words = 1 if version == CAP_V1 else 2
    out = b""
    for i in range(words):
        sh = 32 * i
        out += struct.pack("<III", (c.cap_effective >> sh) & 0xFFFFFFFF,
                           (c.cap_permitted >> sh) & 0xFFFFFFFF, (c.cap_inheritable >> sh) & 0xFFFFFFFF)
    t.mem.write(datap, out)
    return 0


@syscall()
def capset(t, hdrp, datap, *_):
    version, pid = struct.unpack("<Ii", t.mem.read(hdrp, 8))
    if version not in (CAP_V1, CAP_V2, CAP_V3):
        t.mem.write_u32(hdrp, CAP_V3)
        raise SyscallError(C.EINVAL)
    if pid not in (0, t.pidns.id_of(t.tid)):
        raise SyscallError(C.EPERM)
    words = 1 if version == CAP_V1 else 2
    raw = t.mem.read(datap, 12 * words)
    eff = perm = inh = 0
    for i in range(words):
        e, p, n = struct.unpack_from("<III", raw, 12 * i)
        eff |= e << (32 * i)
        perm |= p << (32 * i)
        inh |= n << (32 * i)
    c = t.creds
    if perm & ~c.cap_permitted or eff & ~perm:
        raise SyscallError(C.EPERM)
    if inh & ~(c.cap_inheritable | c.cap_permitted) & ~c.cap_bounding:
        raise SyscallError(C.EPERM)
    c.cap_effective, c.cap_permitted, c.cap_inheritable = eff, perm, inh
    return 0
