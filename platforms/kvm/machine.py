"""The KVM machine: one VM whose vCPUs run app code in guest ring 3 and exit
to the Sentry on every syscall and fault.

Layout.  PML4 slot 255 (0x7f80_0000_0000 up, above USER_LIMIT) belongs to the
machine and is the same subtree in every address space (``system_pml4e``):
a user R+X page with the syscall trampoline (LSTAR), the IDT, the ring-0
exception stub, and per vCPU a ring-0 stack and a page holding its own GDT
and TSS (RSP0/IST1 and an I/O bitmap that opens port 0x10 only).  Mappings
there are only ever added, so they never need invalidating.  Its second GiB
holds GUEST_MMAP_VA: a read-only zero page, which an address space with a
guest-mmap page replaces in a private copy of the slot's table
(PageTables.map_private).

Syscalls.  On PVM, SYSCALL stays in ring 3 and lands on the trampoline, whose
``out %al, $0x10`` the hypervisor turns into KVM_EXIT_IO; on VMX/SVM the
same ``out`` runs at CPL 0.  Either way the Sentry sets rip = rcx and
rflags = r11 (sanitised) itself; there is no sysret.  On PVM the trampoline
may answer mmap and munmap itself (stub.py, guestmmap.py); a kick that finds
a thread there is reported at the syscall instruction, or just after the
call when it got past its commit (``stub.unwind``).

Faults.  IDT gates lead to the stub, which exits with ``out %al, $0x11``.
The Sentry reads vector, error code and the iret frame from the ring-0 stack
through PhysicalMemory and cr2 from the sync-area sregs.  The way back to
user mode is the stub's ``iretq``: run() writes an iret frame from the
(possibly edited) user registers and enters at IRET_POINT.  Upstream PVM
refuses a CPL change through KVM_SET_SREGS once a vCPU has run (a triple
fault); this host's build accepted one, but it was no faster, so iretq is
the one path everywhere.  It also returns from a VMX/SVM syscall, which
leaves the vCPU at CPL 0.  Callers only ever see user-mode registers.

CPU features.  CR4 and XCR0 follow the CPUID KVM reports.  PVM here reports
no XSAVE/AVX/FSGSBASE, so CR4 is 0x6a0; the guest still runs SSE/AVX and
rd/wrfsbase, natively at hardware CPL 3 under the host's CR4 and XCR0.

Measured on PVM (nested AMD EPYC, Python 3.11, best of runs; a bare ring-0
``out`` exit took 11-15 us that day against 9-10 in PLATFORM-NOTES):
    syscall round trip (guest syscall -> run() returns -> run())   43-50 us
        (Python in run() ~1.7 us; keeping SREGS valid in the sync area: no cost seen)
    fault round trip through the stub and iretq: #PF 57, int3 60, #UD 70-77 us
    kick() from another thread until run() returns                  80-230 us
    new_vcpu(): fresh 0.25-0.45 ms, from the pool ~12 us (FPU reset); Machine() 1.3-2.2 ms
Tried and dropped: a hardware-breakpoint exit on the trampoline instead of
``out`` (55 us); ``mov %cr2`` in the stub (up to 6 us more; cr2 is in sregs).
"""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import signal
import struct
import threading
from typing import Any

from pysc.core.mm.physical import CHUNK_SIZE, PAGE_SIZE, PhysicalMemory
from pysc.platforms.kvm import kvmapi as K
from pysc.platforms.kvm import stub
from pysc.platforms.kvm.probe import kvm_flavour, unavailable_reason

USER_LIMIT = 0x7F80_0000_0000
SYSTEM_PML4_INDEX = 255
SYSTEM_BASE = SYSTEM_PML4_INDEX << 39
assert SYSTEM_BASE == USER_LIMIT

