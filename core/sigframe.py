"""x86-64 signal frames, built and taken apart by the Sentry.

On the kvm platform no host kernel delivers the app's signals, so the Sentry
lays out ``struct rt_sigframe`` on the app's stack exactly as Linux does
(arch/x86/kernel/signal_64.c): programs, debuggers and language runtimes
read and edit ``uc_mcontext``, and glibc's restorer hands the frame back
through rt_sigreturn.  Layouts and numbers live in ``core.abi``.

Memory is reached through ``mem.read(addr, n)`` / ``mem.write(addr, data)``,
user accesses that raise ``SyscallError(EFAULT)``; ``regs`` is any object
with the integer attributes of ``struct kvm_regs`` (rax ... r15, rip, rflags).
"""
from __future__ import annotations

import struct

from pysc.core.abi import consts as C
from pysc.core.abi import structs as S
from pysc.core.errors import SyscallError

GPRS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
        "rdi", "rsi", "rbp", "rbx", "rdx", "rax", "rcx", "rsp", "rip")
DEFAULT_XFEATURES = C.XFEATURE_MASK_FPSSE | C.XFEATURE_MASK_YMM  # x87, SSE, AVX
U64 = (1 << 64) - 1


def _fault() -> SyscallError:
    return SyscallError(C.EFAULT)


