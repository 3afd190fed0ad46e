"""x86-64 4-level page tables (48-bit, 4 KiB pages) written by the Sentry
into guest-physical memory.

Intermediate entries are P|RW|US|A: all permission lives in the leaves.  A
leaf is P|US|A|D, +RW when writable now, +NX unless executable, plus the
software bit HELD, so that a PROT_NONE page (not present for the MMU) still
keeps its frame.  An entry of 0 holds nothing.  Accessed and dirty are set
from the start because KVM's shadow MMU prefetches, on each shadow fault,
the neighbouring leaves only when they are marked accessed, and maps a
writable leaf read-only until it is dirty: with both set, a busybox
fork+exec loop took 29% fewer shadow faults on PVM.

Tables are created on demand and are never freed or retargeted while the
address space lives (an emptied table just stays): under shadow paging the
hypervisor's shadow of an upper table keeps links to child shadows that no
zap removes, so a PDE pointing to a new table could make KVM reuse the old
child shadow (physical.PhysicalMemory.free_tables).  They all go back at
``release``.  A table costs 4 KiB per 2 MiB of address space ever touched.

A 2 MiB slot of address space may instead hold one *huge page*: a PDE with
PS set pointing at 512 frames of a huge chunk (physical.py), for large
anonymous mappings.  Its rules come from the same shadow-MMU reasoning.
When the host backs the 2 MiB with a small page, KVM shadows a huge PDE with
a "direct" child table keyed by the first frame, and again reuses a present
link without checking it: pointing the PDE at a table, or at other frames,
would have KVM file new entries under the wrong frames.  So a slot that
held a huge page keeps its frames (``retired``) and gets only those back;
before it gets a table, or its frames go elsewhere, every shadow is
dropped (``PhysicalMemory.flush_shadows``).  ``split`` turns a huge page
into a table of small copies, for the operations that need 4 KiB pages
(partial munmap or mprotect, mremap).  A slot that has a table never holds
a huge page.
"""
from __future__ import annotations

from array import array

from pysc.core.mm.physical import CHUNK_MASK, CHUNK_SHIFT, HUGE_FRAMES, PAGE_SIZE, PhysicalMemory

PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_A = 1 << 5  # accessed
PTE_D = 1 << 6  # dirty
PTE_PS = 1 << 7
PTE_HELD = 1 << 9  # software: this entry holds a frame (present or not)
PTE_NX = 1 << 63
ADDR_MASK = 0x000F_FFFF_FFFF_F000
TABLE = PTE_P | PTE_RW | PTE_US | PTE_A
ENTRIES = 512
ZEROS = memoryview(array("Q", bytes(8 * ENTRIES)))

# PROT_* (1 read, 2 write, 4 exec) -> leaf bits without RW (decided per page) and without the frame
_LEAF_BASE = [PTE_HELD] + [PTE_HELD | PTE_P | PTE_US | PTE_A | PTE_D | (0 if prot & 4 else PTE_NX) for prot in range(1, 8)]


def leaf_bits(prot: int, writable: bool) -> int:
    """Leaf flags for a page of a VMA with ``prot``; ``writable`` says
    whether this page may be written now (not copy on write)."""
    bits = _LEAF_BASE[prot & 7]
    if writable and prot & 2:
        bits |= PTE_RW
    return bits


