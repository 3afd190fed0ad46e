"""The Sentry's memory manager (core/mm) without KVM: guest page tables are
checked with a software MMU walk, and a model of a shadow-paging hypervisor
(``Shadow``) caches every translation the walk made until the memory
manager zaps its frame; after every operation no cached translation may
grant more than the tables do."""
from __future__ import annotations

import os
import re
import time

import pytest

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.file import HostFDFile
from pysc.core.mm.mm import FAULT_EXEC, FAULT_WRITE, MemoryManager, access_from_error_code
from pysc.core.mm.pagetable import ADDR_MASK, PTE_NX, PTE_P, PTE_RW, MMUFault, translate
from pysc.core.mm.physical import HUGE_SIZE, PAGE_SIZE, PhysicalMemory

P = PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS
SHANON = C.MAP_SHARED | C.MAP_ANONYMOUS
SYSTEM = {255: 0x1000 | 7}
LIMIT = 0x7F80_0000_0000


class Shadow:
    """What a shadow-paging hypervisor may cache: each translation the guest
    made, with the rights the leaf had then, until its frame is zapped."""

    def __init__(self, phys: PhysicalMemory):
        self.phys = phys
        self.cache: dict[tuple[int, int], tuple[int, bool, bool]] = {}
        self.zapped: list[int] = []
        zap, zap_many, drop, unref = phys.zap, phys.zap_many, phys.drop, phys.unref
        forget, discard_huge, flush = phys.forget, phys.discard_huge, phys.flush_shadows

        def w_zap(gpa, n=P):
            self.invalidate(range(gpa, gpa + n, P))
            zap(gpa, n)

        def w_zap_many(gpas):
            self.invalidate(gpas)
            zap_many(gpas)

        def w_drop(gpas):
            self.invalidate(gpas)  # freed frames are MADV_REMOVEd, the rest zapped
            drop(gpas)

        def w_unref(gpa):
            if phys.refcount(gpa) == 1:
                self.invalidate([gpa])
            unref(gpa)
        phys.zap, phys.zap_many, phys.drop, phys.unref = w_zap, w_zap_many, w_drop, w_unref

        def w_forget(gpa, n):
            self.invalidate(range(gpa, gpa + n, P))
            forget(gpa, n)

        def w_discard_huge(gpa):
            self.invalidate(range(gpa, gpa + HUGE_SIZE, P))
            discard_huge(gpa)

        def w_flush():
            self.cache.clear()
            return flush()
        phys.forget, phys.discard_huge, phys.flush_shadows = w_forget, w_discard_huge, w_flush

    def invalidate(self, gpas) -> None:
        gone = {g & ~(P - 1) for g in gpas}
        self.zapped.extend(gone)
        for key in [k for k, (f, _w, _x) in self.cache.items() if f in gone]:
            del self.cache[key]

    def access(self, mm: MemoryManager, va: int, write: bool = False, execute: bool = False):
        """One guest access: walk, fault and retry like the CPU; the gpa, or the signal."""
        for _ in range(4):
            hit = self.cache.get((mm.cr3, va & ~(P - 1)))
            if hit is not None and (not write or hit[1]) and (not execute or hit[2]):
                return hit[0] | (va & (P - 1))
            try:
                gpa = translate(self.phys, mm.cr3, va, write, execute)
            except MMUFault:
                got = mm.fault(va, (FAULT_WRITE if write else 0) | (FAULT_EXEC if execute else 0))
                if got is not None:
                    return got
                continue
            e = mm.pt.get(va)
            self.cache[(mm.cr3, va & ~(P - 1))] = (gpa & ~(P - 1), bool(e & PTE_RW), not e & PTE_NX)
            return gpa
        raise AssertionError(f"fault at {va:#x} not resolved")

    def load(self, mm, va: int, n: int = 1) -> bytes:
        gpa = self.access(mm, va)
        assert isinstance(gpa, int), gpa
        return self.phys.read(gpa, n)

    def store(self, mm, va: int, data: bytes):
        gpa = self.access(mm, va, write=True)
        if isinstance(gpa, int):
            self.phys.write(gpa, data)
        return gpa

    def check(self, *live: MemoryManager) -> None:
        by_cr3 = {mm.cr3: mm for mm in live}
        for (cr3, va), (frame, w, x) in self.cache.items():
            mm = by_cr3.get(cr3)
            assert mm is not None, f"translation of a released address space still cached: {va:#x}"
            e = mm.pt.get(va)
            assert e & PTE_P and e & ADDR_MASK == frame, f"stale translation at {va:#x}"
            assert not w or e & PTE_RW, f"stale write access at {va:#x}"
            assert not x or not e & PTE_NX, f"stale exec access at {va:#x}"


@pytest.fixture
def phys():
    p = PhysicalMemory(reserved_frames=16)
    yield p
    p.close()


@pytest.fixture
def sh(phys):
    return Shadow(phys)


@pytest.fixture
def mm(phys):
    m = MemoryManager(phys, SYSTEM, LIMIT)
    yield m
    m.release()


def errno_of(fn, *args):
    with pytest.raises(SyscallError) as e:
        fn(*args)
    return e.value.errno


def host_file(tmp_path, data: bytes, flags=os.O_RDWR, name="f"):
    path = tmp_path / name
    path.write_bytes(data)
    fd = os.open(path, flags)
    return path, HostFDFile(fd, flags, name=str(path).encode())


# ------------------------------------------------------------------ mmap
def test_mmap_top_down_and_merge(mm):
    a = mm.mmap(0, 3 * P, RW, ANON)
    assert a + 3 * P == mm.mmap_base
    b = mm.mmap(0, 2 * P, RW, ANON)
    assert b + 2 * P == a
    assert len(mm.vmas) == 1 and mm.vmas[0].start == b  # adjacent anonymous VMAs merge
    c = mm.mmap(0, P, C.PROT_READ, ANON)
    assert c + P == b and len(mm.vmas) == 2  # different protection: no merge
    assert mm.vm_size == 6 * P


def test_mmap_hint_and_fixed(mm, sh):
    hint = 0x1000_0000
    assert mm.mmap(hint, P, RW, ANON) == hint
    assert mm.mmap(hint, P, RW, ANON) != hint  # taken: placed elsewhere
    assert mm.mmap(hint + P + 123, P, RW, ANON) == hint + P  # rounded down
    assert mm.mmap(0x100, P, RW, ANON) == C.MMAP_MIN_ADDR  # a hint below mmap_min_addr
    sh.store(mm, hint, b"old")
    assert mm.mmap(hint, 2 * P, C.PROT_READ, ANON | C.MAP_FIXED) == hint  # replaces
    sh.check(mm)
    assert sh.load(mm, hint, 3) == b"\0\0\0"
    assert errno_of(mm.mmap, hint, P, RW, ANON | C.MAP_FIXED_NOREPLACE) == C.EEXIST
    assert errno_of(mm.mmap, hint + P, 2 * P, RW, ANON | C.MAP_FIXED_NOREPLACE) == C.EEXIST
    assert mm.mmap(hint + 2 * P, P, RW, ANON | C.MAP_FIXED_NOREPLACE) == hint + 2 * P


