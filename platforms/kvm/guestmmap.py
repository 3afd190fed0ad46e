"""mmap and munmap answered in the guest.

A VM exit costs 30 us or more on PVM, so an anonymous mmap+munmap that
the Sentry serves costs two exits, where the host-process platforms pay
the host's 2-3 us per call.  The syscall trampoline (stub.py) therefore
answers the commonest pair itself, in user mode, from a page of its
address space that the Sentry fills (this module):

- ``mmap(NULL, len, prot, MAP_PRIVATE|MAP_ANONYMOUS, fd, 0)`` with
  len < 2 MiB takes the top ``len`` bytes (page-rounded) of the highest
  free gap that can hold any such len (``MemoryManager.fast_gap``), if it
  is longer than every free range above that gap (``skip``): so the
  address is the one Linux's top-down placement, and the Sentry's, would
  have chosen, and a call that would fill a hole higher up goes to the
  Sentry;
- ``munmap(addr, len)`` of the lowest pages of what was so taken gives
  them back to the gap.

What the guest took is the *fast region* [gap_hi, top): one anonymous
mapping with one prot (a second prot goes to the Sentry), never touched,
since touching it faults into the Sentry.  The Sentry makes it a real
VMA (``drain``, an mmap with MAP_FIXED) at the next exit of the thread,
before it handles that exit; so every syscall, fault and signal sees a
complete address space, and nothing has page-table entries to remove.

The page is in the app's reach, so the Sentry trusts nothing in it: a
drain checks gap_hi and prot against what it published and ignores a
page it did not write.  The trampoline writes only gap_hi, prot and a
scratch word, and nothing until its checks passed; its one commit store
is what a kick can land on either side of (stub.unwind).

The fast path is offered only where it cannot be told apart from the
Sentry's own mmap: to an address space with one thread (no other vCPU
can change the page while the Sentry reads it), without mlockall(MCL_FUTURE),
--strace or syscall hooks, with mmap and munmap the built-in handlers,
on PVM (the trampoline runs in user mode only there).
"""
from __future__ import annotations

import struct

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.mm.physical import HUGE_SIZE, PAGE_SIZE
from pysc.platforms.kvm import stub
from pysc.platforms.kvm.machine import GUEST_MMAP_VA

MAX_LEN = HUGE_SIZE - PAGE_SIZE  # larger anonymous mappings get 2 MiB pages and placement
_PAGE = struct.Struct("<7Q")  # max_len, gap_lo, gap_hi, top, prot, scratch, skip
_U64 = struct.Struct("<Q")
assert (stub.PAGE_MAX_LEN, stub.PAGE_GAP_LO, stub.PAGE_GAP_HI, stub.PAGE_TOP, stub.PAGE_PROT, stub.PAGE_SCRATCH,
        stub.PAGE_SKIP) == tuple(range(0, 56, 8))
_ANON_FIXED = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED


class GuestMmap:
    """The guest-mmap page of one address space, seen from the Sentry."""

    def __init__(self, mm):
        self.mm = mm
        gpa = mm.map_private_page(GUEST_MMAP_VA)
        self.view = mm.phys.frame_view(gpa)
        self.lo = self.top = 0  # the gap last published; lo == top: nothing offered
        self.offered = False  # the page's max_len is not 0
        self._key = None  # the address space's layout when _gap was found
        self._gap = (0, 0, 0)

    def publish(self, allowed: bool) -> None:
        """Offer the gap, or nothing; before the thread runs."""
        mm = self.mm
        if allowed and mm.users == 1 and not mm.lock_future and len(mm.vmas) < C.MAX_MAP_COUNT - 1:
            key = (mm.layout_gen, mm.mmap_base, mm.mmap_min_addr)
            if key != self._key:
                self._key, self._gap = key, mm.fast_gap(MAX_LEN)
            lo, top, skip = self._gap
        elif not self.offered:
            return
        else:
            lo = top = skip = 0
        self.lo, self.top, self.offered = lo, top, top > lo
        _PAGE.pack_into(self.view, 0, MAX_LEN if top > lo else 0, lo, top, top, 0, 0, skip)

    def drain(self) -> None:
        """Make what the guest took a VMA; at every exit, before anything else."""
        hi = _U64.unpack_from(self.view, stub.PAGE_GAP_HI)[0]
        lo, top = self.lo, self.top
        if hi == top:
            return
        prot = _U64.unpack_from(self.view, stub.PAGE_PROT)[0]
        self.lo = self.top = 0  # taken until the next publish
        if not (lo <= hi < top and hi % PAGE_SIZE == 0 and prot <= C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC):
            return  # the app wrote the page itself: it gets nothing
        try:
            self.mm.mmap(hi, top - hi, prot, _ANON_FIXED)
        except SyscallError:
            pass  # not for a free range below the map count; the app would fault there
