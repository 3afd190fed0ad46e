"""The gofer protocol: every message between the Sentry and the gofer.

Wire form (stable): one msgpack array per message, ``[tag, field1, field2,
...]`` with the fields in the order the class declares them.  Byte strings
(file names, data, symlink targets) travel as msgpack ``bin``, text (mount
names, message names) as ``str``; sequences decode as tuples.  ``Batch`` and
``BatchReply`` carry whole messages, each in its own ``[tag, ...]`` form.

A request is answered by exactly one reply: the reply class named in the
request's docstring, or ``ErrorReply(errno)``.  A request that fails has no
side effect.

Handles are integers the gofer chose; each names a host fd held by the gofer:
*path handles* (``O_PATH`` fds, from Attach/Walk/Create/Mkdir/...) and *open
handles* (from Open/Create, real open fds used by Read/Write/Fsync).  Both
kinds are released with ``Close``.

A stat travels as a 14-tuple in the field order of
``pysc.core.abi.structs.Stat`` (mode, ino, dev, nlink, uid, gid, rdev, size,
blksize, blocks, atime_ns, mtime_ns, ctime_ns, btime_ns): ``wire_to_stat``
turns it into a ``Stat``.
"""
from __future__ import annotations

import os
from typing import Any

import msgpack

from pysc.core.abi.structs import Stat as _StatRecord
from pysc.core.message import Message

PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    """A message that cannot be decoded: bad msgpack, unknown tag, wrong shape."""


REGISTRY: dict[int, type] = {}   # type tag -> message class
BY_NAME: dict[str, type] = {}    # class name -> message class


def message(tag: int, nested: tuple[str, ...] = ()):
    """Register a message class under a fixed wire tag."""
    def deco(cls):
        if tag in REGISTRY:
            raise ValueError(f"duplicate gofer message tag {tag}")
        cls.TAG = tag
        cls._NESTED = nested
        REGISTRY[tag] = cls
        BY_NAME[cls.__name__] = cls
        return cls
    return deco


WireStat = tuple  # (mode, ino, dev, nlink, uid, gid, rdev, size, blksize, blocks, atime_ns, mtime_ns, ctime_ns, btime_ns)


def stat_to_wire(st: os.stat_result) -> tuple:
    """A host ``os.stat_result`` as a wire stat."""
    return (st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev,
            st.st_size, st.st_blksize, st.st_blocks, st.st_atime_ns, st.st_mtime_ns,
            st.st_ctime_ns, 0)


def wire_to_stat(w, dev: int | None = None) -> _StatRecord:
    """A wire stat as ``pysc.core.abi.structs.Stat`` (``dev`` overrides st_dev)."""
    st = _StatRecord(*w)
    if dev is not None:
        st.dev = dev
    return st


# ---------------------------------------------------------------- replies

@message(1)
class ErrorReply(Message):
    """The request failed with ``errno``; it had no effect."""
    errno: int


@message(2)
class OkReply(Message):
    """The request succeeded and has nothing to return."""


# ---------------------------------------------------------------- mounts

@message(3)
class Attach(Message):
    """Attach a mount the gofer serves -> AttachReply.

    ``mount`` is the host path as given on the gofer's command line, or the
    mount's index in decimal.  ``readonly`` asks for a read-only view even of
    a writable mount."""
    mount: str
    readonly: bool = False


@message(4)
class AttachReply(Message):
    handle: int
    stat: tuple
    messages: tuple = ()      # names of every request class the gofer serves
    readonly: bool = False    # the view is read-only (mount flag or request)


@message(5)
class Walk(Message):
    """Walk ``names`` (single components) from directory ``handle`` -> WalkReply.

    The gofer opens one component at a time, never follows a symlink, and
    stops after the first symlink (returned, so that the Sentry can read it)
    or at the first name that cannot be walked (its errno in the reply)."""
    handle: int
    names: tuple


@message(6)
class WalkReply(Message):
    entries: tuple        # ((handle, stat), ...) one per component walked
    errno: int = 0        # why the walk stopped before the end (0: end or symlink)


