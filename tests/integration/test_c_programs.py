"""C programs (tests/integration/c/*.c) compiled with gcc, dynamic and
static, and run from their build directory below /tmp (which the sandbox
sees through its root): error paths, threads and futexes, fork/exec/wait
behave as on Linux; calls no sandboxed program may make never succeed."""
from __future__ import annotations

import re
import time

import pytest

from .conftest import BUSYBOX, assert_same, run_native, run_pysc, show

LINKAGE = [pytest.param(False, id="dynamic"), pytest.param(True, id="static")]


def run_both(platform, binary, timeout=60):
    native = run_native(f"./{binary.name}", cwd=binary.parent, timeout=timeout)
    assert native.returncode == 0, f"the program itself fails natively\n{show(native)}"
    inside = run_pysc(platform, f"./{binary.name}", cwd=binary.parent, timeout=timeout)
    assert_same(inside, native)
    return inside


@pytest.mark.parametrize("static", LINKAGE)
def test_error_paths(platform, cbin, static):
    """EFAULT, EBADF, EINVAL, ENOTDIR... exactly as the host's Linux answers."""
    run_both(platform, cbin("errors", static))


@pytest.mark.parametrize("static", LINKAGE)
def test_threads_and_futexes(platform, cbin, static):
    run_both(platform, cbin("threads", static))


@pytest.mark.parametrize("static", LINKAGE)
@pytest.mark.parametrize("program", ["shm", "sem", "msg"])
def test_sysv_ipc(platform, cbin, static, program):
    """System V shared memory, semaphores and message queues: the host
    kernel's in the sandbox's IPC namespace (ptrace, seccomp), the Sentry's
    own (kvm)."""
    run_both(platform, cbin(program, static))


@pytest.mark.parametrize("static", LINKAGE)
def test_posix_timers(platform, cbin, static):
    """timer_create and friends: the host kernel's on ptrace and seccomp, the
    Sentry's on kvm, with the same signals, siginfo and clocks."""
    run_both(platform, cbin("timers", static))


@pytest.mark.parametrize("static", LINKAGE)
def test_clocks(platform, cbin, static):
    """Clocks read through libc (the host's vDSO on ptrace and seccomp,
    pysc's own on kvm) agree with the clock syscalls, across the kvm
    timekeeper's updates, in threads and after fork."""
    run_both(platform, cbin("clocks", static), timeout=120)


@pytest.mark.parametrize("static", LINKAGE)
def test_clock_reads_stay_in_user_mode(platform, cbin, static):
    """300 clock_gettime calls through libc reach the Sentry as no syscall:
    a vDSO answers them (on kvm, pysc's), with the host's time."""
    binary = cbin("clocks", static)
    before = time.time_ns()
    cp = run_pysc(platform, f"./{binary.name}", "300", cwd=binary.parent, extra_flags=("--strace",))
    after = time.time_ns()
    m = re.search(r"read 300 times, realtime (\d+)", cp.stdout)
    assert cp.returncode == 0 and m, show(cp)
    assert before <= int(m.group(1)) <= after, f"the sandbox's time is not the host's\n{show(cp)}"
    calls = re.findall(r"^\[\s*\d+\] clock_gettime\(", cp.stderr, re.M)
    assert len(calls) < 10, f"{len(calls)} clock_gettime syscalls for 300 reads\n{show(cp)}"


def test_futex_waitv(platform, cbin):
    run_both(platform, cbin("futex_waitv", False))


def test_membarrier(platform, cbin):
    """The host's membarrier on ptrace and seccomp; on kvm the Sentry makes
    each thread running guest code leave it once."""
    run_both(platform, cbin("membarrier", False))


def test_scheduling_and_io_priorities(platform, cbin):
    """Policies, nice values and I/O priorities a process sets and reads back
    (the host's on ptrace and seccomp, kept by the Sentry on kvm)."""
    run_both(platform, cbin("sched", False))


@pytest.mark.parametrize("static", LINKAGE)
def test_anonymous_mmap(platform, cbin, static):
    """Anonymous mmap and munmap as malloc uses them: placement, contents,
    faults, /proc/self/maps, fork, threads, a timer interrupting a loop of
    calls.  On kvm most of them are answered in the guest."""
    run_both(platform, cbin("anonmap", static), timeout=120)


@pytest.mark.parametrize("static", LINKAGE)
def test_anonymous_mmap_stays_in_the_guest(kvm, cbin, static, tmp_path):
    """On kvm, 5000 mmap+munmap pairs of 64 KiB leave the guest for no
    syscall (the thread's exit counts are in the debug log)."""
    binary = cbin("anonmap", static)
    log = tmp_path / "sentry.log"
    cp = run_pysc(kvm, f"./{binary.name}", "5000", cwd=binary.parent, extra_flags=(f"--debug-log={log}",))
    assert cp.returncode == 0 and cp.stdout == "5000 pairs\n", show(cp)
    counts = re.findall(r"thread \d+ left the guest for (\d+) syscalls", log.read_text())
    assert len(counts) == 1 and int(counts[0]) < 500, f"exits: {counts}\n{show(cp)}"