class PageTables:
    """One address space's tree.  ``pts`` maps ``va >> 21`` to the
    guest-physical address of the last-level table covering it, which is all
    the Sentry needs to find a leaf without walking; ``huge`` maps it to the
    entry of a huge page instead."""

    def __init__(self, phys: PhysicalMemory, system_entries: dict[int, int] | None = None):
        self.phys = phys
        self.qviews = [c.qview for c in phys.chunks]
        self.root = phys.alloc_table()
        self.pdpts: dict[int, int] = {}  # va >> 39 -> table
        self.pds: dict[int, int] = {}  # va >> 30 -> table
        self.pts: dict[int, int] = {}  # va >> 21 -> table
        self.huge: dict[int, int] = {}  # va >> 21 -> PDE of a huge page
        self.retired: dict[int, int] = {}  # va >> 21 -> the 2 MiB frame it held last
        self.system_entries = dict(system_entries or {})
        for index, value in self.system_entries.items():
            self._set(self.root, index, value)

    # --- raw entries ---
    def _q(self, table: int):
        qv = self.qviews
        c = table >> CHUNK_SHIFT
        if c >= len(qv):
            self.qviews = qv = [ch.qview for ch in self.phys.chunks]
        return qv[c]

    def _set(self, table: int, index: int, value: int) -> None:
        self._q(table)[((table & CHUNK_MASK) >> 3) + index] = value

    def _get(self, table: int, index: int) -> int:
        return self._q(table)[((table & CHUNK_MASK) >> 3) + index]

    # --- last-level tables ---
    def table(self, va: int) -> int:
        """The last-level table for ``va``, created (with its parents) if
        needed; a huge page there is split first."""
        slot = va >> 21
        t = self.pts.get(slot)
        if t is not None:
            return t
        if slot in self.huge:
            self.split(slot)
            return self.pts[slot]
        if slot in self.retired:
            self._drop_retired()
        t = self.phys.alloc_table()
        self._set(self._pd(va), slot & 511, t | TABLE)
        self.pts[slot] = t
        return t

    def _pd(self, va: int) -> int:
        """The page directory for ``va``, created (with its parent) if needed."""
        pd = self.pds.get(va >> 30)
        if pd is None:
            pdpt = self.pdpts.get(va >> 39)
            if pdpt is None:
                pdpt = self.phys.alloc_table()
                self._set(self.root, (va >> 39) & 511, pdpt | TABLE)
                self.pdpts[va >> 39] = pdpt
            pd = self.phys.alloc_table()
            self._set(pdpt, (va >> 30) & 511, pd | TABLE)
            self.pds[va >> 30] = pd
        return pd

    def map_private(self, va: int, entry: int) -> None:
        """Set the leaf for ``va``, in a slot of ``system_entries``, for this
        address space alone: the slot's top table becomes a private copy
        whose entry for the GiB of ``va`` leads to tables of its own (they go
        back at ``release``); the rest stays shared with the machine.  Only
        before the address space first runs: afterwards this would retarget
        tables the hypervisor may have shadowed."""
        top = va >> 39
        if top not in self.pdpts:
            shared = self.system_entries[top & 511] & ADDR_MASK
            pdpt = self.phys.alloc_table()
            lo, slo = (pdpt & CHUNK_MASK) >> 3, (shared & CHUNK_MASK) >> 3
            self._q(pdpt)[lo:lo + ENTRIES] = self._q(shared)[slo:slo + ENTRIES]
            self._set(self.root, top & 511, pdpt | TABLE)
            self.pdpts[top] = pdpt
        if va >> 30 not in self.pds:
            pd = self.phys.alloc_table()
            self._set(self.pdpts[top], (va >> 30) & 511, pd | TABLE)
            self.pds[va >> 30] = pd
        self.set(va, entry)

    # --- huge pages ---
    def map_huge(self, va: int, bits: int) -> int | None:
        """Give the empty 2 MiB slot of ``va`` (no table there) a zeroed huge
        page with leaf ``bits``; its guest-physical address, or None when no
        2 MiB frame is to be had."""
        slot = va >> 21
        base = self.retired.pop(slot, None)
        if base is not None:
            self.phys.claim_huge(base)
        else:
            base = self.phys.alloc_huge()
            if base is None:
                return None
        e = base | bits | PTE_PS
        self._set(self._pd(va), slot & 511, e)
        self.huge[slot] = e
        return base

    def unmap_huge(self, slot: int) -> None:
        """Remove the huge page of ``slot``; its memory goes back to the host."""
        base = self.huge.pop(slot) & ADDR_MASK
        self._set(self.pds[slot >> 9], slot & 511, 0)
        self.phys.discard_huge(base)
        self.retired[slot] = base

    def split(self, slot: int) -> None:
        """Replace the huge page of ``slot`` by a table of 512 small pages
        with the same contents and rights."""
        phys = self.phys
        e = self.huge.pop(slot)
        base = e & ADDR_MASK
        pd = self.pds[slot >> 9]
        self._set(pd, slot & 511, 0)
        # Other threads now fault and wait for the Sentry, so nothing is
        # written to the old page while it is copied.
        phys.forget(base, HUGE_FRAMES * PAGE_SIZE)
        frames = phys.alloc_many(HUGE_FRAMES)
        for k, f in enumerate(frames):
            phys.copy_frame(f, base + k * PAGE_SIZE)
        self.retired[slot] = base
        phys.discard_huge(base)
        self._drop_retired()
        t = phys.alloc_table()
        bits = e & ~(ADDR_MASK | PTE_PS)
        self._q(t)[(t & CHUNK_MASK) >> 3:((t & CHUNK_MASK) >> 3) + ENTRIES] = array("Q", [f | bits for f in frames])
        self._set(pd, slot & 511, t | TABLE)
        self.pts[slot] = t

    def _drop_retired(self) -> None:
        """Flush every shadow, after which the retired frames may serve anywhere."""
        self.phys.flush_shadows()
        for base in self.retired.values():
            self.phys.release_huge(base)
        self.retired.clear()

    def split_in(self, start: int, end: int) -> None:
        """Split every huge page that meets [start, end)."""
        for slot in self.huge_in(start, end):
            self.split(slot)

    def huge_in(self, start: int, end: int) -> list[int]:
        """The slots with a huge page that meet [start, end)."""
        first, last = start >> 21, (end - 1) >> 21
        return sorted(k for k in self.huge if first <= k <= last)

    def slot(self, va: int, create: bool = False):
        """(qview, index) of the leaf entry for ``va``, or None without a table."""
        t = self.pts.get(va >> 21)
        if t is None:
            if not create:
                return None
            t = self.table(va)
        return self._q(t), ((t & CHUNK_MASK) >> 3) + ((va >> 12) & 511)

    def get(self, va: int) -> int:
        """The leaf entry for ``va`` (0 when there is none); in a huge page,
        the entry a small page there would have."""
        t = self.pts.get(va >> 21)
        if t is None:
            h = self.huge.get(va >> 21)
            if h is None:
                return 0
            return (h & ~PTE_PS) | (va & 0x1F_F000)
        return self._q(t)[((t & CHUNK_MASK) >> 3) + ((va >> 12) & 511)]

    def set(self, va: int, entry: int) -> None:
        q, i = self.slot(va, True)
        q[i] = entry

    def segments(self, start: int, end: int, create: bool = False):
        """(va, qview, first index, count) for every last-level table piece
        covering [start, end); without ``create`` pieces with no table are
        left out.  Huge pages are always left out."""
        pts = self.pts
        first, last = start >> 21, (end - 1) >> 21
        if not create and last - first > len(pts):
            keys = sorted(k for k in pts if first <= k <= last)
        else:
            keys = range(first, last + 1)
        for k in keys:
            t = pts.get(k)
            if t is None:
                if not create or k in self.huge:
                    continue
                t = self.table(k << 21)
            lo = max(start, k << 21)
            hi = min(end, (k + 1) << 21)
            yield lo, self._q(t), ((t & CHUNK_MASK) >> 3) + ((lo >> 12) & 511), (hi - lo) >> 12

    @property
    def table_count(self) -> int:
        return 1 + len(self.pdpts) + len(self.pds) + len(self.pts)

    def release(self) -> None:
        """Give every table and huge page back.  The caller removed and
        zapped every small leaf first."""
        for slot in list(self.huge):
            self.unmap_huge(slot)
        for base in self.retired.values():
            self.phys.release_huge(base)  # its shadows hang below tables now in quarantine
        self.retired.clear()
        uppers = [self.root, *self.pdpts.values(), *self.pds.values()]
        leaves = list(self.pts.values())
        self.pdpts.clear()
        self.pds.clear()
        self.pts.clear()
        self.root = -1
        self.phys.free_tables(leaves, uppers)