def test_mmap_errors(mm, tmp_path):
    assert errno_of(mm.mmap, 0, 0, RW, ANON) == C.EINVAL
    assert errno_of(mm.mmap, 0, P, RW, C.MAP_ANONYMOUS) == C.EINVAL  # no type
    assert errno_of(mm.mmap, 0, P, RW, ANON, None, 100) == C.EINVAL
    assert errno_of(mm.mmap, 0x10001, P, RW, ANON | C.MAP_FIXED) == C.EINVAL
    assert errno_of(mm.mmap, 0, LIMIT + P, RW, ANON) == C.ENOMEM
    assert errno_of(mm.mmap, LIMIT - P, 2 * P, RW, ANON | C.MAP_FIXED) == C.ENOMEM
    assert errno_of(mm.mmap, 0, P, RW, ANON | C.MAP_FIXED) == C.EPERM  # below mmap_min_addr
    assert errno_of(mm.mmap, 0, P, RW, ANON | C.MAP_HUGETLB) == C.ENOMEM
    assert errno_of(mm.mmap, 0, P, RW, C.MAP_SHARED_VALIDATE | C.MAP_ANONYMOUS | 0x200) == C.EOPNOTSUPP
    assert errno_of(mm.mmap, 0, P, RW, SHANON | C.MAP_GROWSDOWN) == C.EINVAL
    _, ro = host_file(tmp_path, b"x" * P, os.O_RDONLY)
    assert errno_of(mm.mmap, 0, P, RW, C.MAP_SHARED, ro) == C.EACCES
    _, wo = host_file(tmp_path, b"x" * P, os.O_WRONLY, "w")
    assert errno_of(mm.mmap, 0, P, C.PROT_READ, C.MAP_PRIVATE, wo) == C.EACCES
    assert not mm.vmas


def test_mmap_32bit_and_guard_gap(mm):
    a = mm.mmap(0, P, RW, ANON | C.MAP_32BIT)
    assert 0x4000_0000 <= a < 0x8000_0000
    stack = mm.mmap(0x7000_0000_0000, 16 * P, RW, ANON | C.MAP_GROWSDOWN)
    below = mm.mmap(stack - P, P, RW, ANON)  # the hint is inside the guard gap
    assert below != stack - P
    mm.mmap_base = stack
    under = mm.mmap(0, P, RW, ANON)
    assert under + P <= stack - (256 << 12)


def test_small_anonymous_mmaps_are_populated(mm):
    a = mm.mmap(0, 4 * P, RW, ANON)
    assert mm.rss == 4 * P and mm.mincore(a, 4 * P) == b"\1" * 4
    b = mm.mmap(0, 1 << 20, RW, ANON)
    assert mm.mincore(b, 3 * P) == b"\0" * 3
    mm.mmap(0, 4 * P, C.PROT_NONE, ANON)
    assert mm.rss == 4 * P
    d = mm.mmap(0, 32 * P, RW, ANON | C.MAP_POPULATE)
    assert mm.mincore(d, 32 * P) == b"\1" * 32


# ------------------------------------------------------------------ munmap
def test_munmap_splits(mm, sh):
    a = mm.mmap(0, 5 * P, RW, ANON)
    for i in range(5):
        sh.store(mm, a + i * P, bytes([65 + i]))
    mm.munmap(a + P, 2 * P)
    sh.check(mm)
    assert [(v.start, v.end) for v in mm.vmas] == [(a, a + P), (a + 3 * P, a + 5 * P)]
    assert sh.load(mm, a) == b"A" and sh.load(mm, a + 3 * P) == b"D" and sh.load(mm, a + 4 * P) == b"E"
    assert mm.fault(a + P, 0) == (C.SIGSEGV, C.SEGV_MAPERR)
    assert mm.rss == 3 * P
    mm.munmap(a - 100 * P, 50 * P)  # nothing there: fine
    assert errno_of(mm.munmap, a + 1, P) == C.EINVAL
    assert errno_of(mm.munmap, a, 0) == C.EINVAL
    assert errno_of(mm.munmap, LIMIT - P, 2 * P) == C.EINVAL
    mm.munmap(a, 1)  # the length rounds up
    assert mm.find_vma(a) is None


# ------------------------------------------------------------------ mprotect
def test_mprotect_split_merge_and_bits(mm, sh, phys):
    a = mm.mmap(0, 4 * P, RW, ANON)
    for i in range(4):
        sh.store(mm, a + i * P, b"x")
    sh.zapped.clear()
    mm.mprotect(a + P, 2 * P, C.PROT_READ)
    sh.check(mm)
    frames = {translate(phys, mm.cr3, a + i * P) for i in (1, 2)}
    assert frames <= set(sh.zapped)  # downgrade: both zapped
    assert len(mm.vmas) == 3
    assert sh.access(mm, a + P, write=True) == (C.SIGSEGV, C.SEGV_ACCERR)
    assert sh.store(mm, a, b"y") is not None and isinstance(sh.access(mm, a, write=True), int)
    with pytest.raises(MMUFault):
        translate(phys, mm.cr3, a + P, write=True)
    assert sh.access(mm, a + P, execute=True) == (C.SIGSEGV, C.SEGV_ACCERR)
    sh.zapped.clear()
    mm.mprotect(a + P, 2 * P, RW)  # an upgrade needs no zap
    assert not sh.zapped
    assert len(mm.vmas) == 1
    translate(phys, mm.cr3, a + P, write=True)
    mm.mprotect(a, 4 * P, C.PROT_READ | C.PROT_EXEC)
    sh.check(mm)
    translate(phys, mm.cr3, a + 3 * P, execute=True)
    mm.mprotect(a, 4 * P, C.PROT_NONE)
    sh.check(mm)
    with pytest.raises(MMUFault):
        translate(phys, mm.cr3, a)
    assert mm.rss == 4 * P  # PROT_NONE keeps the pages
    mm.mprotect(a, 4 * P, RW)
    assert sh.load(mm, a) == b"y" and sh.load(mm, a + 3 * P) == b"x"


def test_mprotect_errors(mm, tmp_path):
    a = mm.mmap(0x1000_0000, 2 * P, RW, ANON)
    mm.mmap(a + 3 * P, P, RW, ANON)
    assert errno_of(mm.mprotect, a + 1, P, RW) == C.EINVAL
    assert errno_of(mm.mprotect, a, P, 8) == C.EINVAL
    assert errno_of(mm.mprotect, a - 4 * P, P, RW) == C.ENOMEM
    # a hole: Linux changes what comes before it, then fails
    assert errno_of(mm.mprotect, a, 4 * P, C.PROT_READ) == C.ENOMEM
    assert mm.find_vma(a).prot == C.PROT_READ and mm.find_vma(a + 3 * P).prot == RW
    mm.mprotect(a, 0, C.PROT_READ)
    _, ro = host_file(tmp_path, b"z" * P, os.O_RDONLY)
    s = mm.mmap(0, P, C.PROT_READ, C.MAP_SHARED, ro)
    assert errno_of(mm.mprotect, s, P, RW) == C.EACCES
    p = mm.mmap(0, P, C.PROT_READ, C.MAP_PRIVATE, ro)
    mm.mprotect(p, P, RW)  # private: fine
    stack = mm.mmap(0x2000_0000, 4 * P, RW, ANON | C.MAP_GROWSDOWN)
    mm.mprotect(stack + 2 * P, P, C.PROT_READ | C.PROT_GROWSDOWN)
    assert mm.find_vma(stack).prot == C.PROT_READ and mm.find_vma(stack).end == stack + 3 * P
    assert errno_of(mm.mprotect, a, P, C.PROT_READ | C.PROT_GROWSDOWN) == C.EINVAL


