"""What execve needs from the Sentry before the platform loads the image:
resolve the file, check it, follow #! interpreters, and get a host fd of it."""
from __future__ import annotations

import os

import attrs

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.file import copy_to_fd
from pysc.core.vfs import Dentry, may_access

MAX_INTERP_DEPTH = 4
ELF_MAGIC = b"\x7fELF"


@attrs.define
class ExecInfo:
    dentry: Dentry
    comm: bytes


def check_executable(t, d: Dentry) -> None:
    st = d.inode.stat()
    if st.type != C.S_IFREG:
        raise SyscallError(C.EACCES)
    if not may_access(t.creds, st, C.X_OK):
        raise SyscallError(C.EACCES)


def read_header(t, d: Dentry, n: int = 256) -> bytes:
    f = d.inode.open(C.O_RDONLY, d, t)
    try:
        return f.pread(n, 0)
    finally:
        f.decref()


def parse_shebang(header: bytes) -> tuple[bytes, bytes | None]:
    line = header[2:].split(b"\n", 1)[0]
    if len(line) >= 254 and b"\n" not in header[2:]:
        raise SyscallError(C.ENOEXEC)
    line = line.replace(b"\t", b" ").strip()
    if not line:
        raise SyscallError(C.ENOEXEC)
    interp, _, arg = line.partition(b" ")
    arg = arg.strip()
    return interp, (arg or None)


def resolve_image(t, d: Dentry, path: bytes, argv_ptrs: list) -> tuple[Dentry, list | None]:
    """Follow ``#!`` lines; returns the ELF file's dentry and, if an interpreter
    was involved, the new argv (bytes for new strings, ints for pointers into
    the app's memory)."""
    argv: list | None = None
    for _ in range(MAX_INTERP_DEPTH + 1):
        check_executable(t, d)
        header = read_header(t, d)
        if header.startswith(ELF_MAGIC):
            return d, argv
        if not header.startswith(b"#!"):
            raise SyscallError(C.ENOEXEC)
        interp, arg = parse_shebang(header)
        rest = (argv[1:] if argv is not None else argv_ptrs[1:])
        argv = [interp] + ([arg] if arg is not None else []) + [path] + rest
        path = interp
        d = t.kernel.vfs.walk(t, t.fs.cwd, interp, True)
    raise SyscallError(C.ELOOP)


def exec_fd(d: Dentry) -> int:
    """A read-only host fd with the file's contents that the host kernel can
    exec.  Host files are opened directly; files that live in Sentry memory
    are copied into a fresh memfd of which only a read-only fd stays open
    (a writable fd would make the host's exec fail with ETXTBSY)."""
    inode = d.inode
    host_file = getattr(inode, "host_file", None)
    fd = host_file() if host_file is not None else None
    if fd is not None:
        return fd
    f = inode.open(C.O_RDONLY, d, None)
    try:
        mfd = os.memfd_create("pysc-exec", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            copy_to_fd(f, mfd)
            ro = os.open(f"/proc/self/fd/{mfd}", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(mfd)
        return ro
    finally:
        f.decref()

