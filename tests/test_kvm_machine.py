"""The KVM machine layer (platforms/kvm/machine.py) against a real /dev/kvm.

Each test builds a tiny address space by hand (4-level page tables in frames
from PhysicalMemory, PML4 slot 255 = machine.system_pml4e), loads
hand-assembled code and plays the Sentry's part.  The guest programs were
assembled once with GNU as; their source is in the comment above each.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
import threading
import time

import pytest

from pysc.core.mm.physical import PAGE_SIZE, PhysicalMemory
from pysc.platforms.kvm import kvmapi as K
from pysc.platforms.kvm import stub
from pysc.platforms.kvm.machine import (
    CPU_AREA_VA, EXIT_FAULT, EXIT_INTERRUPTED, EXIT_SYSCALL, RING0_VA, SYSTEM_PML4_INDEX,
    TRAMPOLINE_VA, USER_LIMIT, Machine)
from pysc.platforms.kvm.probe import kvm_flavour, unavailable_reason

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"KVM is unusable here: {REASON}")

CODE_VA = 0x40_0000
DATA_VA = 0x60_0000
STACK_TOP = 0x7000_0000

# --- guest programs ---
# SYSCALL_LOOP: ten syscalls with six arguments, CF set before each; sums
# rax + CF (the flags must survive the syscall) and exits with the sum.
#   xor %ebx, %ebx;  mov $10, %r12d
# 1: mov $39, %eax;  mov %r12, %rdi;  mov $0x1111, %esi;  mov $0x2222, %edx
#   mov $0x3333, %r10d;  mov $0x4444, %r8d;  mov $0x5555, %r9d
#   stc;  syscall;  adc %rax, %rbx;  dec %r12;  jnz 1b
#   mov %rbx, %rdi;  mov $60, %eax;  syscall;  ud2
SYSCALL_LOOP = bytes.fromhex(
    "31db41bc0a000000b8270000004c89e7be11110000ba2222000041ba3333000041b84444000041b955550000"
    "f90f054811c349ffcc75d14889dfb83c0000000f050f0b")
SYSCALL_LOOP_AFTER = SYSCALL_LOOP.index(b"\x0f\x05") + 2   # offset after the loop's syscall

# STORE_LOAD: a store and a load through rbx, then exit(rax) with the loaded value in rdx.
#   mov $0x12345678, %eax;  mov $0xdeadbeef, %ecx;  mov %rcx, (%rbx);  mov (%rbx), %rdx
#   mov %rax, %rdi;  mov $60, %eax;  syscall;  ud2
STORE_LOAD = bytes.fromhex("b878563412b9efbeadde48890b488b134889c7b83c0000000f050f0b")
STORE_LOAD_STORE = 0x0A     # offset of the store

# UD2:  nop;  ud2
UD2 = bytes.fromhex("900f0b")

# SPIN: 1: inc %rax;  jmp 1b
SPIN = bytes.fromhex("48ffc0ebfb")

# LOAD_ACCUMULATE:
# 1: mov 0x600000, %rdi;  add %rdi, %r12;  mov %r12, %rsi;  mov $39, %eax;  syscall;  jmp 1b
LOAD_ACCUMULATE = bytes.fromhex("488b3c25000060004901fc4c89e6b8270000000f05ebe9")

# FS_GS:  mov %fs:0, %rdi;  mov %gs:8, %rsi;  mov $39, %eax;  syscall;  ud2
FS_GS = bytes.fromhex("64488b3c250000000065488b342508000000b8270000000f050f0b")

# SSE_AVX: doubles 4 floats at (rbx) into 16(rbx) with xmm0 and, when r12 != 0,
# 8 floats at 32(rbx) into 64(rbx) with ymm1; then a syscall.
#   movups (%rbx), %xmm0;  addps %xmm0, %xmm0;  movups %xmm0, 16(%rbx);  test %r12, %r12;  jz 1f
#   vmovups 32(%rbx), %ymm1;  vaddps %ymm1, %ymm1, %ymm1;  vmovups %ymm1, 64(%rbx)
# 1: mov $39, %eax;  syscall;  ud2
SSE_AVX = bytes.fromhex(
    "0f10030f58c00f1143104d85e4740ec5fc104b20c5f458c9c5fc114b40b8270000000f050f0b")

# SSE_AVX_STORE: stores xmm0 at 128(rbx) and, when r12 != 0, ymm1 at 160(rbx).
#   movups %xmm0, 128(%rbx);  test %r12, %r12;  jz 1f;  vmovups %ymm1, 160(%rbx)
# 1: mov $39, %eax;  syscall;  ud2
SSE_AVX_STORE = bytes.fromhex("0f1183800000004d85e47408c5fc118ba0000000b8270000000f050f0b")

# PORT_IO: the app doing port I/O itself.
#   mov $0x1234, %eax;  outb %al, $0x10;  inb $0x10, %al;  outb %al, $0x12;  ud2
PORT_IO = bytes.fromhex("b834120000e610e410e6120f0b")

PF_USER_WRITE = K.PF_USER | K.PF_WRITE


class AddressSpace:
    """Hand-built 4-level page tables: just enough to place pages."""

    def __init__(self, phys: PhysicalMemory, machine: Machine):
        self.phys = phys
        self.pml4 = phys.alloc()
        phys.write_u64(self.pml4 + 8 * SYSTEM_PML4_INDEX, machine.system_pml4e)

    def _next(self, table: int, index: int) -> int:
        entry = self.phys.read_u64(table + 8 * index)
        if not entry & K.PTE_P:
            new = self.phys.alloc()
            self.phys.write_u64(table + 8 * index, new | K.PTE_P | K.PTE_RW | K.PTE_US)
            return new
        return entry & K.PTE_ADDR_MASK

    def map(self, va: int, data: bytes = b"", write: bool = False, execute: bool = False) -> int:
        table = self.pml4
        for shift in (39, 30, 21):
            table = self._next(table, (va >> shift) & 511)
        gpa = self.phys.alloc()
        if data:
            self.phys.write(gpa, data)
        pte = gpa | K.PTE_P | K.PTE_US | (K.PTE_RW if write else 0) | (0 if execute else K.PTE_NX)
        self.phys.write_u64(table + 8 * ((va >> 12) & 511), pte)
        return gpa


@pytest.fixture
def phys():
    p = PhysicalMemory()
    yield p
    p.close()


@pytest.fixture
def machine(phys):
    m = Machine(phys)
    yield m
    m.close()


def start(machine: Machine, phys: PhysicalMemory, code: bytes, data: bytes = b""):
    """A fresh vCPU at CODE_VA in a new address space with a data page and a stack."""
    aspace = AddressSpace(phys, machine)
    aspace.map(CODE_VA, code, execute=True)
    data_gpa = aspace.map(DATA_VA, data, write=True)
    aspace.map(STACK_TOP - PAGE_SIZE, write=True)
    vcpu = machine.new_vcpu()
    vcpu.set_cr3(aspace.pml4)
    vcpu.regs.rip, vcpu.regs.rsp = CODE_VA, STACK_TOP
    return vcpu, aspace, data_gpa


class Watchdog:
    """Kicks a vCPU that should have stopped long ago, so a broken kick fails
    the test instead of hanging it."""

    def __init__(self, vcpu, seconds: float = 10.0):
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire, args=(vcpu,))
        self._timer.daemon = True

    def _fire(self, vcpu):
        self.fired = True
        vcpu.kick()

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()


def test_probe():
    assert kvm_flavour() in ("pvm", "vmx", "svm")
    if os.path.isdir("/sys/module/kvm_pvm"):
        assert kvm_flavour() == "pvm"


def test_stub_bytes_match_source(tmp_path):
    if shutil.which("as") is None or shutil.which("objcopy") is None:
        pytest.skip("GNU as/objcopy not installed")
    (tmp_path / "stub.s").write_text(stub.SOURCE)
    subprocess.run(["as", "--64", "-o", "stub.o", "stub.s"], cwd=tmp_path, check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", "stub.o", "stub.bin"], cwd=tmp_path, check=True)
    assert (tmp_path / "stub.bin").read_bytes() == stub.RING0 + stub.TRAMPOLINE
    symbols = subprocess.run(["nm", "stub.o"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    offsets = {name: int(value, 16) for value, _kind, name in (line.split() for line in symbols.splitlines())}
    base = offsets["trampoline"]
    assert {name: offsets[name] - base for name in stub.LABELS} == stub.LABELS
    assert offsets["page"] - base == stub.GUEST_MMAP_OFFSET
    assert offsets["flags_not_kept"] == stub.FLAGS_NOT_KEPT
    assert [offsets[n] - offsets["page"] for n in ("max_len", "gap_lo", "gap_hi", "top", "prot", "scratch")] == \
        [stub.PAGE_MAX_LEN, stub.PAGE_GAP_LO, stub.PAGE_GAP_HI, stub.PAGE_TOP, stub.PAGE_PROT, stub.PAGE_SCRATCH]
    assert stub.FLAGS_NOT_KEPT == K.RFLAGS_USER & ~(K.RFLAGS_CF | K.RFLAGS_PF | K.RFLAGS_AF | K.RFLAGS_ZF
                                                    | K.RFLAGS_SF)


def test_syscall_loop(machine, phys):
    vcpu, _, _ = start(machine, phys, SYSCALL_LOOP)
    expected_sum = 0
    for i in range(10, 0, -1):
        assert vcpu.run() == EXIT_SYSCALL
        r = vcpu.regs
        args = (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9)
        assert r.rax == 39 and args == (i, 0x1111, 0x2222, 0x3333, 0x4444, 0x5555)
        assert r.rip == r.rcx == CODE_VA + SYSCALL_LOOP_AFTER
        assert r.r11 & K.RFLAGS_CF and r.rflags & K.RFLAGS_CF and r.rflags & K.RFLAGS_IF
        assert not r.rflags & K.RFLAGS_IOPL
        assert r.rsp == STACK_TOP
        r.rax = 1000 * i
        expected_sum += 1000 * i + 1  # + CF
    assert vcpu.run() == EXIT_SYSCALL
    assert vcpu.regs.rax == 60
    assert vcpu.regs.rdi == expected_sum


def test_page_fault_then_retry(machine, phys):
    vcpu, aspace, _ = start(machine, phys, STORE_LOAD)
    target = 0x1234_5000
    vcpu.regs.rbx = target + 0x18
    assert vcpu.run() == EXIT_FAULT
    assert vcpu.vector == K.VEC_PF
    assert vcpu.cr2 == target + 0x18
    assert vcpu.error_code == PF_USER_WRITE  # not present, write, user
    r = vcpu.regs
    assert r.rip == CODE_VA + STORE_LOAD_STORE
    assert r.rax == 0x12345678 and r.rcx == 0xDEADBEEF and r.rsp == STACK_TOP
    assert r.rflags & K.RFLAGS_IF
    gpa = aspace.map(target, write=True)
    assert vcpu.run() == EXIT_SYSCALL
    assert (vcpu.regs.rax, vcpu.regs.rdi, vcpu.regs.rdx) == (60, 0x12345678, 0xDEADBEEF)
    assert phys.read_u64(gpa + 0x18) == 0xDEADBEEF


def test_null_write_and_read_only_page(machine, phys):
    vcpu, aspace, _ = start(machine, phys, STORE_LOAD)
    vcpu.regs.rbx = 0
    assert vcpu.run() == EXIT_FAULT
    assert (vcpu.vector, vcpu.cr2, vcpu.error_code) == (K.VEC_PF, 0, PF_USER_WRITE)
    ro = 0x5000_0000
    aspace.map(ro, b"\x42" * 8)
    vcpu.regs.rbx = ro
    assert vcpu.run() == EXIT_FAULT
    assert (vcpu.vector, vcpu.cr2) == (K.VEC_PF, ro)
    assert vcpu.error_code == PF_USER_WRITE | K.PF_PROT
    assert vcpu.regs.rip == CODE_VA + STORE_LOAD_STORE


def test_ud2(machine, phys):
    vcpu, _, _ = start(machine, phys, UD2)
    vcpu.regs.rax = 0x55
    assert vcpu.run() == EXIT_FAULT
    assert vcpu.vector == K.VEC_UD
    assert vcpu.regs.rip == CODE_VA + 1
    assert vcpu.regs.rax == 0x55
    assert vcpu.run() == EXIT_FAULT  # retried
    assert vcpu.regs.rip == CODE_VA + 1


def test_machine_pages_are_out_of_reach(machine, phys):
    """The stub, the IDT and the per-vCPU stacks are supervisor-only, also
    after a return from the stub; the trampoline is readable, not writable."""
    vcpu, _, _ = start(machine, phys, STORE_LOAD)
    stack_page = CPU_AREA_VA + PAGE_SIZE  # vCPU 0's ring-0 stack
    for target in (RING0_VA, stack_page, RING0_VA - 0x1000, TRAMPOLINE_VA):
        vcpu.regs.rip, vcpu.regs.rbx = CODE_VA, target
        assert vcpu.run() == EXIT_FAULT, hex(target)
        assert (vcpu.vector, vcpu.cr2) == (K.VEC_PF, target)
        assert vcpu.error_code == PF_USER_WRITE | K.PF_PROT


def test_faults_in_the_return_path_are_user_faults(machine, phys):
    """A caller may point regs anywhere (a signal handler): bad targets come
    back as faults of that user state."""
    vcpu, _, _ = start(machine, phys, UD2)
    assert vcpu.run() == EXIT_FAULT
    vcpu.regs.rip = 0x8000_0000_0000  # non-canonical: the iretq faults
    assert vcpu.run() == EXIT_FAULT
    assert vcpu.vector == K.VEC_GP and vcpu.regs.rip == 0x8000_0000_0000
    vcpu.regs.rip = RING0_VA          # supervisor code
    assert vcpu.run() == EXIT_FAULT
    assert (vcpu.vector, vcpu.cr2, vcpu.regs.rip) == (K.VEC_PF, RING0_VA, RING0_VA)
    vcpu.regs.rip = CODE_VA
    assert vcpu.run() == EXIT_FAULT and vcpu.vector == K.VEC_UD


def test_app_port_io_is_a_general_protection_fault(machine, phys):
    """Port 0x10 is open to ring 3 for the trampoline; the app using it (or
    any other port) gets #GP, after the instruction for the open port, at it
    for a closed one."""
    vcpu, _, _ = start(machine, phys, PORT_IO)
    assert vcpu.run() == EXIT_FAULT and vcpu.vector == K.VEC_GP
    assert vcpu.regs.rip == CODE_VA + 7 and vcpu.regs.rax == 0x1234
    assert vcpu.run() == EXIT_FAULT and vcpu.vector == K.VEC_GP
    assert vcpu.regs.rip == CODE_VA + 9
    assert vcpu.run() == EXIT_FAULT and vcpu.vector == K.VEC_GP
    assert vcpu.regs.rip == CODE_VA + 9
    vcpu.regs.rip = CODE_VA + 11
    assert vcpu.run() == EXIT_FAULT and vcpu.vector == K.VEC_UD
    assert TRAMPOLINE_VA >= USER_LIMIT


def test_kick_interrupts_a_spinning_guest(machine, phys):
    vcpu, _, _ = start(machine, phys, SPIN)
    last = 0
    for _ in range(3):
        timer = threading.Timer(0.05, vcpu.kick)
        timer.start()
        with Watchdog(vcpu) as dog:
            assert vcpu.run() == EXIT_INTERRUPTED
        timer.join()
        assert not dog.fired
        assert CODE_VA <= vcpu.regs.rip < CODE_VA + len(SPIN)
        assert vcpu.regs.rax > last  # the guest kept its state and made progress
        last = vcpu.regs.rax


def test_kick_from_the_main_thread(machine, phys):
    vcpu, _, _ = start(machine, phys, SPIN)
    results = []

    def runner():
        for _ in range(2):
            results.append((vcpu.run(), vcpu.regs.rax))

    t = threading.Thread(target=runner)
    t.start()
    for _ in range(2):
        time.sleep(0.05)
        deadline = time.monotonic() + 10
        n = len(results)
        while len(results) == n and time.monotonic() < deadline:
            vcpu.kick()
            time.sleep(0.01)
    t.join(10)
    assert not t.is_alive()
    assert [e for e, _ in results] == [EXIT_INTERRUPTED, EXIT_INTERRUPTED]
    assert 0 < results[0][1] < results[1][1]


def test_kick_before_run_returns_at_once(machine, phys):
    vcpu, _, _ = start(machine, phys, UD2)
    vcpu.kick()
    assert vcpu.run() == EXIT_INTERRUPTED
    assert vcpu.regs.rip == CODE_VA
    assert vcpu.run() == EXIT_FAULT  # the kick is consumed
    # A kick while the vCPU waits to return from the stub: regs stay the user state.
    vcpu.regs.rbx = 0x77
    vcpu.kick()
    assert vcpu.run() == EXIT_INTERRUPTED
    assert (vcpu.regs.rip, vcpu.regs.rbx, vcpu.regs.rsp) == (CODE_VA + 1, 0x77, STACK_TOP)
    assert vcpu.run() == EXIT_FAULT and vcpu.regs.rip == CODE_VA + 1 and vcpu.regs.rbx == 0x77


def test_two_vcpus_two_address_spaces(machine, phys):
    a, _, _ = start(machine, phys, LOAD_ACCUMULATE, struct.pack("<Q", 1))
    b, _, _ = start(machine, phys, LOAD_ACCUMULATE, struct.pack("<Q", 100))
    assert a is not b and a.cr3 != b.cr3
    for i in range(1, 6):
        for vcpu, unit in ((a, 1), (b, 100)):
            assert vcpu.run() == EXIT_SYSCALL
            assert vcpu.regs.rsi == unit * i and vcpu.regs.rdi == unit
            vcpu.regs.rax = 0


def test_one_vcpu_switching_address_spaces(machine, phys):
    vcpu, first, _ = start(machine, phys, LOAD_ACCUMULATE, struct.pack("<Q", 1))
    second = AddressSpace(phys, machine)
    second.map(CODE_VA, LOAD_ACCUMULATE, execute=True)
    second.map(DATA_VA, struct.pack("<Q", 1000), write=True)
    total = 0
    for space, unit in ((first, 1), (second, 1000), (first, 1), (second, 1000)):
        vcpu.set_cr3(space.pml4)
        assert vcpu.run() == EXIT_SYSCALL
        total += unit
        assert vcpu.regs.rdi == unit and vcpu.regs.rsi == total


def test_fs_and_gs_base(machine, phys):
    vcpu, _, _ = start(machine, phys, FS_GS, struct.pack("<QQ", 0x1111, 0x2222))
    vcpu.fs_base = DATA_VA
    vcpu.gs_base = DATA_VA
    assert (vcpu.fs_base, vcpu.gs_base) == (DATA_VA, DATA_VA)
    assert vcpu.run() == EXIT_SYSCALL
    assert (vcpu.regs.rdi, vcpu.regs.rsi) == (0x1111, 0x2222)
    assert (vcpu.fs_base, vcpu.gs_base) == (DATA_VA, DATA_VA)
    # Set after a fault, while the vCPU waits in ring 0; and read back after it.
    assert vcpu.run() == EXIT_FAULT
    vcpu.fs_base, vcpu.gs_base = DATA_VA + 8, DATA_VA - 8
    vcpu.regs.rip = CODE_VA
    assert vcpu.run() == EXIT_SYSCALL
    assert (vcpu.regs.rdi, vcpu.regs.rsi) == (0x2222, 0x1111)
    assert (vcpu.fs_base, vcpu.gs_base) == (DATA_VA + 8, DATA_VA - 8)


def _host_has_avx() -> bool:
    with open("/proc/cpuinfo") as f:
        return any(line.startswith("flags") and " avx " in line + " " for line in f)


def test_sse_avx_and_xsave_between_vcpus(machine, phys):
    avx = _host_has_avx()
    floats = struct.pack("<4f", 1.5, 2.5, -3.0, 4.25) + bytes(16) + struct.pack("<8f", *range(1, 9))
    a, aspace, data_gpa = start(machine, phys, SSE_AVX, floats)
    a.regs.rbx, a.regs.r12 = DATA_VA, int(avx)
    assert a.run() == EXIT_SYSCALL
    doubled_x = struct.pack("<4f", 3.0, 5.0, -6.0, 8.5)
    doubled_y = struct.pack("<8f", *(2.0 * i for i in range(1, 9)))
    assert phys.read(data_gpa + 16, 16) == doubled_x
    if avx:
        assert phys.read(data_gpa + 64, 32) == doubled_y
    state = a.get_xsave()
    assert len(state) == K.XSAVE_SIZE
    assert state[160:176] == doubled_x  # XMM0 in the legacy area
    b = machine.new_vcpu()
    assert b is not a
    store = aspace.map(CODE_VA + PAGE_SIZE, SSE_AVX_STORE, execute=True)
    assert store
    b.set_cr3(aspace.pml4)
    b.regs.rip, b.regs.rsp, b.regs.rbx, b.regs.r12 = CODE_VA + PAGE_SIZE, STACK_TOP, DATA_VA, int(avx)
    b.set_xsave(state)
    assert b.run() == EXIT_SYSCALL
    assert phys.read(data_gpa + 128, 16) == doubled_x
    if avx:
        assert phys.read(data_gpa + 160, 32) == doubled_y
    assert b.get_xsave()[160:176] == doubled_x


def test_vcpu_pool_and_many_cpus(machine, phys):
    first, _, _ = start(machine, phys, SSE_AVX, struct.pack("<4f", 1, 2, 3, 4))
    first.regs.rbx = DATA_VA
    first.fs_base = DATA_VA
    assert first.run() == EXIT_SYSCALL
    used = first.get_xsave()
    first.release()
    again = machine.new_vcpu()
    assert again is first
    # Reset: nothing of the previous app is left.
    assert (again.regs.rip, again.regs.rbx, again.fs_base, again.cr3) == (0, 0, 0, machine.idle_pml4)
    fresh = machine.new_vcpu().get_xsave()
    assert again.get_xsave() == fresh != used
    vcpus = [machine.new_vcpu() for _ in range(3)]
    assert len({v.index for v in vcpus}) == 3
    # The last one still works: its GDT, TSS and stack were mapped lazily.
    last = vcpus[-1]
    aspace = AddressSpace(phys, machine)
    aspace.map(CODE_VA, UD2, execute=True)
    last.set_cr3(aspace.pml4)
    last.regs.rip = CODE_VA
    assert last.run() == EXIT_FAULT and last.vector == K.VEC_UD


def test_257_vcpus(machine, phys):
    """Enough vCPUs to need three page tables for their areas; each one has
    its own TSS and stack, so faults on any of them work."""
    if machine.max_vcpus < 257:
        pytest.skip(f"KVM allows only {machine.max_vcpus} vCPUs")
    vcpus = [machine.new_vcpu() for _ in range(257)]
    aspace = AddressSpace(phys, machine)
    aspace.map(CODE_VA, UD2, execute=True)
    for vcpu in (vcpus[0], vcpus[128], vcpus[256]):
        vcpu.set_cr3(aspace.pml4)
        vcpu.regs.rip, vcpu.regs.rax = CODE_VA, vcpu.index
        assert vcpu.run() == EXIT_FAULT and vcpu.vector == K.VEC_UD
        assert vcpu.regs.rip == CODE_VA + 1 and vcpu.regs.rax == vcpu.index


def test_extra_memory_region(machine, phys):
    """A region the memory manager adds itself: a read-only memslot."""
    fd = os.memfd_create("pysc-test-region", os.MFD_CLOEXEC)
    os.ftruncate(fd, 1 << 21)
    import mmap
    buf = mmap.mmap(fd, 1 << 21)
    buf[:8] = struct.pack("<Q", 0xFEEDF00D)
    anchor = ctypes.c_char.from_buffer(buf)

    class Region:
        gpa = 60 << 30
        size = 1 << 21
        readonly = True
        host_addr = ctypes.addressof(anchor)

    region = Region()
    phys.on_new_chunk(region)
    try:
        vcpu, aspace, _ = start(machine, phys, LOAD_ACCUMULATE)
        # Point DATA_VA's PTE at the region instead.
        table = aspace.pml4
        for shift in (39, 30, 21):
            table = phys.read_u64(table + 8 * ((DATA_VA >> shift) & 511)) & K.PTE_ADDR_MASK
        phys.write_u64(table + 8 * ((DATA_VA >> 12) & 511), region.gpa | K.PTE_P | K.PTE_US | K.PTE_NX)
        assert vcpu.run() == EXIT_SYSCALL
        assert vcpu.regs.rdi == 0xFEEDF00D
    finally:
        machine.remove_region(region)
        del anchor
        buf.close()
        os.close(fd)


def _best(fn, n: int, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best


def test_costs(machine, phys, capsys):
    """Not a benchmark gate, only a record (run with -s to see the numbers)."""
    vcpu, _, _ = start(machine, phys, LOAD_ACCUMULATE)
    syscall = _best(vcpu.run, 2000)
    f, _, _ = start(machine, phys, UD2)
    fault = _best(f.run, 1000)
    t = time.perf_counter()
    fresh = machine.new_vcpu()
    create = time.perf_counter() - t
    fresh.release()
    pooled = _best(lambda: machine.new_vcpu().release(), 1000)
    other = PhysicalMemory()
    t = time.perf_counter()
    Machine(other).close()
    whole = time.perf_counter() - t
    other.close()
    with capsys.disabled():
        print(f"\nkvm ({kvm_flavour()}): syscall exit {syscall * 1e6:.1f} us, fault exit {fault * 1e6:.1f} us, "
              f"new vcpu {create * 1e3:.2f} ms (pooled {pooled * 1e6:.1f} us), machine {whole * 1e3:.2f} ms")
    assert syscall < 0.01 and fault < 0.01