# ------------------------------------------------------------------ mremap
def test_mremap(mm, sh):
    a = mm.mmap(0x1000_0000, 4 * P, RW, ANON)
    for i in range(4):
        sh.store(mm, a + i * P, bytes([48 + i]))
    assert mm.mremap(a, 4 * P, 2 * P, 0) == a  # shrink
    sh.check(mm)
    assert mm.find_vma(a + 2 * P) is None
    assert mm.mremap(a, 2 * P, 6 * P, 0) == a  # grow in place
    assert mm.find_vma(a).end == a + 6 * P and len(mm.vmas) == 1
    assert sh.load(mm, a + P) == b"1" and sh.load(mm, a + 5 * P) == b"\0"
    mm.mmap(a + 6 * P, P, C.PROT_READ, ANON)  # blocks growing in place
    assert errno_of(mm.mremap, a, 6 * P, 8 * P, 0) == C.ENOMEM
    b = mm.mremap(a, 6 * P, 8 * P, C.MREMAP_MAYMOVE)
    assert b != a
    sh.check(mm)
    assert mm.find_vma(a) is None and mm.find_vma(b).end == b + 8 * P
    assert sh.load(mm, b) == b"0" and sh.load(mm, b + P) == b"1" and sh.load(mm, b + 7 * P) == b"\0"
    assert mm.rss == 2 * P + P * 6 + 0 or mm.rss >= 2 * P
    c = 0x3000_0000
    assert mm.mremap(b, 2 * P, 2 * P, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, c) == c
    sh.check(mm)
    assert sh.load(mm, c + P) == b"1" and mm.find_vma(b) is None and mm.find_vma(b + 2 * P) is not None
    d = mm.mremap(c, 2 * P, 2 * P, C.MREMAP_MAYMOVE | C.MREMAP_DONTUNMAP)
    sh.check(mm)
    assert sh.load(mm, d) == b"0" and sh.load(mm, c) == b"\0"  # the old range stays, empty
    assert errno_of(mm.mremap, c + 1, P, P, 0) == C.EINVAL
    assert errno_of(mm.mremap, c, P, P, 8) == C.EINVAL
    assert errno_of(mm.mremap, c, P, P, C.MREMAP_FIXED, 0x5000_0000) == C.EINVAL
    assert errno_of(mm.mremap, c, P, 0, 0) == C.EINVAL
    assert errno_of(mm.mremap, 0x6000_0000, P, 2 * P, C.MREMAP_MAYMOVE) == C.EFAULT
    assert errno_of(mm.mremap, c, 8 * P, 9 * P, C.MREMAP_MAYMOVE) == C.EFAULT
    assert errno_of(mm.mremap, c, P, P, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, c) == C.EINVAL  # overlap
    assert errno_of(mm.mremap, c, 0, P, C.MREMAP_MAYMOVE) == C.EINVAL  # private: no duplicate


def test_mremap_shared(mm, sh):
    a = mm.mmap(0, 2 * P, RW, SHANON)
    sh.store(mm, a + P, b"S")
    dup = mm.mremap(a, 0, 2 * P, C.MREMAP_MAYMOVE)
    assert sh.load(mm, dup + P) == b"S"
    sh.store(mm, dup, b"T")
    assert sh.load(mm, a) == b"T"
    b = mm.mremap(a, 2 * P, 4 * P, C.MREMAP_MAYMOVE)
    sh.check(mm)
    assert sh.load(mm, b + P) == b"S"
    # the shmem object keeps its size: past it, SIGBUS (as Linux)
    assert sh.access(mm, b + 3 * P) == (C.SIGBUS, C.BUS_ADRERR)


# ------------------------------------------------------------------ brk
def test_brk(mm, sh):
    base = 0x60_0000
    mm.mmap(base - 2 * P, 2 * P, RW, ANON | C.MAP_FIXED)  # bss
    mm.set_brk_start(base)
    assert mm.brk(0) == base
    assert mm.brk(base + 10) == base + 10
    assert mm.find_vma(base) is not None and len(mm.vmas) == 1  # merged with the bss
    assert mm.brk(base + 5 * P + 7) == base + 5 * P + 7
    sh.store(mm, base + 5 * P, b"h")
    assert any(line.endswith("[heap]") for line in mm.maps())
    assert mm.brk(base + P) == base + P
    sh.check(mm)
    assert mm.find_vma(base + 2 * P) is None
    assert mm.fault(base + 5 * P, 0) == (C.SIGSEGV, C.SEGV_MAPERR)
    assert mm.brk(base - P) == base + P  # below the start: unchanged
    mm.mmap(base + 4 * P, P, RW, ANON | C.MAP_FIXED)
    assert mm.brk(base + 8 * P) == base + P  # would collide: unchanged
    assert mm.brk(base + 2 * P) == base + 2 * P
    assert sh.load(mm, base + P) == b"\0"  # fresh heap pages are zeros


# ------------------------------------------------------------------ faults
def test_fault_cases(mm, sh):
    assert mm.fault(0x1234_5000, 0) == (C.SIGSEGV, C.SEGV_MAPERR)
    assert mm.fault(LIMIT + 5, 0) == (C.SIGSEGV, C.SEGV_MAPERR)
    ro = mm.mmap(0, 64 * P, C.PROT_READ, ANON)
    assert mm.fault(ro, FAULT_WRITE) == (C.SIGSEGV, C.SEGV_ACCERR)
    assert mm.fault(ro, FAULT_EXEC) == (C.SIGSEGV, C.SEGV_ACCERR)
    assert mm.fault(ro + 17 * P, 0) is None
    assert mm.mincore(ro + 16 * P, 16 * P) == b"\1" * 16  # fault-around: the 64 KiB window
    assert mm.mincore(ro, 16 * P) == b"\0" * 16
    none = mm.mmap(0, P, C.PROT_NONE, ANON)
    assert mm.fault(none, 0) == (C.SIGSEGV, C.SEGV_ACCERR)
    x = mm.mmap(0, P, C.PROT_READ | C.PROT_EXEC, ANON)
    assert isinstance(sh.access(mm, x, execute=True), int)
    assert mm.fault(x, 0) is None  # already mapped: a spurious fault just retries
    assert access_from_error_code(C.X86_PF_WRITE | C.X86_PF_USER) == FAULT_WRITE | 4
    assert access_from_error_code(C.X86_PF_INSTR) == FAULT_EXEC


def test_sequential_touching_fills_bigger_windows(mm, sh):
    a = mm.mmap(0x4000_0000, 2048 * P, RW, ANON | C.MAP_FIXED)
    mm.madvise(a, 2048 * P, C.MADV_NOHUGEPAGE)  # small pages
    sh.store(mm, a + 3 * P, b"1")
    assert mm.mincore(a, 2048 * P).count(1) == 16  # one fault-around window
    sh.store(mm, a + 16 * P, b"2")  # in order: the next fault fills far more
    assert mm.mincore(a, 2048 * P).count(1) == 16 + 256
    sh.store(mm, a + 1500 * P, b"3")  # a jump: a plain window again
    assert mm.mincore(a, 2048 * P).count(1) == 16 + 256 + 16
    sh.store(mm, a + 1487 * P, b"4")  # going down, in order
    assert mm.mincore(a + 1232 * P, 256 * P) == b"\1" * 256
    sh.check(mm)


