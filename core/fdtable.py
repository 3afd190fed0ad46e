"""The per-process table of file descriptors."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError

if TYPE_CHECKING:
    from pysc.core.file import File


class FDTable:
    """fd number -> (File, cloexec).  Shared between tasks cloned with CLONE_FILES."""

    def __init__(self, limit: int = 1024) -> None:
        self.fds: dict[int, tuple["File", bool]] = {}
        self.limit = limit

    def copy(self) -> "FDTable":
        new = FDTable(self.limit)
        for fd, (f, cloexec) in self.fds.items():
            f.incref()
            new.fds[fd] = (f, cloexec)
        return new

    def get(self, fd: int) -> "File":
        try:
            return self.fds[fd][0]
        except KeyError:
            raise SyscallError(C.EBADF) from None

    def cloexec(self, fd: int) -> bool:
        self.get(fd)
        return self.fds[fd][1]

    def set_cloexec(self, fd: int, on: bool) -> None:
        self.fds[fd] = (self.get(fd), on)

    def lowest_free(self, start: int = 0) -> int:
        fd = start
        while fd in self.fds:
            fd += 1
        if fd >= self.limit:
            raise SyscallError(C.EMFILE)
        return fd

    def install(self, f: "File", cloexec: bool = False, start: int = 0) -> int:
        """Install ``f`` (taking over one reference) at the lowest free number >= start."""
        fd = self.lowest_free(start)
        self.fds[fd] = (f, cloexec)
        return fd

    def install_at(self, fd: int, f: "File", cloexec: bool = False) -> None:
        """Install at ``fd``, closing what was there (dup2 semantics)."""
        if fd < 0 or fd >= self.limit:
            raise SyscallError(C.EBADF)
        old = self.fds.get(fd)
        self.fds[fd] = (f, cloexec)
        if old is not None:
            old[0].decref()

    def close(self, fd: int) -> None:
        try:
            f, _ = self.fds.pop(fd)
        except KeyError:
            raise SyscallError(C.EBADF) from None
        f.decref()

    def close_on_exec(self) -> None:
        for fd in [fd for fd, (_, ce) in self.fds.items() if ce]:
            self.close(fd)

    def close_all(self) -> None:
        for fd in list(self.fds):
            self.close(fd)

    def items(self) -> Iterator[tuple[int, "File", bool]]:
        for fd in sorted(self.fds):
            f, ce = self.fds[fd]
            yield fd, f, ce

    def __len__(self) -> int:
        return len(self.fds)