@message(7)
class Stat(Message):
    """Stat a path or open handle -> StatReply."""
    handle: int


@message(8)
class StatReply(Message):
    stat: tuple


# ---------------------------------------------------------------- files

@message(9)
class Open(Message):
    """Open the file of path ``handle`` with O_* ``flags`` -> OpenReply.

    Only regular files and directories open; a symlink fails with ELOOP."""
    handle: int
    flags: int


@message(10)
class OpenReply(Message):
    fh: int               # open handle
    stat: tuple


@message(11)
class Create(Message):
    """Create and open a new regular file ``name`` in ``handle`` -> CreateReply.

    Always exclusive (EEXIST if the name exists, symlink or not).  ``uid`` /
    ``gid`` of -1 keep the gofer's."""
    handle: int
    name: bytes
    flags: int
    mode: int
    uid: int = -1
    gid: int = -1


@message(12)
class CreateReply(Message):
    handle: int           # path handle of the new file
    fh: int               # open handle
    stat: tuple


@message(13)
class Read(Message):
    """pread ``count`` bytes at ``offset`` of open handle ``fh`` -> ReadReply."""
    fh: int
    offset: int
    count: int


@message(14)
class ReadReply(Message):
    data: bytes


@message(15)
class ReadV(Message):
    """Several preads of one open handle: ``extents`` = ((offset, count), ...) -> ReadVReply."""
    fh: int
    extents: tuple


@message(16)
class ReadVReply(Message):
    chunks: tuple         # bytes per extent (short at end of file)


@message(17)
class Write(Message):
    """pwrite ``data`` at ``offset`` of open handle ``fh`` -> WriteReply."""
    fh: int
    offset: int
    data: bytes


@message(18)
class WriteReply(Message):
    count: int


@message(19)
class WriteV(Message):
    """Several pwrites: ``extents`` = ((offset, data), ...) -> WriteVReply.

    Stops at the first failing or short write; fails only if the first does."""
    fh: int
    extents: tuple


@message(20)
class WriteVReply(Message):
    counts: tuple


@message(21)
class Readdir(Message):
    """List directory ``handle`` (without . and ..) -> ReaddirReply."""
    handle: int


@message(22)
class ReaddirReply(Message):
    entries: tuple        # ((name, ino, DT_*), ...)


# ---------------------------------------------------------------- names

@message(23)
class Mkdir(Message):
    """mkdir ``name`` in ``handle`` -> EntryReply."""
    handle: int
    name: bytes
    mode: int
    uid: int = -1
    gid: int = -1


@message(24)
class Mknod(Message):
    """mknod a regular file, FIFO or socket ``name`` in ``handle`` -> EntryReply
    (device nodes: EPERM)."""
    handle: int
    name: bytes
    mode: int
    rdev: int = 0
    uid: int = -1
    gid: int = -1


@message(25)
class Symlink(Message):
    """symlink ``name`` -> ``target`` in ``handle`` -> EntryReply."""
    handle: int
    name: bytes
    target: bytes
    uid: int = -1
    gid: int = -1


@message(26)
class Link(Message):
    """Hard link path handle ``target`` as ``name`` in ``handle`` -> EntryReply."""
    handle: int
    name: bytes
    target: int


@message(27)
class EntryReply(Message):
    handle: int           # path handle of the new name
    stat: tuple


@message(28)
class Unlink(Message):
    """unlinkat(``handle``, ``name``, ``flags``) (AT_REMOVEDIR: rmdir) -> OkReply."""
    handle: int
    name: bytes
    flags: int = 0


@message(29)
class Rename(Message):
    """renameat2(``handle``/``name`` -> ``newhandle``/``newname``, RENAME_* ``flags``) -> OkReply."""
    handle: int
    name: bytes
    newhandle: int
    newname: bytes
    flags: int = 0


@message(30)
class Readlink(Message):
    """Read symlink ``handle`` -> ReadlinkReply."""
    handle: int


@message(31)
class ReadlinkReply(Message):
    target: bytes


