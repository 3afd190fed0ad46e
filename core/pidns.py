"""PID namespaces: the numbers a process sees for itself and for others.

The Kernel names every task by its id in the sandbox's own namespace, the
root one here (``Kernel.tasks``, ``ThreadGroup.pid``, ``pgid``, ``sid``).  A
namespace below it (each container of a pod has one, as under Kubernetes)
maps those ids to its own: its first process is 1 there, and processes
outside it have no number at all.  Syscall handlers turn the numbers an app
passes into kernel ids with ``kernel_id`` and the ones they return into the
caller's with ``id_of``; /proc does the same for the namespace it was mounted
in.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pysc.core.kernel import Kernel
    from pysc.core.task import Task, ThreadGroup

PID_MAX = 4194304


class PIDNamespace:
    """One pid namespace.  The root one maps every id to itself."""

    def __init__(self, kernel: "Kernel", parent: "PIDNamespace | None" = None):
        self.kernel = kernel
        self.parent = parent
        self.level = 0 if parent is None else parent.level + 1
        self.init: "ThreadGroup | None" = None  # its pid 1, the reaper of its orphans
        self._here: dict[int, int] = {}  # kernel id -> id in this namespace
        self._kernel: dict[int, int] = {}  # id in this namespace -> kernel id
        self._last = 0

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def chain(self) -> list["PIDNamespace"]:
        """The namespaces below the root that see a process of this one,
        outermost first."""
        out, ns = [], self
        while ns.parent is not None:
            out.append(ns)
            ns = ns.parent
        return out[::-1]

    # --- numbers ---
    def id_of(self, kid: int) -> int:
        """Kernel id ``kid`` as seen here: 0 for a process outside."""
        if self.parent is None:
            return kid
        return self._here.get(kid, 0)

    def kernel_id(self, nid: int) -> int | None:
        """The kernel id of number ``nid`` here, None if it names nothing."""
        if self.parent is None:
            return nid
        return self._kernel.get(nid)

    def pid_of(self, tg: "ThreadGroup | None") -> int:
        return self.id_of(tg.pid) if tg is not None else 0

    def tg(self, nid: int) -> "ThreadGroup | None":
        kid = self.kernel_id(nid)
        return self.kernel.thread_groups.get(kid) if kid is not None else None

    def task(self, nid: int) -> "Task | None":
        kid = self.kernel_id(nid)
        return self.kernel.tasks.get(kid) if kid is not None else None

    def sees(self, tg: "ThreadGroup") -> bool:
        return self.parent is None or tg.pid in self._here

    # --- bookkeeping, by the Kernel ---
    def add(self, kid: int, nid: int) -> None:
        old = self._here.pop(kid, None)
        if old is not None:
            self._kernel.pop(old, None)
        self._here[kid] = nid
        self._kernel[nid] = kid

    def alloc(self) -> int:
        """A free number here, where the Sentry hands them out (kvm)."""
        nid = self._last
        for _ in range(PID_MAX):
            nid = nid + 1 if nid + 1 < PID_MAX else 1
            if nid not in self._kernel:
                self._last = nid
                return nid
        raise OverflowError("no free pid")

    def forget(self, kid: int) -> None:
        nid = self._here.pop(kid, None)
        if nid is not None and self._kernel.get(nid) == kid:
            del self._kernel[nid]

    def __repr__(self) -> str:
        return f"PIDNamespace(level={self.level}, {len(self._here)} ids)"
