"""x86-64 signal frames: round trips through a fake memory, the stack
choice, faults, and the layout checked against glibc's headers and against
frames the host kernel builds (dumped by a small C program)."""
from __future__ import annotations

import random
import shutil
import struct
import subprocess
from types import SimpleNamespace

import pytest

from pysc.core import sigframe as SF
from pysc.core.abi import consts as C
from pysc.core.abi import structs as S
from pysc.core.errors import SyscallError

REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags")
STACK_LO, STACK_HI = 0x7FF0_0000_0000, 0x7FF0_0010_0000
ALT_LO, ALT_SIZE = 0x6000_0000_0000, 0x4000
RESTORER, HANDLER = 0x401000, 0x402000


class FakeMem:
    """Regions of app memory; addresses outside them, or writes to read-only ones, fault."""

    def __init__(self):
        self.regions: list[tuple[int, bytearray, bool]] = []

    def add(self, start: int, size: int, writable: bool = True, data: bytes = b"") -> None:
        self.regions.append((start, bytearray(data.ljust(size, b"\0")), writable))

    def _find(self, addr: int, n: int, write: bool) -> tuple[bytearray, int]:
        for start, buf, writable in self.regions:
            if start <= addr and addr + n <= start + len(buf):
                if write and not writable:
                    break
                return buf, addr - start
        raise SyscallError(C.EFAULT)

    def read(self, addr: int, n: int) -> bytes:
        buf, o = self._find(addr, n, False)
        return bytes(buf[o:o + n])

    def write(self, addr: int, data: bytes) -> int:
        buf, o = self._find(addr, len(data), True)
        buf[o:o + len(data)] = data
        return len(data)


def make_regs(rng: random.Random, rsp: int) -> SimpleNamespace:
    regs = SimpleNamespace(**{name: rng.getrandbits(64) for name in REGS})
    regs.rsp = rsp
    regs.rflags = 0x202 | C.X86_EFLAGS_TF | C.X86_EFLAGS_DF | C.X86_EFLAGS_CF | C.X86_EFLAGS_ZF
    return regs


def make_xsave(rng: random.Random, xstate_bv: int = 0x7) -> bytes:
    """A KVM_GET_XSAVE-like image: fxsave area, header, AVX upper halves."""
    img = bytearray(rng.getrandbits(8) for _ in range(S.KVM_XSAVE_SIZE))
    img[24:28] = (0x1F80 | 0x40).to_bytes(4, "little")  # MXCSR with DAZ
    img[28:32] = (0xFFFF).to_bytes(4, "little")
    img[S.XSAVE_HDR_OFFSET:S.XSAVE_MIN_SIZE] = S.XSAVE_HDR.pack(xstate_bv, 0)
    img[832:] = bytes(len(img) - 832)
    return bytes(img)


def mem_and_regs(seed: int = 0, rsp: int = STACK_HI - 0x1234):
    rng = random.Random(seed)
    mem = FakeMem()
    mem.add(STACK_LO, STACK_HI - STACK_LO)
    mem.add(ALT_LO, ALT_SIZE)
    return rng, mem, make_regs(rng, rsp)


def deliver(mem, regs, *, altstack=(0, C.SS_DISABLE, 0), sa_flags=C.SA_SIGINFO | C.SA_RESTORER,
            fpstate=None, mask=0x1234_5678_9ABC_DEF0, sig=C.SIGUSR1, **kw):
    info = SF.pack_siginfo(sig, C.SI_TKILL, pid=42, uid=1000)
    return SF.setup_rt_frame(mem, regs, sig=sig, siginfo=info, handler=HANDLER, sa_flags=sa_flags,
                             restorer=RESTORER, blocked_mask=mask, altstack=altstack,
                             fpstate=fpstate, **kw)


def handler_returns(mem, regs) -> None:
    """What the handler's final ``ret`` does: pop pretcode into rip."""
    regs.rip = struct.unpack("<Q", mem.read(regs.rsp, 8))[0]
    regs.rsp += 8


