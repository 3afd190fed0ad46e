"""The gofer protocol: every message round-trips through its wire form."""
import os

import msgpack
import pytest

from pysc.core.abi.structs import Stat as StatRecord
from pysc.fsproxy import protocol as P

ST = (0o100644, 12, 2049, 1, 1000, 100, 0, 6, 4096, 8, 1, 2, 3, 0)

SAMPLES = [
    P.ErrorReply(2),
    P.OkReply(),
    P.Attach("/srv/root", True),
    P.AttachReply(1, ST, ("Walk", "Stat"), False),
    P.Walk(1, (b"usr", b"bin", b"env")),
    P.WalkReply(((2, ST), (3, ST)), 2),
    P.Stat(7),
    P.StatReply(ST),
    P.Open(3, os.O_RDWR | os.O_TRUNC),
    P.OpenReply(9, ST),
    P.Create(1, b"new\xff", os.O_RDWR, 0o644, 1000, 1000),
    P.CreateReply(4, 5, ST),
    P.Read(5, 1 << 40, 4096),
    P.ReadReply(b"\0\1\2" * 100),
    P.ReadV(5, ((0, 10), (4096, 10))),
    P.ReadVReply((b"a", b"")),
    P.Write(5, 3, b"data"),
    P.WriteReply(4),
    P.WriteV(5, ((0, b"x"), (10, b"yz"))),
    P.WriteVReply((1, 2)),
    P.Readdir(1),
    P.ReaddirReply(((b"a", 5, 8), (b"dir", 6, 4))),
    P.Mkdir(1, b"d", 0o755, 0, 0),
    P.Mknod(1, b"fifo", 0o10644, 0, -1, -1),
    P.Symlink(1, b"l", b"../../etc/passwd", 0, 0),
    P.Link(1, b"hard", 4),
    P.EntryReply(8, ST),
    P.Unlink(1, b"d", 0x200),
    P.Rename(1, b"a", 2, b"b", 1),
    P.Readlink(3),
    P.ReadlinkReply(b"/etc/passwd"),
    P.Setattr(3, mode=0o600, size=0, mtime_ns=10**18),
    P.Statfs(1),
    P.StatfsReply(0xEF53, 4096, 100, 50, 40, 1000, 900, 255),
    P.Fsync(5, True),
    P.Getxattr(3, b"user.x"),
    P.XattrReply(b"value"),
    P.Listxattr(3),
    P.ListxattrReply((b"user.x", b"user.y")),
    P.Setxattr(3, b"user.x", b"v", 1),
    P.Removexattr(3, b"user.x"),
    P.Close((1, 2, 3)),
    P.Shutdown(),
    P.Batch((P.Stat(1), P.Read(5, 0, 10), P.Close((4,)))),
    P.BatchReply((P.StatReply(ST), P.ErrorReply(9))),
]


def test_samples_cover_every_message():
    assert {type(m) for m in SAMPLES} == set(P.REGISTRY.values())


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    raw = P.encode(msg)
    assert isinstance(raw, bytes)
    back = P.decode(raw)
    assert type(back) is type(msg)
    assert back == msg
    assert P.encode(back) == raw


def test_wire_form_is_tag_then_fields():
    raw = P.encode(P.Walk(1, (b"a", b"b")))
    assert msgpack.unpackb(raw, raw=False) == [P.Walk.TAG, 1, [b"a", b"b"]]
    assert msgpack.unpackb(P.encode(P.Attach("x")), raw=False) == [P.Attach.TAG, "x", False]


def test_tags_are_stable():
    # Changing these breaks a gofer and a Sentry of different versions.
    assert P.ErrorReply.TAG == 1 and P.Attach.TAG == 3 and P.Walk.TAG == 5
    assert P.Stat.TAG == 7 and P.Read.TAG == 13 and P.Write.TAG == 17 and P.Close.TAG == 42
    assert len(set(P.REGISTRY)) == len(P.REGISTRY)


def test_unknown_tag():
    with pytest.raises(P.ProtocolError):
        P.decode(msgpack.packb([999, 1]))
    with pytest.raises(P.ProtocolError):
        P.decode(msgpack.packb(["Stat", 1]))


@pytest.mark.parametrize("raw", [b"", b"\xc1", msgpack.packb([]), msgpack.packb(7),
                                 msgpack.packb([P.Stat.TAG]), msgpack.packb([P.Stat.TAG, 1, 2]),
                                 msgpack.packb([P.Batch.TAG, 5]),
                                 msgpack.packb([P.Batch.TAG, [[999]]]),
                                 msgpack.packb([P.Stat.TAG, 1]) + b"x"])
def test_malformed(raw):
    with pytest.raises(P.ProtocolError):
        P.decode(raw)


def test_encode_rejects_non_messages():
    with pytest.raises(P.ProtocolError):
        P.encode(object())


def test_stat_conversion():
    st = os.stat("/")
    w = P.stat_to_wire(st)
    assert len(w) == 14
    rec = P.wire_to_stat(w)
    assert isinstance(rec, StatRecord)
    assert rec == StatRecord.from_host(st)
    assert P.wire_to_stat(w, dev=77).dev == 77
    assert P.wire_to_stat(P.decode(P.encode(P.StatReply(w))).stat).ino == st.st_ino


def test_requests_listed():
    names = {c.__name__ for c in P.REQUESTS}
    assert "Walk" in names and "Close" in names and "WalkReply" not in names
    assert "ErrorReply" not in names
