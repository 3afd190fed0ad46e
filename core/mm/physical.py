"""Guest-physical memory: memfd chunks mapped shared into the Sentry and
handed out as 4 KiB frames, plus file regions for MAP_SHARED mappings.

Each chunk is one memfd mapping and, on KVM, one memslot at a fixed
guest-physical address (``chunk index << CHUNK_SHIFT``).  The Sentry reads
and writes frames through its own mapping.  ``zap`` drops the Sentry's page
table entries of a frame: under shadow paging (PVM) that is what makes the
hypervisor forget its shadow entries for that frame, so it is needed after
every downgrade or removal of a guest mapping (PLATFORM-NOTES §2.5.3).

A *region* is a host file (or a memfd standing for shared anonymous memory)
mapped MAP_SHARED into the Sentry and exposed as another guest-physical range
above the chunks, with a memslot of its own: guest pages there *are* the host
page cache, so MAP_SHARED sees writes from every side.  Regions are not split
into counted frames; a region lives while some VMA refers to it.

Page-table frames come from a pool of their own and never return to the
general frame pool; see ``free_tables`` for when one may be reused.

*Huge chunks* hold the 2 MiB pages of large anonymous mappings (see
pagetable.py).  They are private anonymous memory marked MADV_HUGEPAGE, so
that the host backs each 2 MiB with one transparent huge page and the
hypervisor maps it with one entry: a 4 MiB mapping then costs two shadow
faults instead of 1024.  Memfd (shmem) memory would not do: hosts rarely
enable huge pages for shmem (``shmem_enabled`` is ``never`` by default).
Anonymous memory cannot be zapped with MADV_DONTNEED without losing its
data, so ``forget`` turns it read-only and back, which also tells the
hypervisor (an MMU-notifier event) while the data stays.
"""
from __future__ import annotations

import array
import bisect
import ctypes
import mmap
import os
from typing import Callable, Union

from pysc.core.mm.pagecache import PageCache

PAGE_SIZE = 4096
PAGE_SHIFT = 12
CHUNK_SHIFT = 30  # 1 GiB per chunk and memslot
CHUNK_SIZE = 1 << CHUNK_SHIFT
CHUNK_MASK = CHUNK_SIZE - 1
FRAMES_PER_CHUNK = CHUNK_SIZE >> PAGE_SHIFT
MAX_CHUNKS = 64
REGION_BASE = MAX_CHUNKS << CHUNK_SHIFT  # regions live above every chunk
HUGE_SIZE = 1 << 21
HUGE_FRAMES = HUGE_SIZE >> PAGE_SHIFT
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
ZERO_PAGE = bytes(PAGE_SIZE)
QUARANTINE_FLUSH = 64  # upper-level tables gathered before asking for a shadow flush

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_MAP_FAILED = ctypes.c_void_p(-1).value
_MADV_HUGEPAGE, _MADV_DONTFORK, _MAP_NORESERVE = 14, 10, 0x4000
_ONES = array.array("H", [1] * HUGE_FRAMES)
_NONES = array.array("H", bytes(2 * HUGE_FRAMES))