# --- round trips ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_round_trip(seed):
    rng, mem, regs = mem_and_regs(seed, STACK_HI - rng_offset(seed))
    before = {k: getattr(regs, k) for k in REGS}
    fp = make_xsave(rng)
    altstack = (0x1000, 0, 0x2000)
    frame = deliver(mem, regs, fpstate=fp, altstack=altstack, trapno=14, err=6, cr2=0xDEAD)
    assert regs.rsp == frame and (regs.rsp + 8) % 16 == 0
    assert (regs.rip, regs.rdi, regs.rax) == (HANDLER, C.SIGUSR1, 0)
    assert regs.rsi == frame + 312 and regs.rdx == frame + 8
    assert regs.rflags == before["rflags"] & ~(C.X86_EFLAGS_TF | C.X86_EFLAGS_DF)
    assert frame + 440 <= before["rsp"] - 128  # the red zone is left alone
    assert mem.read(regs.rsi, 128) == SF.pack_siginfo(C.SIGUSR1, C.SI_TKILL, pid=42, uid=1000)

    regs.rflags |= C.X86_EFLAGS_RF  # whatever the handler left in rflags
    handler_returns(mem, regs)
    assert regs.rip == RESTORER
    mask, image, stack = SF.restore_rt_frame(mem, regs)
    assert {k: getattr(regs, k) for k in REGS} == before
    assert mask == 0x1234_5678_9ABC_DEF0
    assert stack == altstack
    assert len(image) == 4096
    assert image[:464] == fp[:464] and image[576:832] == fp[576:832]
    assert S.XSAVE_HDR.unpack_from(image, 512) == (0x7, 0)
    assert image[832:] == bytes(4096 - 832)


def rng_offset(seed: int) -> int:
    return 0x1000 + seed * 0x37 + (seed % 3)


def test_round_trip_without_fpstate():
    _, mem, regs = mem_and_regs()
    before = {k: getattr(regs, k) for k in REGS}
    frame = deliver(mem, regs, fpstate=None)
    uc = dict(zip(S.UCONTEXT_FIELDS, S.UCONTEXT.unpack(mem.read(frame + 8, 304))))
    assert uc["fpstate"] == 0 and uc["uc_flags"] == C.UC_SIGCONTEXT_SS | C.UC_STRICT_RESTORE_SS
    handler_returns(mem, regs)
    mask, image, _ = SF.restore_rt_frame(mem, regs)
    assert image is None and {k: getattr(regs, k) for k in REGS} == before


def test_handler_edits_to_the_context_take_effect():
    rng, mem, regs = mem_and_regs()
    frame = deliver(mem, regs, fpstate=make_xsave(rng))
    mc = frame + 8 + S.UC_MCONTEXT_OFFSET
    mem.write(mc + 16 * 8, struct.pack("<Q", 0xCAFE))  # gregs[REG_RIP]
    mem.write(mc + 13 * 8, struct.pack("<Q", 77))  # gregs[REG_RAX]
    # eflags: try to set IF off and IOPL, which user code cannot, and OF, which it can.
    mem.write(mc + 17 * 8, struct.pack("<Q", C.X86_EFLAGS_OF | 0x3000))
    mem.write(frame + 8 + S.UC_SIGMASK_OFFSET, struct.pack("<Q", 0x5))
    regs.rflags = 0x202
    handler_returns(mem, regs)
    mask, _, _ = SF.restore_rt_frame(mem, regs)
    assert (regs.rip, regs.rax, mask) == (0xCAFE, 77, 0x5)
    assert regs.rflags == 0x202 | C.X86_EFLAGS_OF


@pytest.mark.parametrize("rsp_low", range(0, 64, 8))
def test_alignment(rsp_low):
    rng, mem, regs = mem_and_regs(rsp=STACK_HI - 0x800 + rsp_low)
    frame = deliver(mem, regs, fpstate=make_xsave(rng))
    assert (frame + 8) % 16 == 0
    uc = dict(zip(S.UCONTEXT_FIELDS, S.UCONTEXT.unpack(mem.read(frame + 8, 304))))
    assert uc["fpstate"] % 64 == 0 and uc["fpstate"] >= frame + 440
    assert uc["fpstate"] + 832 + 4 <= STACK_HI - 0x800 + rsp_low - 128
    assert mem.read(uc["fpstate"] + 832, 4) == struct.pack("<I", C.FP_XSTATE_MAGIC2)
    magic1, ext, feats, size = S.FPX_SW_BYTES.unpack(mem.read(uc["fpstate"] + 464, 48))
    assert (magic1, ext, feats, size) == (C.FP_XSTATE_MAGIC1, 836, 0x7, 832)
    assert (uc["cs"], uc["ss"], uc["gs"], uc["fs"]) == (0x33, 0x2B, 0, 0)