# Fixed pages of the system area.
TRAMPOLINE_VA = SYSTEM_BASE              # user R+X: the syscall trampoline
IDT_VA = SYSTEM_BASE + 0x1000            # supervisor, read-only
RING0_VA = SYSTEM_BASE + 0x2000          # supervisor R+X: the exception stub
SYSCALL_ENTRY_VA = TRAMPOLINE_VA         # LSTAR
SYSCALL_OUT_VA = TRAMPOLINE_VA + stub.SYSCALL_OUT
TRAMPOLINE_END = TRAMPOLINE_VA + len(stub.TRAMPOLINE)
# The address space's guest-mmap page (user RW, its own in each address space
# that has one: guestmmap.py); the system area maps a zero page there, read-only.
GUEST_MMAP_VA = TRAMPOLINE_VA + stub.GUEST_MMAP_OFFSET
IRET_VA = RING0_VA + stub.IRET_POINT
FAULT_OUT_VA = RING0_VA + stub.COMMON     # the stub's ``out``
# Per-vCPU areas from 2 MiB on: [guard][ring-0 stack][GDT+TSS page][guard].
CPU_AREA_VA = SYSTEM_BASE + 0x20_0000
CPU_AREA_SIZE = 0x4000
CPU_AREAS_PER_PT = (512 * PAGE_SIZE) // CPU_AREA_SIZE
MAX_CPU_AREAS = 511 * CPU_AREAS_PER_PT

# Exit kinds run() returns.
EXIT_SYSCALL = 1
EXIT_FAULT = 2
EXIT_INTERRUPTED = 3

# The signal kick() sends to a thread inside KVM_RUN: SIGRTMIN+6 (40 with
# glibc), a real-time signal nothing else in pysc uses.  It has a no-op Python
# handler (never SIG_IGN, which would not interrupt KVM_RUN).
KICK_SIGNAL = signal.SIGRTMIN + 6

# Segments (Linux's GDT numbering: PVM requires the user selectors of STAR to
# be the host's __USER_CS/__USER_DS).
KERNEL_CS, KERNEL_DS, USER32_CS, USER_DS, USER_CS, TSS_SEL = 0x10, 0x18, 0x23, 0x2B, 0x33, 0x40
GDT_ENTRIES = {0x10: 0x00AF9B000000FFFF, 0x18: 0x00CF93000000FFFF, 0x20: 0x00CFFB000000FFFF,
               0x28: 0x00CFF3000000FFFF, 0x30: 0x00AFFB000000FFFF}
GDT_LIMIT = TSS_SEL + 16 - 1
TSS_OFFSET = 0x100                        # in the GDT+TSS page
TSS_IOMAP_BASE = 104
IO_BITMAP = bytes([0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])  # port 0x10 open; 0xff ends it
TSS_LIMIT = TSS_IOMAP_BASE + len(IO_BITMAP) - 1
STAR = (USER32_CS << 48) | (KERNEL_CS << 32)  # SYSRET would use CS 0x23+16, SS 0x23+8
assert STAR == 0x0023_0010_0000_0000
SFMASK = 0x47700
PAT = 0x0007_0406_0007_0406
CR0 = K.CR0_PE | K.CR0_MP | K.CR0_ET | K.CR0_NE | K.CR0_WP | K.CR0_AM | K.CR0_PG
EFER = K.EFER_SCE | K.EFER_LME | K.EFER_LMA | K.EFER_NXE
XCR0_WANTED = K.XFEATURE_X87 | K.XFEATURE_SSE | K.XFEATURE_AVX | K.XFEATURE_AVX512
USER_RFLAGS_FORCED = K.RFLAGS_IF | K.RFLAGS_FIXED
IST_VECTORS = (K.VEC_NMI, K.VEC_DF, K.VEC_MC)
USER_GATE_VECTORS = (K.VEC_BP, K.VEC_OF)  # int3 / into are allowed from ring 3

_TABLE = K.PTE_P | K.PTE_RW | K.PTE_US | K.PTE_A
_RESUME_FRAME = struct.Struct("<5Q")   # rip, cs, rflags, rsp, ss
_FAULT_FRAME = struct.Struct("<7Q")    # see stub.FRAME_*


# Where a vCPU is between run() calls.
_USER = 0    # in user mode: regs go straight in
_STUB = 1    # waiting in ring 0 after an exit: run() returns through the iretq with regs
_IRET = 2    # entered at the iretq; until the next exit _saved holds the user state it restores
_BROKEN = 3  # after a MachineError

# Hot-path constants as module globals.
_get_ident = threading.get_ident
_KVM_RUN = K.KVM_RUN
_EXIT_IO = K.KVM_EXIT_IO
_SYNC_REGS = K.KVM_SYNC_X86_REGS
_RFLAGS_USER = K.RFLAGS_USER
_PORT_SYSCALL = stub.PORT_SYSCALL
_PORT_FAULT = stub.PORT_FAULT


class MachineError(Exception):
    """The VM did something the machine layer cannot explain (a bug, or a
    hypervisor refusing state); the vCPU should not be run again."""


