"""mmap and munmap answered in the guest (platforms/kvm/guestmmap.py and
the trampoline in stub.py).

The Sentry's side (publish, drain, fast_gap) is tested on a MemoryManager
alone; the trampoline on a real vCPU, with this file playing the Sentry as
tests/test_kvm_machine.py does.  The guest programs were assembled once
with GNU as; their source is in the comment above each.
"""
from __future__ import annotations

import random
import struct
import threading
import time

import pytest

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.mm.mm import MemoryManager
from pysc.core.mm.pagetable import MMUFault, translate
from pysc.core.mm.physical import PAGE_SIZE, PhysicalMemory
from pysc.platforms.kvm import stub
from pysc.platforms.kvm.guestmmap import MAX_LEN, GuestMmap
from pysc.platforms.kvm.machine import (EXIT_INTERRUPTED, EXIT_SYSCALL, GUEST_MMAP_VA, SYSTEM_PML4_INDEX,
                                        TRAMPOLINE_VA, USER_LIMIT, Machine)
from pysc.platforms.kvm.probe import kvm_flavour, unavailable_reason

ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS
RW = C.PROT_READ | C.PROT_WRITE
CODE_VA = 0x40_0000
STACK_TOP = 0x7000_0000
_PAGE = struct.Struct("<5Q")

# PAIRS_THEN_TWO: 1000 x (mmap 64 KiB RW; munmap it), or-ing the munmap results
# into r13 and leaving the last address in rbx; then mmap 64 KiB RW (r14) and
# mmap 4 KiB read-only (r15); then exit.
#     mov $1000, %r12d
# 1:  mov $9, %eax;  xor %edi, %edi;  mov $0x10000, %esi;  mov $3, %edx;  mov $0x22, %r10d
#     mov $-1, %r8;  xor %r9d, %r9d;  syscall;  mov %rax, %rbx
#     mov %rax, %rdi;  mov $11, %eax;  mov $0x10000, %esi;  syscall;  or %rax, %r13
#     dec %r12;  jnz 1b
#     mov $9, %eax;  xor %edi, %edi;  mov $0x10000, %esi;  mov $3, %edx;  mov $0x22, %r10d
#     mov $-1, %r8;  xor %r9d, %r9d;  syscall;  mov %rax, %r14
#     mov $9, %eax;  xor %edi, %edi;  mov $0x1000, %esi;  mov $1, %edx;  syscall;  mov %rax, %r15
#     mov $60, %eax;  syscall;  ud2
PAIRS_THEN_TWO = bytes.fromhex(
    "41bce8030000b80900000031ffbe00000100ba0300000041ba2200000049c7c0ffffffff4531c90f054889c34889c7"
    "b80b000000be000001000f054909c549ffcc75c3b80900000031ffbe00000100ba0300000041ba2200000049c7c0ff"
    "ffffff4531c90f054989c6b80900000031ffbe00100000ba010000000f054989c7b83c0000000f050f0b")

# SAME_ADDRESS_LOOP: for ever: mmap 64 KiB RW with CF set (r14 keeps the first
# address), check CF survived and the address is the first one, munmap it and
# check it returned 0, count in r15.  Exits 1 (another address), 2 (CF lost)
# or 3 (munmap failed).
#     xor %r14d, %r14d
# 1:  mov $9, %eax;  xor %edi, %edi;  mov $0x10000, %esi;  mov $3, %edx;  mov $0x22, %r10d
#     mov $-1, %r8;  xor %r9d, %r9d;  stc;  syscall;  jnc 9f
#     test %r14, %r14;  jnz 2f;  mov %rax, %r14
# 2:  cmp %rax, %r14;  jne 8f
#     mov %rax, %rdi;  mov $11, %eax;  mov $0x10000, %esi;  syscall;  test %rax, %rax;  jnz 7f
#     inc %r15;  jmp 1b
# 7:  mov $3, %edi;  jmp 6f
# 8:  mov $1, %edi;  jmp 6f
# 9:  mov $2, %edi
# 6:  mov $60, %eax;  syscall;  ud2
SAME_ADDRESS_LOOP = bytes.fromhex(
    "4531f6b80900000031ffbe00000100ba0300000041ba2200000049c7c0ffffffff4531c9f90f0573344d85f6750349"
    "89c64939c675204889c7b80b000000be000001000f054885c0750549ffc7ebb4bf03000000eb0cbf01000000eb05bf"
    "02000000b83c0000000f050f0b")