def test_larger_xstate():
    rng, mem, regs = mem_and_regs()
    xcr0 = 0x2E7  # AVX-512 and PKRU
    frame = deliver(mem, regs, fpstate=make_xsave(rng, 0x27), xfeatures=xcr0)
    fp = dict(zip(S.UCONTEXT_FIELDS, S.UCONTEXT.unpack(mem.read(frame + 8, 304))))["fpstate"]
    assert S.FPX_SW_BYTES.unpack(mem.read(fp + 464, 48)) == (C.FP_XSTATE_MAGIC1, 2700, xcr0, 2696)
    assert mem.read(fp + 2696, 4) == struct.pack("<I", C.FP_XSTATE_MAGIC2)
    handler_returns(mem, regs)
    _, image, _ = SF.restore_rt_frame(mem, regs, xfeatures=xcr0)
    assert S.XSAVE_HDR.unpack_from(image, 512)[0] == 0x27


# --- which stack ------------------------------------------------------------------------

def frame_in(frame: int, lo: int, size: int) -> bool:
    return lo < frame and frame + 440 <= lo + size


def test_altstack_choice():
    alt = (ALT_LO, 0, ALT_SIZE)
    onstack = C.SA_SIGINFO | C.SA_RESTORER | C.SA_ONSTACK
    _, mem, regs = mem_and_regs()
    assert frame_in(deliver(mem, regs, altstack=alt, sa_flags=onstack), ALT_LO, ALT_SIZE)
    _, mem, regs = mem_and_regs()  # no SA_ONSTACK: the current stack
    assert frame_in(deliver(mem, regs, altstack=alt), STACK_LO, STACK_HI - STACK_LO)
    _, mem, regs = mem_and_regs()  # disabled altstack
    assert frame_in(deliver(mem, regs, altstack=(0, C.SS_DISABLE, 0), sa_flags=onstack),
                    STACK_LO, STACK_HI - STACK_LO)
    # Already on the altstack: stay there, below the interrupted frame and its red zone.
    _, mem, regs = mem_and_regs(rsp=ALT_LO + 0x3000)
    frame = deliver(mem, regs, altstack=alt, sa_flags=onstack)
    assert frame_in(frame, ALT_LO, ALT_SIZE) and frame + 440 <= ALT_LO + 0x3000 - 128
    # The top of the altstack counts as on it, its bottom does not (the stack grows down).
    _, mem, regs = mem_and_regs(rsp=ALT_LO + ALT_SIZE)
    frame = deliver(mem, regs, altstack=alt, sa_flags=onstack)
    assert frame + 440 <= ALT_LO + ALT_SIZE - 128
    assert SF.on_altstack(ALT_LO + ALT_SIZE, alt) and not SF.on_altstack(ALT_LO, alt)


def test_autodisarm_altstack_is_never_considered_in_use():
    alt = (ALT_LO, C.SS_AUTODISARM, ALT_SIZE)
    onstack = C.SA_SIGINFO | C.SA_RESTORER | C.SA_ONSTACK
    _, mem, regs = mem_and_regs(rsp=ALT_LO + 0x1000)  # on it, but SS_AUTODISARM
    frame = deliver(mem, regs, altstack=alt, sa_flags=onstack)
    assert frame > ALT_LO + 0x1000  # restarted at the top
    uc = dict(zip(S.UCONTEXT_FIELDS, S.UCONTEXT.unpack(mem.read(frame + 8, 304))))
    assert (uc["ss_sp"], uc["ss_flags"] & 0xFFFFFFFF, uc["ss_size"]) == alt  # saved as set
    handler_returns(mem, regs)
    assert SF.restore_rt_frame(mem, regs)[2] == alt
    assert SF.altstack_flags(ALT_LO + 0x1000, alt) == C.SS_AUTODISARM
    assert SF.altstack_flags(ALT_LO + 0x1000, (ALT_LO, 0, ALT_SIZE)) == C.SS_ONSTACK
    assert SF.altstack_flags(0, (0, C.SS_DISABLE, 0)) == C.SS_DISABLE


def test_altstack_overflow_faults():
    onstack = C.SA_SIGINFO | C.SA_RESTORER | C.SA_ONSTACK
    rng, mem, regs = mem_and_regs()
    with pytest.raises(SyscallError) as e:  # too small for the frame and the xsave area
        deliver(mem, regs, altstack=(ALT_LO, 0, 1024), sa_flags=onstack, fpstate=make_xsave(rng))
    assert e.value.errno == C.EFAULT
    rng, mem, regs = mem_and_regs(rsp=ALT_LO + 0x200)  # nested, near the bottom
    with pytest.raises(SyscallError):
        deliver(mem, regs, altstack=(ALT_LO, 0, ALT_SIZE), sa_flags=onstack)
    rng, mem, regs = mem_and_regs()  # sigframe_size() is enough
    size = SF.sigframe_size()
    deliver(mem, regs, altstack=(ALT_LO, 0, size), sa_flags=onstack, fpstate=make_xsave(rng))
    assert ALT_LO < regs.rsp