class MMUFault(Exception):
    """What the MMU would raise: ``error_code`` as in the x86 #PF error code."""

    def __init__(self, va: int, error_code: int):
        super().__init__(f"#PF at {va:#x}, error code {error_code:#x}")
        self.va = va
        self.error_code = error_code


def translate(phys: PhysicalMemory, cr3: int, va: int, write: bool = False, execute: bool = False,
              user: bool = True) -> int:
    """Walk the tables from ``cr3`` as the MMU does (CR0.WP=1, EFER.NXE=1)
    and return the guest-physical address of ``va``, or raise MMUFault.
    For tests and debugging; the Sentry itself never needs a full walk."""
    err = (2 if write else 0) | (4 if user else 0) | (16 if execute else 0)
    if not (va < 1 << 47 or va >= (1 << 64) - (1 << 47)):
        raise MMUFault(va, err)  # not canonical: #GP really
    table = cr3 & ADDR_MASK
    rw = us = True
    nx = False
    for shift in (39, 30, 21, 12):
        e = phys.read_u64(table + ((va >> shift) & 511) * 8)
        if not e & PTE_P:
            raise MMUFault(va, err)
        rw &= bool(e & PTE_RW)
        us &= bool(e & PTE_US)
        nx |= bool(e & PTE_NX)
        table = e & ADDR_MASK
        if e & PTE_PS:
            if shift != 21:
                raise MMUFault(va, err | 8)  # the Sentry makes 2 MiB pages only
            table |= va & 0x1F_F000
            break
    if (user and not us) or (write and not rw) or (execute and nx):
        raise MMUFault(va, err | 1)
    return table | (va & 4095)