def _ignore_kick(signum: int, frame: Any) -> None:
    pass


def install_kick_handler() -> None:
    """Install the no-op KICK_SIGNAL handler; must run in the main thread
    before any vCPU thread can be kicked (Machine() does it when it can)."""
    if signal.getsignal(KICK_SIGNAL) is not _ignore_kick:
        signal.signal(KICK_SIGNAL, _ignore_kick)


class Machine:
    """A VM, its memslots (one per PhysicalMemory chunk) and its vCPUs."""

    def __init__(self, phys: PhysicalMemory):
        reason = unavailable_reason()
        if reason is not None:
            raise MachineError(reason)
        if threading.current_thread() is threading.main_thread():
            install_kick_handler()
        elif signal.getsignal(KICK_SIGNAL) is not _ignore_kick:
            raise MachineError("call install_kick_handler() from the main thread before Machine()")
        self.flavour: str = kvm_flavour() or "unknown"
        self.phys = phys
        self._lock = threading.Lock()          # vCPUs and the system area
        self._region_lock = threading.Lock()   # memslots (phys may grow while _lock is held)
        self._pool: list[Vcpu] = []
        self._vcpus: list[Vcpu] = []
        self._initial_xsave: bytes | None = None
        self._slots: dict[int, int] = {}   # region gpa -> memslot
        self._free_slots: list[int] = []
        self._next_slot = 0
        self._pts: dict[int, int] = {}     # page tables of the system area, by va >> 21
        self._pds: dict[int, int] = {}     # its page directories, by va >> 30
        self.kvm_fd = K.open_kvm()
        self.vm_fd = -1
        try:
            self.vm_fd = fcntl.ioctl(self.kvm_fd, K.KVM_CREATE_VM, 0)
            os.set_inheritable(self.vm_fd, False)
            self.run_size = fcntl.ioctl(self.kvm_fd, K.KVM_GET_VCPU_MMAP_SIZE, 0)
            self.cpuid = K.get_supported_cpuid(self.kvm_fd)
            self.max_vcpus = min(K.check_extension(self.vm_fd, K.KVM_CAP_MAX_VCPUS) or 255, MAX_CPU_AREAS)
            # With vCPU attributes every vCPU's TSC offset is set to 0, so guest
            # code reads the host's TSC (what the vDSO's clock is built on).
            self.host_tsc = bool(K.check_extension(self.vm_fd, K.KVM_CAP_VCPU_ATTRIBUTES))
            self.tsc_khz = 0  # the vCPUs' TSC rate, known once one exists
            self._features()
            self._build_system_area()
            phys.set_listener(self._add_region)
        except BaseException:
            self.close()
            raise

    # --- guest-physical memory ---
    def _add_region(self, region: Any) -> None:
        size = getattr(region, "size", None) or CHUNK_SIZE
        flags = K.KVM_MEM_READONLY if getattr(region, "readonly", False) else 0
        with self._region_lock:
            if self._free_slots:
                slot = self._free_slots.pop()
            else:
                slot, self._next_slot = self._next_slot, self._next_slot + 1
            K.set_user_memory_region(self.vm_fd, slot, region.gpa, size, region.host_addr, flags)
            self._slots[region.gpa] = slot

    def remove_region(self, region: Any) -> None:
        """Delete the memslot of a region added through the listener."""
        with self._region_lock:
            slot = self._slots.pop(region.gpa)
            K.set_user_memory_region(self.vm_fd, slot, region.gpa, 0, 0)
            self._free_slots.append(slot)

    # --- setup ---
    def _cpuid_entry(self, function: int, index: int = 0):
        for i in range(self.cpuid.nent):
            e = self.cpuid.entries[i]
            if e.function == function and e.index == index:
                return e
        return None

    def _features(self) -> None:
        """CR4 and XCR0 as wanted, less what the (guest) CPUID denies."""
        leaf1, leaf7, leafd = self._cpuid_entry(1), self._cpuid_entry(7), self._cpuid_entry(0xD)
        cr4 = K.CR4_PAE | K.CR4_OSFXSR | K.CR4_OSXMMEXCPT
        if leaf1 is not None and leaf1.edx & (1 << 13):
            cr4 |= K.CR4_PGE
        if leaf7 is not None and leaf7.ebx & 1:
            cr4 |= K.CR4_FSGSBASE
        if leaf1 is not None and leaf1.ecx & (1 << 26):
            cr4 |= K.CR4_OSXSAVE
        xcr0 = 0
        if leafd is not None:
            xcr0 = XCR0_WANTED & (leafd.eax | (leafd.edx << 32))
            if xcr0 & K.XFEATURE_AVX512 != K.XFEATURE_AVX512 or not xcr0 & K.XFEATURE_AVX:
                xcr0 &= ~K.XFEATURE_AVX512
        self.cr4, self.xcr0 = cr4, xcr0

    def _frame(self, data: bytes = b"") -> int:
        gpa = self.phys.alloc()
        if data:
            self.phys.write(gpa, data)
        return gpa

    def _build_system_area(self) -> None:
        phys = self.phys
        self._pdpt = self._frame()
        self.system_pml4e: int = self._pdpt | _TABLE
        self._trampoline = self._frame(stub.TRAMPOLINE)
        self._idt = self._frame(self._idt_bytes())
        self._ring0 = self._frame(stub.RING0)
        self._map(TRAMPOLINE_VA, self._trampoline, user=True, execute=True)
        self._map(IDT_VA, self._idt)
        self._map(RING0_VA, self._ring0, execute=True)
        self._map(GUEST_MMAP_VA, self._frame(), user=True)
        # An address space with nothing but the system area: the CR3 a fresh vCPU starts with.
        self.idle_pml4 = self._frame()
        phys.write_u64(self.idle_pml4 + 8 * SYSTEM_PML4_INDEX, self.system_pml4e)

    @staticmethod
    def _idt_bytes() -> bytes:
        out = bytearray()
        for v in range(stub.NUM_VECTORS):
            target = RING0_VA + v * stub.VECTOR_STRIDE
            ist = 1 if v in IST_VECTORS else 0
            attr = 0xEE if v in USER_GATE_VECTORS else 0x8E  # present interrupt gate, DPL 3 or 0
            low = ((target & 0xFFFF) | (KERNEL_CS << 16) | (ist << 32) | (attr << 40)
                   | (((target >> 16) & 0xFFFF) << 48))
            out += struct.pack("<QQ", low, target >> 32)
        return bytes(out)

    def _map(self, va: int, gpa: int, user: bool = False, write: bool = False, execute: bool = False) -> None:
        """Add a 4 KiB mapping to the system area (never removed or changed)."""
        assert SYSTEM_BASE <= va < SYSTEM_BASE + (1 << 39)
        pd = self._pds.get(va >> 30)
        if pd is None:
            pd = self._pds[va >> 30] = self._frame()
            self.phys.write_u64(self._pdpt + 8 * ((va >> 30) & 511), pd | _TABLE)
        pt = self._pts.get(va >> 21)
        if pt is None:
            pt = self._pts[va >> 21] = self._frame()
            self.phys.write_u64(pd + 8 * ((va >> 21) & 511), pt | _TABLE)
        pte = gpa | K.PTE_P | K.PTE_A | K.PTE_G
        if user:
            pte |= K.PTE_US
        if write:
            pte |= K.PTE_RW | K.PTE_D
        if not execute:
            pte |= K.PTE_NX
        self.phys.write_u64(pt + 8 * ((va >> 12) & 511), pte)

    def _new_cpu_area(self, index: int) -> tuple[int, int, int]:
        """Map vCPU ``index``'s stack and GDT+TSS page; returns (stack gpa,
        stack top va, GDT va)."""
        if index >= self.max_vcpus:
            raise MachineError(f"at most {self.max_vcpus} vCPUs")
        base = CPU_AREA_VA + index * CPU_AREA_SIZE
        stack_va, gdt_va = base + PAGE_SIZE, base + 2 * PAGE_SIZE
        stack_top = stack_va + PAGE_SIZE
        tss_va = gdt_va + TSS_OFFSET
        page = bytearray(PAGE_SIZE)
        for sel, desc in GDT_ENTRIES.items():
            struct.pack_into("<Q", page, sel, desc)
        low = ((TSS_LIMIT & 0xFFFF) | ((tss_va & 0xFFFFFF) << 16) | (0x89 << 40)
               | (((TSS_LIMIT >> 16) & 0xF) << 48) | (((tss_va >> 24) & 0xFF) << 56))
        struct.pack_into("<QQ", page, TSS_SEL, low, tss_va >> 32)
        struct.pack_into("<Q", page, TSS_OFFSET + 4, stack_top)        # RSP0
        struct.pack_into("<Q", page, TSS_OFFSET + 36, stack_top)       # IST1
        struct.pack_into("<H", page, TSS_OFFSET + 102, TSS_IOMAP_BASE)
        page[TSS_OFFSET + TSS_IOMAP_BASE:TSS_OFFSET + TSS_IOMAP_BASE + len(IO_BITMAP)] = IO_BITMAP
        stack_gpa = self._frame()
        self._map(stack_va, stack_gpa, write=True)
        self._map(gdt_va, self._frame(bytes(page)))
        return stack_gpa, stack_top, gdt_va

    # --- vCPUs ---
    def new_vcpu(self) -> "Vcpu":
        """A vCPU with zeroed registers, FS/GS base 0, the initial FPU state
        and the idle address space.  A released one is reset and reused when
        available: creating one costs KVM_CREATE_VCPU, CPUID and a handful of
        setup ioctls.  Allocates frames from phys for a new one."""
        with self._lock:
            if self._pool:
                vcpu = self._pool.pop()
                vcpu._reset()
                return vcpu
            index = len(self._vcpus)
            vcpu = Vcpu(self, index, *self._new_cpu_area(index))
            self._vcpus.append(vcpu)
            if self._initial_xsave is None:
                self._initial_xsave = vcpu.get_xsave()
            return vcpu

    def _release(self, vcpu: "Vcpu") -> None:
        with self._lock:
            if vcpu._mode != _BROKEN:
                self._pool.append(vcpu)

    def close(self) -> None:
        for v in self._vcpus:
            v._close()
        self._vcpus.clear()
        self._pool.clear()
        # The frames of the system area stay allocated in phys.
        if getattr(self.phys, "on_new_chunk", None) == self._add_region:
            self.phys.on_new_chunk = None
        if self.vm_fd >= 0:
            os.close(self.vm_fd)
            self.vm_fd = -1
        if self.kvm_fd >= 0:
            os.close(self.kvm_fd)
            self.kvm_fd = -1