def test_unwritable_stack_and_missing_restorer_fault():
    rng = random.Random(1)
    mem = FakeMem()
    mem.add(STACK_LO, 0x10000, writable=False)
    regs = make_regs(rng, STACK_LO + 0x8000)
    before = vars(regs).copy()
    with pytest.raises(SyscallError) as e:
        deliver(mem, regs, fpstate=make_xsave(rng))
    assert e.value.errno == C.EFAULT and vars(regs) == before
    regs = make_regs(rng, 0x1000)  # unmapped
    with pytest.raises(SyscallError):
        deliver(mem, regs)
    _, mem, regs = mem_and_regs()
    with pytest.raises(SyscallError):
        deliver(mem, regs, sa_flags=C.SA_SIGINFO)


# --- rt_sigreturn of frames the app changed -------------------------------------------------

def frame_with_fp(seed=3):
    rng, mem, regs = mem_and_regs(seed)
    frame = deliver(mem, regs, fpstate=make_xsave(rng))
    handler_returns(mem, regs)
    fp = dict(zip(S.UCONTEXT_FIELDS, S.UCONTEXT.unpack(mem.read(frame + 8, 304))))["fpstate"]
    return mem, regs, frame, fp


def test_restore_legacy_only_fpstate():
    mem, regs, frame, fp = frame_with_fp()
    mem.write(fp + 464, b"\0" * 4)  # magic1 gone: the app wrote a plain fxsave image
    _, image, _ = SF.restore_rt_frame(mem, regs)
    assert S.XSAVE_HDR.unpack_from(image, 512)[0] == C.XFEATURE_MASK_FPSSE
    mem, regs, frame, fp = frame_with_fp()
    mem.write(fp + 832, b"\0" * 4)  # magic2 gone
    assert S.XSAVE_HDR.unpack_from(SF.restore_rt_frame(mem, regs)[1], 512)[0] == 3


def test_restore_only_features_in_the_sw_bytes():
    mem, regs, frame, fp = frame_with_fp()
    mem.write(fp + 464 + 8, struct.pack("<Q", 0x3))  # fx_sw.xfeatures: no AVX
    _, image, _ = SF.restore_rt_frame(mem, regs)
    assert S.XSAVE_HDR.unpack_from(image, 512)[0] == 0x3  # AVX back to its initial state


@pytest.mark.parametrize("what", ["mxcsr", "xcomp_bv", "bv_not_in_xcr0", "frame_unmapped", "fp_unmapped",
                                  "fp_misaligned"])
def test_bad_frames_fault(what):
    mem, regs, frame, fp = frame_with_fp()
    if what == "mxcsr":
        mem.write(fp + 24, struct.pack("<I", 0x1F80 | 0x10000))
    elif what == "xcomp_bv":
        mem.write(fp + 520, struct.pack("<Q", 1 << 63 | 7))
    elif what == "bv_not_in_xcr0":
        mem.write(fp + 512, struct.pack("<Q", 0xFF))
    elif what == "frame_unmapped":
        regs.rsp = 0x10
    elif what == "fp_unmapped":
        mem.write(frame + 8 + S.UC_MCONTEXT_OFFSET + 184, struct.pack("<Q", 0x2000))
    elif what == "fp_misaligned":
        mem.write(frame + 8 + S.UC_MCONTEXT_OFFSET + 184, struct.pack("<Q", fp - 16))
    before = vars(regs).copy()
    with pytest.raises(SyscallError) as e:
        SF.restore_rt_frame(mem, regs)
    assert e.value.errno == C.EFAULT and vars(regs) == before


def test_init_xsave():
    img = SF.init_xsave()
    assert len(img) == 4096 and img[0:2] == b"\x7f\x03" and img[24:28] == struct.pack("<I", 0x1F80)
    assert S.XSAVE_HDR.unpack_from(img, 512) == (0, 0)


# --- siginfo ---------------------------------------------------------------------------

