"""The memory manager (Linux ``mm_struct``) of the platforms where the Sentry
owns the app's address space (kvm): VMAs, the guest page tables, faults,
copy on write, and user-memory access for syscall handlers.

Invalidation (PLATFORM-NOTES §2.5.3): the hypervisor shadows the guest page
tables and does not see the Sentry write them.  Adding a mapping or turning
RO into RW needs nothing (a shadow miss re-walks the guest tables); every
downgrade — a leaf removed, RW or present taken away, NX added, or a leaf
pointed at another frame (COW break, fork's write protection) — is followed,
after the PTE write, by ``phys.zap`` of the old frame (``phys.drop`` when a
reference goes too), batched in contiguous runs.  Page-table frames: see
pagetable.py and ``PhysicalMemory.free_tables``.

Faults cost ≈56 µs in the guest against ≈1-3 µs for a page the Sentry maps
itself, so: small anonymous mmaps (<= 64 KiB) are populated at once, a fault
fills up to 16 neighbouring pages of its VMA (zeroed frames, or one read of
the file), 256 in anonymous memory touched in order; pages of private file
mappings come from the page cache (pagecache.py), shared read-only by every
mapping of the file, and a fault there also maps what of the file is cached
in the 2 MiB around it; a COW write fault copies its 8-page window and makes
writable the neighbours no one else shares any more, and ``populate`` serves
the ELF loader and the stack.  With the page cache a loop of fork + exec of
a dynamic /bin/true took 372 guest faults per 20 rounds instead of 635.  On PVM (guest code touching pages, best of 5):
touching 1 MiB of fresh anonymous memory took 25-34 ms with one page per
fault and 3.2-4 ms with 16; writing 10 MiB after a fork took 410 ms with
one copy per fault, 85 ms with 8 (74 ms with 16, for twice the copying of
pages perhaps never written).
Measured on the dev machine (nested VM, noisy: ±50%), Sentry side only;
tests/test_mm.py::test_costs prints the first two: mmap + touch + munmap of
1 MiB anonymous ≈0.5 ms (16 fault-arounds: 16 guest faults instead of 256);
mmap + a 1 MiB write() into it ≈2.4 ms; fork of a fully mapped 10 MiB address
space ≈1.1 ms, fork + release of the child ≈1.9 ms;
a COW break ≈20 µs (copy, zap, and the host faulting both frames back into
the Sentry's mapping); populate ≈0.9 µs per page; munmap of 10 MiB ≈1 ms;
read or write of 8 bytes of user memory ≈1.5-2 µs, of 64 KiB ≈20 µs.

Huge pages: a private anonymous mmap of 2 MiB or more (not MAP_STACK, as
Linux 6.7+), or a range given MADV_HUGEPAGE, gets VM_HUGEPAGE; it is placed
2 MiB aligned, and a fault in a 2 MiB slot that lies wholly inside such a
read-write VMA and has no table maps one 2 MiB page (pagetable.py,
``PageTables.map_huge``).  Unmapping a whole slot frees it; everything that
needs 4 KiB granularity there (partial munmap or mprotect, mremap, a slot
shared by two VMAs at fork) splits it first.  A fork gives the child a
copy of each huge page at once.  On PVM touching a fresh 4 MiB mapping page
by page costs 2 shadow faults instead of 1024 (0.55 ms against 9.4 ms;
native 2.3 ms).

Not thread-safe: the kernel calls it under its one lock.
"""
from __future__ import annotations

import bisect
import os
from array import array

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.mm.pagecache import FileKey
from pysc.core.mm.pagetable import (ADDR_MASK, PTE_NX, PTE_P, PTE_PS, PTE_RW, ZEROS, PageTables,
                                    leaf_bits)
from pysc.core.mm.physical import (CHUNK_MASK, CHUNK_SHIFT, HUGE_FRAMES, HUGE_SIZE, PAGE_SIZE, REGION_BASE,
                                   PhysicalMemory)
from pysc.core.mm.vma import (VM_DONTEXPAND, VM_DONTFORK, VM_GROWSDOWN, VM_HUGEPAGE, VM_LOCKED, VM_MAYWRITE,
                              VM_SHARED, VM_WIPEONFORK, VMA)
from pysc.core.usermem import UserMemory

PAGE_MASK = ~(PAGE_SIZE - 1)
FAULT_WRITE, FAULT_EXEC, FAULT_USER = 1, 2, 4  # ``access`` bits of fault()
FAULT_AROUND = 16  # pages a fault fills at once (a 64 KiB aligned window)
SEQUENTIAL_AROUND = 256  # pages a fault fills in anonymous memory touched in order (1 MiB)
CACHED_AROUND = 512  # pages around a fault of a file mapping mapped if cached (a 2 MiB window)
COW_AROUND = 8  # pages a COW write fault copies at once (a 32 KiB aligned window)
POPULATE_SMALL = 64 << 10  # anonymous mmaps up to this size are populated at once
STACK_GUARD_GAP = 256 << 12  # Linux's stack_guard_gap
MIN_GAP = 128 << 20  # below the top of user space, for the stack, as Linux's mmap_base
PROT_RWX = C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC
SIGSEGV_MAPERR = (C.SIGSEGV, C.SEGV_MAPERR)
SIGSEGV_ACCERR = (C.SIGSEGV, C.SEGV_ACCERR)
_RW = C.PROT_READ | C.PROT_WRITE
SIGBUS_ADRERR = (C.SIGBUS, C.BUS_ADRERR)
_MMAP_KNOWN = (C.MAP_TYPE | C.MAP_FIXED | C.MAP_ANONYMOUS | C.MAP_32BIT | C.MAP_GROWSDOWN | C.MAP_DENYWRITE
               | C.MAP_EXECUTABLE | C.MAP_LOCKED | C.MAP_NORESERVE | C.MAP_POPULATE | C.MAP_NONBLOCK
               | C.MAP_STACK | C.MAP_HUGETLB | C.MAP_FIXED_NOREPLACE | C.MAP_UNINITIALIZED | (0x3F << 26))
_FSHIFT = CHUNK_SHIFT - 12  # frame number -> (chunk, index) in phys.refs
_FMASK = (1 << _FSHIFT) - 1
_MADV_ACCEPTED = frozenset({C.MADV_NORMAL, C.MADV_RANDOM, C.MADV_SEQUENTIAL, C.MADV_WILLNEED,
                            C.MADV_MERGEABLE, C.MADV_UNMERGEABLE,
                            C.MADV_DONTDUMP, C.MADV_DODUMP, C.MADV_COLD, C.MADV_PAGEOUT, C.MADV_COLLAPSE})


def page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & PAGE_MASK


def access_from_error_code(error_code: int) -> int:
    """fault() ``access`` bits from an x86 #PF error code."""
    return ((FAULT_WRITE if error_code & C.X86_PF_WRITE else 0) | (FAULT_EXEC if error_code & C.X86_PF_INSTR else 0)
            | (FAULT_USER if error_code & C.X86_PF_USER else 0))


def _runs_of_true(flags: list[bool]):
    """(start, stop) of each run of True in ``flags``."""
    k, n = 0, len(flags)
    while k < n:
        if not flags[k]:
            k += 1
            continue
        r = k + 1
        while r < n and flags[r]:
            r += 1
        yield k, r
        k = r


def _err(errno: int):
    return SyscallError(errno)


def _start_gap(v: VMA) -> int:
    """Where a new mapping below ``v`` must end (Linux vm_start_gap)."""
    return max(v.start - STACK_GUARD_GAP, 0) if v.flags & VM_GROWSDOWN else v.start


