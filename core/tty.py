"""Terminal ioctls on the caller's terminal: the safe subset passes through
to the host fd; process-group ioctls are answered with sandbox ids."""
from __future__ import annotations

import fcntl
import os
import struct

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError

TCSBRK, TCXONC, TCFLSH = 0x5409, 0x540A, 0x540B
TCSBRKP = 0x5425

# request -> size of the argument struct copied in (in) / out (out)
PASS_OUT = {C.TCGETS: 36, C.TIOCGWINSZ: 8}
PASS_IN = {C.TCSETS: 36, C.TCSETSW: 36, C.TCSETSF: 36, C.TIOCSWINSZ: 8}
PASS_SCALAR = (TCSBRK, TCXONC, TCFLSH, TCSBRKP)


def host_tty_ioctl(f, task, cmd: int, arg: int) -> int:
    fd = f.fd
    if not f.is_tty:
        if cmd == C.FIONREAD and not f.seekable:
            n = struct.unpack("<i", fcntl.ioctl(fd, C.FIONREAD, b"\0" * 4))[0]
            task.mem.write_u32(arg, n)
            return 0
        raise SyscallError(C.ENOTTY)
    try:
        if cmd in PASS_OUT:
            task.mem.write(arg, fcntl.ioctl(fd, cmd, b"\0" * PASS_OUT[cmd]))
            return 0
        if cmd in PASS_IN:
            fcntl.ioctl(fd, cmd, task.mem.read(arg, PASS_IN[cmd]))
            return 0
        if cmd in PASS_SCALAR:
            fcntl.ioctl(fd, cmd, arg & 0xFFFFFFFF)
            return 0
        if cmd == C.FIONREAD:
            task.mem.write(arg, fcntl.ioctl(fd, C.FIONREAD, b"\0" * 4))
            return 0
    except OSError as e:
        raise SyscallError(e.errno) from None
    kernel = task.kernel
    # The foreground process group of each host terminal, by its rdev: the
    # container's init's until someone sets it (`pysc exec -t` sets its own).
    foreground = kernel.objects.setdefault("tty_pgrp", {})
    try:
        rdev = os.fstat(fd).st_rdev
    except OSError as e:
        raise SyscallError(e.errno) from None
    if cmd == C.TIOCGPGRP:
        pgrp = foreground.get(rdev) or (kernel.init.pgid if kernel.init else 1)
        task.mem.write_u32(arg, task.pidns.id_of(pgrp))
        return 0
    if cmd == C.TIOCSPGRP:
        pgrp = struct.unpack("<i", task.mem.read(arg, 4))[0]
        if pgrp <= 0:
            raise SyscallError(C.EINVAL)
        group = task.pidns.kernel_id(pgrp)
        if group is None:
            raise SyscallError(C.EPERM)
        foreground[rdev] = group
        return 0
    if cmd == C.TIOCGSID:
        task.mem.write_u32(arg, task.pidns.id_of(task.tg.sid))
        return 0
    if cmd in (C.TIOCSCTTY, C.TIOCNOTTY):
        return 0
    raise SyscallError(C.ENOTTY)