def test_siginfo_layouts():
    L = SF.siginfo_layout
    assert L(C.SIGSEGV, C.SEGV_MAPERR) == "fault" and L(C.SIGSEGV, C.SI_USER) == "kill"
    assert L(C.SIGSEGV, C.SEGV_BNDERR) == "bnderr" and L(C.SIGSEGV, C.SEGV_PKUERR) == "pkuerr"
    assert L(C.SIGBUS, C.BUS_MCEERR_AR) == "mceerr" and L(C.SIGBUS, C.BUS_ADRERR) == "fault"
    assert L(C.SIGCHLD, C.CLD_EXITED) == "chld" and L(C.SIGCHLD, C.SI_USER) == "kill"
    assert L(C.SIGUSR1, C.SI_QUEUE) == "rt" and L(C.SIGUSR1, C.SI_TKILL) == "rt"
    assert L(C.SIGUSR1, C.SI_TIMER) == "timer" and L(C.SIGIO, C.SI_SIGIO) == "poll"
    assert L(C.SIGIO, C.POLL_IN) == "poll" and L(C.SIGUSR1, C.POLL_HUP) == "poll"
    assert L(C.SIGUSR1, 7) == "kill" and L(C.SIGSEGV, C.SI_KERNEL) == "kill"
    assert L(C.SIGSYS, C.SYS_SECCOMP) == "sys" and L(C.SIGTRAP, C.TRAP_PERF) == "perf"
    assert L(C.SIGILL, C.ILL_ILLOPC) == "fault" and L(C.SIGFPE, C.FPE_INTDIV) == "fault"


def test_pack_siginfo():
    info = SF.pack_siginfo(C.SIGCHLD, C.CLD_EXITED, pid=9, uid=1000, status=3, utime=5, stime=6)
    assert len(info) == 128 and info == S.SIGINFO_CHLD.pack(C.SIGCHLD, 0, C.CLD_EXITED, 9, 1000, 3, 5, 6)
    info = SF.pack_siginfo(C.SIGSEGV, C.SEGV_ACCERR, addr=0xDEAD000)
    assert struct.unpack_from("<iiiiQ", info) == (C.SIGSEGV, 0, C.SEGV_ACCERR, 0, 0xDEAD000)
    info = SF.pack_siginfo(C.SIGUSR1, C.SI_QUEUE, pid=4, uid=5, value=-1)
    assert struct.unpack_from("<iiQ", info, 16) == (4, 5, (1 << 64) - 1)
    assert SF.pack_siginfo(C.SIGUSR1, C.SI_TKILL, pid=4, uid=5)[8:12] == struct.pack("<i", -6)
    info = SF.pack_siginfo(C.SIGSYS, C.SYS_SECCOMP, 2, addr=0x401000, syscall=59,
                           arch=C.AUDIT_ARCH_X86_64)
    assert struct.unpack_from("<iii4xQiI", info) == (C.SIGSYS, 2, 1, 0x401000, 59, C.AUDIT_ARCH_X86_64)
    codes = (-6, -2, -1, 0, 1, 3, 0x80)
    assert all(len(SF.pack_siginfo(s, c)) == 128 for s in range(1, 65) for c in codes)


# --- against glibc and the host kernel ---------------------------------------------------------

PROBE_C = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <sys/wait.h>

#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31)
#endif
#define OFF(t, f) printf(#f " %zu\n", offsetof(t, f))
static char altstack[65536] __attribute__((aligned(4096)));

static void handler(int sig, siginfo_t *info, void *ucv) {
    ucontext_t *uc = ucv;
    unsigned long frame = (unsigned long)uc - 8, top = (unsigned long)altstack + sizeof altstack;
    unsigned long fp = (unsigned long)uc->uc_mcontext.fpregs;
    struct _fpx_sw_bytes *sw = (void *)(fp + 464);
    printf("frame %lx info %lx fp %lx xsize %u xfeatures %llx alt %lx %zu\n", frame,
           (unsigned long)info, fp, sw->xstate_size, (unsigned long long)sw->xstate_bv,
           (unsigned long)altstack, sizeof altstack);
    printf("fields %d %d %d %d %u %d %ld %ld %lx %lx %d %d %lx\n", info->si_signo, info->si_errno,
           info->si_code, info->si_pid, info->si_uid, info->si_status, (long)info->si_utime,
           (long)info->si_stime, (unsigned long)info->si_addr, (unsigned long)info->si_value.sival_ptr,
           info->si_timerid, info->si_overrun, (unsigned long)uc->uc_mcontext.gregs[REG_RIP]);
    printf("dump ");
    for (unsigned char *p = (unsigned char *)frame; p < (unsigned char *)top; p++) printf("%02x", *p);
    printf("\n");
    fflush(stdout);
    if (sig == SIGSEGV) _exit(0);
}

