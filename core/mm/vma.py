"""Virtual memory areas (Linux ``vm_area_struct``): one contiguous range of an
address space with one protection and one backing."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pysc.core.file import File
    from pysc.core.mm.physical import Region

# VMA flags (the Linux VM_* ideas this memory manager needs; not ABI)
VM_SHARED = 1 << 0  # MAP_SHARED: pages live in ``region``
VM_GROWSDOWN = 1 << 1  # a stack: faults just below grow it
VM_MAYWRITE = 1 << 2  # mprotect may add PROT_WRITE (a shared mapping of a read-only file may not)
VM_DONTFORK = 1 << 3  # MADV_DONTFORK
VM_WIPEONFORK = 1 << 4  # MADV_WIPEONFORK
VM_LOCKED = 1 << 5  # mlock
VM_DONTEXPAND = 1 << 6
VM_HUGEPAGE = 1 << 7  # faults may map 2 MiB pages (MADV_HUGEPAGE, or a large private anonymous mmap)
FORK_FLAGS = VM_DONTFORK | VM_WIPEONFORK | VM_LOCKED  # not all inherited the same way


class VMA:
    """[start, end) with ``prot`` (PROT_*) and ``flags`` (VM_*).

    Backing: ``file`` (a referenced File, for private file mappings and for
    /proc maps) at byte offset ``pgoff`` for ``start``; shared mappings also
    have ``region`` (a referenced physical.Region), where the page at file
    offset ``o`` is at guest-physical ``region.gpa + o - region.file_off``.
    Shared anonymous memory is a region over a memfd, with no file.
    """
    __slots__ = ("start", "end", "prot", "flags", "file", "pgoff", "region", "name")

    def __init__(self, start: int, end: int, prot: int, flags: int, file: "File | None" = None,
                 pgoff: int = 0, region: "Region | None" = None, name: str | None = None):
        self.start, self.end, self.prot, self.flags = start, end, prot, flags
        self.file, self.pgoff, self.region, self.name = file, pgoff, region, name

    def __repr__(self) -> str:
        return f"VMA({self.start:#x}-{self.end:#x} prot={self.prot} flags={self.flags:#x} name={self.name!r})"

    @property
    def shared(self) -> bool:
        return bool(self.flags & VM_SHARED)

    def offset_of(self, va: int) -> int:
        """File (or memfd) offset of the page at ``va``."""
        return self.pgoff + (va - self.start)

    def clone(self) -> "VMA":
        """A copy holding its own references to the file and the region."""
        if self.file is not None:
            self.file.incref()
        if self.region is not None:
            self.region.refs += 1
        return VMA(self.start, self.end, self.prot, self.flags, self.file, self.pgoff, self.region, self.name)

    def split(self, addr: int) -> "VMA":
        """Cut at ``addr``: this VMA keeps [start, addr), the returned one gets [addr, end)."""
        upper = self.clone()
        upper.pgoff = self.offset_of(addr)
        upper.start = addr
        self.end = addr
        return upper

    def mergeable(self, nxt: "VMA") -> bool:
        """Whether ``nxt``, starting where this ends, can become part of this one."""
        if (self.end != nxt.start or self.prot != nxt.prot or self.flags != nxt.flags
                or self.file is not nxt.file or self.region is not nxt.region or self.name != nxt.name):
            return False
        if self.file is None and self.region is None:
            return True
        return self.offset_of(self.end) == nxt.pgoff

    def put(self, phys) -> None:
        """Drop this VMA's references (the VMA is gone)."""
        if self.file is not None:
            self.file.decref()
            self.file = None
        if self.region is not None:
            phys.put_region(self.region)
            self.region = None