def host_has_thp() -> bool:
    """Whether the host gives anonymous memory transparent huge pages when
    asked with MADV_HUGEPAGE (``always`` or ``madvise``, not ``never``)."""
    try:
        with open(THP_SETTING) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def _check(rc: int) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _host_mmap(size: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    """mmap(2) into the Sentry at an address the kernel picks; OSError on failure."""
    addr = _libc.mmap(None, size, prot, flags, fd, offset)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return addr


class OutOfMemory(Exception):
    """No frame left within MAX_CHUNKS."""


class Chunk:
    """1 GiB of frames: a memfd mapped shared into the Sentry."""
    __slots__ = ("index", "fd", "map", "view", "qview", "host_addr", "_anchor")
    size = CHUNK_SIZE
    readonly = False

    def __init__(self, index: int):
        self.index = index
        self.fd = os.memfd_create(f"pysc-guest-{index}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, CHUNK_SIZE)
        self.map = mmap.mmap(self.fd, CHUNK_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._anchor = ctypes.c_char.from_buffer(self.map)
        self.host_addr = ctypes.addressof(self._anchor)
        self.view = memoryview(self.map)
        self.qview = self.view.cast("Q")  # the chunk as 64-bit words: page-table entries

    @property
    def gpa(self) -> int:
        return self.index << CHUNK_SHIFT

    def discard(self, offset: int, n: int) -> None:
        """Give the memory back to the host: it reads as zeros, and the hypervisor forgets it."""
        self.map.madvise(mmap.MADV_REMOVE, offset, n)

    def forget(self, offset: int, n: int) -> None:
        """Make the hypervisor forget its translations of this memory; the data stays."""
        self.map.madvise(mmap.MADV_DONTNEED, offset, n)

    def close(self) -> None:
        self.qview.release()
        self.view.release()
        del self._anchor
        try:
            self.map.close()
        except BufferError:  # a view of it is still alive somewhere: unmapped when that goes
            pass
        os.close(self.fd)


class HugeChunk(Chunk):
    """1 GiB of private anonymous memory, 2 MiB aligned, that the host backs
    with transparent huge pages; it holds 2 MiB guest pages only."""

    def __init__(self, index: int):
        self.index, self.fd, self.map = index, -1, None
        raw = _host_mmap(CHUNK_SIZE + HUGE_SIZE, mmap.PROT_READ | mmap.PROT_WRITE,
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
        addr = (raw + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1)  # congruent with the gpa, as huge mappings need
        if addr > raw:
            _libc.munmap(raw, addr - raw)
        _libc.munmap(addr + CHUNK_SIZE, raw + HUGE_SIZE - addr)
        self.host_addr = addr
        _check(_libc.madvise(addr, CHUNK_SIZE, _MADV_HUGEPAGE))
        _check(_libc.madvise(addr, CHUNK_SIZE, _MADV_DONTFORK))  # a host fork must not share it
        self._anchor = (ctypes.c_ubyte * CHUNK_SIZE).from_address(addr)
        self.view = memoryview(self._anchor).cast("B")
        self.qview = self.view.cast("Q")

    def discard(self, offset: int, n: int) -> None:
        _check(_libc.madvise(self.host_addr + offset, n, mmap.MADV_DONTNEED))

    def forget(self, offset: int, n: int) -> None:
        addr = self.host_addr + offset
        _check(_libc.mprotect(addr, n, mmap.PROT_READ))
        _check(_libc.mprotect(addr, n, mmap.PROT_READ | mmap.PROT_WRITE))

    def close(self) -> None:
        self.qview.release()
        self.view.release()
        self._anchor = None
        _libc.munmap(self.host_addr, CHUNK_SIZE)


class Region:
    """A host file range mapped shared into the Sentry and, as a memslot of
    its own (``index``), into the guest at ``gpa``.  ``file_off`` is the file
    offset of its first byte; ``refs`` counts the VMAs using it."""
    __slots__ = ("index", "gpa", "size", "host_addr", "readonly", "fd", "file_off", "view", "refs",
                 "inode", "_array")

    def __init__(self, index: int, gpa: int, fd: int, file_off: int, size: int, readonly: bool):
        prot = mmap.PROT_READ | (0 if readonly else mmap.PROT_WRITE)
        addr = _host_mmap(size, prot, mmap.MAP_SHARED, fd, file_off)
        self.index, self.gpa, self.size, self.readonly = index, gpa, size, readonly
        self.fd, self.file_off, self.host_addr, self.refs = fd, file_off, addr, 1
        st = os.fstat(fd)
        self.inode = (st.st_dev, st.st_ino)  # the host file: same for every region of it
        self._array = (ctypes.c_ubyte * size).from_address(addr)
        self.view = memoryview(self._array).cast("B")

    def file_size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        self.view.release()
        self._array = None
        _libc.munmap(self.host_addr, self.size)
        os.close(self.fd)


Backing = Union[Chunk, Region]


class PhysicalMemory:
    """Frames of guest-physical memory with reference counts (for copy on
    write), page-table frames, and file regions.

    ``on_new_chunk(obj)`` hears about every chunk (including the first) and
    every region, so the platform can register it with the hypervisor;
    ``on_remove(region)`` hears about a region before its host mapping goes
    (the platform deletes its memslot).
    ``shadow_paging`` says whether the hypervisor shadows the guest's tables
    (PVM); set it False on EPT/NPT hosts.  ``on_zap()``, when set, runs after
    every batch of invalidations (an EPT/NPT platform flushes the guest TLB
    on its next entry).  ``shadow_flush()``, when set, must make the
    hypervisor drop every shadow page table (e.g. delete and re-add a memslot:
    KVM then zaps all shadow pages); it lets upper-level table frames be
    reused (``free_tables``)."""

    def __init__(self, on_new_chunk: Callable[[Backing], None] | None = None, reserved_frames: int = 0,
                 huge_pages: bool | None = None):
        self.chunks: list[Chunk] = []
        self.on_new_chunk = on_new_chunk
        self.on_remove: Callable[[Region], None] | None = None
        self.on_zap: Callable[[], None] | None = None
        self.shadow_flush: Callable[[], None] | None = None
        self.shadow_paging = True
        self.refs: list[array.array] = []
        self.free_frames: list[int] = []
        self.next_frame = reserved_frames  # bump allocator over never-used frames
        self._small_end = 0  # end of the chunk next_frame runs in
        self.huge_pages = host_has_thp() if huge_pages is None else huge_pages
        self.huge_free: list[int] = []  # 2 MiB frames ready for reuse
        self._huge_next = self._huge_end = 0  # bump allocator in the newest huge chunk
        self.allocated = 0
        self.pt_free: list[int] = []  # page-table frames ready for reuse
        self.pt_quarantine: list[int] = []  # upper-level tables waiting for a shadow flush
        self.pt_frames = 0  # page-table frames ever taken from the general pool
        self.regions: dict[int, Region] = {}  # memslot index -> region
        self._region_gpas: list[int] = []  # sorted gpas of live regions
        self._region_by_gpa: list[Region] = []
        self._region_holes: list[tuple[int, int]] = []  # (gpa, size) given back
        self._region_next = REGION_BASE
        self._slot_next = MAX_CHUNKS
        self._slots_free: list[int] = []
        self._grow()
        self.page_cache = PageCache(self)

    def set_listener(self, on_new_chunk: Callable[[Backing], None],
                     on_remove: Callable[[Region], None] | None = None) -> None:
        """Register a hypervisor after creation; it hears about every chunk and region so far."""
        self.on_new_chunk = on_new_chunk
        if on_remove is not None:
            self.on_remove = on_remove
        for c in self.chunks:
            on_new_chunk(c)
        for r in self._region_by_gpa:
            on_new_chunk(r)

    def _new_chunk(self, kind: type[Chunk]) -> Chunk:
        if len(self.chunks) >= MAX_CHUNKS:
            raise OutOfMemory()
        c = kind(len(self.chunks))
        self.chunks.append(c)
        self.refs.append(array.array("H", bytes(2 * FRAMES_PER_CHUNK)))
        if self.on_new_chunk is not None:
            self.on_new_chunk(c)
        return c

    def _grow(self) -> None:
        c = self._new_chunk(Chunk)
        self.next_frame = max(self.next_frame, c.index * FRAMES_PER_CHUNK)
        self._small_end = (c.index + 1) * FRAMES_PER_CHUNK

    # --- frames ---
    def alloc(self) -> int:
        """A zeroed frame with one reference; returns its guest-physical address."""
        if self.free_frames:
            frame = self.free_frames.pop()
        else:
            if self.next_frame >= self._small_end:
                self._grow()
            frame = self.next_frame
            self.next_frame += 1
        self.refs[frame // FRAMES_PER_CHUNK][frame % FRAMES_PER_CHUNK] = 1
        self.allocated += 1
        return frame << PAGE_SHIFT

    def alloc_many(self, n: int) -> list[int]:
        """``n`` zeroed frames, one reference each."""
        alloc = self.alloc
        return [alloc() for _ in range(n)]

    def ref(self, gpa: int) -> None:
        frame = gpa >> PAGE_SHIFT
        self.refs[frame // FRAMES_PER_CHUNK][frame % FRAMES_PER_CHUNK] += 1

    def refcount(self, gpa: int) -> int:
        frame = gpa >> PAGE_SHIFT
        return self.refs[frame // FRAMES_PER_CHUNK][frame % FRAMES_PER_CHUNK]

    def unref(self, gpa: int) -> None:
        """Drop a reference; the last one frees the frame and gives its host
        memory back (which also zaps any shadow entry of it)."""
        frame = gpa >> PAGE_SHIFT
        counts = self.refs[frame // FRAMES_PER_CHUNK]
        i = frame % FRAMES_PER_CHUNK
        counts[i] -= 1
        if counts[i] == 0:
            self.chunks[frame // FRAMES_PER_CHUNK].discard(i << PAGE_SHIFT, PAGE_SIZE)
            self.free_frames.append(frame)
            self.allocated -= 1

    def drop(self, gpas: list[int]) -> None:
        """Unmapped from one guest address space: drop one reference of each
        frame (region pages have none) and make the hypervisor forget every
        translation to them.  Freed frames lose their memory (MADV_REMOVE,
        which zaps too); the others are zapped.  Both in contiguous runs."""
        refs = self.refs
        freed: list[int] = []
        kept: list[int] = []
        for gpa in gpas:
            if gpa >= REGION_BASE:
                kept.append(gpa)
                continue
            frame = gpa >> PAGE_SHIFT
            counts = refs[frame // FRAMES_PER_CHUNK]
            i = frame % FRAMES_PER_CHUNK
            n = counts[i] - 1
            counts[i] = n
            if n == 0:
                freed.append(gpa)
            else:
                kept.append(gpa)
        if freed:
            self.allocated -= len(freed)
            self.free_frames.extend(g >> PAGE_SHIFT for g in freed)
            freed.sort()
            for gpa, n in _runs(freed):
                self.chunks[gpa >> CHUNK_SHIFT].discard(gpa & CHUNK_MASK, n)
        if kept:
            self.zap_many(kept)
        elif freed and self.on_zap is not None:
            self.on_zap()

    # --- 2 MiB frames ---
    def alloc_huge(self) -> int | None:
        """512 zeroed, contiguous, 2 MiB aligned frames with one reference
        each, from a huge chunk; None without huge pages or room, or under
        shadow paging that cannot be flushed (pagetable.py says why it must be)."""
        if not self.huge_pages or not self.can_flush:
            return None
        if self.huge_free:
            gpa = self.huge_free.pop()
        else:
            if self._huge_next >= self._huge_end:
                try:
                    c = self._new_chunk(HugeChunk)
                except (OutOfMemory, OSError):
                    return None
                self._huge_next = c.index * FRAMES_PER_CHUNK
                self._huge_end = self._huge_next + FRAMES_PER_CHUNK
            gpa = self._huge_next << PAGE_SHIFT
            self._huge_next += HUGE_FRAMES
        self.claim_huge(gpa)
        return gpa

    def claim_huge(self, gpa: int) -> None:
        """Take a 2 MiB frame that ``discard_huge`` left out of the pool."""
        frame = gpa >> PAGE_SHIFT
        i = frame % FRAMES_PER_CHUNK
        self.refs[frame // FRAMES_PER_CHUNK][i:i + HUGE_FRAMES] = _ONES
        self.allocated += HUGE_FRAMES

    def discard_huge(self, gpa: int) -> None:
        """A 2 MiB frame is no longer mapped: its memory goes back to the host
        (which zaps every translation of it).  It stays out of the pool
        until ``release_huge``."""
        frame = gpa >> PAGE_SHIFT
        i = frame % FRAMES_PER_CHUNK
        self.refs[frame // FRAMES_PER_CHUNK][i:i + HUGE_FRAMES] = _NONES
        self.allocated -= HUGE_FRAMES
        self.chunks[gpa >> CHUNK_SHIFT].discard(gpa & CHUNK_MASK, HUGE_SIZE)
        if self.on_zap is not None:
            self.on_zap()

    def release_huge(self, gpa: int) -> None:
        """Put a discarded 2 MiB frame back in the pool."""
        self.huge_free.append(gpa)

    # --- page-table frames ---
    def alloc_table(self) -> int:
        """A zeroed frame for a page table, from the page-table pool."""
        if self.pt_free:
            return self.pt_free.pop()
        self.pt_frames += 1
        return self.alloc()

    def free_tables(self, leaf_tables: list[int], upper_tables: list[int]) -> None:
        """Give back the tables of a released address space.  Precondition:
        every leaf they mapped was removed and zapped.

        Why not the general pool, and why two kinds: KVM's shadow MMU keys
        its shadow page tables by guest frame (and level) and learns of guest
        writes to them only through write protection, which the Sentry's
        writes bypass; it may keep a shadow after the tree is gone.  A shadow
        of a last-level table holds only leaf entries, and zapping a frame
        removes every leaf entry pointing at it: once all leaves were zapped
        the shadow is empty, so the frame may serve as a table again (at
        another level it even gets another shadow).  A shadow of an
        upper-level table keeps links to child shadows, which no zap
        removes; reused as an upper table elsewhere, KVM would follow such a
        stale link into the child shadow of some other table (it reuses a
        present link without checking it) and fill it with entries that a
        later user of that child frame would then see.  So upper-level frames
        wait in quarantine until the hypervisor dropped every shadow page
        (``flush_quarantine``, every QUARANTINE_FLUSH frames), unless there
        is no shadow paging at all.  For the same reason an address space
        never frees or retargets a table while it lives (see pagetable.py).
        Reasoned from KVM's code, not observed: on PVM an adversarial test
        (reuse without flush, PDE retargeted behind KVM's back) saw no stale
        translation, so PVM may resync more than the reasoning assumes; the
        leaf-level zaps, in contrast, are verified necessary (§2.5.3)."""
        self.zero_frames(leaf_tables + upper_tables)
        self.pt_free.extend(leaf_tables)
        if not self.shadow_paging:
            self.pt_free.extend(upper_tables)
            return
        self.pt_quarantine.extend(upper_tables)
        if len(self.pt_quarantine) >= QUARANTINE_FLUSH:
            self.flush_quarantine()

    def flush_quarantine(self) -> bool:
        """Have the hypervisor drop its shadow pages, then reuse every
        quarantined table.  False when no flush was possible."""
        return not self.pt_quarantine or self.flush_shadows()

    @property
    def can_flush(self) -> bool:
        """Whether ``flush_shadows`` can work."""
        return (not self.shadow_paging or self.shadow_flush is not None
                or (self.on_new_chunk is not None and self.on_remove is not None))

    def flush_shadows(self) -> bool:
        """Have the hypervisor drop every shadow page table (nothing to do
        without shadow paging); quarantined tables are then free.  Without
        ``shadow_flush`` but with a listener that also removes regions, a
        one-page region is added and removed: KVM zaps every shadow page
        when a memslot goes (x86, with the default KVM_X86_QUIRK_SLOT_ZAP_ALL).
        False when no flush was possible."""
        if not self.can_flush:
            return False
        if self.shadow_paging:
            if self.shadow_flush is not None:
                self.shadow_flush()
            else:
                self._flush_by_memslot()
        self.pt_free.extend(self.pt_quarantine)
        self.pt_quarantine.clear()
        return True

    def _flush_by_memslot(self) -> None:
        fd = os.memfd_create("pysc-shadow-flush", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, PAGE_SIZE)
            self.put_region(self.add_region(fd, 0, PAGE_SIZE, False))
        finally:
            os.close(fd)

    def zero_frames(self, gpas: list[int]) -> None:
        """Zero frames by giving their memory back (chunk frames only)."""
        for gpa, n in _runs(sorted(gpas)):
            self.chunks[gpa >> CHUNK_SHIFT].discard(gpa & CHUNK_MASK, n)

    # --- regions ---
    def add_region(self, fd: int, file_off: int, size: int, readonly: bool) -> Region:
        """Map ``size`` bytes of host file ``fd`` from ``file_off`` (page
        aligned) into the guest; the region keeps its own dup of ``fd``."""
        size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        gpa = self._region_gpa(size)
        index = self._slots_free.pop() if self._slots_free else self._next_slot()
        dfd = os.dup(fd)
        try:
            r = Region(index, gpa, dfd, file_off, size, readonly)
        except BaseException:
            os.close(dfd)
            self._slots_free.append(index)
            self._region_holes.append((gpa, size + PAGE_SIZE))
            raise
        self.page_cache.forget(r.inode)  # pages written through the region may keep the timestamps
        i = bisect.bisect(self._region_gpas, gpa)
        self._region_gpas.insert(i, gpa)
        self._region_by_gpa.insert(i, r)
        self.regions[index] = r
        if self.on_new_chunk is not None:
            self.on_new_chunk(r)
        return r

    def _next_slot(self) -> int:
        self._slot_next += 1
        return self._slot_next - 1

    def _region_gpa(self, size: int) -> int:
        # One unused page after every region keeps runs of addresses (``_runs``)
        # from crossing into the next region.
        size += PAGE_SIZE
        holes = self._region_holes
        for i, (gpa, hsize) in enumerate(holes):
            if hsize >= size:
                if hsize == size:
                    del holes[i]
                else:
                    holes[i] = (gpa + size, hsize - size)
                return gpa
        gpa = self._region_next
        self._region_next += size
        return gpa

    def put_region(self, r: Region) -> None:
        """Drop a reference; the last one removes the memslot and the mapping."""
        r.refs -= 1
        if r.refs:
            return
        if self.on_remove is not None:
            self.on_remove(r)
        i = bisect.bisect_left(self._region_gpas, r.gpa)
        del self._region_gpas[i]
        del self._region_by_gpa[i]
        del self.regions[r.index]
        self._slots_free.append(r.index)
        self._region_holes.append((r.gpa, r.size + PAGE_SIZE))
        r.close()

    def has_region_of(self, inode: tuple[int, int]) -> bool:
        """Whether some live region maps the host file ``inode`` (dev, ino)."""
        return any(r.inode == inode for r in self._region_by_gpa)

    def region_at(self, gpa: int) -> Region:
        i = bisect.bisect(self._region_gpas, gpa) - 1
        if i < 0 or gpa >= self._region_by_gpa[i].gpa + self._region_by_gpa[i].size:
            raise ValueError(f"no region at {gpa:#x}")
        return self._region_by_gpa[i]

    # --- access from the Sentry ---
    def _locate(self, gpa: int) -> tuple[memoryview, int]:
        if gpa < REGION_BASE:
            return self.chunks[gpa >> CHUNK_SHIFT].view, gpa & CHUNK_MASK
        r = self.region_at(gpa)
        return r.view, gpa - r.gpa

    def read(self, gpa: int, n: int) -> bytes:
        """Bytes at ``gpa``; the range must not cross a chunk boundary (a frame never does)."""
        view, off = self._locate(gpa)
        return bytes(view[off:off + n])

    def write(self, gpa: int, data) -> None:
        view, off = self._locate(gpa)
        view[off:off + len(data)] = data

    def read_u64(self, gpa: int) -> int:
        view, off = self._locate(gpa)
        return int.from_bytes(view[off:off + 8], "little")

    def write_u64(self, gpa: int, value: int) -> None:
        view, off = self._locate(gpa)
        view[off:off + 8] = value.to_bytes(8, "little")

    def frame_view(self, gpa: int) -> memoryview:
        """A writable view of the whole frame at ``gpa``."""
        view, off = self._locate(gpa & ~(PAGE_SIZE - 1))
        return view[off:off + PAGE_SIZE]

    def copy_frame(self, dst: int, src: int) -> None:
        self.frame_view(dst)[:] = self.frame_view(src)

    def copy_huge(self, dst: int, src: int) -> None:
        """Copy a 2 MiB frame (both in huge chunks, so each is one piece)."""
        d, s = self.chunks[dst >> CHUNK_SHIFT].view, self.chunks[src >> CHUNK_SHIFT].view
        do, so = dst & CHUNK_MASK, src & CHUNK_MASK
        d[do:do + HUGE_SIZE] = s[so:so + HUGE_SIZE]

    def zap(self, gpa: int, n: int = PAGE_SIZE) -> None:
        """Make the hypervisor forget cached translations to these frames; data stays."""
        if self.shadow_paging:
            self.forget(gpa, n)
        if self.on_zap is not None:
            self.on_zap()

    def zap_many(self, gpas: list[int]) -> None:
        """``zap`` every frame in ``gpas`` (any order), one madvise per contiguous run."""
        if self.shadow_paging:
            for gpa, n in _runs(sorted(gpas)):
                self.forget(gpa, n)
        if self.on_zap is not None:
            self.on_zap()

    def forget(self, gpa: int, n: int) -> None:
        """Make the hypervisor forget its translations of [gpa, gpa + n); the data stays."""
        if gpa < REGION_BASE:
            self.chunks[gpa >> CHUNK_SHIFT].forget(gpa & CHUNK_MASK, n)
            return
        r = self.region_at(gpa)
        _check(_libc.madvise(r.host_addr + (gpa - r.gpa), n, mmap.MADV_DONTNEED))

    def punch(self, gpa: int, n: int) -> None:
        """Free the backing of a region range (MADV_REMOVE): its data becomes zeros in the file."""
        r = self.region_at(gpa)
        _check(_libc.madvise(r.host_addr + (gpa - r.gpa), n, mmap.MADV_REMOVE))

    def close(self) -> None:
        for r in list(self._region_by_gpa):
            r.refs = 1
            self.put_region(r)
        for c in self.chunks:
            c.close()
        self.chunks.clear()


def _runs(gpas: list[int]) -> list[tuple[int, int]]:
    """Sorted page addresses as (start, length) runs that stay within one
    chunk or region: a run never crosses a 1 GiB boundary, and regions are
    separated by a page no one uses."""
    out: list[tuple[int, int]] = []
    start = prev = None
    for g in gpas:
        if prev is not None and g == prev + PAGE_SIZE and g & CHUNK_MASK:
            prev = g
            continue
        if start is not None:
            out.append((start, prev + PAGE_SIZE - start))
        start = prev = g
    if start is not None:
        out.append((start, prev + PAGE_SIZE - start))
    return out