def test_strace_sees_every_anonymous_mmap(kvm, cbin):
    """--strace turns the guest's answers off: every call is traced."""
    binary = cbin("anonmap", True)
    cp = run_pysc(kvm, f"./{binary.name}", "300", cwd=binary.parent, extra_flags=("--strace",))
    assert cp.returncode == 0 and cp.stdout == "300 pairs\n", show(cp)
    assert len(re.findall(r"^\[\s*\d+\] munmap\(", cp.stderr, re.M)) == 300, show(cp)


@pytest.mark.parametrize("static", LINKAGE)
def test_memory_and_faults(platform, cbin, static):
    """mmap family, file mappings, copy on write, and fault signals with their codes and addresses."""
    run_both(platform, cbin("memory", static))


@pytest.mark.parametrize("static", LINKAGE)
def test_large_mappings(platform, cbin, static):
    """Large anonymous mappings (2 MiB pages on kvm): touched, read and
    written by the kernel, forked, split by partial munmap and mprotect
    while threads write, given back, moved by mremap."""
    run_both(platform, cbin("hugemem", static))


def test_null_dereference_kills_with_sigsegv(platform, cbin):
    """No handler: the process dies of SIGSEGV, and a shell reports 139 as natively."""
    binary = cbin("memory", True)
    script = f"./{binary.name} null; echo status=$?"
    inside = run_pysc(platform, BUSYBOX, "sh", "-c", script, cwd=binary.parent)
    native = run_native(BUSYBOX, "sh", "-c", script, cwd=binary.parent)
    assert_same(inside, native)
    assert "status=139" in inside.stdout, show(inside)


@pytest.mark.parametrize("static", LINKAGE)
def test_fork_exec_wait(platform, cbin, static):
    run_both(platform, cbin("forkexec", static))


FORBIDDEN = ("mount", "mount-bind-root", "umount2-root", "ptrace-traceme", "ptrace-attach-parent",
             "bpf-prog-load", "bpf-map-create", "kexec_load", "kexec_file_load", "open_by_handle_at",
             "init_module", "finit_module", "delete_module", "iopl", "ioperm", "swapon",
             "clock_settime", "settimeofday", "perf_event_open", "process_vm_writev-parent",
             "int80-getpid", "x32-getpid", "unknown-nr-1000", "nr-minus-1")
SIGSYS, SIGKILL, SIGSEGV = 31, 9, 11


@pytest.mark.parametrize("static", LINKAGE)
def test_forbidden_syscalls_never_succeed(platform, cbin, static):
    """Each call runs in a child: it must fail with an errno or the child must
    be killed (SIGSYS from the seccomp filter); success is an escape."""
    binary = cbin("forbidden", static)
    cp = run_pysc(platform, f"./{binary.name}", cwd=binary.parent)
    assert cp.returncode in (0, 128 + SIGSYS), show(cp)
    results = {}
    for line in cp.stdout.splitlines():
        m = re.match(r"^(\S+): (.*)$", line)
        if m:
            results[m.group(1)] = m.group(2)
    bad = []
    for name in FORBIDDEN:
        res = results.get(name)
        if res is None:
            bad.append(f"{name}: no result")
            continue
        m = re.match(r"^ret=(-?\d+) errno=(\S+)$", res)
        if m:
            if int(m.group(1)) >= 0 or m.group(2) in ("none", "?"):
                bad.append(f"{name}: SUCCEEDED ({res})")
        elif (m := re.match(r"^killed by signal (\d+)$", res)):
            # In a KVM guest there is no 32-bit syscall entry: `int $0x80` is a
            # general protection fault, as on Linux without IA32 emulation.
            allowed = (SIGSYS, SIGKILL, SIGSEGV) if name == "int80-getpid" and platform == "kvm" \
                else (SIGSYS, SIGKILL)
            if int(m.group(1)) not in allowed:
                bad.append(f"{name}: killed by unexpected signal {m.group(1)}")
        else:
            bad.append(f"{name}: {res}")
    assert not bad, "\n".join(bad) + "\n" + show(cp)
    # Unknown syscall numbers get ENOSYS, as DESIGN.md §4 says.
    assert results.get("unknown-nr-1000") == "ret=-1 errno=ENOSYS", show(cp)


def test_credentials(platform, cbin):
    """setuid family: the sandbox's credentials change as the host's would."""
    run_both(platform, cbin("ids", True))