int main(int argc, char **argv) {
    const char *mode = argv[1];
    if (!strcmp(mode, "offsets")) {
        OFF(ucontext_t, uc_flags); OFF(ucontext_t, uc_link); OFF(ucontext_t, uc_stack);
        OFF(ucontext_t, uc_mcontext); OFF(ucontext_t, uc_sigmask);
        OFF(ucontext_t, uc_mcontext.fpregs);
        OFF(stack_t, ss_sp); OFF(stack_t, ss_flags); OFF(stack_t, ss_size);
        printf("sizeof_stack_t %zu\n", sizeof(stack_t));
        const char *names[] = {"R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15", "RDI", "RSI",
            "RBP", "RBX", "RDX", "RAX", "RCX", "RSP", "RIP", "EFL", "CSGSFS", "ERR", "TRAPNO",
            "OLDMASK", "CR2"};
        int idx[] = {REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15, REG_RDI,
            REG_RSI, REG_RBP, REG_RBX, REG_RDX, REG_RAX, REG_RCX, REG_RSP, REG_RIP, REG_EFL,
            REG_CSGSFS, REG_ERR, REG_TRAPNO, REG_OLDMASK, REG_CR2};
        for (int i = 0; i < 23; i++)
            printf("REG_%s %zu\n", names[i], offsetof(ucontext_t, uc_mcontext.gregs) + 8 * idx[i]);
        OFF(struct sigcontext, r8); OFF(struct sigcontext, rip); OFF(struct sigcontext, eflags);
        OFF(struct sigcontext, cs); OFF(struct sigcontext, gs); OFF(struct sigcontext, fs);
        OFF(struct sigcontext, err); OFF(struct sigcontext, trapno); OFF(struct sigcontext, oldmask);
        OFF(struct sigcontext, cr2); OFF(struct sigcontext, fpstate);
        printf("sizeof_sigcontext %zu\n", sizeof(struct sigcontext));
        printf("sizeof_siginfo_t %zu\n", sizeof(siginfo_t));
        OFF(siginfo_t, si_signo); OFF(siginfo_t, si_errno); OFF(siginfo_t, si_code);
        OFF(siginfo_t, si_pid); OFF(siginfo_t, si_uid); OFF(siginfo_t, si_status);
        OFF(siginfo_t, si_utime); OFF(siginfo_t, si_stime); OFF(siginfo_t, si_value);
        OFF(siginfo_t, si_timerid); OFF(siginfo_t, si_overrun); OFF(siginfo_t, si_addr);
        OFF(siginfo_t, si_addr_lsb); OFF(siginfo_t, si_lower); OFF(siginfo_t, si_upper);
        OFF(siginfo_t, si_pkey); OFF(siginfo_t, si_band); OFF(siginfo_t, si_fd);
        OFF(siginfo_t, si_call_addr); OFF(siginfo_t, si_syscall); OFF(siginfo_t, si_arch);
        OFF(struct _libc_fpstate, mxcsr); OFF(struct _libc_fpstate, mxcr_mask);
        OFF(struct _fpx_sw_bytes, magic1); OFF(struct _fpx_sw_bytes, extended_size);
        OFF(struct _fpx_sw_bytes, xstate_bv); OFF(struct _fpx_sw_bytes, xstate_size);
        printf("sizeof_fpx_sw_bytes %zu\n", sizeof(struct _fpx_sw_bytes));
        return 0;
    }
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack,
                  .ss_flags = !strcmp(mode, "autodisarm") ? SS_AUTODISARM : 0};
    if (sigaltstack(&ss, NULL)) { perror("sigaltstack"); return 1; }
    struct sigaction sa = {.sa_sigaction = handler, .sa_flags = SA_SIGINFO | SA_ONSTACK};
    int sig = !strcmp(mode, "segv") ? SIGSEGV : !strcmp(mode, "chld") ? SIGCHLD
            : !strcmp(mode, "queue") ? SIGRTMIN + 1 : !strcmp(mode, "timer") ? SIGRTMIN + 2 : SIGUSR1;
    sigaction(sig, &sa, NULL);
    sigset_t block, none;
    sigemptyset(&block); sigemptyset(&none);
    sigaddset(&block, SIGUSR2); sigaddset(&block, SIGRTMIN + 5); sigaddset(&block, SIGWINCH);
    sigprocmask(SIG_BLOCK, &block, NULL);
    volatile double x = 1.5;
    x = x * 3.25;  /* some x87/SSE state in use */
    fflush(stdout);
    if (!strcmp(mode, "segv")) {
        *(volatile int *)0x1234 = 1;
    } else if (!strcmp(mode, "chld")) {
        sigset_t old;
        sigaddset(&block, sig);
        sigprocmask(SIG_BLOCK, &block, &old);  /* no lost wake-up: the child may be quick */
        if (fork() == 0) _exit(3);
        sigsuspend(&old);
    } else if (!strcmp(mode, "queue")) {
        sigqueue(getpid(), sig, (union sigval){.sival_ptr = (void *)0x1234abcdUL});
    } else if (!strcmp(mode, "timer")) {
        timer_t t;
        struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = sig,
                              .sigev_value.sival_ptr = (void *)77};
        timer_create(CLOCK_MONOTONIC, &ev, &t);
        struct itimerspec its = {.it_value.tv_nsec = 1000000};
        sigset_t old;
        sigaddset(&block, sig);
        sigprocmask(SIG_BLOCK, &block, &old);
        timer_settime(t, 0, &its, NULL);
        sigsuspend(&old);
    } else {
        raise(SIGUSR1);
    }
    printf("back %f\n", x);
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("sig")
    (d / "probe.c").write_text(PROBE_C)
    exe = str(d / "probe")
    subprocess.run(["gcc", "-O1", "-o", exe, str(d / "probe.c"), "-lrt"], check=True)
    return exe


