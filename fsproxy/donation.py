"""The donation: one fd per mount root, handed to the Sentry over a unix
stream socket, below which the Sentry walks itself (directfs).

A donation is a length-prefixed msgpack header ``[magic, version, [[host
path, readonly, is_dir], ...]]`` followed by the fds, in mount order, in
chunks of SCM_RIGHTS.  A directory root goes as an O_RDONLY|O_DIRECTORY fd,
any other file as O_PATH.

Who donates: the gofer, at its start; or, for a container under directfs,
`pysc create` itself, while the sandbox process it just forked boots (a
one-shot donation needs no process of its own).  Either way the Sentry
never opens a host path.  This module imports nothing of the gofer protocol,
so that neither the Sentry nor a donor pays for it.
"""
from __future__ import annotations

import os
import socket
import stat
import struct

import msgpack

MAGIC = "pysc-gofer-donation"
VERSION = 1
FDS_PER_MSG = 200


def root_fd(path_fd: int, is_dir: bool) -> int:
    """The fd to donate for the O_PATH fd of a mount root: a directory is
    reopened for reading (the same inode, through /proc/self/fd), anything
    else is duplicated."""
    if is_dir:
        return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOCTTY)
    return os.dup(path_fd)


def open_roots(mounts: list[tuple[str, bool]]) -> tuple[list[tuple[str, bool, bool]], list[int]]:
    """Open each mount root ([(host path, readonly)], as the runtime resolved
    it): ([(path, readonly, is_dir)], [fd to donate]).  Raises OSError naming
    the path that failed, with nothing left open."""
    described, fds = [], []
    try:
        for path, readonly in mounts:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError as e:
                raise OSError(e.errno, f"{path}: {e.strerror}") from None
            try:
                is_dir = stat.S_ISDIR(os.fstat(pfd).st_mode)
                fds.append(root_fd(pfd, is_dir))
            finally:
                os.close(pfd)
            described.append((path, readonly, is_dir))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return described, fds


def donate(sock: socket.socket, mounts: list[tuple[str, bool]]) -> None:
    """Open the mount roots and send the donation."""
    described, fds = open_roots(mounts)
    try:
        send_donation(sock, described, fds)
    finally:
        for fd in fds:
            os.close(fd)


def send_donation(sock: socket.socket, mounts: list, fds: list[int]) -> None:
    """Send ``mounts`` ([(path, readonly, is_dir)]) and their ``fds``."""
    header = msgpack.packb([MAGIC, VERSION, [list(m) for m in mounts]], use_bin_type=True)
    sock.sendall(struct.pack("<I", len(header)) + header)
    for i in range(0, len(fds), FDS_PER_MSG):
        socket.send_fds(sock, [b"F"], fds[i:i + FDS_PER_MSG])


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the donor closed the donation socket")
        buf += chunk
    return buf


def recv_donation(sock: socket.socket) -> tuple[list, list[int]]:
    """The other end of ``send_donation``: ([(path, readonly, is_dir)...], [fd...])."""
    (n,) = struct.unpack("<I", _recv_exact(sock, 4))
    if n > 1 << 24:
        raise ValueError("bad donation header")
    try:
        magic, version, mounts = msgpack.unpackb(_recv_exact(sock, n), raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise ValueError("bad donation header") from None
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"bad donation header {magic!r} v{version}")
    fds: list[int] = []
    try:
        while len(fds) < len(mounts):
            msg, got, flags, _addr = socket.recv_fds(sock, 1, FDS_PER_MSG)
            if not msg and not got:
                raise EOFError("the donor closed the donation socket")
            for fd in got:
                os.set_inheritable(fd, False)
            fds.extend(got)
            if flags & socket.MSG_CTRUNC:
                raise ValueError("donated fds truncated")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return [tuple(m) for m in mounts], fds