# ------------------------------------------------------------ huge pages
H = HUGE_SIZE


@pytest.fixture
def flushes(phys):
    """Shadow flushes asked of the (absent) hypervisor; without a way to
    flush there are no huge pages."""
    seen = []
    phys.shadow_flush = lambda: seen.append(1)
    return seen


def huge_map(mm, length=2 * H):
    a = mm.mmap(0, length, RW, ANON)
    assert a % H == 0, "large anonymous mappings are 2 MiB aligned"
    return a


def test_large_anonymous_mappings_get_huge_pages(mm, sh, phys, flushes):
    if not phys.huge_pages:
        pytest.skip("the host gives no transparent huge pages (THP 'never')")
    a = huge_map(mm)
    sh.store(mm, a + 5 * P, b"five")
    assert set(mm.pt.huge) == {a >> 21} and not mm.pt.pts.get(a >> 21)
    assert mm.rss == H and mm.mincore(a, H) == b"\1" * 512
    sh.store(mm, a + H + 7, b"x")  # the second slot: its own page
    assert len(mm.pt.huge) == 2 and mm.rss == 2 * H
    assert mm.read(a + 5 * P, 4) == b"five"
    mm.write(a + H - 2, b"across")  # the Sentry writes over the boundary of two huge pages
    assert sh.load(mm, a + H - 2, 2) == b"ac" and sh.load(mm, a + H, 4) == b"ross"
    sh.check(mm)
    # not: a MAP_STACK mapping, a small one, MADV_NOHUGEPAGE, a read-only one
    b = mm.mmap(0, 2 * H, RW, ANON | C.MAP_STACK)
    mm.madvise(mm.mmap(0, 2 * H, RW, ANON), 2 * H, C.MADV_NOHUGEPAGE)
    c = mm.mmap(0, H, C.PROT_READ, ANON)
    for v in mm.vmas:
        sh.access(mm, max(v.start, (v.start + H - 1) & ~(H - 1)))
    assert len(mm.pt.huge) == 2
    # MADV_HUGEPAGE asks for them
    mm.munmap(b, 2 * H)
    d = mm.mmap(b, 2 * H, RW, ANON | C.MAP_STACK | C.MAP_FIXED)
    mm.madvise(d, 2 * H, C.MADV_HUGEPAGE)
    sh.store(mm, d + H, b"y")
    assert (d + H) >> 21 in mm.pt.huge
    assert sh.load(mm, c, 1) == b"\0"
    sh.check(mm)


def test_no_huge_pages_where_shadows_cannot_be_flushed(mm, sh, phys):
    a = huge_map(mm)
    sh.store(mm, a, b"small")
    assert not mm.pt.huge and mm.rss < H


def test_whole_huge_page_unmapped_and_mapped_again(mm, sh, phys, flushes):
    if not phys.huge_pages:
        pytest.skip("the host gives no transparent huge pages")
    a = huge_map(mm)
    sh.store(mm, a, b"old")
    base = mm.pt.huge[a >> 21] & ADDR_MASK
    n = phys.allocated
    mm.munmap(a, 2 * H)
    assert not mm.pt.huge and phys.allocated == n - 512 and mm.rss == 0
    sh.check(mm)
    assert mm.mmap(0, 2 * H, RW, ANON) == a
    assert sh.load(mm, a, 3) == b"\0\0\0"  # zeroed again
    assert mm.pt.huge[a >> 21] & ADDR_MASK == base  # the slot gets its own frames back
    assert not flushes
    mm.madvise(a, H, C.MADV_DONTNEED)  # a whole slot: freed, zeros on the next touch
    assert a >> 21 not in mm.pt.huge
    sh.store(mm, a + 8, b"z")
    mm.munmap(a, 2 * H)
    # a slot that held a huge page gets a table only after a shadow flush
    mm.mmap(a, P, RW, ANON | C.MAP_FIXED)
    assert len(flushes) == 1 and a >> 21 in mm.pt.pts and not mm.pt.retired
    sh.check(mm)


def test_partial_changes_split_a_huge_page(mm, sh, phys, flushes):
    if not phys.huge_pages:
        pytest.skip("the host gives no transparent huge pages")
    a = huge_map(mm, 3 * H)
    for k in range(0, 3 * 512, 37):
        sh.store(mm, a + k * P + 9, b"%d" % k)
    assert len(mm.pt.huge) == 3
    mm.munmap(a + 100 * P, P)  # split, then one page goes
    assert a >> 21 not in mm.pt.huge and a >> 21 in mm.pt.pts and flushes
    assert sh.access(mm, a + 100 * P) == (C.SIGSEGV, C.SEGV_MAPERR)
    mm.mprotect(a + H + 10 * P, 2 * P, C.PROT_READ)  # split, read-only there
    assert sh.store(mm, a + H + 10 * P, b"w") == (C.SIGSEGV, C.SEGV_ACCERR)
    new = mm.mremap(a + 2 * H, H, 2 * H, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, a + 8 * H)
    assert new == a + 8 * H
    for k in range(0, 3 * 512, 37):
        va = a + k * P
        if va >= a + 2 * H:
            va += 6 * H
        assert sh.load(mm, va + 9, len(b"%d" % k)) == b"%d" % k
    assert mm.rss == (3 * 512 - 1) * P
    sh.check(mm)
    n = phys.allocated
    mm.munmap(a, 10 * H)
    assert phys.allocated == n - (3 * 512 - 1)
    sh.check(mm)


def test_fork_copies_huge_pages(mm, sh, phys, flushes):
    if not phys.huge_pages:
        pytest.skip("the host gives no transparent huge pages")
    n, tables = phys.allocated, phys.pt_frames
    a = huge_map(mm)
    sh.store(mm, a + 3, b"parent")
    sh.store(mm, a + H + 3, b"second")
    mm.madvise(a + H, P, C.MADV_DONTFORK)  # the second slot now spans two VMAs: split
    child = mm.fork()
    try:
        assert a >> 21 in child.pt.huge and a >> 21 in mm.pt.huge
        assert child.pt.huge[a >> 21] & ADDR_MASK != mm.pt.huge[a >> 21] & ADDR_MASK
        assert sh.load(child, a + 3, 6) == b"parent"
        sh.store(child, a + 3, b"child!")
        assert sh.load(mm, a + 3, 6) == b"parent"
        assert sh.access(child, a + H) == (C.SIGSEGV, C.SEGV_MAPERR)  # DONTFORK
        assert sh.load(child, a + H + P + 3, 1) == b"\0"
        assert sh.load(mm, a + H + 3, 6) == b"second"
        assert child.rss == H + 511 * P  # the rest of the split slot is shared copy-on-write
        sh.check(mm, child)
    finally:
        child.release()
    mm.release()
    assert phys.allocated - phys.pt_frames == n - tables  # every page back (tables stay in their pool)
    sh.check()