def sigframe_size(xstate_size: int = S.xstate_size(DEFAULT_XFEATURES)) -> int:
    """The most stack one signal frame can take (Linux's AT_MINSIGSTKSZ):
    the frame, the xsave area with its magic, and the worst-case padding."""
    size = S.RT_SIGFRAME_SIZE + (S.SIGFRAME_ALIGN - 1) + xstate_size + C.FP_XSTATE_MAGIC2_SIZE \
        + (S.XSAVE_ALIGN - 1)
    return -(-size // S.SIGFRAME_ALIGN) * S.SIGFRAME_ALIGN


def _on_stack(sp: int, ss_sp: int, ss_size: int) -> bool:
    """Linux's __on_sig_stack: the stack grows down, so its top counts, its bottom does not."""
    return ss_sp < sp and sp - ss_sp <= ss_size


def on_altstack(sp: int, altstack: tuple[int, int, int]) -> bool:
    """Whether ``sp`` is on the alternate signal stack (never, with SS_AUTODISARM)."""
    ss_sp, ss_flags, ss_size = altstack
    return not ss_flags & C.SS_AUTODISARM and _on_stack(sp, ss_sp, ss_size)


def altstack_flags(sp: int, altstack: tuple[int, int, int]) -> int:
    """sigaltstack's reported ss_flags for a thread at ``sp`` (Linux's sas_ss_flags
    plus the SS_AUTODISARM bit)."""
    ss_sp, ss_flags, ss_size = altstack
    if not ss_size:
        return C.SS_DISABLE
    return (C.SS_ONSTACK if on_altstack(sp, altstack) else 0) | (ss_flags & C.SS_FLAG_BITS)


def _xsave_for_frame(fpstate: bytes, xfeatures: int, xstate_size: int) -> bytes:
    """The first ``xstate_size`` bytes of a KVM xsave image as XSAVE would have
    stored them in the frame, with the software bytes and the closing magic
    that tell rt_sigreturn (and the app) how much extended state is there."""
    buf = bytearray(fpstate[:xstate_size].ljust(xstate_size, b"\0"))
    S.FPX_SW_BYTES.pack_into(buf, S.FPX_SW_OFFSET, C.FP_XSTATE_MAGIC1,
                             xstate_size + C.FP_XSTATE_MAGIC2_SIZE, xfeatures, xstate_size)
    xstate_bv, _ = S.XSAVE_HDR.unpack_from(buf, S.XSAVE_HDR_OFFSET)
    # Linux always marks x87/SSE in use so that edits by legacy code are restored.
    S.XSAVE_HDR.pack_into(buf, S.XSAVE_HDR_OFFSET, (xstate_bv & xfeatures) | C.XFEATURE_MASK_FPSSE, 0)
    return bytes(buf) + C.FP_XSTATE_MAGIC2.to_bytes(4, "little")


def setup_rt_frame(mem, regs, *, sig: int, siginfo: bytes, handler: int, sa_flags: int,
                   restorer: int, blocked_mask: int, altstack: tuple[int, int, int],
                   fpstate: bytes | None, fs_base: int = 0, trapno: int = 0, err: int = 0,
                   cr2: int = 0, xfeatures: int = DEFAULT_XFEATURES,
                   xstate_size: int | None = None) -> int:
    """Push a signal frame for ``sig`` and point ``regs`` at ``handler``; returns
    the frame's address.

    ``blocked_mask`` is the mask to restore on return (the caller then blocks
    the handler's sa_mask and ``sig`` itself, and resets the vCPU's FPU state
    to its initial values, as Linux does).  ``altstack`` is the thread's
    (ss_sp, ss_flags, ss_size); with SS_AUTODISARM set the caller disarms it
    after every delivery.  ``xfeatures`` is the guest's XCR0 and
    ``xstate_size`` the bytes of xsave area it needs (computed from
    ``xfeatures`` if not given).  ``fs_base`` is not part of the x86-64 frame
    and is ignored.  Raises SyscallError(EFAULT) when the frame cannot be
    written or the alternate stack would overflow; Linux then forces SIGSEGV.
    """
    if not sa_flags & C.SA_RESTORER:
        raise _fault()  # x86-64 has no fallback trampoline
    if xstate_size is None:
        xstate_size = S.xstate_size(xfeatures)
    sp = regs.rsp
    nested = on_altstack(sp, altstack)
    entering = False
    sp = (sp - S.REDZONE) & U64
    ss_sp, ss_flags, ss_size = altstack
    if sa_flags & C.SA_ONSTACK and altstack_flags(sp, altstack) & (C.SS_ONSTACK | C.SS_DISABLE) == 0:
        sp = ss_sp + ss_size
        entering = True

    fp_addr = 0
    if fpstate is not None:
        xsave = _xsave_for_frame(fpstate, xfeatures, xstate_size)
        sp = fp_addr = (sp - len(xsave)) & ~(S.XSAVE_ALIGN - 1)
    frame = ((sp - S.RT_SIGFRAME_SIZE) & ~(S.SIGFRAME_ALIGN - 1)) - 8
    if (nested or entering) and not _on_stack(frame, ss_sp, ss_size):
        raise _fault()  # would overflow the alternate stack
    if frame < 0:
        raise _fault()
    if fpstate is not None:
        mem.write(fp_addr, xsave)

    uc_flags = C.UC_SIGCONTEXT_SS | C.UC_STRICT_RESTORE_SS
    if fpstate is not None:
        uc_flags |= C.UC_FP_XSTATE
    gprs = [getattr(regs, name) & U64 for name in GPRS]
    uc = S.UCONTEXT.pack(uc_flags, 0, ss_sp, _s32(ss_flags), ss_size,
                         *gprs, regs.rflags & U64, C.USER_CS, 0, 0, C.USER_DS,
                         err & U64, trapno & U64, blocked_mask & U64, cr2 & U64, fp_addr,
                         blocked_mask & U64)
    info = bytes(siginfo[:S.SIGINFO_SIZE]).ljust(S.SIGINFO_SIZE, b"\0")
    mem.write(frame, (restorer & U64).to_bytes(8, "little") + uc + info)

    regs.rsp = frame
    regs.rip = handler
    regs.rdi = sig
    regs.rsi = frame + S.RT_SIGFRAME_INFO
    regs.rdx = frame + S.RT_SIGFRAME_UC
    regs.rax = 0
    regs.rflags &= ~(C.X86_EFLAGS_TF | C.X86_EFLAGS_DF | C.X86_EFLAGS_RF)
    return frame


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def restore_rt_frame(mem, regs, *, xfeatures: int = DEFAULT_XFEATURES,
                     xstate_size: int | None = None,
                     mxcsr_mask: int = 0xFFFF) -> tuple[int, bytes | None, tuple[int, int, int]]:
    """rt_sigreturn: reload ``regs`` from the frame whose pretcode the handler's
    ``ret`` popped (so it starts at rsp - 8).

    Returns (the mask to restore, a 4096-byte image for KVM_SET_XSAVE or None
    when the frame has no fpstate pointer, the saved (ss_sp, ss_flags,
    ss_size) for sigaltstack, whose errors Linux ignores).  Linux resets the
    FPU to its initial state when the pointer is NULL; ``init_xsave()`` is that
    state.  rflags takes only the bits user code may change; cs/ss are not in
    kvm_regs and stay as they are.  The mask still has to lose SIGKILL and
    SIGSTOP, and an interrupted restart_syscall must not be restarted.
    ``mxcsr_mask`` is the CPU's (a reserved MXCSR bit would fault XRSTOR).
    Raises SyscallError(EFAULT) on a bad frame: the caller forces SIGSEGV.
    """
    if xstate_size is None:
        xstate_size = S.xstate_size(xfeatures)
    frame = (regs.rsp - 8) & U64
    uc = dict(zip(S.UCONTEXT_FIELDS, S.UCONTEXT.unpack(mem.read(frame + S.RT_SIGFRAME_UC,
                                                                  S.UCONTEXT.size))))
    image = None
    if uc["fpstate"]:
        image = _restore_xsave(mem, uc["fpstate"], xfeatures, xstate_size, mxcsr_mask)
    for name in GPRS:
        setattr(regs, name, uc[name])
    regs.rflags = (regs.rflags & ~C.FIX_EFLAGS) | (uc["eflags"] & C.FIX_EFLAGS)
    return uc["uc_sigmask"], image, (uc["ss_sp"], uc["ss_flags"] & 0xFFFFFFFF, uc["ss_size"])


def init_xsave() -> bytes:
    """A 4096-byte xsave image of the FPU's initial state (what a handler starts with)."""
    buf = bytearray(S.KVM_XSAVE_SIZE)
    buf[0:2] = C.FCW_DEFAULT.to_bytes(2, "little")
    buf[S.FXSAVE_MXCSR:S.FXSAVE_MXCSR + 4] = C.MXCSR_DEFAULT.to_bytes(4, "little")
    return bytes(buf)


def _restore_xsave(mem, addr: int, xfeatures: int, xstate_size: int, mxcsr_mask: int) -> bytes:
    """What XRSTOR (or FXRSTOR, for a frame without valid extended-state magic)
    would load from the app's ``addr``, as a standard-format KVM xsave image:
    components not restored are marked in their initial state."""
    legacy = mem.read(addr, S.XSAVE_LEGACY_SIZE)
    magic1, ext_size, sw_features, sw_size = S.FPX_SW_BYTES.unpack_from(legacy, S.FPX_SW_OFFSET)
    xsave = (magic1 == C.FP_XSTATE_MAGIC1 and S.XSAVE_MIN_SIZE <= sw_size <= xstate_size
             and sw_size <= ext_size
             and int.from_bytes(mem.read(addr + sw_size, 4), "little") == C.FP_XSTATE_MAGIC2)
    out = bytearray(S.KVM_XSAVE_SIZE)
    out[:S.XSAVE_LEGACY_SIZE] = legacy
    if not xsave:  # FXRSTOR: x87 and SSE only
        if addr % 16:
            raise _fault()
        restore = xstate_bv = C.XFEATURE_MASK_FPSSE
    else:
        if addr % S.XSAVE_ALIGN:
            raise _fault()
        restore = sw_features & xfeatures
        frame_bv, xcomp_bv, reserved0 = struct.unpack("<QQQ", mem.read(addr + S.XSAVE_HDR_OFFSET, 24))
        if xcomp_bv or reserved0 or frame_bv & ~xfeatures:
            raise _fault()  # what XRSTOR of the standard form raises #GP for
        xstate_bv = frame_bv & restore
        for bit, (off, size) in S.XSTATE_STD_LAYOUT.items():
            if xstate_bv & (1 << bit) and off + size <= len(out):
                out[off:off + size] = mem.read(addr + off, size)
    mxcsr = int.from_bytes(legacy[S.FXSAVE_MXCSR:S.FXSAVE_MXCSR + 4], "little")
    if restore & (C.XFEATURE_MASK_SSE | C.XFEATURE_MASK_YMM) and mxcsr & ~mxcsr_mask:
        raise _fault()
    out[S.FXSAVE_MXCSR_MASK:S.FXSAVE_MXCSR_MASK + 4] = mxcsr_mask.to_bytes(4, "little")
    out[S.FPX_SW_OFFSET:S.XSAVE_LEGACY_SIZE] = bytes(S.XSAVE_LEGACY_SIZE - S.FPX_SW_OFFSET)
    S.XSAVE_HDR.pack_into(out, S.XSAVE_HDR_OFFSET, xstate_bv, 0)
    return bytes(out)


# --- siginfo ------------------------------------------------------------------------

# The highest si_code of each signal whose kernel-generated codes pick a union
# member (Linux's sig_sicodes), and that member.
_SICODES = {C.SIGILL: (C.NSIGILL, "fault"), C.SIGFPE: (C.NSIGFPE, "fault"),
            C.SIGSEGV: (C.NSIGSEGV, "fault"), C.SIGBUS: (C.NSIGBUS, "fault"),
            C.SIGTRAP: (C.NSIGTRAP, "fault"), C.SIGCHLD: (C.NSIGCHLD, "chld"),
            C.SIGIO: (C.NSIGPOLL, "poll"), C.SIGSYS: (C.NSIGSYS, "sys")}


def siginfo_layout(sig: int, code: int) -> str:
    """Which member of siginfo's union ``code`` uses for ``sig`` (Linux's siginfo_layout)."""
    if C.SI_USER < code < C.SI_KERNEL:
        limit, layout = _SICODES.get(sig, (0, "kill"))
        if code <= limit:
            if sig == C.SIGBUS and code in (C.BUS_MCEERR_AR, C.BUS_MCEERR_AO):
                return "mceerr"
            if sig == C.SIGSEGV and code == C.SEGV_BNDERR:
                return "bnderr"
            if sig == C.SIGSEGV and code == C.SEGV_PKUERR:
                return "pkuerr"
            if sig == C.SIGTRAP and code == C.TRAP_PERF:
                return "perf"
            return layout
        return "poll" if code <= C.NSIGPOLL else "kill"
    if code == C.SI_TIMER:
        return "timer"
    if code == C.SI_SIGIO:
        return "poll"
    return "rt" if code < 0 else "kill"


def pack_siginfo(signo: int, code: int, errno: int = 0, *, pid: int = 0, uid: int = 0,
                 status: int = 0, utime: int = 0, stime: int = 0, addr: int = 0, value: int = 0,
                 timerid: int = 0, overrun: int = 0, band: int = 0, fd: int = 0,
                 addr_lsb: int = 0, lower: int = 0, upper: int = 0, pkey: int = 0,
                 syscall: int = 0, arch: int = 0) -> bytes:
    """A 128-byte siginfo_t with the union member Linux uses for (signo, code).
    ``value`` is the sigval (an int or a pointer); for SIGSYS ``addr`` is the
    call's address."""
    head = (signo, errno, _s32(code))
    layout = siginfo_layout(signo, code)
    if layout == "chld":
        return S.SIGINFO_CHLD.pack(*head, pid, uid, _s32(status), utime, stime)
    if layout in ("fault", "perf"):
        return S.SIGINFO_FAULT.pack(*head, addr & U64)
    if layout == "mceerr":
        return S.SIGINFO_MCEERR.pack(*head, addr & U64, addr_lsb)
    if layout == "bnderr":
        return S.SIGINFO_BNDERR.pack(*head, addr & U64, lower & U64, upper & U64)
    if layout == "pkuerr":
        return S.SIGINFO_PKUERR.pack(*head, addr & U64, pkey)
    if layout == "poll":
        return S.SIGINFO_POLL.pack(*head, band, fd)
    if layout == "sys":
        return S.SIGINFO_SYS.pack(*head, addr & U64, syscall, arch & 0xFFFFFFFF)
    if layout == "timer":
        return S.SIGINFO_TIMER.pack(*head, timerid, overrun, value & U64)
    if layout == "rt":
        return S.SIGINFO_RT.pack(*head, pid, uid, value & U64)
    return S.SIGINFO_KILL.pack(*head, pid, uid)