LOOP_MMAP_NEXT = 0x27  # after the loop's mmap syscall


@pytest.fixture
def phys():
    p = PhysicalMemory()
    yield p
    p.close()


def new_mm(phys, system_pml4e: int = 0) -> MemoryManager:
    mm = MemoryManager(phys, {SYSTEM_PML4_INDEX: system_pml4e}, USER_LIMIT)
    mm.users = 1
    mm.guest_mmap = GuestMmap(mm)
    return mm


def page(mm) -> tuple[int, ...]:
    """max_len, gap_lo, gap_hi, top, prot as the guest sees them."""
    return _PAGE.unpack_from(mm.guest_mmap.view, 0)


def guest_takes(mm, length: int, prot: int) -> int:
    """What the trampoline's mmap does to the page."""
    view = mm.guest_mmap.view
    _max, lo, hi, top, _prot = page(mm)
    addr = hi - ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
    assert addr >= lo
    struct.pack_into("<Q", view, stub.PAGE_GAP_HI, addr)
    struct.pack_into("<Q", view, stub.PAGE_PROT, prot)
    return addr


# ---------------------------------------------------------------- the Sentry's side

@pytest.mark.parametrize("min_pages", [8, MAX_LEN // PAGE_SIZE])
def test_fast_gap_is_where_top_down_placement_goes(phys, min_pages):
    """For any layout, a mapping longer than skip that fits the gap goes at
    its top, and any other goes elsewhere, as get_unmapped_area decides."""
    rng = random.Random(min_pages)
    mm = MemoryManager(phys)
    mm.mmap(0x7000_0000_0000, 1 << 20, RW, ANON | C.MAP_FIXED | C.MAP_GROWSDOWN)  # a stack: guard gap
    skipped = 0
    for _ in range(300):
        if rng.random() < 0.6 or not mm.vmas:
            mm.mmap(0, rng.choice((1, 2, 3, 16, 40, 300)) * PAGE_SIZE, rng.choice((RW, C.PROT_READ)), ANON)
        else:
            v = rng.choice(mm.vmas)
            mm.munmap(v.start, min(v.end - v.start, rng.choice((1, 4, 100)) * PAGE_SIZE))
        lo, top, skip = mm.fast_gap(min_pages * PAGE_SIZE)
        assert 0 < lo and top - lo >= min_pages * PAGE_SIZE and top <= mm.mmap_base and skip < top - lo
        skipped += skip > 0
        for pages in (1, 2, 5, 17, 64, 511):
            length = pages * PAGE_SIZE
            got = mm.get_unmapped_area(0, length, C.MAP_PRIVATE)
            assert (got == top - length) == (skip < length <= top - lo), (hex(lo), hex(top), skip, length, hex(got))
    assert skipped > 10


def test_fast_gap_below_the_stack_guard(phys):
    mm = MemoryManager(phys)
    stack = mm.mmap_base - (1 << 20)
    mm.mmap(stack, 1 << 20, RW, ANON | C.MAP_FIXED | C.MAP_GROWSDOWN)
    assert mm.fast_gap(MAX_LEN)[1:] == (stack - 256 * PAGE_SIZE, 0)
    mm.mmap(mm.mmap_min_addr, mm.mmap_base - (1 << 20) - 256 * PAGE_SIZE - mm.mmap_min_addr, RW,
            ANON | C.MAP_FIXED)
    assert mm.fast_gap(MAX_LEN) == (0, 0, 0)


def test_publish_offers_the_gap(phys):
    mm = new_mm(phys)
    first = mm.mmap(0, 5 * PAGE_SIZE, RW, ANON)
    mm.mmap(first - 3 * PAGE_SIZE, PAGE_SIZE, RW, ANON | C.MAP_FIXED)  # a hole of 2 pages above
    mm.guest_mmap.publish(True)
    lo, top, skip = mm.fast_gap(MAX_LEN)
    assert (top, skip) == (first - 3 * PAGE_SIZE, 2 * PAGE_SIZE)
    assert page(mm) == (MAX_LEN, lo, top, top, 0)
    assert struct.unpack_from("<Q", mm.guest_mmap.view, stub.PAGE_SKIP)[0] == skip
    assert MAX_LEN == (2 << 20) - PAGE_SIZE
    mm.mmap(0, 2 * PAGE_SIZE, RW, ANON)  # fills the hole: published anew
    mm.guest_mmap.publish(True)
    assert struct.unpack_from("<Q", mm.guest_mmap.view, stub.PAGE_SKIP)[0] == 0


@pytest.mark.parametrize("why", ["not allowed", "two threads", "mlockall", "map count"])
def test_publish_offers_nothing(phys, why):
    mm = new_mm(phys)
    mm.guest_mmap.publish(True)
    allowed = why != "not allowed"
    if why == "two threads":
        mm.users = 2
    elif why == "mlockall":
        mm.mlockall(C.MCL_FUTURE)
    elif why == "map count":
        for k in range(C.MAX_MAP_COUNT - 1):  # fixed: no placement search
            mm.mmap(0x1000_0000 + k * PAGE_SIZE, PAGE_SIZE, C.PROT_READ if k % 2 else RW, ANON | C.MAP_FIXED)
    mm.guest_mmap.publish(allowed)
    assert page(mm)[0] == 0 and not mm.guest_mmap.offered


def test_drain_makes_the_fast_region_a_vma(phys):
    mm = new_mm(phys)
    below = mm.mmap(0, PAGE_SIZE, RW, ANON)
    mm.guest_mmap.publish(True)
    a = guest_takes(mm, 0x10000, RW)
    b = guest_takes(mm, 100, RW)
    assert (a, b) == (below - 0x10000, below - 0x11000)
    assert mm.find_vma(b) is None  # not yet
    mm.guest_mmap.drain()
    v = mm.find_vma(b)
    assert (v.start, v.end, v.prot) == (b, below + PAGE_SIZE, RW)  # merged with its neighbour, as Linux would
    mm.guest_mmap.publish(True)
    assert page(mm)[2:4] == (b, b)
    assert mm.read(a, 4) == bytes(4)


def test_drain_after_a_munmap_in_the_guest(phys):
    mm = new_mm(phys)
    mm.guest_mmap.publish(True)
    _max, _lo, _hi, top, _ = page(mm)
    guest_takes(mm, 0x4000, C.PROT_READ)
    struct.pack_into("<Q", mm.guest_mmap.view, stub.PAGE_GAP_HI, top)  # and gives it back
    mm.guest_mmap.drain()
    assert mm.vmas == []


@pytest.mark.parametrize("hi, prot", [(-1, RW), (+1, RW), ("top", RW), ("lo", 8), (0x123, RW)])
def test_drain_ignores_what_the_sentry_did_not_offer(phys, hi, prot):
    """The page is the app's to scribble on: a gap_hi outside what was
    offered, unaligned, or a bad prot gets it nothing."""
    mm = new_mm(phys)
    mm.guest_mmap.publish(True)
    _max, lo, _hi, top, _ = page(mm)
    value = {"top": top + PAGE_SIZE, "lo": top - PAGE_SIZE, -1: lo - PAGE_SIZE, +1: top + PAGE_SIZE}.get(hi)
    if value is None:
        value = top - 0x10000 + hi
    struct.pack_into("<QQ", mm.guest_mmap.view, stub.PAGE_GAP_HI, value, 0)
    struct.pack_into("<Q", mm.guest_mmap.view, stub.PAGE_PROT, prot)
    mm.guest_mmap.drain()
    assert mm.vmas == []
    mm.guest_mmap.publish(True)
    assert page(mm) == (MAX_LEN, lo, top, top, 0)


def test_the_page_is_private_and_goes_at_release(phys):
    machine_pdpt = phys.alloc_table()
    shared_pd = phys.alloc_table()
    phys.write_u64(machine_pdpt + 8, shared_pd | 0x27)
    a = new_mm(phys, machine_pdpt | 0x27)
    b = new_mm(phys, machine_pdpt | 0x27)
    ga = translate(phys, a.cr3, GUEST_MMAP_VA, write=True)
    gb = translate(phys, b.cr3, GUEST_MMAP_VA, write=True)
    assert ga != gb
    with pytest.raises(MMUFault):
        translate(phys, a.cr3, GUEST_MMAP_VA, execute=True)
    assert phys.read_u64(machine_pdpt + 8) == shared_pd | 0x27  # the machine's table is untouched
    before = phys.allocated
    a.release()
    assert phys.allocated == before - 1


# ---------------------------------------------------------------- the trampoline

REASON = unavailable_reason()
needs_pvm = pytest.mark.skipif(REASON is not None or kvm_flavour() != "pvm",
                               reason=f"KVM is unusable here: {REASON}" if REASON
                               else "the trampoline answers mmap on PVM only (it runs in ring 3 there)")


@pytest.fixture
def machine(phys):
    m = Machine(phys)
    yield m
    m.close()


def start(machine, phys, code: bytes):
    mm = new_mm(phys, machine.system_pml4e)
    mm.mmap(CODE_VA, PAGE_SIZE, C.PROT_READ | C.PROT_EXEC, ANON | C.MAP_FIXED)
    mm.write_force(CODE_VA, code)
    mm.mmap(STACK_TOP - 4 * PAGE_SIZE, 4 * PAGE_SIZE, RW, ANON | C.MAP_FIXED)
    vcpu = machine.new_vcpu()
    vcpu.set_cr3(mm.cr3)
    vcpu.regs.rip, vcpu.regs.rsp = CODE_VA, STACK_TOP
    return vcpu, mm


def serve(vcpu, mm) -> None:
    """The Sentry's part for mmap and munmap exits."""
    r = vcpu.regs
    try:
        if r.rax == 9:
            r.rax = mm.mmap(r.rdi, r.rsi, r.rdx, r.r10)
        elif r.rax == 11:
            mm.munmap(r.rdi, r.rsi)
            r.rax = 0
        else:
            raise AssertionError(f"syscall {r.rax}")
    except SyscallError as e:
        r.rax = -e.errno & (1 << 64) - 1


@needs_pvm
def test_mmap_munmap_pairs_never_exit(machine, phys):
    vcpu, mm = start(machine, phys, PAIRS_THEN_TWO)
    mm.guest_mmap.publish(True)
    _max, _lo, _hi, top, _ = page(mm)
    exits = vcpu.exits
    assert vcpu.run() == EXIT_SYSCALL
    r = vcpu.regs
    # 2001 calls ran in the guest; the first exit is the mmap whose prot differs.
    assert vcpu.exits == exits + 1
    assert (r.rax, r.rsi, r.rdx) == (9, PAGE_SIZE, C.PROT_READ)
    assert (r.rbx, r.r13, r.r14) == (top - 0x10000, 0, top - 0x10000)
    mm.guest_mmap.drain()
    v = mm.find_vma(top - 1)
    assert (v.start, v.end, v.prot) == (top - 0x10000, top, RW)
    serve(vcpu, mm)
    assert r.rax == top - 0x11000
    mm.guest_mmap.publish(True)
    assert vcpu.run() == EXIT_SYSCALL and r.rax == 60
    assert r.r15 == top - 0x11000


@needs_pvm
def test_a_disabled_page_sends_every_call_to_the_sentry(machine, phys):
    vcpu, mm = start(machine, phys, PAIRS_THEN_TWO)
    mm.guest_mmap.publish(False)
    calls = 0
    while True:
        assert vcpu.run() == EXIT_SYSCALL
        if vcpu.regs.rax == 60:
            break
        serve(vcpu, mm)
        calls += 1
    assert calls == 2002 and vcpu.regs.r13 == 0


@needs_pvm
def test_kicks_anywhere_in_the_trampoline(machine, phys):
    """Kicks land on every part of the loop, the trampoline's included: a
    call unwound before its commit is made again, one after it is complete,
    so every mmap returns the same address, rflags survive, and every munmap
    returns 0."""
    vcpu, mm = start(machine, phys, SAME_ADDRESS_LOOP)
    stop = threading.Event()

    def kicker():
        while not stop.is_set():
            vcpu.kick()
            time.sleep(random.uniform(0.00002, 0.0003))

    t = threading.Thread(target=kicker)
    t.start()
    kinds = {"at the mmap": 0, "elsewhere": 0}
    deadline = time.monotonic() + 2
    try:
        while time.monotonic() < deadline:
            mm.guest_mmap.publish(True)
            ev = vcpu.run()
            mm.guest_mmap.drain()
            r = vcpu.regs
            if ev == EXIT_SYSCALL:
                assert r.rax != 60, f"the guest failed its check {r.rdi} after {r.r15} pairs"
                serve(vcpu, mm)
            else:
                assert ev == EXIT_INTERRUPTED and r.rip < USER_LIMIT
                kinds["at the mmap" if r.rip == CODE_VA + LOOP_MMAP_NEXT - 2 else "elsewhere"] += 1
    finally:
        stop.set()
        t.join()
    assert vcpu.regs.r15 > 1000
    assert kinds["at the mmap"] > 0 and kinds["elsewhere"] > 0, kinds


@needs_pvm
@pytest.mark.parametrize("offset, rax, back", [
    (0, 39, True), (stub.SYSCALL_OUT, 39, True), (stub.MMAP, 9, True), (stub.MMAP + 4, 9, True),
    (stub.MMAP_COMMIT, 9, True), (stub.SLOW_MMAP, 9, True), (stub.MUNMAP, 11, True),
    (stub.MUNMAP_COMMIT, 11, True), (stub.SLOW_MUNMAP, 11, True), (stub.SLOW_MUNMAP + 5, 11, True),
    (stub.MMAP_RETURN, 0x7777_0000, False), (stub.MUNMAP_RETURN, 0, False), (stub.MUNMAP_RETURN + 5, 0, False)])
def test_a_kick_in_the_trampoline_unwinds(machine, phys, offset, rax, back):
    """At each place: before a commit the thread is back at its syscall
    instruction with the call's number, after one just past it with the
    result."""
    vcpu, mm = start(machine, phys, b"\x0f\x05\x0f\x0b")  # syscall; ud2
    r = vcpu.regs
    r.rip, r.rcx, r.r11 = TRAMPOLINE_VA + offset, CODE_VA + 2, 0x203
    r.rax = {0: 39, stub.SYSCALL_OUT: 39, stub.MMAP_RETURN: 0x7777_0000}.get(offset, 0x5555)
    vcpu.kick()
    assert vcpu.run() == EXIT_INTERRUPTED
    assert (r.rip, r.rax) == ((CODE_VA if back else CODE_VA + 2), rax)
    assert r.rflags & 0xFFF == 0x203
