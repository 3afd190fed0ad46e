"""Unit tests for core/strace.py: decoding with a fake task and memory."""
import io
import struct

import pytest

from pysc.core.abi import consts as C
from pysc.core.abi.sysnums import SYSCALLS
from pysc.core.dispatch import CONTINUE
from pysc.core.errors import SyscallError
from pysc.core.strace import SIGNATURES, Strace, quote, sigset_str


class FakeMem:
    """App memory as a dict: start address -> bytes."""

    def __init__(self, regions=None):
        self.regions = dict(regions or {})

    def read(self, addr, n):
        for start, data in self.regions.items():
            if start <= addr and addr + n <= start + len(data):
                return bytes(data[addr - start:addr - start + n])
        raise SyscallError(C.EFAULT)

    def read_cstr(self, addr, limit=4096):
        for start, data in self.regions.items():
            if start <= addr < start + len(data):
                rest = data[addr - start:]
                if b"\0" not in rest:
                    raise SyscallError(C.EFAULT)
                return bytes(rest[:rest.index(b"\0")])
        raise SyscallError(C.EFAULT)

    def read_u32(self, addr):
        return struct.unpack("<I", self.read(addr, 4))[0]

    def read_u64(self, addr):
        return struct.unpack("<Q", self.read(addr, 8))[0]


class FakeTask:
    def __init__(self, tid=1, regions=None):
        self.tid = tid
        self.mem = FakeMem(regions)


class Cfg(dict):
    def get(self, name, default=None):
        return super().get(name, default)


def tracer(**flags):
    out = io.StringIO()
    cfg = Cfg({"strace": True, **{k.replace("_", "-"): v for k, v in flags.items()}})
    return Strace.from_config(cfg, out=out), out


def run(st, task, name, args, result, mem_after=None):
    """Simulate the dispatcher: enter, (the handler writes memory), exit."""
    nr = SYSCALLS[name]
    args = tuple(args) + (0,) * (6 - len(args))
    assert st.wants(nr)
    st.enter(task, nr, args)
    if mem_after:
        task.mem.regions.update(mem_after)
    st.exit(task, nr, args, result)


def lines(out):
    return out.getvalue().splitlines()


AT_FDCWD = C.AT_FDCWD & 0xFFFFFFFFFFFFFFFF


def test_openat():
    st, out = tracer()
    t = FakeTask(1, {0x1000: b"/etc/passwd\0"})
    run(st, t, "openat", (AT_FDCWD, 0x1000, C.O_RDONLY | C.O_CLOEXEC), 3)
    run(st, t, "openat", (5, 0x1000, C.O_WRONLY | C.O_CREAT | C.O_TRUNC, 0o644), 4)
    assert lines(out) == [
        '[   1] openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3',
        '[   1] openat(5, "/etc/passwd", O_WRONLY|O_CREAT|O_TRUNC, 0644) = 4',
    ]


def test_goes_to_the_debug_log_when_there_is_one(caplog):
    """As runsc: with --debug-log the trace is in the Sentry's log, not on
    the stderr a detached sandbox has no reader for."""
    st = Strace.from_config(Cfg({"strace": True, "debug-log": "/tmp/x/"}))
    t = FakeTask(3, {0x1000: b"/etc/passwd\0"})
    with caplog.at_level("INFO", logger="pysc.strace"):
        run(st, t, "openat", (AT_FDCWD, 0x1000, C.O_RDONLY), 3)
    assert [r.getMessage() for r in caplog.records] == ['[   3] openat(AT_FDCWD, "/etc/passwd", O_RDONLY) = 3']


def test_errors_rendered():
    st, out = tracer()
    t = FakeTask(7, {0x1000: b"/nope\0"})
    run(st, t, "openat", (AT_FDCWD, 0x1000, C.O_RDONLY), -C.ENOENT)
    run(st, t, "close", (99,), (-C.EBADF) & 0xFFFFFFFFFFFFFFFF)  # unsigned form too
    run(st, t, "read", (0, 0x5000, 10), -C.ERESTARTSYS)
    assert lines(out) == [
        '[   7] openat(AT_FDCWD, "/nope", O_RDONLY) = -1 ENOENT (No such file or directory)',
        "[   7] close(99) = -1 EBADF (Bad file descriptor)",
        "[   7] read(0, 0x5000, 10) = -1 ERESTARTSYS (To be restarted if SA_RESTART is set)",
    ]


def test_read_output_buffer_truncated():
    st, out = tracer()
    data = b"root:x:0:0:root:/root:/bin/bash\nbin:x:1:1::/:/sbin/nologin\n"
    t = FakeTask(1, {0x2000: b"\0" * 4096})
    run(st, t, "read", (3, 0x2000, 4096), len(data), mem_after={0x2000: data + b"\0" * 100})
    assert lines(out) == [f'[   1] read(3, "root:x:0:0:root:/root:/bin/bash\\n"..., 4096) = {len(data)}']


