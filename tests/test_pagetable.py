"""Page tables in guest-physical memory, checked with a software MMU walk;
physical memory: frames, page-table pools, regions, invalidation runs."""
from __future__ import annotations

import os

import pytest

from pysc.core.mm import physical
from pysc.core.mm.pagetable import (ADDR_MASK, PTE_A, PTE_D, PTE_HELD, PTE_NX, PTE_P, PTE_RW, PTE_US, TABLE, MMUFault,
                                    PageTables, leaf_bits, translate)
from pysc.core.mm.physical import PAGE_SIZE, REGION_BASE, PhysicalMemory


@pytest.fixture
def phys():
    p = PhysicalMemory(reserved_frames=16)
    yield p
    p.close()


def test_leaf_bits():
    assert leaf_bits(0, True) == PTE_HELD  # PROT_NONE: not present, frame kept
    present = PTE_HELD | PTE_P | PTE_US | PTE_A | PTE_D  # A/D preset: KVM's shadow MMU then prefetches
    assert leaf_bits(1, True) == present | PTE_NX
    assert leaf_bits(3, True) == present | PTE_NX | PTE_RW
    assert leaf_bits(3, False) == present | PTE_NX  # copy on write
    assert leaf_bits(5, True) == present  # exec: no NX
    assert leaf_bits(2, True) & PTE_P  # write-only is readable on x86


def test_tables_and_walk(phys):
    pt = PageTables(phys, {255: 0x1000 | TABLE})
    frame = phys.alloc()
    va = 0x7F12_3456_7000
    pt.set(va, frame | leaf_bits(3, True))
    assert translate(phys, pt.root, va + 0x123, write=True) == frame + 0x123
    assert pt.get(va) & ADDR_MASK == frame
    # intermediate entries: P|RW|US, pointing at tables from the table pool
    pml4e = phys.read_u64(pt.root + ((va >> 39) & 511) * 8)
    assert pml4e & 0xFFF == TABLE
    assert phys.read_u64(pt.root + 255 * 8) == 0x1000 | TABLE  # system entry copied
    assert pt.table_count == 4
    with pytest.raises(MMUFault) as e:
        translate(phys, pt.root, va, execute=True)
    assert e.value.error_code == 4 | 16 | 1  # user, instruction fetch, protection
    with pytest.raises(MMUFault) as e:
        translate(phys, pt.root, va + PAGE_SIZE)
    assert e.value.error_code == 4  # not present
    pt.set(va, frame | leaf_bits(1, True))
    with pytest.raises(MMUFault):
        translate(phys, pt.root, va, write=True)
    assert translate(phys, pt.root, va) == frame
    pt.set(va, frame | leaf_bits(0, True))
    with pytest.raises(MMUFault):
        translate(phys, pt.root, va)
    with pytest.raises(MMUFault):
        translate(phys, pt.root, 1 << 47)  # not canonical


def test_segments(phys):
    pt = PageTables(phys)
    start, end = 0x1F_F000, 0x40_3000  # crosses two 2 MiB boundaries
    segs = [(va, n) for va, _q, _i, n in pt.segments(start, end, create=True)]
    assert segs == [(0x1F_F000, 1), (0x20_0000, 512), (0x40_0000, 3)]
    assert sorted(pt.pts) == [0, 1, 2]
    assert [va for va, *_ in pt.segments(0, 1 << 46)] == [0x1000 * 0, 0x20_0000, 0x40_0000]
    q, i = pt.slot(0x20_1000)
    q[i] = 0x5000 | PTE_P
    assert pt.get(0x20_1000) == 0x5000 | PTE_P


def test_table_frames_have_their_own_pool(phys):
    pt = PageTables(phys)
    for va in (0x1000, 0x7F00_0000_0000, 0x4000_0000):
        pt.table(va)
    tables = {pt.root, *pt.pdpts.values(), *pt.pds.values(), *pt.pts.values()}
    leaves = set(pt.pts.values())
    pt.release()
    assert not tables & {f << 12 for f in phys.free_frames}  # never back to the general pool
    assert leaves <= set(phys.pt_free)
    assert (tables - leaves) == set(phys.pt_quarantine)  # upper tables wait for a shadow flush
    assert all(phys.read(x, PAGE_SIZE) == bytes(PAGE_SIZE) for x in tables)  # zeroed
    fresh = {phys.alloc() for _ in range(50)}
    assert not fresh & tables
    # a new tree reuses the last-level tables (at any level), never the quarantined upper ones
    pt2 = PageTables(phys)
    pt2.table(0x1000)
    new = {pt2.root, *pt2.pdpts.values(), *pt2.pds.values(), *pt2.pts.values()}
    assert new & tables == leaves