def test_stack_growth(mm, sh):
    top = 0x7000_0000_0000
    mm.stack_limit = 64 * P
    s = mm.mmap(top - 4 * P, 4 * P, RW, ANON | C.MAP_FIXED, name="[stack]")
    assert sh.store(mm, s - 10 * P + 8, b"g") is not None
    v = mm.find_vma(s - 10 * P)
    assert v.start == s - 10 * P and v.end == top
    assert sh.load(mm, s - 10 * P + 8) == b"g"
    assert mm.fault(top - 65 * P, FAULT_WRITE) == (C.SIGSEGV, C.SEGV_MAPERR)  # over the limit
    assert any(line.endswith("[stack]") for line in mm.maps())
    # no growth into the guard gap above another mapping
    g = mm.mmap(0x6000_0000_0000, 4 * P, RW, ANON | C.MAP_GROWSDOWN)
    mm.mmap(g - 8 * P, P, RW, ANON | C.MAP_FIXED)
    assert mm.fault(g - 2 * P, 0) == (C.SIGSEGV, C.SEGV_MAPERR)


# ------------------------------------------------------------------ fork
def test_fork_cow_isolation(mm, sh, phys):
    a = mm.mmap(0, 64 * P, RW, ANON)
    for i in range(0, 64, 3):
        sh.store(mm, a + i * P, b"p%d" % i)
    ro = mm.mmap(0, P, C.PROT_READ, ANON | C.MAP_POPULATE)
    sh.zapped.clear()
    child = mm.fork()
    try:
        sh.check(mm, child)
        assert sh.zapped  # the parent's write access was withdrawn
        assert sh.load(child, a + 3 * P, 2) == b"p3"
        frame = translate(phys, mm.cr3, a + 3 * P)
        assert translate(phys, child.cr3, a + 3 * P) == frame and phys.refcount(frame) == 2
        sh.store(child, a + 3 * P, b"c3")
        sh.check(mm, child)
        assert sh.load(mm, a + 3 * P, 2) == b"p3" and sh.load(child, a + 3 * P, 2) == b"c3"
        assert phys.refcount(frame) == 1
        sh.store(mm, a + 3 * P, b"P3")  # the last user: made writable, no copy
        assert translate(phys, mm.cr3, a + 3 * P) == frame
        sh.store(mm, a + 6 * P, b"P6")
        sh.check(mm, child)
        assert sh.load(child, a + 6 * P, 2) == b"p6" and sh.load(mm, a + 6 * P, 2) == b"P6"
        assert sh.load(child, ro) == b"\0"
        assert child.maps() == mm.maps() and child.vm_size == mm.vm_size
        sh.store(child, a + 62 * P, b"only child")
        assert sh.load(mm, a + 62 * P, 4) == b"\0" * 4
    finally:
        child.release()
    sh.check(mm)
    sh.store(mm, a + 9 * P, b"P9")  # refcount 1 again: no copy
    sh.check(mm)


def test_cow_fault_around(mm, sh, phys):
    """A guest COW fault copies its 32 KiB window; further neighbours stay shared."""
    a = mm.mmap(0x1000_0000, 32 * P, RW, ANON)
    mm.populate(a, 32 * P, write=True)
    child = mm.fork()
    try:
        sh.store(child, a + 3 * P, b"c")
        sh.check(mm, child)
        counts = [phys.refcount(translate(phys, child.cr3, a + i * P)) for i in range(16)]
        assert counts == [1] * 8 + [2] * 8
        assert isinstance(sh.access(child, a + 7 * P, write=True), int)  # no fault needed any more
        assert sh.load(mm, a + 3 * P) == b"\0"
        child.write(a + 20 * P, b"s")  # the Sentry's own writes copy one page only
        assert phys.refcount(translate(phys, child.cr3, a + 21 * P)) == 2
    finally:
        child.release()
    sh.check(mm)


def test_sentry_side_cow_break_is_zapped(mm, sh):
    """A syscall writing into a COW page changes the frame behind a
    translation the guest may hold: the old frame must be zapped."""
    a = mm.mmap(0, 4 * P, RW, ANON)
    sh.store(mm, a, b"one")
    child = mm.fork()
    try:
        assert sh.load(mm, a, 3) == b"one" and sh.load(child, a, 3) == b"one"
        mm.write(a, b"two")
        sh.check(mm, child)
        assert sh.load(mm, a, 3) == b"two" and sh.load(child, a, 3) == b"one"
        child.write(a + P, b"three")
        sh.check(mm, child)
    finally:
        child.release()
    sh.check(mm)


def test_fork_shared_anon(mm, sh):
    a = mm.mmap(0, 8 * P, RW, SHANON)
    sh.store(mm, a, b"before")
    child = mm.fork()
    try:
        assert sh.load(child, a, 6) == b"before"
        sh.store(child, a + 5 * P, b"child")  # a page first touched after the fork
        assert sh.load(mm, a + 5 * P, 5) == b"child"
        sh.store(mm, a, b"parent")
        assert sh.load(child, a, 6) == b"parent"
        assert any(" rw-s " in line and line.endswith("/dev/zero (deleted)") for line in mm.maps())
    finally:
        child.release()
    assert sh.load(mm, a + 5 * P, 5) == b"child"
    sh.check(mm)


def test_fork_dontfork_wipeonfork(mm, sh):
    a = mm.mmap(0, 2 * P, RW, ANON)
    b = mm.mmap(0, 2 * P, RW, ANON)
    sh.store(mm, a, b"keep")
    sh.store(mm, b, b"wipe")
    mm.madvise(a + P, P, C.MADV_DONTFORK)
    mm.madvise(b, 2 * P, C.MADV_WIPEONFORK)
    child = mm.fork()
    try:
        assert child.find_vma(a + P) is None and sh.load(child, a, 4) == b"keep"
        assert sh.load(child, b, 4) == b"\0" * 4 and sh.load(mm, b, 4) == b"wipe"
    finally:
        child.release()


# ------------------------------------------------------------------ files
def test_private_file_mapping(mm, sh, tmp_path):
    data = bytes(range(256)) * 16 * 5 + b"tail"  # 5 pages and 4 bytes
    path, f = host_file(tmp_path, data)
    a = mm.mmap(0, 10 * P, RW, C.MAP_PRIVATE, f, 0)
    assert f.refs == 2
    assert sh.load(mm, a + 2 * P + 5, 3) == data[2 * P + 5:2 * P + 8]
    assert mm.mincore(a, 6 * P) == b"\1" * 6  # fault-around, up to the end of the file
    assert sh.load(mm, a + 5 * P, 6) == b"tail\0\0"  # the rest of the last page is zeros
    assert sh.access(mm, a + 6 * P) == (C.SIGBUS, C.BUS_ADRERR)
    sh.store(mm, a, b"private")
    assert path.read_bytes()[:7] == data[:7]
    mm.madvise(a, P, C.MADV_DONTNEED)
    sh.check(mm)
    assert sh.load(mm, a, 7) == data[:7]  # the file's content again
    b = mm.mmap(0, 3 * P, C.PROT_READ, C.MAP_PRIVATE, f, 4 * P)
    assert mm.read(b + P, 4) == b"tail"
    assert errno_of(mm.read, b + 2 * P - 4, 8) == C.EFAULT  # past the end of the file
    mm.populate(a, 10 * P)  # stops at the end of the file, no error
    assert mm.madvise(a, P, C.MADV_WILLNEED) is None
    assert errno_of(mm.madvise, a, P, C.MADV_FREE) == C.EINVAL
    mm.munmap(a, 10 * P)
    mm.munmap(b, 3 * P)
    assert f.refs == 1
    f.decref()