def test_read_short_not_truncated_and_log_size():
    st, out = tracer(strace_log_size=4)
    t = FakeTask(1, {0x2000: b"hi\n\x01\xff" + b"\0" * 10})
    run(st, t, "read", (0, 0x2000, 100), 2)
    run(st, t, "read", (0, 0x2000, 100), 5)
    run(st, t, "read", (0, 0x2000, 100), 0)
    assert lines(out) == [
        '[   1] read(0, "hi", 100) = 2',
        '[   1] read(0, "hi\\n\\x01"..., 100) = 5',
        '[   1] read(0, "", 100) = 0',
    ]


def test_write_input_buffer_decoded_on_entry():
    st, out = tracer()
    t = FakeTask(2, {0x3000: b'say "hi"\tnow\n'})
    # the buffer is overwritten after entry: the line shows what was written
    run(st, t, "write", (1, 0x3000, 13), 13, mem_after={0x3000: b"X" * 13})
    assert lines(out) == ['[   2] write(1, "say \\"hi\\"\\tnow\\n", 13) = 13']


def test_bad_pointer_falls_back_to_hex():
    st, out = tracer()
    t = FakeTask(1)
    run(st, t, "write", (1, 0xdead0000, 5), -C.EFAULT)
    run(st, t, "openat", (AT_FDCWD, 0xbeef, 0), -C.EFAULT)
    run(st, t, "read", (3, 0xdead0000, 5), 5)  # memory unreadable even on success
    assert lines(out) == [
        "[   1] write(1, 0xdead0000, 5) = -1 EFAULT (Bad address)",
        "[   1] openat(AT_FDCWD, 0xbeef, O_RDONLY) = -1 EFAULT (Bad address)",
        "[   1] read(3, 0xdead0000, 5) = 5",
    ]


def test_mmap():
    st, out = tracer()
    t = FakeTask(1)
    run(st, t, "mmap", (0, 8192, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS,
                        0xFFFFFFFFFFFFFFFF, 0), 0x7f0000001000)
    run(st, t, "mmap", (0x400000, 4096, C.PROT_READ | C.PROT_EXEC,
                        C.MAP_PRIVATE | C.MAP_FIXED | 0x800, 3, 0x1000), 0x400000)
    run(st, t, "mprotect", (0x400000, 4096, 0), 0)
    assert lines(out) == [
        "[   1] mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0x0) = 0x7f0000001000",
        "[   1] mmap(0x400000, 4096, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, 3, 0x1000)"
        " = 0x400000",
        "[   1] mprotect(0x400000, 4096, PROT_NONE) = 0",
    ]


def test_clone():
    st, out = tracer()
    t = FakeTask(1)
    flags = (C.CLONE_VM | C.CLONE_FS | C.CLONE_FILES | C.CLONE_SIGHAND | C.CLONE_THREAD
             | C.CLONE_SYSVSEM | C.CLONE_SETTLS | C.CLONE_PARENT_SETTID | C.CLONE_CHILD_CLEARTID)
    run(st, t, "clone", (flags, 0x7f00, 0x7f10, 0x7f10, 0x7f20), 42)
    run(st, t, "clone", (C.CLONE_CHILD_CLEARTID | C.CLONE_CHILD_SETTID | C.SIGCHLD, 0, 0, 0x9f0, 0), 43)
    run(st, t, "clone", (C.CLONE_VM | C.CLONE_VFORK | C.SIGCHLD,), CONTINUE)
    assert lines(out) == [
        "[   1] clone(CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|"
        "CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, 0x7f00, 0x7f10, 0x7f10, 0x7f20) = 42",
        "[   1] clone(CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, NULL, NULL, 0x9f0, NULL) = 43",
        "[   1] clone(CLONE_VM|CLONE_VFORK|SIGCHLD, NULL, NULL, NULL, NULL) = <host>",
    ]