@message(32)
class Setattr(Message):
    """Change the attributes that are not None -> StatReply (the new stat)."""
    handle: int
    mode: int | None = None       # permission bits (07777)
    uid: int | None = None        # -1 or None: unchanged
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


@message(33)
class Statfs(Message):
    """statfs of the filesystem holding ``handle`` -> StatfsReply."""
    handle: int


@message(34)
class StatfsReply(Message):
    f_type: int
    bsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    namelen: int

    def as_tuple(self) -> tuple:
        return (self.f_type, self.bsize, self.blocks, self.bfree, self.bavail, self.files,
                self.ffree, self.namelen)


@message(35)
class Fsync(Message):
    """fsync (or fdatasync) open handle ``fh`` -> OkReply."""
    fh: int
    datasync: bool = False


@message(36)
class Getxattr(Message):
    """getxattr -> XattrReply."""
    handle: int
    name: bytes


@message(37)
class XattrReply(Message):
    value: bytes


@message(38)
class Listxattr(Message):
    """listxattr -> ListxattrReply."""
    handle: int


@message(39)
class ListxattrReply(Message):
    names: tuple


@message(40)
class Setxattr(Message):
    """setxattr (flags: XATTR_CREATE=1, XATTR_REPLACE=2) -> OkReply."""
    handle: int
    name: bytes
    value: bytes
    flags: int = 0


@message(41)
class Removexattr(Message):
    """removexattr -> OkReply."""
    handle: int
    name: bytes


# ---------------------------------------------------------------- lifetime

@message(42)
class Close(Message):
    """Release path and open handles (unknown ones are ignored) -> OkReply."""
    handles: tuple


@message(43)
class Shutdown(Message):
    """Stop the gofer after replying -> OkReply."""


@message(44, nested=("messages",))
class Batch(Message):
    """Run ``messages`` in order in one round trip -> BatchReply.

    Stops after the first one that fails; its ErrorReply is the last reply."""
    messages: tuple


@message(45, nested=("replies",))
class BatchReply(Message):
    replies: tuple


REQUESTS = tuple(c for c in REGISTRY.values()
                 if not c.__name__.endswith("Reply"))


# ---------------------------------------------------------------- codec

def to_wire(msg: Any) -> list:
    """A message as its wire array (before msgpack)."""
    cls = type(msg)
    try:
        out = [cls.TAG]
    except AttributeError:
        raise ProtocolError(f"not a gofer message: {msg!r}") from None
    for name in cls.FIELDS:
        v = getattr(msg, name)
        if name in cls._NESTED:
            v = [to_wire(m) for m in v]
        out.append(v)
    return out


def from_wire(obj: Any) -> Any:
    """A decoded wire array as a message object."""
    if not isinstance(obj, (tuple, list)) or not obj:
        raise ProtocolError("a message is a non-empty array")
    tag = obj[0]
    cls = REGISTRY.get(tag) if type(tag) is int else None
    if cls is None:
        raise ProtocolError(f"unknown message tag {tag!r}")
    fields = obj[1:]
    if len(fields) != len(cls.FIELDS):
        raise ProtocolError(f"{cls.__name__}: {len(fields)} fields, expected {len(cls.FIELDS)}")
    if cls._NESTED:
        fields = tuple(tuple(from_wire(m) for m in v) if name in cls._NESTED else v
                       for name, v in zip(cls.FIELDS, fields))
        for name, v in zip(cls.FIELDS, fields):
            if name in cls._NESTED and not isinstance(v, tuple):
                raise ProtocolError(f"{cls.__name__}.{name}: not an array")
    return cls(*fields)


def encode(msg: Any) -> bytes:
    """A message as bytes."""
    try:
        return msgpack.packb(to_wire(msg), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"cannot encode {type(msg).__name__}: {e}") from None


def decode(raw: bytes) -> Any:
    """Bytes as a message; ProtocolError if they are not one."""
    try:
        obj = msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, UnicodeDecodeError) as e:
        raise ProtocolError(f"undecodable message: {e}") from None
    try:
        return from_wire(obj)
    except TypeError as e:  # nested element of the wrong shape
        raise ProtocolError(str(e)) from None