def test_page_cache_shares_file_pages(phys, sh, tmp_path):
    """Private mappings of one settled file share its page frames read-only;
    a write copies, and the file and the other mapping keep their bytes."""
    phys.page_cache.settle_ns = 0
    data = bytes(range(256)) * 16 * 40  # 40 pages
    path, f = host_file(tmp_path, data)
    one, two = MemoryManager(phys, SYSTEM, LIMIT), MemoryManager(phys, SYSTEM, LIMIT)
    a = one.mmap(0x1000_0000, 40 * P, RW, C.MAP_PRIVATE | C.MAP_FIXED, f)
    b = two.mmap(0x2000_0000, 40 * P, C.PROT_READ, C.MAP_PRIVATE | C.MAP_FIXED, f, 0)
    assert sh.load(one, a + 3 * P, 4) == data[3 * P:3 * P + 4]
    assert one.mincore(a, 40 * P).count(1) == 16  # the first mapping reads one window
    assert sh.load(two, b + 30 * P, 4) == data[30 * P:30 * P + 4]
    # the second one's fault also maps every page the first one brought in
    assert two.mincore(b, 40 * P) == b"\1" * 32 + bytes(8)
    for k in (0, 5, 15):
        assert sh.access(one, a + k * P) == sh.access(two, b + k * P)  # the same frame
        assert not one.pt.get(a + k * P) & PTE_RW
    sh.store(one, a + 5 * P, b"mine")
    assert sh.access(one, a + 5 * P) != sh.access(two, b + 5 * P)
    assert sh.load(two, b + 5 * P, 4) == data[5 * P:5 * P + 4]
    assert path.read_bytes() == data
    sh.check(one, two)
    one.release()
    two.release()
    sh.check()
    cached = len(phys.page_cache)
    assert cached == 32
    before = phys.allocated
    phys.page_cache.clear()
    assert phys.allocated == before - cached
    f.decref()


def test_page_cache_skips_fresh_files_and_trims(phys, sh, tmp_path):
    path, f = host_file(tmp_path, b"x" * 8 * P)
    mm = MemoryManager(phys, SYSTEM, LIMIT)
    a = mm.mmap(0, 8 * P, C.PROT_READ, C.MAP_PRIVATE, f)
    assert sh.load(mm, a, 1) == b"x"
    assert len(phys.page_cache) == 0  # written just now: its timestamps may not change on the next write
    mm.munmap(a, 8 * P)
    cache = phys.page_cache
    cache.settle_ns, cache.limit = 0, 4
    a = mm.mmap(0, 8 * P, C.PROT_READ, C.MAP_PRIVATE, f)
    assert sh.load(mm, a, 1) == b"x"
    assert len(cache) == 8  # all still mapped: nothing may go
    mm.munmap(a + 2 * P, 6 * P)
    cache.shrink()
    assert len(cache) == 3  # the oldest unmapped pages went
    assert sorted(phys.refcount(g) for g in cache.pages.values()) == [1, 2, 2]
    path.write_bytes(b"y" * 8 * P)  # a new version: new key, fresh pages
    os.utime(path, ns=(time.time_ns() - 10**10,) * 2)
    cache.settle_ns = 0
    b = mm.mmap(0, 8 * P, C.PROT_READ, C.MAP_PRIVATE, f)
    assert sh.load(mm, b, 1) == b"y" and sh.load(mm, a, 1) == b"x"
    mm.release()
    cache.clear()
    f.decref()


def test_page_cache_stays_out_of_files_mapped_shared(phys, sh, tmp_path):
    """A write through MAP_SHARED may leave the file's timestamps alone: such
    a file's pages leave the cache and stay out while the mapping lives."""
    phys.page_cache.settle_ns = 0
    path, f = host_file(tmp_path, b"a" * 4 * P)
    mm = MemoryManager(phys, SYSTEM, LIMIT)
    p1 = mm.mmap(0, 4 * P, C.PROT_READ, C.MAP_PRIVATE, f)
    assert sh.load(mm, p1, 1) == b"a" and len(phys.page_cache) == 4
    s = mm.mmap(0, 4 * P, RW, C.MAP_SHARED, f)
    assert len(phys.page_cache) == 0
    sh.store(mm, s + P, b"b")
    p2 = mm.mmap(0, 4 * P, C.PROT_READ, C.MAP_PRIVATE, f)
    assert sh.load(mm, p2 + P, 1) == b"b" and len(phys.page_cache) == 0
    mm.munmap(s, 4 * P)
    p3 = mm.mmap(0, 4 * P, C.PROT_READ, C.MAP_PRIVATE, f)
    assert sh.load(mm, p3 + P, 1) == b"b" and len(phys.page_cache) == 4
    sh.check(mm)
    mm.release()
    phys.page_cache.clear()
    f.decref()


def test_shared_file_mapping(mm, sh, tmp_path, phys):
    path, f = host_file(tmp_path, b"a" * P + b"b" * P + b"c" * 100)
    regions = []
    removed = []
    phys.set_listener(regions.append, removed.append)
    a = mm.mmap(0, 4 * P, RW, C.MAP_SHARED, f, 0)
    assert regions[-1].index >= 64 and not regions[-1].readonly
    assert sh.load(mm, a + P) == b"b"
    sh.store(mm, a + P + 1, b"XY")
    assert path.read_bytes()[P:P + 3] == b"bXY"  # the host file sees the write
    os.pwrite(f.fd, b"host", 5)
    assert sh.load(mm, a + 5, 4) == b"host"  # and the mapping sees the host's
    mm.write(a + 2 * P + 10, b"via write")
    assert path.read_bytes()[2 * P + 10:2 * P + 19] == b"via write"
    assert sh.access(mm, a + 3 * P) == (C.SIGBUS, C.BUS_ADRERR)
    child = mm.fork()
    sh.store(child, a, b"C")
    assert sh.load(mm, a) == b"C"
    child.release()
    os.ftruncate(f.fd, P)  # shrunk under the mapping: the Sentry must not touch the page
    assert errno_of(mm.read, a + P, 1) == C.EFAULT
    assert errno_of(mm.write, a + P, b"x") == C.EFAULT
    os.ftruncate(f.fd, 2 * P + 100)
    mm.msync(a, P, C.MS_SYNC)
    assert errno_of(mm.msync, a, P, C.MS_SYNC | C.MS_ASYNC) == C.EINVAL
    mm.mprotect(a, P, C.PROT_READ)
    sh.check(mm)
    mm.munmap(a, 4 * P)
    assert removed == [regions[-1]]  # the platform hears the region go
    _, ro = host_file(tmp_path, b"r" * P, os.O_RDONLY, "ro")
    b = mm.mmap(0, P, C.PROT_READ, C.MAP_SHARED, ro)
    assert regions[-1].readonly
    assert errno_of(mm.write_force, b, b"no") == C.EFAULT  # no COW for shared mappings
    f.decref()


def test_shared_futex_key(mm, tmp_path):
    _, f = host_file(tmp_path, b"k" * 2 * P)
    a = mm.mmap(0, 2 * P, RW, C.MAP_SHARED, f)
    b = mm.mmap(0, P, RW, C.MAP_SHARED, f, P)  # another region of the same file
    assert mm.shared_futex_key(a + P + 8) == mm.shared_futex_key(b + 8) is not None
    s = mm.mmap(0, P, RW, SHANON)
    child = mm.fork()
    try:
        assert child.shared_futex_key(s + 4) == mm.shared_futex_key(s + 4) != mm.shared_futex_key(a + 4)
    finally:
        child.release()
    p = mm.mmap(0, P, RW, ANON)
    assert mm.shared_futex_key(p) is None and mm.shared_futex_key(0x10) is None
    mm.munmap(a, 2 * P)
    mm.munmap(b, P)
    f.decref()


