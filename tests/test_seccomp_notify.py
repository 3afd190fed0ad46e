"""The seccomp notification listener against the real kernel: a forked child
traps getppid to the test, which answers it; once the child is gone and the
listener closed, answering is a no (not an exception)."""
from __future__ import annotations

import os
import select

from pysc.core.abi import consts as C
from pysc.core.abi.sysnums import SYSCALLS
from pysc.platforms.hostproc import native
from pysc.platforms.hostproc.seccomp import (BPF_JMP_JEQ_K, BPF_LD_W_ABS, BPF_RET_K, OFF_NR,
                                             SECCOMP_RET_ALLOW, SECCOMP_RET_USER_NOTIF)
from pysc.platforms.seccomp import notify

GETPPID = SYSCALLS["getppid"]
TRAP_GETPPID = [
    (BPF_LD_W_ABS, 0, 0, OFF_NR),
    (BPF_JMP_JEQ_K, 0, 1, GETPPID),
    (BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
    (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
]


def _child(w: int) -> None:
    try:
        native.prctl(native.PR_SET_NO_NEW_PRIVS, 1)
        fd = native.install_seccomp(TRAP_GETPPID, notify.FILTER_FLAG_NEW_LISTENER)
        os.write(w, b"%d\n" % fd)
        os.write(w, b"%d\n" % native.libc.syscall(GETPPID))
    finally:
        os._exit(0)


def test_listener_answers_and_a_closed_one_refuses():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(w)
    os.close(w)
    with os.fdopen(r, "rb") as out:
        child_fd = int(out.readline())
        pidfd = notify.pidfd_open(pid)
        listener = notify.Listener(notify.pidfd_getfd(pidfd, child_fd))
        os.close(pidfd)
        nid, npid, _, nr, arch, *_ = listener.recv()
        assert (npid, nr, arch) == (pid, GETPPID, C.AUDIT_ARCH_X86_64)
        assert listener.id_valid(nid)
        assert listener.send(nid, 4242)
        assert int(out.readline()) == 4242
        assert not listener.id_valid(nid)  # answered
        assert not listener.send(nid, 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    p = select.poll()
    p.register(listener.fd, select.POLLIN)
    assert p.poll(1000)[0][1] & select.POLLHUP  # no task uses the filter any more
    listener.close()
    # A parked call whose filter's tasks all died may still be answered
    # (interrupted, re-run): that must be a plain no.
    assert listener.send(nid, 0, -C.EINTR) is False
    assert listener.id_valid(nid) is False