def _segment(seg: K.kvm_segment, selector: int, type_: int, dpl: int, code64: bool = False,
             base: int = 0) -> None:
    seg.base, seg.limit, seg.selector, seg.type = base, 0xFFFFFFFF, selector, type_
    seg.present, seg.dpl, seg.s, seg.g, seg.avl, seg.unusable = 1, dpl, 1, 1, 0, 0
    seg.l, seg.db = (1, 0) if code64 else (0, 1)


class Vcpu:
    """One vCPU.  ``regs`` (in kvm_run's sync area) always holds the app's
    user-mode registers between run() calls; see run() for each exit.

    run() must be called from one thread at a time, and that thread must not
    block KICK_SIGNAL; kick() may come from any thread."""

    def __init__(self, machine: Machine, index: int, stack_gpa: int, stack_top: int, gdt_va: int):
        self.machine = machine
        self.index = index
        self.vector = 0
        self.error_code = 0
        self.cr2 = 0
        self.kicked = False   # run() finished machine code after a kick and reported another event
        # On VMX/SVM the trampoline runs at CPL 0, so a syscall exit also returns through the iretq.
        self._mode_after_syscall = _USER if machine.flavour == "pvm" else _STUB
        self._mode = _USER
        self._thread: int | None = None
        self.exits = 0  # KVM_RUN returns so far: each one orders the vCPU's memory accesses
        self._stack_view = machine.phys.frame_view(stack_gpa)
        self._stack_va = stack_top - PAGE_SIZE
        self._resume_frame_va = stack_top - _RESUME_FRAME.size
        self._resume_frame_off = PAGE_SIZE - _RESUME_FRAME.size
        self._saved = K.kvm_regs()   # the user state while the vCPU sits at the iretq
        self._xsave = K.kvm_xsave()
        self.fd = fcntl.ioctl(machine.vm_fd, K.KVM_CREATE_VCPU, index)
        try:
            os.set_inheritable(self.fd, False)
            self._setup(machine, gdt_va, stack_top)
        except BaseException:
            os.close(self.fd)
            raise

    def _setup(self, m: Machine, gdt_va: int, stack_top: int) -> None:
        """CPUID, user-mode segments and control registers, MSRs and XCR0 by
        ioctl, once; from then on only the kvm_run sync area."""
        fd = self.fd
        fcntl.ioctl(fd, K.KVM_SET_CPUID2, m.cpuid, True)
        sregs = K.kvm_sregs()
        fcntl.ioctl(fd, K.KVM_GET_SREGS, sregs, True)
        _segment(sregs.cs, USER_CS, 11, 3, code64=True)
        for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            _segment(seg, USER_DS, 3, 3)
        tr = sregs.tr
        tr.base, tr.limit, tr.selector, tr.type, tr.present = gdt_va + TSS_OFFSET, TSS_LIMIT, TSS_SEL, 11, 1
        tr.dpl = tr.s = tr.l = tr.db = tr.g = tr.unusable = 0
        ldt = sregs.ldt
        ldt.base, ldt.limit, ldt.selector, ldt.type, ldt.present, ldt.unusable = 0, 0xFFFF, 0, 2, 0, 1
        sregs.gdt.base, sregs.gdt.limit = gdt_va, GDT_LIMIT
        sregs.idt.base, sregs.idt.limit = IDT_VA, stub.NUM_VECTORS * 16 - 1
        sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = CR0, m.idle_pml4, m.cr4, EFER
        fcntl.ioctl(fd, K.KVM_SET_SREGS, sregs, True)
        regs = K.kvm_regs()
        regs.rflags = USER_RFLAGS_FORCED
        fcntl.ioctl(fd, K.KVM_SET_REGS, regs, True)
        K.set_msrs(fd, {K.MSR_STAR: STAR, K.MSR_LSTAR: SYSCALL_ENTRY_VA, K.MSR_CSTAR: SYSCALL_ENTRY_VA,
                        K.MSR_SYSCALL_MASK: SFMASK, K.MSR_PAT: PAT, K.MSR_FS_BASE: 0, K.MSR_GS_BASE: 0,
                        K.MSR_KERNEL_GS_BASE: 0})
        if m.host_tsc:
            K.vcpu_attr(fd, K.KVM_VCPU_TSC_CTRL, K.KVM_VCPU_TSC_OFFSET, 0)
            if not m.tsc_khz:
                m.tsc_khz = fcntl.ioctl(fd, K.KVM_GET_TSC_KHZ, 0)
        if m.xcr0:
            xcrs = K.kvm_xcrs()
            xcrs.nr_xcrs = 1
            xcrs.xcrs[0].xcr, xcrs.xcrs[0].value = 0, m.xcr0
            fcntl.ioctl(fd, K.KVM_SET_XCRS, xcrs, True)
        self._run_map = mmap.mmap(fd, m.run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._run = K.kvm_run.from_buffer(self._run_map)
        self._io = self._run.exit.io
        sync = self._run.s.regs
        self.regs: K.kvm_regs = sync.regs
        self._sregs: K.kvm_sregs = sync.sregs
        # The sync area holds what KVM made of the above until the first exit refreshes it.
        fcntl.ioctl(fd, K.KVM_GET_REGS, self.regs, True)
        fcntl.ioctl(fd, K.KVM_GET_SREGS, self._sregs, True)
        self._run.kvm_valid_regs = K.KVM_SYNC_X86_REGS | K.KVM_SYNC_X86_SREGS
        self._dirty = K.KVM_SYNC_X86_REGS

    def _reset(self) -> None:
        """Fresh user state for a vCPU out of the pool (nothing of the
        previous app may leak: registers, FPU/vector state, segment bases)."""
        ctypes.memset(ctypes.addressof(self.regs), 0, ctypes.sizeof(K.kvm_regs))
        self.regs.rflags = USER_RFLAGS_FORCED
        self.fs_base = self.gs_base = 0
        self.set_cr3(self.machine.idle_pml4)
        if self.machine._initial_xsave is not None:
            self.set_xsave(self.machine._initial_xsave)
        self.kicked = False
        self._run.immediate_exit = 0

    # --- state ---
    @property
    def fs_base(self) -> int:
        return self._sregs.fs.base

    @fs_base.setter
    def fs_base(self, value: int) -> None:
        self._sregs.fs.base = value
        self._dirty |= K.KVM_SYNC_X86_SREGS

    @property
    def gs_base(self) -> int:
        return self._sregs.gs.base

    @gs_base.setter
    def gs_base(self, value: int) -> None:
        self._sregs.gs.base = value
        self._dirty |= K.KVM_SYNC_X86_SREGS

    def set_cr3(self, gpa: int) -> None:
        """Run the address space whose PML4 is at ``gpa`` from the next run()."""
        if self._sregs.cr3 != gpa:
            self._sregs.cr3 = gpa
            self._dirty |= K.KVM_SYNC_X86_SREGS

    @property
    def cr3(self) -> int:
        return self._sregs.cr3

    def get_xsave(self) -> bytes:
        """The FPU/SSE/AVX state (KVM_GET_XSAVE, 4096 bytes, standard format)."""
        fcntl.ioctl(self.fd, K.KVM_GET_XSAVE, self._xsave, True)
        return bytes(self._xsave)

    def set_xsave(self, data: bytes) -> None:
        if len(data) != K.XSAVE_SIZE:
            raise ValueError(f"xsave area must be {K.XSAVE_SIZE} bytes")
        ctypes.memmove(ctypes.addressof(self._xsave), data, K.XSAVE_SIZE)
        fcntl.ioctl(self.fd, K.KVM_SET_XSAVE, self._xsave, True)

    # --- running ---
    @property
    def in_guest(self) -> bool:
        """Inside KVM_RUN now (or about to be)."""
        return self._thread is not None

    def kick(self) -> None:
        """Make the current or the next run() return promptly; any thread."""
        self._run.immediate_exit = 1
        thread = self._thread
        if thread is not None:
            try:
                signal.pthread_kill(thread, KICK_SIGNAL)
            except OSError:
                pass  # it left run() meanwhile; immediate_exit catches the next one

    def run(self) -> int:
        """Run user code until the next event.

        EXIT_SYSCALL: regs as Linux's pt_regs at syscall entry (rax = nr,
        args in rdi rsi rdx r10 r8 r9, rip after the syscall, rcx/r11 as the
        CPU left them); set regs.rax to the result and run() again.
        EXIT_FAULT: vector, error_code, cr2 describe the exception and regs
        are the user state at the faulting instruction; run() retries it or
        goes wherever the caller pointed regs.  A bad target (non-canonical
        rip, say) comes back as a fault of that state.
        EXIT_INTERRUPTED: kick() or a host signal; regs are at an instruction
        boundary.  A kick that lands in the trampoline on PVM is reported
        at the syscall instruction or after the call (stub.unwind); one that
        lands in other machine code (the stub, or the trampoline in ring 0)
        is finished internally and reported with the next real event, with
        ``kicked`` set.
        """
        self.kicked = False
        regs = self.regs
        regs.rflags = (regs.rflags & _RFLAGS_USER) | USER_RFLAGS_FORCED
        mode = self._mode
        if mode == _STUB:
            self._enter_via_iret(regs)
        elif mode == _BROKEN:
            raise MachineError("this vCPU failed earlier and cannot run")
        reason = self._enter()
        while reason < 0:  # interrupted
            rip = regs.rip
            if rip < USER_LIMIT:
                self._mode = _USER
                return EXIT_INTERRUPTED
            if TRAMPOLINE_VA <= rip < TRAMPOLINE_END and self._mode_after_syscall == _USER:
                # In the trampoline, in user mode (PVM): where the call began or ended.
                regs.rax, regs.rip = stub.unwind(rip - TRAMPOLINE_VA, regs.rax, regs.rcx)
                regs.rflags = (regs.r11 & _RFLAGS_USER) | USER_RFLAGS_FORCED
                self._mode = _USER
                return EXIT_INTERRUPTED
            if rip == IRET_VA and self._mode == _IRET:
                # Still waiting at the iretq: the user state is the saved one.
                ctypes.pointer(regs)[0] = self._saved
                self._mode = _STUB
                return EXIT_INTERRUPTED
            # Inside the stub or the trampoline: finish it, report what it reports.
            self.kicked = True
            reason = self._enter()
        if reason == _EXIT_IO:
            port = self._io.port
            if port == _PORT_SYSCALL and SYSCALL_OUT_VA <= regs.rip <= SYSCALL_OUT_VA + 2:
                regs.rip = regs.rcx
                regs.rflags = (regs.r11 & _RFLAGS_USER) | USER_RFLAGS_FORCED
                self._mode = self._mode_after_syscall
                return EXIT_SYSCALL
            if port == _PORT_FAULT:
                return self._fault(regs)
            if regs.rip < USER_LIMIT:
                return self._user_port_io(regs)
        self._mode = _BROKEN
        raise MachineError(self._describe_exit(reason))

    def _enter(self) -> int:
        """KVM_RUN once: the exit reason, or -1 when interrupted."""
        run = self._run
        run.kvm_dirty_regs = self._dirty
        self._dirty = _SYNC_REGS
        self._thread = _get_ident()
        try:
            fcntl.ioctl(self.fd, _KVM_RUN, 0)
        except InterruptedError:
            run.immediate_exit = 0
            return -1
        finally:
            self._thread = None
            self.exits += 1
        return run.exit_reason

    def _enter_via_iret(self, regs: K.kvm_regs) -> None:
        """Resume user mode from the stub: iret frame from regs, enter at the iretq."""
        ctypes.pointer(self._saved)[0] = regs
        _RESUME_FRAME.pack_into(self._stack_view, self._resume_frame_off,
                                regs.rip, USER_CS, regs.rflags, regs.rsp, USER_DS)
        regs.rip = IRET_VA
        regs.rsp = self._resume_frame_va
        regs.rflags = K.RFLAGS_FIXED
        self._mode = _IRET

    def _fault(self, regs: K.kvm_regs) -> int:
        off = regs.rsp - self._stack_va
        if not (FAULT_OUT_VA <= regs.rip <= FAULT_OUT_VA + 2 and 0 <= off <= PAGE_SIZE - _FAULT_FRAME.size):
            self._mode = _BROKEN
            raise MachineError(f"fault exit from an unexpected place: rip={regs.rip:#x} rsp={regs.rsp:#x}")
        vector, error, rip, cs, rflags, rsp, _ss = _FAULT_FRAME.unpack_from(self._stack_view, off)
        self.vector, self.error_code, self.cr2 = vector, error, self._sregs.cr2
        if cs & 3 == 3:
            regs.rip, regs.rflags, regs.rsp = rip, rflags, rsp
        elif rip == IRET_VA and self._mode == _IRET:
            # The iretq itself faulted (a bad user rip, rsp or rflags): report
            # it as a fault of the user state the caller asked for.
            ctypes.pointer(regs)[0] = self._saved
        else:
            self._mode = _BROKEN
            raise MachineError(f"vector {vector} (error {error:#x}, cr2 {self.cr2:#x}) in ring 0 at {rip:#x}")
        self._mode = _STUB
        return EXIT_FAULT

    def _user_port_io(self, regs: K.kvm_regs) -> int:
        """The app itself did I/O on the open port: let KVM finish the
        instruction without running further (immediate_exit), so nothing is
        left pending, and report it as the #GP Linux would give."""
        self._run.immediate_exit = 1
        if self._enter() >= 0:
            self._mode = _BROKEN
            raise MachineError("KVM ran the guest despite immediate_exit")
        self.vector, self.error_code, self.cr2 = K.VEC_GP, 0, 0
        self._mode = _USER
        return EXIT_FAULT

    def _describe_exit(self, reason: int) -> str:
        run = self._run
        rip = self.regs.rip
        if reason == K.KVM_EXIT_IO:
            io = run.exit.io
            return f"unexpected I/O exit: port {io.port:#x} direction {io.direction} at rip {rip:#x}"
        if reason == K.KVM_EXIT_SHUTDOWN:
            return f"the vCPU shut down (triple fault) at rip {rip:#x}"
        if reason == K.KVM_EXIT_INTERNAL_ERROR:
            i = run.exit.internal
            data = [hex(i.data[n]) for n in range(min(i.ndata, 16))]
            return f"KVM internal error, suberror {i.suberror}, data {data} at rip {rip:#x}"
        if reason == K.KVM_EXIT_FAIL_ENTRY:
            return f"VM entry failed: reason {run.exit.fail_entry.hardware_entry_failure_reason:#x}"
        if reason == K.KVM_EXIT_MMIO:
            return f"access to unbacked guest-physical {run.exit.mmio.phys_addr:#x} at rip {rip:#x}"
        return f"unexpected exit reason {reason} at rip {rip:#x}"

    def release(self) -> None:
        """Back to the machine's pool; the next new_vcpu() may hand it out
        (reset).  A vCPU that raised MachineError is not reused."""
        self.machine._release(self)

    def _close(self) -> None:
        if self.fd < 0:
            return
        del self.regs, self._sregs, self._io, self._run
        self._stack_view.release()
        try:
            self._run_map.close()
        except BufferError:
            pass  # a caller still holds regs: the mapping goes when they do
        os.close(self.fd)
        self.fd = -1