def test_rt_sigaction_and_sigprocmask():
    st, out = tracer()
    act = struct.pack("<QQQQ", 0x401000, C.SA_RESTORER | C.SA_RESTART, 0x402000,
                      1 << (C.SIGINT - 1) | 1 << (C.SIGTERM - 1))
    old = struct.pack("<QQQQ", C.SIG_DFL, 0, 0, 0)
    t = FakeTask(3, {0x1000: act, 0x2000: b"\xff" * 32, 0x3000: struct.pack("<Q", 1 << (C.SIGCHLD - 1))})
    run(st, t, "rt_sigaction", (C.SIGINT, 0x1000, 0x2000, 8), 0, mem_after={0x2000: old})
    run(st, t, "rt_sigaction", (C.SIGTERM, 0, 0x2000, 8), -C.EINVAL)
    run(st, t, "rt_sigaction", (C.SIGRTMIN + 1, 0, 0, 8), 0)
    run(st, t, "rt_sigprocmask", (C.SIG_BLOCK, 0x3000, 0, 8), 0)
    run(st, t, "rt_sigprocmask", (C.SIG_SETMASK, 0x2000, 0, 8), 0)
    assert lines(out) == [
        "[   3] rt_sigaction(SIGINT, {sa_handler=0x401000, sa_mask=[INT TERM], "
        "sa_flags=SA_RESTORER|SA_RESTART, sa_restorer=0x402000}, "
        "{sa_handler=SIG_DFL, sa_mask=[], sa_flags=0}, 8) = 0",
        "[   3] rt_sigaction(SIGTERM, NULL, 0x2000, 8) = -1 EINVAL (Invalid argument)",
        "[   3] rt_sigaction(SIGRT_1, NULL, NULL, 8) = 0",
        "[   3] rt_sigprocmask(SIG_BLOCK, [CHLD], NULL, 8) = 0",
        "[   3] rt_sigprocmask(SIG_SETMASK, [], NULL, 8) = 0",
    ]


def test_sigset_complement():
    assert sigset_str(0) == "[]"
    assert sigset_str((1 << 64) - 1) == "~[]"
    assert sigset_str(((1 << 64) - 1) & ~(1 << (C.SIGKILL - 1))) == "~[KILL]"


def test_blocked_then_resumed():
    st, out = tracer()
    t = FakeTask(5, {0x2000: b"\0" * 64})
    nr = SYSCALLS["read"]
    args = (0, 0x2000, 64, 0, 0, 0)
    st.enter(t, nr, args)
    st.blocked(t, nr)
    # woken, re-run, still nothing: no second <blocked> line
    st.enter(t, nr, args)
    st.blocked(t, nr)
    # woken again: this time data arrived
    st.enter(t, nr, args)
    t.mem.regions[0x2000] = b"hi\n" + b"\0" * 61
    st.exit(t, nr, args, 3)
    # a call with no output arguments: just the result
    wnr = SYSCALLS["nanosleep"]
    t.mem.regions[0x4000] = struct.pack("<qq", 1, 500)
    wargs = (0x4000, 0, 0, 0, 0, 0)
    st.enter(t, wnr, wargs)
    st.blocked(t, wnr)
    st.enter(t, wnr, wargs)
    st.exit(t, wnr, wargs, 0)
    assert lines(out) == [
        "[   5] read(0, 0x2000, 64) <blocked>",
        '[   5] <... read resumed> read(0, "hi\\n", 64) = 3',
        "[   5] nanosleep({tv_sec=1, tv_nsec=500}, NULL) <blocked>",
        "[   5] <... nanosleep resumed> = 0",
    ]


def test_blocked_interleaved_threads_and_abandoned():
    st, out = tracer()
    t1, t2 = FakeTask(1), FakeTask(2)
    t2.mem = t1.mem
    rd = SYSCALLS["read"]
    st.enter(t1, rd, (0, 0, 0, 0, 0, 0))
    st.blocked(t1, rd)
    run(st, t2, "getpid", (), 1)
    # t1's read was interrupted (the kernel ended it without re-running the
    # handler); its next call shows that
    run(st, t1, "getpid", (), 1)
    assert lines(out) == [
        "[   1] read(0, NULL, 0) <blocked>",
        "[   2] getpid() = 1",
        "[   1] <... read resumed> = ? <interrupted>",
        "[   1] getpid() = 1",
    ]


def test_continue_and_exit_group():
    st, out = tracer()
    t = FakeTask(1, {0x1000: b"/bin/ls\0", 0x1100: b"-l\0",
                     0x2000: struct.pack("<QQQ", 0x1000, 0x1100, 0),
                     0x3000: struct.pack("<QQQ", 0x1000, 0x1000, 0)})
    run(st, t, "execve", (0x1000, 0x2000, 0x3000), CONTINUE)
    nr = SYSCALLS["exit_group"]
    st.enter(t, nr, (3, 0, 0, 0, 0, 0))  # never returns
    assert lines(out) == [
        '[   1] execve("/bin/ls", ["/bin/ls", "-l"], 0x3000 /* 2 vars */) = <host>',
        "[   1] exit_group(3) = ?",
    ]