def test_shared_mapping_needs_host_fd(mm):
    from pysc.core.file import File

    class Virtual(File):
        seekable = True

        def pread(self, count, offset):
            return b"v" * count

    f = Virtual(C.O_RDWR)
    assert errno_of(mm.mmap, 0, P, RW, C.MAP_SHARED, f) == C.ENODEV
    a = mm.mmap(0, P, RW, C.MAP_PRIVATE, f)  # private: read through pread
    f.inode = None
    f.stat = lambda: type("S", (), {"size": P, "dev": 0, "ino": 0})()
    assert mm.read(a, 3) == b"vvv"


def test_madvise(mm, sh, tmp_path):
    a = mm.mmap(0, 4 * P, RW, ANON)
    sh.store(mm, a + P, b"gone")
    mm.madvise(a, 4 * P, C.MADV_DONTNEED)
    sh.check(mm)
    assert mm.rss == 0 and sh.load(mm, a + P, 4) == b"\0" * 4
    s = mm.mmap(0, 2 * P, RW, SHANON)
    sh.store(mm, s, b"stays")
    mm.madvise(s, 2 * P, C.MADV_DONTNEED)
    assert sh.load(mm, s, 5) == b"stays"
    mm.madvise(s, 2 * P, C.MADV_REMOVE)
    sh.check(mm)
    assert sh.load(mm, s, 5) == b"\0" * 5
    assert errno_of(mm.madvise, a, P, C.MADV_REMOVE) == C.EINVAL
    assert errno_of(mm.madvise, a + 1, P, C.MADV_NORMAL) == C.EINVAL
    assert errno_of(mm.madvise, a, P, 77) == C.EINVAL
    assert errno_of(mm.madvise, a - 8 * P, 9 * P, C.MADV_DONTNEED) == C.ENOMEM
    mm.madvise(a, 0, C.MADV_DONTNEED)
    mm.madvise(a, 4 * P, C.MADV_POPULATE_WRITE)
    assert mm.mincore(a, 4 * P) == b"\1" * 4
    assert errno_of(mm.madvise, a, P, C.MADV_HWPOISON) == C.EPERM


# ------------------------------------------------------------------ maps
MAPS_RE = re.compile(r"^([0-9a-f]{8,})-([0-9a-f]{8,}) ([r-][w-][x-][ps]) ([0-9a-f]{8,}) "
                     r"([0-9a-f]{2,}):([0-9a-f]{2,}) (\d+) ( *)(.*)$")


def test_maps_format_like_linux(mm, tmp_path):
    with open("/proc/self/maps") as f:
        host = f.read().splitlines()
    for line in host:  # the regex and the padding rule describe Linux's own lines
        m = MAPS_RE.match(line)
        assert m, line
        assert not m.group(9) or len(line) - len(m.group(9)) in (73, len(line.split(m.group(9))[0]))
    path, f = host_file(tmp_path, b"q" * 3 * P)
    a = mm.mmap(0x40_0000, 2 * P, C.PROT_READ | C.PROT_EXEC, C.MAP_PRIVATE | C.MAP_FIXED, f, P)
    mm.mmap(0x7F00_0000_0000, P, RW, ANON | C.MAP_FIXED)
    mm.mmap(0x7F00_0001_0000, P, C.PROT_READ, C.MAP_SHARED | C.MAP_FIXED, f, 0)
    lines = mm.maps()
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    head = f"00400000-00402000 r-xp 00001000 {dev} {st.st_ino} "
    assert lines[0] == head.ljust(72) + " " + str(path)
    assert lines[1] == "7f0000000000-7f0000001000 rw-p 00000000 00:00 0 "
    assert lines[2].startswith("7f0000010000-7f0000011000 r--s 00000000 ")
    for line in lines:
        assert MAPS_RE.match(line), line
    nl = [line for line in host if line.endswith("]")][0]  # e.g. [heap] / [stack]: name at column 73
    assert nl.index("[") == 73 == lines[0].index("/")
    assert mm.proc_maps() == "".join(x + "\n" for x in lines)
    mm.set_anon_name(0x7F00_0000_0000, P, b"buf")
    assert mm.maps()[1].endswith(" [anon:buf]")
    mm.munmap(a, 2 * P)
    f.decref()


# ------------------------------------------------------------------ user access
def test_user_access(mm, sh):
    a = mm.mmap(0, 4 * P, RW, ANON)
    data = os.urandom(3 * P)
    assert mm.write(a + 100, data) == len(data)
    assert mm.read(a + 100, len(data)) == data
    mm.write_u32(a, 0xDEADBEEF)
    mm.write_u64(a + 8, -1)
    assert mm.read_u32(a) == 0xDEADBEEF and mm.read_u64(a + 8) == (1 << 64) - 1
    assert mm.read(a, 0) == b"" and mm.write(a, b"") == 0
    ro = mm.mmap(0, P, C.PROT_READ, ANON)
    none = mm.mmap(0, P, C.PROT_NONE, ANON)
    assert errno_of(mm.write, ro, b"x") == C.EFAULT
    assert errno_of(mm.read, none, 1) == C.EFAULT
    assert errno_of(mm.read, 0x1000_0000, 1) == C.EFAULT
    assert errno_of(mm.read, -5, 1) == C.EFAULT
    assert errno_of(mm.read, LIMIT - 4, 8) == C.EFAULT
    assert errno_of(mm.read, a + 3 * P, 2 * P) == C.EFAULT  # runs off the end
    mm.write_force(ro, b"loader")
    assert mm.read(ro, 6) == b"loader"
    assert errno_of(mm.write_force, 0x1000_0000, b"x") == C.EFAULT
    mm.write_force(none, b"n")
    mm.mprotect(none, P, C.PROT_READ)
    assert mm.read(none, 1) == b"n"
    # a ptrace-like poke into a read-only page shared with a fork child copies it
    child = mm.fork()
    try:
        mm.write_force(ro, b"parent")
        assert child.read(ro, 6) == b"loader" and mm.read(ro, 6) == b"parent"
        sh.check(mm, child)
        mm.write(a + 100, b"after fork")
        assert child.read(a + 100, len(data))[:10] == data[:10]
    finally:
        child.release()
    assert mm.read_ptr_array(a + 3 * P + 200) == []