def test_layout_matches_glibc(probe):
    out = subprocess.run([probe, "offsets"], check=True, capture_output=True, text=True).stdout
    off = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    assert (off["uc_flags"], off["uc_link"], off["uc_stack"]) == (0, 8, S.UC_STACK_OFFSET)
    assert (off["uc_mcontext"], off["uc_sigmask"]) == (S.UC_MCONTEXT_OFFSET, S.UC_SIGMASK_OFFSET)
    assert (off["ss_sp"], off["ss_flags"], off["ss_size"]) == (0, 8, 16)
    assert off["sizeof_stack_t"] == S.STACK_T.size
    # Each saved register where our struct puts it.
    positions = {}
    pos = 0
    for name in S.SIGCONTEXT_FIELDS:
        positions[name] = pos
        pos += 2 if name in ("cs", "gs", "fs", "ss") else 8
    reg = {"EFL": "eflags", "CSGSFS": "cs"}
    for key, value in off.items():
        if key.startswith("REG_"):
            field = reg.get(key[4:], key[4:].lower())
            assert S.UC_MCONTEXT_OFFSET + positions[field] == value, key
    assert off["uc_mcontext.fpregs"] == S.UC_MCONTEXT_OFFSET + positions["fpstate"]
    for f in ("r8", "rip", "eflags", "cs", "gs", "fs", "err", "trapno", "oldmask", "cr2", "fpstate"):
        assert off[f] == positions[f], f
    assert off["sizeof_sigcontext"] == S.SIGCONTEXT.size == 256
    assert off["sizeof_siginfo_t"] == S.SIGINFO_SIZE
    assert (off["si_signo"], off["si_errno"], off["si_code"]) == (0, 4, 8)
    assert [off[f] for f in ("si_pid", "si_uid", "si_status", "si_utime", "si_stime")] == [16, 20, 24, 32, 40]
    assert (off["si_value"], off["si_timerid"], off["si_overrun"]) == (24, 16, 20)
    fault = ("si_addr", "si_addr_lsb", "si_lower", "si_upper", "si_pkey")
    assert [off[f] for f in fault] == [16, 24, 32, 40, 32]
    assert (off["si_band"], off["si_fd"]) == (16, 24)
    assert (off["si_call_addr"], off["si_syscall"], off["si_arch"]) == (16, 24, 28)
    assert (off["mxcsr"], off["mxcr_mask"]) == (S.FXSAVE_MXCSR, S.FXSAVE_MXCSR_MASK)
    assert (off["magic1"], off["extended_size"], off["xstate_bv"], off["xstate_size"]) == (0, 4, 8, 16)
    assert off["sizeof_fpx_sw_bytes"] == S.FPX_SW_BYTES.size


