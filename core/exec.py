"""What execve needs from the Sentry before the platform loads the image:
resolve the file, check it, follow #! interpreters, and get a host fd of it."""
from __future__ import annotations

import os

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.file import copy_to_fd
from pysc.core.record import Factory, Record
from pysc.core.vfs import Dentry, may_access

MAX_INTERP_DEPTH = 4
ELF_MAGIC = b"\x7fELF"


class ExecInfo(Record):
    """What the Sentry resolved for an execve.  ``chain`` lists each file the
    host kernel opens by path, in order (the file named by the call, then
    ``#!`` interpreters), as (path as written, dentry); ``dirfd``, ``flags``
    and ``path`` are the call's, for resolving the first file as the host will."""
    dentry: Dentry
    comm: bytes
    chain: list = Factory(list)
    dirfd: int = C.AT_FDCWD
    flags: int = 0
    path: bytes = b""


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


def resolve_image(t, d: Dentry, path: bytes, argv_ptrs: list) -> tuple[Dentry, list | None, list]:
    """Follow ``#!`` lines; returns the ELF file's dentry, the new argv if an
    interpreter was involved (bytes for new strings, ints for pointers into
    the app's memory) or None, and the chain of (path, dentry) followed."""
    argv: list | None = None
    chain: list = []
    for _ in range(MAX_INTERP_DEPTH + 1):
        chain.append((path, d))
        check_executable(t, d)
        header = read_header(t, d)
        if header.startswith(ELF_MAGIC):
            return d, argv, chain
        if not header.startswith(b"#!"):
            raise SyscallError(C.ENOEXEC)
        interp, arg = parse_shebang(header)
        rest = (argv[1:] if argv is not None else argv_ptrs[1:])
        argv = [interp] + ([arg] if arg is not None else []) + [path] + rest
        path = interp
        d = t.vfs.walk(t, t.fs.cwd, interp, True)
    raise SyscallError(C.ELOOP)


def elf_interpreter(fd: int) -> bytes | None:
    """The PT_INTERP path of the ELF file open at host ``fd``, if it has one."""
    header = os.pread(fd, 64, 0)
    if len(header) < 64 or not header.startswith(ELF_MAGIC) or header[4] != 2:  # ELFCLASS64
        return None
    phoff = int.from_bytes(header[0x20:0x28], "little")
    phentsize = int.from_bytes(header[0x36:0x38], "little")
    phnum = int.from_bytes(header[0x38:0x3A], "little")
    if phentsize < 56 or phnum > 256:
        return None
    table = os.pread(fd, phentsize * phnum, phoff)
    for i in range(len(table) // phentsize):
        ph = table[i * phentsize:(i + 1) * phentsize]
        if int.from_bytes(ph[0:4], "little") == 3:  # PT_INTERP
            offset = int.from_bytes(ph[8:16], "little")
            size = int.from_bytes(ph[32:40], "little")
            if size > 4096:
                return None
            return os.pread(fd, size, offset).split(b"\0", 1)[0] or None
    return None


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

