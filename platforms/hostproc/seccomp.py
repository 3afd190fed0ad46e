"""The seccomp-BPF filter of app processes on the host-process platforms.

It allows the delegated set (with argument checks), hands every other known
syscall to the Sentry with ``trace_action`` (RET_TRACE for ptrace,
RET_USER_NOTIF for seccomp), and kills on a foreign architecture or x32.
"""
from __future__ import annotations

from pysc.core.abi import consts as C
from pysc.core.abi.sysnums import NAMES, SYSCALLS

# classic BPF opcodes
BPF_LD_W_ABS = 0x20
BPF_JMP_JEQ_K = 0x15
BPF_JMP_JGE_K = 0x35
BPF_JMP_JSET_K = 0x45
BPF_RET_K = 0x06

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_ALLOW = 0x7FFF0000

OFF_NR, OFF_ARCH = 0, 4


def off_arg(i: int) -> int:
    return 16 + 8 * i  # low 32 bits of args[i]


# Calls the host kernel runs for the app: memory, scheduling and signal
# delivery of the calling process, with no names, fds or foreign ids.
DELEGATED = frozenset({
    "munmap", "mprotect", "brk", "mremap", "madvise", "mincore", "msync", "mlock", "munlock",
    "mlock2", "mlockall", "munlockall", "membarrier",
    "futex", "futex_waitv", "set_robust_list", "get_robust_list", "rseq", "set_tid_address",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "rt_sigpending",
    "rt_sigsuspend", "rt_sigtimedwait", "pause", "restart_syscall",
    "sched_yield", "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
    "gettimeofday", "time", "alarm", "setitimer", "getitimer",
    "arch_prctl", "exit", "exit_group", "getrandom", "fork", "vfork",
})

# clone flags the filter lets through without asking the Sentry.
CLONE_REFUSED = C.CLONE_NEW_ANY | C.CLONE_UNTRACED | C.CLONE_PTRACE


def build_filter(trace_action: int, delegated: frozenset[str] = DELEGATED) -> list[tuple[int, int, int, int]]:
    """The filter as a list of (code, jt, jf, k) instructions."""
    prog: list[tuple[int, int, int, int]] = []
    kill = ("ret", SECCOMP_RET_KILL_PROCESS)
    # Symbolic jumps are resolved at the end: ("jeq", k, label_true, label_false).
    code: list = [
        ("ld", OFF_ARCH),
        ("jeq", C.AUDIT_ARCH_X86_64, None, "kill"),
        ("ld", OFF_NR),
        ("jge", C.X32_SYSCALL_BIT, None, "native"),
        ("jge", C.X32_SYSCALL_BIT + 1024, "enosys", "kill"),  # x32 calls are killed
        ("label", "native"),
        ("jge", max(NAMES) + 1, "enosys", None),
    ]
    for name in sorted(delegated, key=SYSCALLS.__getitem__):
        code.append(("jeq", SYSCALLS[name], "allow", None))
    code += [
        ("jeq", SYSCALLS["mmap"], None, "after_mmap"),
        ("ld", off_arg(3)),
        ("jset", C.MAP_ANONYMOUS, "allow", "trace"),
        ("label", "after_mmap"),
        ("jeq", SYSCALLS["clone"], None, "trace"),
        ("ld", off_arg(0)),
        ("jset", CLONE_REFUSED, "trace", "allow"),
        ("label", "trace"), ("ret", trace_action),
        ("label", "allow"), ("ret", SECCOMP_RET_ALLOW),
        ("label", "enosys"), ("ret", SECCOMP_RET_ERRNO | C.ENOSYS),
        ("label", "kill"), kill,
    ]
    # Resolve labels.
    labels: dict[str, int] = {}
    pc = 0
    for ins in code:
        if ins[0] == "label":
            labels[ins[1]] = pc
        else:
            pc += 1
    pc = 0
    for ins in code:
        op = ins[0]
        if op == "label":
            continue
        if op == "ld":
            prog.append((BPF_LD_W_ABS, 0, 0, ins[1]))
        elif op == "ret":
            prog.append((BPF_RET_K, 0, 0, ins[1]))
        else:
            opcode = {"jeq": BPF_JMP_JEQ_K, "jge": BPF_JMP_JGE_K, "jset": BPF_JMP_JSET_K}[op]
            jt = 0 if ins[2] is None else labels[ins[2]] - pc - 1
            jf = 0 if ins[3] is None else labels[ins[3]] - pc - 1
            if not (0 <= jt < 256 and 0 <= jf < 256):
                raise ValueError("seccomp filter jump out of range")
            prog.append((opcode, jt, jf, ins[1]))
        pc += 1
    return prog


def run_filter(prog: list[tuple[int, int, int, int]], nr: int, args=(0,) * 6,
               arch: int = C.AUDIT_ARCH_X86_64) -> int:
    """Interpret the filter for one syscall (for tests and `pysc help syscalls`)."""
    data = {OFF_NR: nr, OFF_ARCH: arch}
    for i, a in enumerate(args):
        data[off_arg(i)] = a & 0xFFFFFFFF
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == BPF_LD_W_ABS:
            acc = data.get(k, 0)
            pc += 1
        elif code == BPF_RET_K:
            return k
        else:
            cond = {BPF_JMP_JEQ_K: acc == k, BPF_JMP_JGE_K: acc >= k, BPF_JMP_JSET_K: bool(acc & k)}[code]
            pc += 1 + (jt if cond else jf)
