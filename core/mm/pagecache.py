"""Frames holding pages of files, shared read-only by every private mapping
of them (Linux's page cache as MAP_PRIVATE sees it).

Without it every exec of the same binary read its pages from the host file
into fresh frames, one guest fault at a time; with it the second exec finds
them here and a fault maps a whole window of cached pages for the price of
the page-table writes.  A cached frame is mapped without write access (it is
shared: the cache holds a reference), so a write copies it first (COW).

A file is known by ``FileKey``: host device, inode, size and the change and
modification times.  Files changed in the last ``SETTLE_NS`` are not cached:
timestamps have the granularity of the host's clock tick, so a file written
twice within one tick with the same size would otherwise keep stale pages.
A file settled that long gets a new key from any later write.

Writes through a MAP_SHARED mapping change a file without always changing
its timestamps (the host updates them when a clean page is first written),
so a file with a live region (physical.Region) in the sandbox is not cached,
and its cached pages go when such a region is made.

When the cache holds more than ``limit`` frames, pages no address space maps
any more go first (oldest first).
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

SETTLE_NS = 2_000_000_000
DEFAULT_LIMIT = 16384  # frames (64 MiB)


class FileKey(NamedTuple):
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileKey":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class PageCache:
    """(FileKey, page index) -> guest-physical frame, one reference held each."""

    def __init__(self, phys, limit: int = DEFAULT_LIMIT, settle_ns: int = SETTLE_NS):
        self.phys = phys
        self.limit = limit
        self.settle_ns = settle_ns
        self.pages: dict[tuple[FileKey, int], int] = {}

    def key_of(self, st: os.stat_result) -> FileKey | None:
        """The key of a host file, or None when it changed too recently to cache."""
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < self.settle_ns:
            return None
        if self.phys.has_region_of((st.st_dev, st.st_ino)):
            return None
        return FileKey.of(st)

    def forget(self, inode: tuple[int, int]) -> None:
        """Let go of every cached page of the host file ``inode`` (dev, ino)."""
        gone = [page for page in self.pages if (page[0].dev, page[0].ino) == inode]
        frames = [self.pages.pop(page) for page in gone]
        if frames:
            self.phys.drop(frames)

    def __len__(self) -> int:
        return len(self.pages)

    def lookup(self, key: FileKey, index: int, n: int) -> list[int | None]:
        """The frames of pages ``index`` .. ``index + n - 1`` (None where not cached)."""
        get = self.pages.get
        return [get((key, i)) for i in range(index, index + n)]

    def insert(self, key: FileKey, index: int, frames: list[int]) -> None:
        """Keep ``frames``, pages ``index`` on, none of them cached yet; the
        caller's reference of each becomes the cache's."""
        pages = self.pages
        for k, gpa in enumerate(frames):
            pages[(key, index + k)] = gpa

    def shrink(self) -> None:
        """Trim when over the limit (call it once the new pages are mapped)."""
        if len(self.pages) > self.limit:
            self.trim(self.limit * 7 // 8)

    def trim(self, target: int) -> None:
        """Let go of unmapped pages, oldest first, until at most ``target`` are left."""
        refcount = self.phys.refcount
        pages = self.pages
        excess = len(pages) - target
        gone = []
        for page, gpa in pages.items():
            if excess <= 0:
                break
            if refcount(gpa) == 1:  # only the cache's reference
                gone.append((page, gpa))
                excess -= 1
        for page, _ in gone:
            del pages[page]
        if gone:
            self.phys.drop([gpa for _, gpa in gone])

    def clear(self) -> None:
        """Drop every reference the cache holds."""
        frames = list(self.pages.values())
        self.pages.clear()
        if frames:
            self.phys.drop(frames)