def test_user_access_in_merged_pieces(mm, sh):
    """Reads and writes spanning frames that are contiguous, not contiguous
    (after copy on write) and page-table boundaries give the bytes back."""
    a = mm.mmap(0x4000_0000 - 8 * P, 16 * P, RW, ANON | C.MAP_FIXED)  # crosses a 2 MiB table boundary
    data = os.urandom(16 * P)
    assert mm.write(a, data) == 16 * P
    child = mm.fork()
    try:
        for k in (1, 6, 9, 13):  # copies: frames no longer in a row
            sh.store(child, a + k * P + 7, b"!")
        mine = bytearray(data)
        for k in (1, 6, 9, 13):
            mine[k * P + 7] = ord("!")
        for lo, n in ((0, 16 * P), (5, 3 * P + 11), (P - 1, 2), (7 * P + 3, 2 * P), (13 * P + 7, 1)):
            assert child.read(a + lo, n) == bytes(mine[lo:lo + n])
            assert mm.read(a + lo, n) == data[lo:lo + n]
        child.write(a + 2 * P - 3, b"z" * (9 * P))
        mine[2 * P - 3:11 * P - 3] = b"z" * (9 * P)
        assert child.read(a, 16 * P) == bytes(mine)
        assert mm.read(a, 16 * P) == data
        sh.check(mm, child)
    finally:
        child.release()


def test_read_cstr_across_pages(mm):
    a = mm.mmap(0x1000_0000, 2 * P, RW, ANON)
    mm.write(a + P - 3, b"abcdef\0")
    assert mm.read_cstr(a + P - 3) == b"abcdef"
    mm.write(a + 2 * P - 4, b"end\0")
    assert mm.read_cstr(a + 2 * P - 4) == b"end"  # the next page is unmapped
    mm.write(a + 2 * P - 3, b"xyz")
    assert errno_of(mm.read_cstr, a + 2 * P - 3) == C.EFAULT
    mm.write(a, b"z" * 100)
    assert errno_of(mm.read_cstr, a, 50) == C.ENAMETOOLONG
    mm.write(a, b"p" * 8 + (a + P - 3).to_bytes(8, "little") + bytes(8))
    assert mm.read_ptr_array(a + 8) == [a + P - 3]


# ------------------------------------------------------------------ misc
def test_mincore_msync_mlock(mm):
    a = mm.mmap(0x1000_0000, 1 << 20, RW, ANON)
    assert errno_of(mm.mincore, a + 1, P) == C.EINVAL
    assert errno_of(mm.mincore, a - P, 2 * P) == C.ENOMEM
    mm.write(a, b"x")
    assert mm.mincore(a, 2 * P, a + 100) == 0 and mm.read(a + 100, 2) == b"\1\1"  # vec in user memory
    assert errno_of(mm.mincore, a, P, 0x10) == C.EFAULT
    mm.madvise(a, 1 << 20, C.MADV_DONTNEED)
    mm.mlock(a + 5, 3 * P)
    assert mm.mincore(a, 5 * P) == b"\1\1\1\1\0"
    assert mm.locked == 4 * P and len(mm.vmas) == 2
    mm.munlock(a, 1 << 20)
    assert mm.locked == 0 and len(mm.vmas) == 1
    assert errno_of(mm.mlock, a - 2 * P, P) == C.ENOMEM
    mm.msync(a, P, C.MS_ASYNC)
    assert errno_of(mm.msync, a + 1, P, C.MS_SYNC) == C.EINVAL
    assert errno_of(mm.msync, a - 2 * P, P, C.MS_SYNC) == C.ENOMEM
    mm.mlockall(C.MCL_CURRENT | C.MCL_FUTURE)
    b = mm.mmap(0, 8 * P, RW, ANON)
    assert mm.mincore(b, 8 * P) == b"\1" * 8
    mm.munlockall()
    assert errno_of(mm.mlockall, 0) == C.EINVAL


def test_release_returns_everything(phys, sh, tmp_path):
    base = phys.allocated
    mm = MemoryManager(phys, SYSTEM, LIMIT)
    _, f = host_file(tmp_path, b"f" * 3 * P)
    a = mm.mmap(0, 256 * P, RW, ANON)
    mm.populate(a, 256 * P, write=True)
    mm.mmap(0, 3 * P, RW, C.MAP_PRIVATE, f)
    s = mm.mmap(0, 3 * P, RW, C.MAP_SHARED, f)
    sh.store(mm, s, b"s")
    sh.store(mm, a, b"x")
    child = mm.fork()
    sh.store(child, a, b"y")
    tables = {mm.pt.root, *mm.pt.pdpts.values(), *mm.pt.pds.values(), *mm.pt.pts.values()}
    tables |= {child.pt.root, *child.pt.pts.values(), *child.pt.pds.values(), *child.pt.pdpts.values()}
    mm.release()
    sh.check(child)
    assert child.read(a, 1) == b"y"
    child.release()
    sh.check()  # every translation of both address spaces was zapped
    assert not phys.regions and f.refs == 1
    assert phys.allocated - base == phys.pt_frames  # only table frames remain, in their pool
    assert not tables & {x << 12 for x in phys.free_frames}
    assert tables <= set(phys.pt_free) | set(phys.pt_quarantine)
    mm.release()  # twice is harmless
    f.decref()


def test_randomised_against_shadow(phys, sh):
    """Random operations on two related address spaces; after each one no
    cached translation may outlive what the tables grant."""
    import random
    rnd = random.Random(7)
    mm = MemoryManager(phys, SYSTEM, LIMIT)
    base = 0x1000_0000
    mms = [mm]
    for step in range(400):
        m = rnd.choice(mms)
        addr = base + rnd.randrange(64) * P
        n = rnd.randrange(1, 12) * P
        op = rnd.randrange(9)
        try:
            if op == 0:
                m.mmap(addr, n, rnd.choice([RW, C.PROT_READ, C.PROT_NONE, 7]),
                       rnd.choice([ANON, SHANON]) | C.MAP_FIXED)
            elif op == 1:
                m.munmap(addr, n)
            elif op == 2:
                m.mprotect(addr, n, rnd.choice([RW, C.PROT_READ, C.PROT_NONE, 5]))
            elif op == 3 and len(mms) < 3:
                mms.append(m.fork())
            elif op == 4 and len(mms) > 1 and m is not mm:
                mms.remove(m)
                m.release()
            elif op == 5:
                m.madvise(addr, n, C.MADV_DONTNEED)
            elif op == 6:
                m.mremap(addr, P, 2 * P, C.MREMAP_MAYMOVE)
            else:
                for _ in range(4):
                    va = base + rnd.randrange(80) * P
                    if rnd.random() < 0.5:
                        sh.store(m, va, b"%d" % step)
                    else:
                        sh.access(m, va)
        except SyscallError:
            pass
        sh.check(*mms)
        for x in mms:
            assert x._rss == sum(1 for key in x.pt.pts for i in range(512)
                                 if x.pt.get((key << 21) + i * P)), step
    for x in mms:
        x.release()
    sh.check()


def test_costs(phys, capsys):
    """Prints what the Sentry-side operations cost (for the docstring of mm.py)."""
    mm = MemoryManager(phys, SYSTEM, LIMIT)

    def best(fn, n=3):
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return min(t) * 1e3

    def touch():  # as the guest would: a fault only where the walk fails
        a = mm.mmap(0, 1 << 20, RW, ANON)
        for va in range(a, a + (1 << 20), P):
            if not mm.pt.get(va) & PTE_P:
                mm.fault(va, FAULT_WRITE)
        mm.munmap(a, 1 << 20)
    a = mm.mmap(0, 10 << 20, RW, ANON)
    mm.populate(a, 10 << 20, write=True)

    def fork():
        mm.fork().release()
    with capsys.disabled():
        print(f"\nmm costs: mmap+touch+munmap 1 MiB {best(touch):.2f} ms; "
              f"fork+release 10 MiB {best(fork):.2f} ms")
    mm.release()