class MemoryManager(UserMemory):
    """One address space, shared by the threads of a process.

    ``mmap_base`` is where top-down placement starts (below the stack, as
    Linux's); ``stack_limit`` bounds how far a MAP_GROWSDOWN VMA grows;
    ``start_brk``/``brk_cur`` are the heap (``set_brk_start``/``brk``)."""

    def __init__(self, phys: PhysicalMemory, system_entries: dict[int, int] = {},
                 user_limit: int = 0x7F80_0000_0000):
        self.phys = phys
        self.pt = PageTables(phys, system_entries)
        self.user_limit = user_limit
        self.vmas: list[VMA] = []
        self._starts: list[int] = []  # vma.start of each VMA, for bisect
        self.mmap_base = user_limit - MIN_GAP
        self.mmap_min_addr = C.MMAP_MIN_ADDR
        self.stack_limit = 8 << 20
        self.start_brk = self.brk_cur = 0
        self.lock_future = False  # mlockall(MCL_FUTURE)
        self._rss = 0  # pages with a frame (or region page) in this address space
        self._private: list[tuple[int, int]] = []  # (va, gpa) of map_private_page's pages
        self.guest_mmap = None  # the platform's helper for mmap in the guest (kvm: GuestMmap)
        self.layout_gen = 0  # counts changes of where VMAs start and end (a cache key)
        self.released = False

    @property
    def cr3(self) -> int:
        """Guest-physical address of the PML4."""
        return self.pt.root

    # ------------------------------------------------------------------ VMAs
    def find_vma(self, addr: int) -> VMA | None:
        """The VMA containing ``addr``."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return self.vmas[i]
        return None

    def _index(self, addr: int) -> int:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return i
        return -1

    def _first_after(self, addr: int) -> int:
        """Index of the first VMA ending above ``addr``."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return i
        return i + 1

    def _insert(self, v: VMA) -> int:
        self.layout_gen += 1
        i = bisect.bisect_left(self._starts, v.start)
        self.vmas.insert(i, v)
        self._starts.insert(i, v.start)
        return i

    def _split(self, addr: int) -> None:
        """Make ``addr`` a VMA boundary if some VMA straddles it."""
        i = self._index(addr)
        if i >= 0 and self.vmas[i].start < addr:
            upper = self.vmas[i].split(addr)
            self.vmas.insert(i + 1, upper)
            self._starts.insert(i + 1, addr)

    def _isolate(self, start: int, end: int) -> tuple[int, int]:
        """Split at both ends; (i, j) with vmas[i:j] the VMAs inside [start, end)."""
        self._split(start)
        self._split(end)
        i = self._first_after(start)
        j = bisect.bisect_left(self._starts, end, lo=i)
        return i, j

    def _merge(self, lo: int, hi: int) -> None:
        """Merge compatible neighbours among vmas[lo-1 .. hi]."""
        vmas = self.vmas
        j = min(hi, len(vmas) - 2)
        lo = max(lo - 1, 0)
        while j >= lo:
            a, b = vmas[j], vmas[j + 1]
            if a.mergeable(b):
                a.end = b.end
                b.put(self.phys)
                del vmas[j + 1]
                del self._starts[j + 1]
            j -= 1

    def _covered(self, start: int, end: int) -> bool:
        """Whether VMAs cover every byte of [start, end)."""
        i = self._first_after(start)
        cur = start
        vmas = self.vmas
        while cur < end:
            if i >= len(vmas) or vmas[i].start > cur:
                return False
            cur = vmas[i].end
            i += 1
        return True

    def _modify(self, start: int, end: int, fn) -> bool:
        """Apply ``fn(vma)`` to the VMAs of [start, end) (split to fit), then
        merge.  Returns False when part of the range is unmapped."""
        covered = self._covered(start, end)
        i, j = self._isolate(start, end)
        for k in range(i, j):
            fn(self.vmas[k])
        self._merge(i, j)
        return covered

    # ------------------------------------------------------------- placement
    def _is_free(self, lo: int, hi: int) -> bool:
        i = self._first_after(lo)
        if i < len(self.vmas) and _start_gap(self.vmas[i]) < hi:
            return False
        return True

    def _top_down(self, low: int, high: int, length: int) -> int | None:
        vmas = self.vmas
        j = bisect.bisect_left(self._starts, high)
        top = high
        if j < len(vmas):
            top = min(top, _start_gap(vmas[j]))
        j -= 1
        while True:
            bottom = max(vmas[j].end if j >= 0 else low, low)
            if top - length >= bottom:
                return top - length
            if j < 0:
                return None
            top = min(top, _start_gap(vmas[j]))
            j -= 1

    def _bottom_up(self, low: int, high: int, length: int) -> int | None:
        vmas = self.vmas
        i = self._first_after(low)
        cur = low
        while True:
            limit = min(_start_gap(vmas[i]) if i < len(vmas) else high, high)
            if limit - cur >= length:
                return cur
            if i >= len(vmas):
                return None
            cur = max(cur, vmas[i].end)
            if cur + length > high:
                return None
            i += 1

    def fast_gap(self, min_size: int) -> tuple[int, int, int]:
        """(lo, hi, skip): the highest free range [lo, hi) of at least
        ``min_size`` bytes that top-down placement reaches, and the size of
        the largest free range above it.  A mapping without a hint of more
        than ``skip`` and at most hi - lo bytes goes at hi - length
        (get_unmapped_area); (0, 0, 0) when there is no such range."""
        vmas = self.vmas
        low = max(self.mmap_min_addr, PAGE_SIZE)
        j = bisect.bisect_left(self._starts, self.mmap_base)
        top = self.mmap_base
        if j < len(vmas):
            top = min(top, _start_gap(vmas[j]))
        j -= 1
        skip = 0
        while top > low:
            bottom = max(vmas[j].end, low) if j >= 0 else low
            if top - bottom >= min_size:
                return bottom, top, skip
            skip = max(skip, top - bottom)
            if j < 0:
                break
            top = min(top, _start_gap(vmas[j]))
            j -= 1
        return 0, 0, 0

    def get_unmapped_area(self, addr: int, length: int, flags: int, huge: bool = False) -> int:
        """Linux's choice of an address for a new mapping of ``length`` bytes;
        ``huge``: 2 MiB aligned where there is room (without a usable hint)."""
        if length > self.user_limit:
            raise _err(C.ENOMEM)
        if flags & (C.MAP_FIXED | C.MAP_FIXED_NOREPLACE):
            if addr & ~PAGE_MASK:
                raise _err(C.EINVAL)
            if addr > self.user_limit - length:
                raise _err(C.ENOMEM)
            return addr
        low = max(self.mmap_min_addr, PAGE_SIZE)
        if flags & C.MAP_32BIT:
            got = self._bottom_up(0x4000_0000, 0x8000_0000, length)
            if got is None:
                raise _err(C.ENOMEM)
            return got
        if addr:
            addr &= PAGE_MASK  # x86 rounds a hint down
            if low <= addr <= self.user_limit - length and self._is_free(addr, addr + length):
                return addr
        if huge:
            got = self._top_down(low, self.mmap_base, length + HUGE_SIZE)
            if got is not None:
                return (got + HUGE_SIZE) & ~(HUGE_SIZE - 1)
        got = self._top_down(low, self.mmap_base, length)
        if got is None:
            got = self._bottom_up(max(low, page_align(self.user_limit // 3)), self.user_limit, length)
        if got is None:
            raise _err(C.ENOMEM)
        return got

    # ------------------------------------------------------------------ mmap
    def mmap(self, addr: int, length: int, prot: int, flags: int, file=None, offset: int = 0,
             name: str | None = None) -> int:
        """mmap(2); ``file`` is the File for a file mapping (ignored with MAP_ANONYMOUS)."""
        if offset & ~PAGE_MASK or offset < 0:
            raise _err(C.EINVAL)
        if length <= 0:
            raise _err(C.EINVAL)
        anon = bool(flags & C.MAP_ANONYMOUS) or file is None
        maptype = flags & C.MAP_TYPE
        if maptype == C.MAP_SHARED_VALIDATE:
            if flags & ~_MMAP_KNOWN:
                raise _err(C.EOPNOTSUPP)
        elif maptype not in (C.MAP_SHARED, C.MAP_PRIVATE):
            raise _err(C.EINVAL)
        shared = maptype != C.MAP_PRIVATE
        if flags & C.MAP_HUGETLB:
            raise _err(C.ENOMEM)  # no huge pages reserved, as on a default Linux
        fixed = flags & (C.MAP_FIXED | C.MAP_FIXED_NOREPLACE)
        if not fixed and addr and addr < self.mmap_min_addr:
            addr = page_align(self.mmap_min_addr)
        length = page_align(length)
        if length == 0 or length > self.user_limit:
            raise _err(C.ENOMEM)
        if not anon and (offset + length) >> 63:
            raise _err(C.EOVERFLOW)
        if len(self.vmas) >= C.MAX_MAP_COUNT:
            raise _err(C.ENOMEM)
        huge = anon and not shared and length >= HUGE_SIZE and not flags & (C.MAP_STACK | C.MAP_GROWSDOWN)
        addr = self.get_unmapped_area(addr, length, flags, huge)
        if flags & C.MAP_FIXED_NOREPLACE and not self._is_free_exact(addr, addr + length):
            raise _err(C.EEXIST)
        if fixed and addr < self.mmap_min_addr:
            raise _err(C.EPERM)
        vflags = VM_MAYWRITE | (VM_HUGEPAGE if huge and name != "[stack]" else 0)
        if flags & C.MAP_GROWSDOWN or name == "[stack]":
            if shared or not anon:
                raise _err(C.EINVAL)
            vflags |= VM_GROWSDOWN
        if flags & C.MAP_LOCKED or self.lock_future:
            vflags |= VM_LOCKED
        region = None
        if anon:
            file = None
            offset = 0
            if shared:
                region = self._anon_region(length)
                vflags |= VM_SHARED
        else:
            if not file.readable:
                raise _err(C.EACCES)
            if file.inode is not None and file.inode.is_dir():
                raise _err(C.ENODEV)
            if shared:
                if prot & C.PROT_WRITE and not file.writable:
                    raise _err(C.EACCES)
                if not file.writable:
                    vflags &= ~VM_MAYWRITE
                region = self._file_region(file, offset, length)
                vflags |= VM_SHARED
            elif not file.seekable and file.host_fd() is None:
                raise _err(C.ENODEV)
            file.incref()
        v = VMA(addr, addr + length, prot & PROT_RWX, vflags, file, offset, region, name)
        if fixed:
            self._unmap(addr, addr + length)
        i = self._insert(v)
        self._merge(i, i)
        if prot & PROT_RWX:
            if (flags & (C.MAP_POPULATE | C.MAP_NONBLOCK) == C.MAP_POPULATE or vflags & VM_LOCKED
                    or (anon and not shared and length <= POPULATE_SMALL)):
                self.populate(addr, length)
        return addr

    def map_special(self, addr: int, region, pgoff: int, length: int, prot: int, name: str) -> None:
        """Map ``length`` bytes of ``region`` from ``pgoff`` at ``addr`` (free)
        as a special mapping, Linux's _install_special_mapping: pages shared by
        every process that the app may read or run but never make writable,
        and that mremap cannot grow (the vDSO and its data).  Mapped at once."""
        region.refs += 1
        v = VMA(addr, addr + length, prot & PROT_RWX, VM_SHARED | VM_DONTEXPAND, None, pgoff, region, name)
        self._insert(v)
        self.populate(addr, length)

    def map_private_page(self, va: int) -> int:
        """A zeroed page at ``va``, outside the user range in a slot the
        machine shares, that only this address space has: user read/write,
        not executable (kvm's guest-mmap page).  Mapped before the address
        space first runs, freed at release.  Its guest-physical address."""
        gpa = self.phys.alloc()
        self.pt.map_private(va, gpa | leaf_bits(C.PROT_READ | C.PROT_WRITE, True))
        self._private.append((va, gpa))
        return gpa

    def _is_free_exact(self, lo: int, hi: int) -> bool:
        i = self._first_after(lo)
        return i >= len(self.vmas) or self.vmas[i].start >= hi

    def _anon_region(self, length: int):
        """Shared anonymous memory: a memfd of the mapping's size (Linux's /dev/zero shmem file)."""
        fd = os.memfd_create("dev/zero", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, length)
            return self.phys.add_region(fd, 0, length, False)
        except OSError as e:
            raise _err(e.errno or C.ENOMEM) from None
        finally:
            os.close(fd)

    def _file_region(self, file, offset: int, length: int):
        fd = file.host_fd()
        if fd is None:
            raise _err(C.ENODEV)
        try:
            return self.phys.add_region(fd, offset, length, not file.writable)
        except OSError as e:
            raise _err(e.errno or C.ENODEV) from None

    # ---------------------------------------------------------------- munmap
    def munmap(self, addr: int, length: int) -> None:
        if addr & ~PAGE_MASK or addr < 0 or length <= 0 or addr > self.user_limit \
                or length > self.user_limit - addr:
            raise _err(C.EINVAL)
        self._unmap(addr, addr + page_align(length))

    def _unmap(self, start: int, end: int) -> None:
        i, j = self._isolate(start, end)
        if i >= j:
            return
        self.layout_gen += 1
        removed = self.vmas[i:j]
        del self.vmas[i:j]
        del self._starts[i:j]
        self._clear(start, end)
        for v in removed:
            v.put(self.phys)

    def _clear(self, start: int, end: int) -> None:
        """Remove every leaf in [start, end): references dropped, frames zapped."""
        pt = self.pt
        for slot in pt.huge_in(start, end):
            if start <= slot << 21 and (slot + 1) << 21 <= end:
                pt.unmap_huge(slot)
                self._rss -= HUGE_FRAMES
            else:
                pt.split(slot)
        gone: list[int] = []
        for _va, q, i0, n in self.pt.segments(start, end):
            ents = q[i0:i0 + n].tolist()
            if not any(ents):
                continue
            gone.extend([e & ADDR_MASK for e in ents if e])
            q[i0:i0 + n] = ZEROS[:n]
        if gone:
            self._rss -= len(gone)
            self.phys.drop(gone)

    # -------------------------------------------------------------- mprotect
    def mprotect(self, addr: int, length: int, prot: int) -> None:
        if addr & ~PAGE_MASK or prot & ~(PROT_RWX | C.PROT_GROWSDOWN | C.PROT_GROWSUP):
            raise _err(C.EINVAL)
        grows = prot & (C.PROT_GROWSDOWN | C.PROT_GROWSUP)
        if grows == C.PROT_GROWSDOWN | C.PROT_GROWSUP:
            raise _err(C.EINVAL)
        length = page_align(length)
        if length == 0:
            return
        end = addr + length
        if end > self.user_limit:
            raise _err(C.ENOMEM)
        prot &= PROT_RWX
        i = self._first_after(addr)
        if i >= len(self.vmas) or self.vmas[i].start >= end:
            raise _err(C.ENOMEM)
        if grows & C.PROT_GROWSDOWN:
            if not self.vmas[i].flags & VM_GROWSDOWN:
                raise _err(C.EINVAL)
            addr = self.vmas[i].start
        elif grows:
            raise _err(C.EINVAL)  # no VM_GROWSUP on x86
        elif self.vmas[i].start > addr:
            raise _err(C.ENOMEM)
        cur = addr
        while cur < end:
            i = self._first_after(cur)
            if i >= len(self.vmas) or self.vmas[i].start > cur:
                raise _err(C.ENOMEM)
            v = self.vmas[i]
            if prot & C.PROT_WRITE and v.shared and not v.flags & VM_MAYWRITE:
                raise _err(C.EACCES)
            nxt = min(v.end, end)
            if v.prot != prot:
                lo, hi = self._isolate(cur, nxt)
                for k in range(lo, hi):
                    w = self.vmas[k]
                    w.prot = prot
                    self._reprotect(w, w.start, w.end)
                self._merge(lo, hi)
            cur = nxt

    def _reprotect(self, v: VMA, start: int, end: int) -> None:
        """Rewrite the leaves of [start, end) after ``v.prot`` changed; zap what lost rights."""
        prot = v.prot
        base = leaf_bits(prot, False)
        rw = PTE_RW if prot & C.PROT_WRITE else 0
        shared_rw = rw if v.region is not None and not v.region.readonly else 0
        refs = self.phys.refs
        zap: list[int] = []
        self.pt.split_in(start, end)
        for _va, q, i0, n in self.pt.segments(start, end):
            ents = q[i0:i0 + n].tolist()
            changed = False
            for k, e in enumerate(ents):
                if not e:
                    continue
                frame = e & ADDR_MASK
                new = frame | base
                if v.region is not None:
                    new |= shared_rw
                elif rw:
                    f = frame >> 12
                    if refs[f >> _FSHIFT][f & _FMASK] == 1:
                        new |= PTE_RW
                old = e
                if new != old:
                    ents[k] = new
                    changed = True
                    if old & PTE_P and (not new & PTE_P or (old & PTE_RW and not new & PTE_RW)
                                        or (new & PTE_NX and not old & PTE_NX)):
                        zap.append(frame)
            if changed:
                q[i0:i0 + n] = array("Q", ents)
        if zap:
            self.phys.zap_many(zap)

    # ---------------------------------------------------------------- mremap
    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int, new_addr: int = 0) -> int:
        if flags & ~(C.MREMAP_MAYMOVE | C.MREMAP_FIXED | C.MREMAP_DONTUNMAP):
            raise _err(C.EINVAL)
        maymove = flags & C.MREMAP_MAYMOVE
        if flags & C.MREMAP_FIXED and not maymove:
            raise _err(C.EINVAL)
        if flags & C.MREMAP_DONTUNMAP and (not maymove or old_len != new_len):
            raise _err(C.EINVAL)
        if old_addr & ~PAGE_MASK:
            raise _err(C.EINVAL)
        old_len, new_len = page_align(old_len), page_align(new_len)
        if new_len == 0:
            raise _err(C.EINVAL)
        if flags & C.MREMAP_FIXED:
            if new_addr & ~PAGE_MASK:
                raise _err(C.EINVAL)
            if new_len > self.user_limit or new_addr > self.user_limit - new_len:
                raise _err(C.EINVAL)
            if new_addr < old_addr + old_len and old_addr < new_addr + new_len:
                raise _err(C.EINVAL)
        v = self.find_vma(old_addr)
        if v is None or old_addr + old_len > v.end:
            raise _err(C.EFAULT)
        if v.flags & VM_DONTEXPAND and new_len > old_len:
            raise _err(C.EFAULT)
        if old_len == 0:  # a second mapping of shared memory
            if not v.shared:
                raise _err(C.EINVAL)
            if not maymove:
                raise _err(C.ENOMEM)
            return self._duplicate(v, old_addr, new_len, flags, new_addr)
        if flags & (C.MREMAP_FIXED | C.MREMAP_DONTUNMAP):
            if flags & C.MREMAP_FIXED:
                self._unmap(new_addr, new_addr + new_len)
            else:
                new_addr = self.get_unmapped_area(0, new_len, C.MAP_SHARED if v.shared else C.MAP_PRIVATE)
            if old_len > new_len:
                self._unmap(old_addr + new_len, old_addr + old_len)
                old_len = new_len
            return self._move(old_addr, old_len, new_addr, new_len, bool(flags & C.MREMAP_DONTUNMAP))
        if new_len <= old_len:
            if new_len < old_len:
                self._unmap(old_addr + new_len, old_addr + old_len)
            return old_addr
        # grow in place if the VMA ends here and the space above is free
        grow_end = old_addr + new_len
        if old_addr + old_len == v.end and grow_end <= self.user_limit and self._is_free(v.end, grow_end):
            i = self._index(old_addr)
            v.end = grow_end
            self.layout_gen += 1
            if v.region is not None:
                self._fit_region(v)
            self._merge(i, i)
            if v.flags & VM_LOCKED:
                self.populate(old_addr + old_len, new_len - old_len)
            return old_addr
        if not maymove:
            raise _err(C.ENOMEM)
        new_addr = self.get_unmapped_area(0, new_len, C.MAP_SHARED if v.shared else C.MAP_PRIVATE)
        return self._move(old_addr, old_len, new_addr, new_len, False)

    def _move(self, old_addr: int, old_len: int, new_addr: int, new_len: int, dontunmap: bool) -> int:
        """Move [old_addr, +old_len) (inside one VMA) to new_addr, growing it to new_len."""
        i, j = self._isolate(old_addr, old_addr + old_len)
        src = self.vmas[i]
        dst = src.clone()
        dst.start, dst.end = new_addr, new_addr + new_len
        if src.region is not None:
            # Shared pages come back from the region on the next touch.
            self._clear(old_addr, old_addr + old_len)
            if dst.end - dst.start > old_len:
                try:
                    self._fit_region(dst)
                except SyscallError:
                    dst.put(self.phys)
                    raise
        else:
            moved: list[int] = []
            pt = self.pt
            pt.split_in(old_addr, old_addr + old_len)
            for va, q, i0, n in pt.segments(old_addr, old_addr + old_len):
                ents = q[i0:i0 + n].tolist()
                if not any(ents):
                    continue
                delta = new_addr - old_addr
                for k, e in enumerate(ents):
                    if e:
                        pt.set(va + (k << 12) + delta, e)
                        moved.append(e & ADDR_MASK)
                q, i0 = pt.slot(va)  # the source table (pt.set may have made new tables)
                q[i0:i0 + n] = ZEROS[:n]
            if moved:
                self.phys.zap_many(moved)
        if not dontunmap:  # else the old range stays, empty: zeros or the file again on next touch
            del self.vmas[i]
            del self._starts[i]
            src.put(self.phys)
        k = self._insert(dst)
        self._merge(k, k)
        return new_addr

    def _duplicate(self, v: VMA, old_addr: int, new_len: int, flags: int, new_addr: int) -> int:
        if flags & C.MREMAP_FIXED:
            self._unmap(new_addr, new_addr + new_len)
        else:
            new_addr = self.get_unmapped_area(0, new_len, C.MAP_SHARED)
        dst = v.clone()
        dst.pgoff = v.offset_of(old_addr)
        dst.start, dst.end = new_addr, new_addr + new_len
        try:
            self._fit_region(dst)
        except SyscallError:
            dst.put(self.phys)
            raise
        k = self._insert(dst)
        self._merge(k, k)
        return new_addr

    def _fit_region(self, v: VMA) -> None:
        """Give a shared VMA that outgrew its region a region of its own covering it."""
        r = v.region
        if v.pgoff >= r.file_off and v.offset_of(v.end) <= r.file_off + r.size:
            return
        try:
            new = self.phys.add_region(r.fd, v.pgoff, v.end - v.start, r.readonly)
        except OSError as e:
            raise _err(e.errno or C.ENOMEM) from None
        self._clear(v.start, v.end)
        self.phys.put_region(r)
        v.region = new

    # ------------------------------------------------------------------- brk
    def set_brk_start(self, addr: int) -> None:
        """The heap starts at ``addr`` (the loader: page-aligned end of the data)."""
        self.start_brk = self.brk_cur = addr

    def brk(self, addr: int) -> int:
        """brk(2): the new break, or the current one when the request fails."""
        if addr < self.start_brk or addr > self.user_limit:
            return self.brk_cur
        newbrk, oldbrk = page_align(addr), page_align(self.brk_cur)
        if newbrk == oldbrk:
            self.brk_cur = addr
            return addr
        if addr <= self.brk_cur:
            self._unmap(newbrk, oldbrk)
            self.brk_cur = addr
            return addr
        i = self._first_after(oldbrk)
        if i < len(self.vmas) and newbrk + PAGE_SIZE > _start_gap(self.vmas[i]):
            return self.brk_cur
        v = VMA(oldbrk, newbrk, C.PROT_READ | C.PROT_WRITE,
                VM_MAYWRITE | (VM_LOCKED if self.lock_future else 0))
        k = self._insert(v)
        self._merge(k, k)
        self.brk_cur = addr
        if self.lock_future:
            self.populate(oldbrk, newbrk - oldbrk)
        return addr

    # --------------------------------------------------------------- madvise
    def madvise(self, addr: int, length: int, advice: int) -> None:
        if addr & ~PAGE_MASK:
            raise _err(C.EINVAL)
        alen = page_align(length)
        if length and not alen or length < 0:
            raise _err(C.EINVAL)
        if advice in (C.MADV_HWPOISON, C.MADV_SOFT_OFFLINE):
            raise _err(C.EPERM)
        end = addr + alen
        if advice not in _MADV_ACCEPTED and advice not in (
                C.MADV_DONTNEED, C.MADV_DONTNEED_LOCKED, C.MADV_FREE, C.MADV_REMOVE, C.MADV_DONTFORK,
                C.MADV_DOFORK, C.MADV_WIPEONFORK, C.MADV_KEEPONFORK, C.MADV_POPULATE_READ,
                C.MADV_POPULATE_WRITE, C.MADV_HUGEPAGE, C.MADV_NOHUGEPAGE):
            raise _err(C.EINVAL)
        if end == addr:
            return
        if end > self.user_limit:
            raise _err(C.ENOMEM)
        covered = self._covered(addr, end)
        if advice in _MADV_ACCEPTED:
            pass
        elif advice in (C.MADV_DONTNEED, C.MADV_DONTNEED_LOCKED, C.MADV_FREE, C.MADV_REMOVE):
            for v in self._in_range(addr, end):
                if advice == C.MADV_DONTNEED and v.flags & VM_LOCKED:
                    raise _err(C.EINVAL)
                if advice == C.MADV_FREE and (v.file is not None or v.shared):
                    raise _err(C.EINVAL)
                if advice == C.MADV_REMOVE:
                    if v.region is None:
                        raise _err(C.EACCES if v.file is not None else C.EINVAL)
                    if not v.flags & VM_MAYWRITE:
                        raise _err(C.EACCES)
            for v in self._in_range(addr, end):
                lo, hi = max(addr, v.start), min(end, v.end)
                self._clear(lo, hi)
                if advice == C.MADV_REMOVE:
                    r = v.region
                    self.phys.punch(r.gpa + v.offset_of(lo) - r.file_off, hi - lo)
        elif advice in (C.MADV_DONTFORK, C.MADV_DOFORK, C.MADV_WIPEONFORK, C.MADV_KEEPONFORK,
                        C.MADV_HUGEPAGE, C.MADV_NOHUGEPAGE):
            if advice == C.MADV_WIPEONFORK and any(v.shared or v.file is not None
                                                   for v in self._in_range(addr, end)):
                raise _err(C.EINVAL)
            bit = (VM_DONTFORK if advice in (C.MADV_DONTFORK, C.MADV_DOFORK)
                   else VM_HUGEPAGE if advice in (C.MADV_HUGEPAGE, C.MADV_NOHUGEPAGE) else VM_WIPEONFORK)
            on = advice in (C.MADV_DONTFORK, C.MADV_WIPEONFORK, C.MADV_HUGEPAGE)

            def set_flag(v: VMA) -> None:
                v.flags = v.flags | bit if on else v.flags & ~bit
            self._modify(addr, end, set_flag)
        else:  # MADV_POPULATE_READ / _WRITE
            write = advice == C.MADV_POPULATE_WRITE
            for v in self._in_range(addr, end):
                if not v.prot & PROT_RWX or (write and not v.prot & C.PROT_WRITE):
                    raise _err(C.EFAULT)
            if not covered:
                raise _err(C.ENOMEM)
            for v in self._in_range(addr, end):
                lo, hi = max(addr, v.start), min(end, v.end)
                if self._fill(v, lo, hi, hi - PAGE_SIZE) is not None:
                    raise _err(C.EFAULT)
                if write:
                    self._make_writable(v, lo, hi)
        if not covered:
            raise _err(C.ENOMEM)

    def _in_range(self, start: int, end: int) -> list[VMA]:
        i = self._first_after(start)
        j = bisect.bisect_left(self._starts, end, lo=i)
        return self.vmas[i:j]

    # ------------------------------------------------ mincore, msync, mlock
    def mincore(self, addr: int, length: int, vec: int | None = None):
        """One byte per page: 1 when this address space holds the page.
        Returned as bytes, or with ``vec`` written to user memory there (returns 0)."""
        if addr & ~PAGE_MASK:
            raise _err(C.EINVAL)
        end = addr + page_align(length)
        if end > self.user_limit or end < addr:
            raise _err(C.ENOMEM)
        if not self._covered(addr, end):
            raise _err(C.ENOMEM)
        get = self.pt.get
        out = bytes(1 if get(va) else 0 for va in range(addr, end, PAGE_SIZE))
        if vec is None:
            return out
        self.write(vec, out)
        return 0

    def msync(self, addr: int, length: int, flags: int) -> int:
        if flags & ~(C.MS_ASYNC | C.MS_INVALIDATE | C.MS_SYNC) or addr & ~PAGE_MASK:
            raise _err(C.EINVAL)
        if flags & C.MS_ASYNC and flags & C.MS_SYNC:
            raise _err(C.EINVAL)
        end = addr + page_align(length)
        if end < addr or end > self.user_limit:
            raise _err(C.ENOMEM)
        if end == addr:
            return 0
        for v in self._in_range(addr, end):
            if flags & C.MS_INVALIDATE and v.flags & VM_LOCKED:
                raise _err(C.EBUSY)
            if flags & C.MS_SYNC and v.region is not None and v.file is not None:
                try:
                    os.fdatasync(v.region.fd)  # the pages are the host page cache already
                except OSError as e:
                    raise _err(e.errno) from None
        if not self._covered(addr, end):
            raise _err(C.ENOMEM)
        return 0

    def _lock_range(self, addr: int, length: int) -> tuple[int, int] | None:
        """The pages of an mlock/munlock call (None if none); ENOMEM for a hole."""
        start = addr & PAGE_MASK
        end = page_align(addr + length)
        if end < start or end > self.user_limit:
            raise _err(C.ENOMEM)
        if end == start:
            return None
        if not self._covered(start, end):
            raise _err(C.ENOMEM)
        return start, end

    def mlock(self, addr: int, length: int, flags: int = 0) -> None:
        if flags & ~C.MLOCK_ONFAULT:
            raise _err(C.EINVAL)
        pages = self._lock_range(addr, length)
        if pages is None:
            return
        start, end = pages
        self._modify(start, end, lambda v: setattr(v, "flags", v.flags | VM_LOCKED))
        if not flags & C.MLOCK_ONFAULT:
            self.populate(start, end - start)

    def munlock(self, addr: int, length: int) -> None:
        pages = self._lock_range(addr, length)
        if pages is not None:
            self._modify(*pages, lambda v: setattr(v, "flags", v.flags & ~VM_LOCKED))

    def mlockall(self, flags: int) -> None:
        if not flags or flags & ~(C.MCL_CURRENT | C.MCL_FUTURE | C.MCL_ONFAULT) or flags == C.MCL_ONFAULT:
            raise _err(C.EINVAL)
        self.lock_future = bool(flags & C.MCL_FUTURE)
        if flags & C.MCL_CURRENT:
            for v in self.vmas:
                v.flags |= VM_LOCKED
            self._merge(0, len(self.vmas))
            if not flags & C.MCL_ONFAULT:
                for v in list(self.vmas):
                    self.populate(v.start, v.end - v.start)

    def munlockall(self) -> None:
        self.lock_future = False
        for v in self.vmas:
            v.flags &= ~VM_LOCKED
        self._merge(0, len(self.vmas))

    def set_anon_name(self, addr: int, length: int, name: bytes | str | None) -> None:
        """prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME): /proc maps shows [anon:NAME]."""
        if addr & ~PAGE_MASK:
            raise _err(C.EINVAL)
        end = addr + page_align(length)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        label = f"[anon:{name}]" if name else None
        if any(v.file is not None for v in self._in_range(addr, end)):
            raise _err(C.EBADF)
        if not self._modify(addr, end, lambda v: setattr(v, "name", label)):
            raise _err(C.ENOMEM)

    # ----------------------------------------------------------------- faults
    def fault(self, addr: int, access: int) -> tuple[int, int] | None:
        """A guest page fault at ``addr`` (``access``: FAULT_WRITE | FAULT_EXEC).
        None when the page is now mapped (retry), else (signal, si_code)."""
        if addr < 0 or addr >= self.user_limit:
            return SIGSEGV_MAPERR
        i = self._index(addr)
        if i < 0:
            i = self._grow_stack(addr)
            if i < 0:
                return SIGSEGV_MAPERR
        v = self.vmas[i]
        prot = v.prot
        write = access & FAULT_WRITE
        if (not prot & PROT_RWX or (write and not prot & C.PROT_WRITE)
                or (access & FAULT_EXEC and not prot & C.PROT_EXEC)):
            return SIGSEGV_ACCERR
        return self._handle(v, addr & PAGE_MASK, write, fault=True)

    def _grow_stack(self, addr: int) -> int:
        """Extend a MAP_GROWSDOWN VMA just above ``addr`` down to it; its index or -1."""
        j = bisect.bisect_right(self._starts, addr)
        if j >= len(self.vmas):
            return -1
        v = self.vmas[j]
        if not v.flags & VM_GROWSDOWN:
            return -1
        new_start = addr & PAGE_MASK
        if v.end - new_start > self.stack_limit or new_start < self.mmap_min_addr:
            return -1
        if j > 0:
            prev = self.vmas[j - 1]
            if new_start < prev.end:
                return -1
            if not prev.flags & VM_GROWSDOWN and prev.prot & PROT_RWX and new_start - prev.end < STACK_GUARD_GAP:
                return -1
        v.start = new_start
        self._starts[j] = new_start
        self.layout_gen += 1
        return j

    def _handle(self, v: VMA, va: int, write: int, force: bool = False, fault: bool = False):
        """Make the page at ``va`` (in ``v``, access already allowed) usable
        for the access; ``fault``: a guest fault, not the Sentry's own access."""
        pt = self.pt
        e = pt.get(va)
        if not e:
            if v.flags & VM_HUGEPAGE and self._map_huge(v, va):
                return None
            lo, hi = self._fault_window(v, va)
            sig = self._fill(v, lo, hi, va)
            if sig is not None:
                return sig
            e = pt.get(va)
            if not write or e & PTE_RW:
                return None
        if write and not e & PTE_RW:
            if v.region is not None:
                if v.region.readonly or not v.prot & C.PROT_WRITE:
                    return SIGSEGV_ACCERR
                pt.set(va, e | PTE_RW)
                return None
            self._cow(v, va, e, force)
            if fault:  # neighbours: copied too (a guest fault costs more), or just made writable
                lo = max(v.start, va & ~(COW_AROUND * PAGE_SIZE - 1))
                self._make_writable(v, lo, min(v.end, lo + COW_AROUND * PAGE_SIZE))
                lo = max(v.start, va & ~(FAULT_AROUND * PAGE_SIZE - 1))
                self._make_writable(v, lo, min(v.end, lo + FAULT_AROUND * PAGE_SIZE), copy=False)
            return None
        if not fault:
            return None
        # The entry allows the access already: another thread was first, or
        # the hypervisor holds a stale translation.  Rewrite what the VMA
        # asks for; a zap makes the hypervisor walk the tables again.
        want = self._leaf(v, e & ADDR_MASK)
        if want != e:
            pt.set(va, want)
        self.phys.zap(e & ADDR_MASK)
        return None

    def _map_huge(self, v: VMA, va: int) -> bool:
        """Map a 2 MiB page at the slot of ``va`` if the slot lies inside
        ``v``, a private anonymous read-write VMA, and has no table."""
        lo = va & ~(HUGE_SIZE - 1)
        if (lo < v.start or lo + HUGE_SIZE > v.end or v.file is not None or v.region is not None
                or v.prot & _RW != _RW or va >> 21 in self.pt.pts):
            return False
        if self.pt.map_huge(lo, leaf_bits(v.prot, True)) is None:
            return False
        self._rss += HUGE_FRAMES
        return True

    def _fault_window(self, v: VMA, va: int) -> tuple[int, int]:
        """The pages a fault at ``va`` fills: its FAULT_AROUND window, or in
        private anonymous memory being touched in order (the page next to
        the window is there already) a SEQUENTIAL_AROUND one, as a huge
        page would give."""
        size = FAULT_AROUND * PAGE_SIZE
        lo = va & ~(size - 1)
        if v.file is None and v.region is None:
            big = SEQUENTIAL_AROUND * PAGE_SIZE
            if lo > v.start and self.pt.get(lo - PAGE_SIZE):
                return lo, min(v.end, lo + big)
            if lo + size < v.end and self.pt.get(lo + size):
                return max(v.start, lo + size - big), lo + size
        return max(v.start, lo), min(v.end, lo + size)

    def _leaf(self, v: VMA, frame: int) -> int:
        if v.region is not None:
            return frame | leaf_bits(v.prot, not v.region.readonly)
        return frame | leaf_bits(v.prot, self.phys.refcount(frame) == 1)

    def _cow(self, v: VMA, va: int, e: int, force: bool) -> int:
        """A private page is about to be written: copy it unless this address space is its only user."""
        phys = self.phys
        frame = e & ADDR_MASK
        if phys.refcount(frame) == 1:
            if v.prot & C.PROT_WRITE:
                self.pt.set(va, e | PTE_RW)
            return frame
        new = phys.alloc()
        phys.copy_frame(new, frame)
        self.pt.set(va, new | leaf_bits(v.prot, True))
        phys.drop([frame])  # one reference fewer, and no translation to it from here
        return new

    def _make_writable(self, v: VMA, start: int, end: int, copy: bool = True) -> None:
        """Break COW over [start, end) of a private writable VMA (only the
        pages no one else shares unless ``copy``)."""
        if v.region is not None or not v.prot & C.PROT_WRITE:
            return
        phys = self.phys
        refs = phys.refs
        copied: list[int] = []
        for _va, q, i0, n in self.pt.segments(start, end):
            ents = q[i0:i0 + n].tolist()
            for k, e in enumerate(ents):
                if e & PTE_P and not e & PTE_RW:
                    f = (e & ADDR_MASK) >> 12
                    if refs[f >> _FSHIFT][f & _FMASK] == 1:
                        q[i0 + k] = e | PTE_RW
                    elif copy:
                        new = phys.alloc()
                        phys.copy_frame(new, e & ADDR_MASK)
                        q[i0 + k] = (e & ~ADDR_MASK) | new | PTE_RW
                        copied.append(e & ADDR_MASK)
        if copied:
            phys.drop(copied)  # one reference fewer each, and no translation to them from here

    def _fill(self, v: VMA, start: int, end: int, fault_va: int = -1):
        """Give every empty page of [start, end) ⊂ ``v`` its page: a zeroed
        frame, a frame read from the file, or the region's page.  Pages past
        the end of the file are left out; SIGBUS if ``fault_va`` is one."""
        key = None
        if v.file is not None or v.region is not None:
            size, key = self._file_size_key(v)
            limit = v.start + page_align(size) - v.pgoff  # first va past the file's last page
            if v.region is not None:
                r = v.region
                limit = min(limit, v.start + r.file_off + r.size - v.pgoff)
            if fault_va >= limit:
                return SIGBUS_ADRERR
            end = min(end, limit)
            end_limit = min(v.end, limit)
            if end <= start:
                return None
        if v.region is not None:
            return self._fill_shared(v, start, end)
        if key is not None:
            self._fill_cached(v, start, end, key, True)
            if fault_va >= 0:  # and whatever else of the file is cached around it
                lo = max(v.start, fault_va & ~(CACHED_AROUND * PAGE_SIZE - 1))
                self._fill_cached(v, lo, min(end_limit, lo + CACHED_AROUND * PAGE_SIZE), key, False)
            return None
        phys = self.phys
        bits = leaf_bits(v.prot, True)
        file = v.file
        filled = 0
        for va, q, i0, n in self.pt.segments(start, end, create=True):
            for k, r in _runs_of_true([not e for e in q[i0:i0 + n].tolist()]):
                frames = phys.alloc_many(r - k)
                if file is not None:
                    self._read_file(file, v.offset_of(va + (k << 12)), frames)
                q[i0 + k:i0 + r] = array("Q", [f | bits for f in frames])
                filled += r - k
        self._rss += filled
        return None

    def _file_size_key(self, v: VMA) -> tuple[int, FileKey | None]:
        """The size of ``v``'s file and, for a private mapping of a host
        file that may be cached, its page-cache key."""
        if v.region is not None:
            return v.region.file_size(), None
        fd = v.file.host_fd()
        try:
            if fd is None:
                return v.file.stat().size, None
            st = os.fstat(fd)
        except (OSError, SyscallError):
            return 0, None
        return st.st_size, self.phys.page_cache.key_of(st)

    def _fill_cached(self, v: VMA, start: int, end: int, key: FileKey, read: bool) -> None:
        """_fill for a private file mapping whose pages the page cache may
        hold: cached frames are mapped read-only (shared); the others are
        read from the file into new frames that join the cache, or with
        ``read`` False left empty."""
        phys = self.phys
        cache = phys.page_cache
        bits = leaf_bits(v.prot, False)
        file = v.file
        filled = 0
        for va, q, i0, n in self.pt.segments(start, end, create=True):
            ents = q[i0:i0 + n].tolist()
            first = v.offset_of(va) >> 12
            frames = cache.lookup(key, first, n)
            missing = [not e and f is None for e, f in zip(ents, frames)] if read else []
            for k, r in _runs_of_true(missing):
                new = phys.alloc_many(r - k)
                self._read_file(file, (first + k) << 12, new)
                cache.insert(key, first + k, new)
                frames[k:r] = new
            ref = phys.ref
            for k in range(n):
                if not ents[k]:
                    gpa = frames[k]
                    if gpa is not None:
                        ref(gpa)
                        q[i0 + k] = gpa | bits
                        filled += 1
        self._rss += filled
        cache.shrink()

    def _fill_shared(self, v: VMA, start: int, end: int):
        r = v.region
        bits = leaf_bits(v.prot, not r.readonly)
        base = r.gpa + v.pgoff - r.file_off - v.start  # gpa = base + va
        filled = 0
        for va, q, i0, n in self.pt.segments(start, end, create=True):
            for k in range(n):
                if not q[i0 + k]:
                    q[i0 + k] = (base + va + (k << 12)) | bits
                    filled += 1
        self._rss += filled
        return None

    def _read_file(self, file, offset: int, frames: list[int]) -> None:
        """File contents from ``offset`` into ``frames`` (zeros past the end)."""
        views = [self.phys.frame_view(f) for f in frames]
        fd = file.host_fd()
        if fd is not None:
            try:
                os.preadv(fd, views, offset)
                return
            except OSError:
                pass
        try:
            data = file.pread(len(frames) * PAGE_SIZE, offset)
        except SyscallError:
            return
        for k, view in enumerate(views):
            piece = data[k * PAGE_SIZE:(k + 1) * PAGE_SIZE]
            if not piece:
                break
            view[:len(piece)] = piece

    def populate(self, addr: int, length: int, write: bool = False) -> None:
        """Map the pages of [addr, addr+length) now (stopping at the end of a
        file), as a fault would; with ``write``, writable pages too.  Parts
        without a VMA and PROT_NONE VMAs are skipped."""
        start = addr & PAGE_MASK
        end = page_align(addr + length)
        for v in self._in_range(start, end):
            if not v.prot & PROT_RWX:
                continue
            lo, hi = max(start, v.start), min(end, v.end)
            if v.flags & VM_HUGEPAGE:
                for slot_va in range((lo + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1), hi - HUGE_SIZE + 1, HUGE_SIZE):
                    if not self.pt.get(slot_va):
                        self._map_huge(v, slot_va)
            self._fill(v, lo, hi)
            if write:
                self._make_writable(v, lo, hi)

    # ------------------------------------------------------------ fork, exit
    def fork(self) -> "MemoryManager":
        """A copy of this address space: private pages copy on write (both
        sides read-only now, the parent's write access zapped), shared pages shared."""
        child = MemoryManager(self.phys, self.pt.system_entries, self.user_limit)
        for attr in ("mmap_base", "mmap_min_addr", "stack_limit", "start_brk", "brk_cur"):
            setattr(child, attr, getattr(self, attr))
        refs = self.phys.refs
        zap: list[int] = []
        rss = 0
        for slot in list(self.pt.huge):  # a huge page is copied whole, so it must lie in one VMA
            v = self.find_vma(slot << 21)
            if v is None or v.end < (slot + 1) << 21:
                self.pt.split(slot)
        for v in self.vmas:
            if v.flags & VM_DONTFORK:
                continue
            c = v.clone()
            c.flags &= ~VM_LOCKED
            child.vmas.append(c)
            child._starts.append(c.start)
            if v.flags & VM_WIPEONFORK:
                continue
            for slot in self.pt.huge_in(v.start, v.end):
                e = self.pt.huge[slot]
                base = child.pt.map_huge(slot << 21, e & ~(ADDR_MASK | PTE_PS))
                if base is None:
                    self.pt.split(slot)  # no 2 MiB frame: copy on write in small pages
                else:
                    self.phys.copy_huge(base, e & ADDR_MASK)
                    rss += HUGE_FRAMES
            shared = v.region is not None
            for va, q, i0, n in self.pt.segments(v.start, v.end):
                ents = q[i0:i0 + n].tolist()
                if not any(ents):
                    continue
                cq, ci = child.pt.slot(va, True)
                if shared:
                    cq[ci:ci + n] = array("Q", ents)
                    rss += n - ents.count(0)
                    continue
                protect = False
                for k, e in enumerate(ents):
                    if e:
                        f = (e & ADDR_MASK) >> 12
                        refs[f >> _FSHIFT][f & _FMASK] += 1
                        rss += 1
                        if e & PTE_RW:
                            ents[k] = e & ~PTE_RW
                            zap.append(e & ADDR_MASK)
                            protect = True
                out = array("Q", ents)
                if protect:
                    q[i0:i0 + n] = out
                cq[ci:ci + n] = out
        child._rss = rss
        if zap:
            self.phys.zap_many(zap)
        return child

    def release(self) -> None:
        """The address space is gone (exit, exec): every page and table goes back."""
        if self.released:
            return
        self.released = True
        gone: list[int] = []
        for _va, q, i0, n in self.pt.segments(0, self.user_limit):
            ents = q[i0:i0 + n].tolist()
            if any(ents):
                gone.extend([e & ADDR_MASK for e in ents if e])
        if gone:
            self.phys.drop(gone)  # every leaf zapped before its table may be reused
        self._rss = 0
        for v in self.vmas:
            v.put(self.phys)
        self.vmas.clear()
        self._starts.clear()
        for va, gpa in self._private:
            self.pt.set(va, 0)
        self.phys.drop([gpa for _va, gpa in self._private])
        self._private.clear()
        self.pt.release()

    # ------------------------------------------------------- user access
    def _gpa(self, va: int, write: bool, force: bool = False) -> int:
        """Guest-physical address of user byte ``va`` for the Sentry to access
        (faulting the page in, breaking COW); EFAULT where the app could not."""
        pt = self.pt
        if not force:
            t = pt.pts.get(va >> 21)
            if t is not None:
                e = pt.qviews[t >> CHUNK_SHIFT][((t & CHUNK_MASK) >> 3) + ((va >> 12) & 511)]
            else:
                e = pt.get(va)
            if e & PTE_P and (not write or e & PTE_RW):
                return (e & ADDR_MASK) | (va & 4095)
        if va < 0 or va >= self.user_limit:
            raise _err(C.EFAULT)
        i = self._index(va)
        if i < 0:
            raise _err(C.EFAULT)
        v = self.vmas[i]
        prot = v.prot
        if not force:
            if not prot & PROT_RWX or (write and not prot & C.PROT_WRITE):
                raise _err(C.EFAULT)
        elif write and v.region is not None and (not prot & C.PROT_WRITE or v.region.readonly):
            raise _err(C.EFAULT)
        if self._handle(v, va & PAGE_MASK, write, force=force) is not None:
            raise _err(C.EFAULT)
        e = pt.get(va)
        if not e or (not force and not (e & PTE_P and (not write or e & PTE_RW))):
            raise _err(C.EFAULT)
        return (e & ADDR_MASK) | (va & 4095)

    def _view(self, gpa: int):
        if gpa < REGION_BASE:
            return self.phys.chunks[gpa >> CHUNK_SHIFT].view, gpa & CHUNK_MASK
        # A shared file page: if the file shrank under the mapping, touching
        # the page would raise SIGBUS in the Sentry itself.
        r = self.phys.region_at(gpa)
        off = gpa - r.gpa
        if r.file_off + off >= r.file_size():
            raise _err(C.EFAULT)
        return r.view, off

    def read(self, addr: int, n: int) -> bytes:
        if n <= 0:
            if n < 0:
                raise _err(C.EFAULT)
            return b""
        if addr < 0 or addr + n > self.user_limit:
            raise _err(C.EFAULT)
        return b"".join([view[off:off + take] for view, off, take in self._pieces(addr, n, False, False)])

    def _pieces(self, addr: int, n: int, write: bool, force: bool) -> list[tuple[memoryview, int, int]]:
        """[addr, addr + n) as (view, offset, length) pieces of the Sentry's
        mappings, neighbouring frames of one chunk merged into one piece (a
        64 KiB read() then copies in one or two slices, not 16)."""
        pt = self.pt
        need = PTE_P | PTE_RW if write else PTE_P
        first = addr & PAGE_MASK
        end = addr + n
        frames: list[int] = []  # guest-physical address of each page
        va = first
        while va < end:
            stop = min(end, (va | 0x1F_FFFF) + 1)  # the end of this last-level table
            count = (stop - va + 4095) >> 12
            t = None if force else pt.pts.get(va >> 21)
            if t is not None:
                i = ((t & CHUNK_MASK) >> 3) + ((va >> 12) & 511)
                ents = pt.qviews[t >> CHUNK_SHIFT][i:i + count].tolist()
            elif not force and va >> 21 in pt.huge:
                e = pt.get(va)
                ents = list(range(e, e + (count << 12), PAGE_SIZE))
            else:
                ents = [0] * count
            ready = [e & ADDR_MASK for e in ents if e & need == need]
            if len(ready) == count:
                frames += ready
            else:
                for k, e in enumerate(ents):
                    frames.append(e & ADDR_MASK if e & need == need else self._gpa(va + (k << 12), write, force))
            va += count << 12
        run = frames[0]
        last = len(frames) - 1
        if frames[-1] == run + (last << 12) and frames[-1] < REGION_BASE \
                and run >> CHUNK_SHIFT == frames[-1] >> CHUNK_SHIFT and frames == list(range(run, run + (last << 12) + 1, PAGE_SIZE)):
            out = [(run, len(frames) * PAGE_SIZE)]  # one contiguous run, the usual case
        else:
            out = []
            size = PAGE_SIZE
            for gpa in frames[1:]:
                if gpa == run + size and gpa < REGION_BASE and gpa & CHUNK_MASK:
                    size += PAGE_SIZE
                    continue
                out.append((run, size))
                run, size = gpa, PAGE_SIZE
            out.append((run, size))
        skip = addr - first
        pieces = []
        for gpa, size in out:
            view, off = self._view(gpa)
            pieces.append([view, off, size])
        pieces[0][1] += skip
        pieces[0][2] -= skip
        pieces[-1][2] -= len(frames) * PAGE_SIZE - skip - n
        return pieces

    def _write(self, addr: int, data, force: bool) -> int:
        n = len(data)
        if n == 0:
            return 0
        if addr < 0 or addr + n > self.user_limit:
            raise _err(C.EFAULT)
        src = memoryview(data).cast("B")
        pos = 0
        for view, off, take in self._pieces(addr, n, True, force):
            view[off:off + take] = src[pos:pos + take]
            pos += take
        return n

    def write(self, addr: int, data) -> int:
        return self._write(addr, data, False)

    def write_force(self, addr: int, data) -> None:
        """Write ignoring PROT_WRITE (the ELF loader, ptrace pokes), copying
        shared private pages first; still EFAULT without a VMA."""
        self._write(addr, data, True)

    def shared_futex_key(self, addr: int):
        """A futex key that every address space mapping the same shared page
        agrees on (Linux keys those by inode and offset); None for private
        memory, which is keyed by (mm, address)."""
        v = self.find_vma(addr)
        if v is None or v.region is None:
            return None
        return ("shared", v.region.inode, v.offset_of(addr))

    # -------------------------------------------------------------- /proc
    @property
    def vm_size(self) -> int:
        return sum(v.end - v.start for v in self.vmas)

    @property
    def rss(self) -> int:
        return self._rss * PAGE_SIZE

    @property
    def locked(self) -> int:
        return sum(v.end - v.start for v in self.vmas if v.flags & VM_LOCKED)

    @property
    def page_tables(self) -> int:
        """Bytes of page tables (VmPTE)."""
        return self.pt.table_count * PAGE_SIZE

    def _vma_name(self, v: VMA) -> str:
        if v.name:
            return v.name
        if v.file is not None:
            try:
                path = v.file.path_for_proc()
            except Exception:
                path = b"?"
            return path.decode("utf-8", "surrogateescape").replace("\n", "\\012")
        if v.region is not None:
            return "/dev/zero (deleted)"
        if v.start < self.brk_cur and v.end > self.start_brk:
            return "[heap]"
        return ""

    def maps(self) -> list[str]:
        """The lines of /proc/PID/maps, as Linux formats them."""
        lines = []
        for v in self.vmas:
            p = v.prot
            special = bool(v.flags & VM_DONTEXPAND)  # Linux shows [vdso] and [vvar] as private
            perms = ("r" if p & 1 else "-") + ("w" if p & 2 else "-") + ("x" if p & 4 else "-") + \
                    ("s" if v.shared and not special else "p")
            dev = ino = 0
            off = 0
            if v.file is not None:
                off = v.pgoff
                try:
                    st = v.file.stat()
                    dev, ino = st.dev, st.ino
                except SyscallError:
                    pass
            elif v.region is not None and not special:
                off = v.pgoff
                dev = 1
                try:
                    ino = os.fstat(v.region.fd).st_ino
                except OSError:
                    pass
            line = f"{v.start:08x}-{v.end:08x} {perms} {off:08x} {os.major(dev):02x}:{os.minor(dev):02x} {ino} "
            name = self._vma_name(v)
            if name:
                line = line.ljust(72) + " " + name
            lines.append(line)
        return lines

    def proc_maps(self) -> str:
        """/proc/PID/maps as procfs asks for it."""
        return "".join(line + "\n" for line in self.maps())
