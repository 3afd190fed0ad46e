"""ctypes bindings for the host calls the host-process platforms need."""
from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL("libc.so.6", use_errno=True)

libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(res: int) -> int:
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def unshare(flags: int) -> None:
    _check(libc.unshare(flags))


def setns(fd: int, nstype: int) -> None:
    _check(libc.setns(fd, nstype))


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    return _check(libc.prctl(option, a2, a3, a4, a5))


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


SECCOMP_SET_MODE_FILTER = 1
SYS_seccomp = 317
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1


def install_seccomp(instructions: list[tuple[int, int, int, int]], flags: int = 0) -> int:
    """Install a classic-BPF seccomp filter (no_new_privs must already be set)."""
    arr = (SockFilter * len(instructions))(*[SockFilter(*i) for i in instructions])
    prog = SockFprog(len(instructions), arr)
    return _check(libc.syscall(ctypes.c_long(SYS_seccomp), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                               ctypes.c_long(flags), ctypes.byref(prog)))


# --- ptrace ---
PTRACE_TRACEME, PTRACE_PEEKDATA, PTRACE_PEEKUSER = 0, 2, 3
PTRACE_CONT, PTRACE_KILL, PTRACE_SINGLESTEP = 7, 8, 9
PTRACE_GETREGS, PTRACE_SETREGS = 12, 13
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS, PTRACE_GETEVENTMSG, PTRACE_GETSIGINFO = 0x4200, 0x4201, 0x4202
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_LISTEN = 0x4206, 0x4207, 0x4208
PTRACE_GETSIGMASK = 0x420A

PTRACE_O_TRACESYSGOOD = 1
PTRACE_O_TRACEFORK = 2
PTRACE_O_TRACEVFORK = 4
PTRACE_O_TRACECLONE = 8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACEVFORKDONE = 0x20
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE = 1, 2, 3
PTRACE_EVENT_EXEC, PTRACE_EVENT_VFORK_DONE, PTRACE_EVENT_EXIT = 4, 5, 6
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128

_ptrace = libc.ptrace


def ptrace(req: int, pid: int, addr: int = 0, data: int = 0) -> int:
    res = _ptrace(req, pid, addr, data)
    if res == -1:
        err = ctypes.get_errno()
        if err:
            raise OSError(err, os.strerror(err))
    return res


class SigInfo(ctypes.Structure):
    _fields_ = [("signo", ctypes.c_int), ("errno", ctypes.c_int), ("code", ctypes.c_int),
                ("_pad", ctypes.c_int), ("data", ctypes.c_ubyte * 112)]


# --- cross-process memory ---
class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


libc.process_vm_readv.restype = ctypes.c_ssize_t
libc.process_vm_writev.restype = ctypes.c_ssize_t


def process_vm_readv(pid: int, addr: int, n: int) -> bytes:
    buf = ctypes.create_string_buffer(n)
    local = IOVec(ctypes.cast(buf, ctypes.c_void_p), n)
    remote = IOVec(addr, n)
    got = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw[:got]


def process_vm_writev(pid: int, addr: int, data: bytes) -> int:
    buf = ctypes.create_string_buffer(data, len(data))
    local = IOVec(ctypes.cast(buf, ctypes.c_void_p), len(data))
    remote = IOVec(addr, len(data))
    got = libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return got


# --- signalfd ---
def signalfd(signals: list[int]) -> int:
    mask = 0
    for s in signals:
        mask |= 1 << (s - 1)
    m = ctypes.c_uint64(mask)
    return _check(libc.signalfd(-1, ctypes.byref(m), os.O_NONBLOCK | os.O_CLOEXEC))