def host_frame(probe, mode):
    r = subprocess.run([probe, mode], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in r.stdout.splitlines()}
    head = lines["frame"].split()
    h = {"frame": int(head[0], 16), "info": int(head[2], 16), "fp": int(head[4], 16),
         "xsize": int(head[6]), "xfeatures": int(head[8], 16), "alt": int(head[10], 16),
         "altsize": int(head[11])}
    f = lines["fields"].split()
    h["fields"] = dict(zip(("signo", "errno", "code", "pid", "uid", "status", "utime", "stime"),
                           map(int, f[:8])))
    h["fields"].update(addr=int(f[8], 16), value=int(f[9], 16), timerid=int(f[10]),
                       overrun=int(f[11]))
    h["dump"] = bytes.fromhex(lines["dump"])
    return h


@pytest.mark.parametrize("mode", ["usr1", "segv", "chld", "queue", "timer", "autodisarm"])
def test_frames_match_the_host_kernel(probe, mode):
    h = host_frame(probe, mode)
    frame, fp, xsize, alt, altsize = h["frame"], h["fp"], h["xsize"], h["alt"], h["altsize"]
    dump = h["dump"]
    assert h["info"] == frame + S.RT_SIGFRAME_INFO
    assert xsize == S.xstate_size(h["xfeatures"])
    # Where Linux put the xsave area and the frame, for an empty altstack.
    assert fp == (alt + altsize - xsize - 4) & ~63
    assert frame == ((fp - 440) & ~15) - 8
    assert SF.sigframe_size(xsize) <= 2048 + xsize

    # siginfo: the union member and the fields as the kernel filled them.
    fl = h["fields"]
    info = dump[S.RT_SIGFRAME_INFO:S.RT_SIGFRAME_INFO + 128]
    assert info == SF.pack_siginfo(fl["signo"], fl["code"], fl["errno"], pid=fl["pid"], uid=fl["uid"],
                                   status=fl["status"], utime=fl["utime"], stime=fl["stime"],
                                   addr=fl["addr"], value=fl["value"], timerid=fl["timerid"],
                                   overrun=fl["overrun"])
    expect_code = {"usr1": C.SI_TKILL, "segv": C.SEGV_MAPERR, "chld": C.CLD_EXITED, "queue": C.SI_QUEUE,
                   "timer": C.SI_TIMER, "autodisarm": C.SI_TKILL}[mode]
    assert fl["code"] == expect_code

    # rt_sigreturn of the kernel's frame.
    mem = FakeMem()
    mem.add(frame, alt + altsize - frame, data=dump)
    mxcsr_mask = struct.unpack_from("<I", dump, fp - frame + 28)[0]
    eflags = struct.unpack_from("<Q", dump, 8 + S.UC_MCONTEXT_OFFSET + 17 * 8)[0]
    regs = SimpleNamespace(**{name: 0 for name in REGS})
    regs.rsp, regs.rflags = frame + 8, eflags
    mask, image, stack = SF.restore_rt_frame(mem, regs, xfeatures=h["xfeatures"], mxcsr_mask=mxcsr_mask)
    blocked = {C.SIGUSR2, C.SIGRTMIN + 5 + 2, C.SIGWINCH}  # glibc's SIGRTMIN is 34
    if mode in ("chld", "timer"):  # waited for in sigsuspend: the mask from before it is saved
        blocked.add(fl["signo"])
    assert mask == sum(1 << (s - 1) for s in blocked)
    ss_flags = C.SS_AUTODISARM if mode == "autodisarm" else 0
    assert stack == (alt, ss_flags, altsize)
    assert not alt <= regs.rsp < alt + altsize and regs.rip
    if mode == "segv":
        uc = dict(zip(S.UCONTEXT_FIELDS, S.UCONTEXT.unpack_from(dump, 8)))
        assert (uc["trapno"], uc["err"], uc["cr2"]) == (14, 6, 0x1234)

    # Our frame for the same state is the kernel's, byte for byte.
    uc = dict(zip(S.UCONTEXT_FIELDS, S.UCONTEXT.unpack_from(dump, 8)))
    ours = FakeMem()
    ours.add(frame, alt + altsize - frame)
    pretcode = struct.unpack_from("<Q", dump, 0)[0]
    got = SF.setup_rt_frame(ours, regs, sig=fl["signo"], siginfo=info, handler=0x1, sa_flags=C.SA_SIGINFO
                            | C.SA_RESTORER | C.SA_ONSTACK, restorer=pretcode, blocked_mask=mask,
                            altstack=(alt, ss_flags, altsize), fpstate=image, trapno=uc["trapno"],
                            err=uc["err"], cr2=uc["cr2"], xfeatures=h["xfeatures"])
    assert got == frame
    end = fp - frame + xsize + 4
    assert ours.read(frame, end) == dump[:end]