def test_sockets_and_misc():
    st, out = tracer()
    sin = struct.pack(">HH4s8x", 0, 8080, bytes([127, 0, 0, 1]))
    sin = struct.pack("<H", C.AF_INET) + sin[2:]
    sun = struct.pack("<H", C.AF_UNIX) + b"/run/sock\0"
    t = FakeTask(1, {0x1000: sin, 0x2000: sun, 0x3000: b"ping", 0x4000: struct.pack("<ii", 3, 4),
                     0x5000: struct.pack("<ihh", 3, C.POLLIN, 0)})
    run(st, t, "socket", (C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC, 0), 3)
    run(st, t, "connect", (3, 0x1000, 16), 0)
    run(st, t, "connect", (4, 0x2000, len(sun)), -C.ECONNREFUSED)
    run(st, t, "sendto", (3, 0x3000, 4, C.MSG_NOSIGNAL, 0, 0), 4)
    run(st, t, "pipe2", (0x4000, C.O_CLOEXEC), 0)
    run(st, t, "poll", (0x5000, 1, 0xFFFFFFFF), 1)
    run(st, t, "fcntl", (3, C.F_SETFD, C.FD_CLOEXEC), 0)
    run(st, t, "lseek", (3, 0xFFFFFFFFFFFFFFF6, C.SEEK_END), 90)
    assert lines(out) == [
        "[   1] socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0) = 3",
        '[   1] connect(3, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        '[   1] connect(4, {sa_family=AF_UNIX, sun_path="/run/sock"}, 12) = -1 ECONNREFUSED (Connection refused)',
        '[   1] sendto(3, "ping", 4, MSG_NOSIGNAL, NULL, 0) = 4',
        "[   1] pipe2([3, 4], O_CLOEXEC) = 0",
        "[   1] poll([{fd=3, events=POLLIN}], 1, -1) = 1",
        "[   1] fcntl(3, F_SETFD, 0x1) = 0",
        "[   1] lseek(3, -10, SEEK_END) = 90",
    ]


def test_stat_wait4_and_unknown():
    st, out = tracer()
    stat = bytearray(144)
    struct.pack_into("<I", stat, 24, C.S_IFREG | 0o644)
    struct.pack_into("<q", stat, 48, 1234)
    t = FakeTask(1, {0x1000: b"/etc/hosts\0", 0x2000: bytes(144), 0x3000: b"\0" * 4})
    run(st, t, "newfstatat", (AT_FDCWD, 0x1000, 0x2000, C.AT_SYMLINK_NOFOLLOW), 0,
        mem_after={0x2000: bytes(stat)})
    run(st, t, "wait4", (0xFFFFFFFF, 0x3000, 0, 0), 12, mem_after={0x3000: struct.pack("<I", 2 << 8)})
    run(st, t, "kexec_load", (1, 2), -C.ENOSYS)
    assert lines(out) == [
        '[   1] newfstatat(AT_FDCWD, "/etc/hosts", {st_mode=S_IFREG|0644, st_size=1234, ...}, '
        "AT_SYMLINK_NOFOLLOW) = 0",
        "[   1] wait4(-1, [{WIFEXITED(s) && WEXITSTATUS(s) == 2}], 0, NULL) = 12",
        "[   1] kexec_load(0x1, 0x2) = -1 ENOSYS (Function not implemented)",
    ]


def test_strace_syscalls_filter():
    st, out = tracer(strace_syscalls="openat, read")
    assert st.wants(SYSCALLS["openat"]) and st.wants(SYSCALLS["read"])
    assert not st.wants(SYSCALLS["write"])
    st_all, _ = tracer(strace_syscalls="")
    assert st_all.wants(SYSCALLS["write"]) and st_all.wants(999)
    with pytest.raises(ValueError):
        tracer(strace_syscalls="opnat")


def test_tracer_never_raises():
    class Broken:
        tid = 9

        @property
        def mem(self):
            raise RuntimeError("boom")

    st, out = tracer()
    t = Broken()
    run(st, t, "openat", (AT_FDCWD, 0x1000, 0), 3)
    run(st, t, "read", (3, 0x1000, 5), 5)
    st.blocked(t, 12345)
    st.exit(t, 12345, (), 0)
    assert lines(out)[:2] == [
        "[   9] openat(AT_FDCWD, 0x1000, O_RDONLY) = 3",
        "[   9] read(3, 0x1000, 5) = 5",
    ]

    class BadOut:
        def write(self, s):
            raise OSError("closed")

    st2 = Strace(out=BadOut())
    run(st2, FakeTask(), "getpid", (), 1)  # no exception


def test_table_is_large_and_consistent():
    assert len(SIGNATURES) >= 120
    for name in ("openat", "read", "write", "mmap", "clone", "rt_sigaction", "socket", "poll",
                 "clock_gettime", "getuid", "kill", "execve", "wait4", "epoll_wait", "futex"):
        assert name in SIGNATURES


def test_quote():
    assert quote(b"a\0b\x7f\\") == '"a\\x00b\\x7f\\\\"'
    assert quote(b"abcdef", 3) == '"abc"...'