def test_quarantine_flush_and_no_shadow_paging(phys):
    flushed = []
    phys.shadow_flush = lambda: flushed.append(1)
    for _ in range(physical.QUARANTINE_FLUSH):
        pt = PageTables(phys)
        pt.table(0x1000)
        pt.release()
    assert flushed and len(phys.pt_quarantine) < physical.QUARANTINE_FLUSH
    phys.flush_quarantine()
    assert len(flushed) >= 2 and not phys.pt_quarantine
    phys.shadow_flush = None
    pt = PageTables(phys)
    pt.table(0x1000)
    pt.release()
    assert phys.pt_quarantine and not phys.flush_quarantine()  # no way to flush: they stay
    added, removed = [], []
    phys.set_listener(added.append, removed.append)
    assert phys.flush_quarantine() and not phys.pt_quarantine  # a memslot added and deleted
    assert removed == added[-1:] and not phys.regions
    phys.shadow_paging = False
    pt = PageTables(phys)
    pt.table(0x1000)
    pt.release()
    assert not phys.pt_quarantine


def test_runs():
    P = PAGE_SIZE
    assert physical._runs([0, P, 2 * P, 5 * P]) == [(0, 3 * P), (5 * P, P)]
    g = physical.CHUNK_SIZE
    assert physical._runs([g - P, g]) == [(g - P, P), (g, P)]  # never across a chunk
    assert physical._runs([]) == []


def test_drop_frees_and_zaps(phys):
    calls = []
    orig = phys.forget
    phys.forget = lambda gpa, n: (calls.append((gpa, n)), orig(gpa, n))
    a, b, c = phys.alloc(), phys.alloc(), phys.alloc()
    phys.ref(b)
    phys.write(b, b"keep")
    n = phys.allocated
    phys.drop([a, b, c])
    assert phys.allocated == n - 2 and phys.refcount(b) == 1
    assert calls == [(b, PAGE_SIZE)]  # a and c were removed (MADV_REMOVE zaps too), b zapped
    assert phys.read(b, 4) == b"keep"  # a zap keeps the data
    assert a >> 12 in phys.free_frames and c >> 12 in phys.free_frames


def test_regions(phys, tmp_path):
    seen, removed = [], []
    phys.set_listener(seen.append, removed.append)
    assert seen == phys.chunks
    path = tmp_path / "f"
    path.write_bytes(b"A" * 8192 + b"B" * 4096)
    fd = os.open(path, os.O_RDWR)
    r = phys.add_region(fd, 4096, 8192, False)
    os.close(fd)  # the region keeps its own
    assert seen[-1] is r and r.gpa >= REGION_BASE and r.index >= physical.MAX_CHUNKS
    assert phys.read(r.gpa, 2) == b"AA" and phys.read(r.gpa + 4096, 2) == b"BB"
    phys.write(r.gpa + 4096, b"xy")
    assert path.read_bytes()[8192:8194] == b"xy"  # the host page cache
    phys.zap(r.gpa, 8192)
    assert phys.read(r.gpa + 4096, 2) == b"xy"
    r2 = phys.add_region(r.fd, 0, 4096, True)
    assert r2.gpa >= r.gpa + r.size + PAGE_SIZE and r2.readonly
    assert phys.region_at(r2.gpa) is r2
    r.refs += 1
    phys.put_region(r)
    assert not removed
    phys.put_region(r)
    assert removed == [r] and r.index not in phys.regions
    with pytest.raises(ValueError):
        phys.region_at(r.gpa)
    r3 = phys.add_region(r2.fd, 0, 4096, True)
    assert r3.index == r.index and r3.gpa == r.gpa  # slot and address space reused
