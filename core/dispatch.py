"""The syscall table and the dispatcher that runs handlers."""
from __future__ import annotations

import logging
import types
from typing import TYPE_CHECKING, Callable

from pysc.core.abi import consts as C
from pysc.core.abi.sysnums import NAMES, SYSCALLS
from pysc.core.errors import SyscallError, TaskGone, WouldBlock
from pysc.core.record import Record

if TYPE_CHECKING:
    from pysc.core.task import Task

log = logging.getLogger("pysc.sentry")

Handler = Callable[..., int]


class _Continue:
    """Returned by a handler that validated a call and lets the host run it."""
    def __repr__(self) -> str:
        return "CONTINUE"


CONTINUE = _Continue()


def syscall(*names: str, partial: bool = False):
    """Mark a function as the handler of the syscalls ``names`` (default: its own name)."""
    def mark(fn):
        fn.__pysc_syscalls__ = names or (fn.__name__,)
        fn.__pysc_partial__ = partial
        return fn
    return mark


def s32(x: int) -> int:
    """An int argument: the low 32 bits, sign-extended."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def s64(x: int) -> int:
    x &= 0xFFFFFFFFFFFFFFFF
    return x - (1 << 64) if x & (1 << 63) else x


class Entry(Record):
    name: str
    handler: Handler
    plugin: str
    partial: bool = False
    replaced: tuple[str, ...] = ()


class SyscallTable:
    """Handlers by syscall name.  A later registration replaces an earlier one.

    ``sentry_owned``: the platform leaves memory, threads and signal delivery
    to the Sentry (kvm), so the families the host kernel runs elsewhere must
    be registered too (syscalls/sentry)."""

    def __init__(self, sentry_owned: bool = False) -> None:
        self.sentry_owned = sentry_owned
        self.entries: dict[str, Entry] = {}
        self.by_nr: list[Handler | None] = [None] * (max(NAMES) + 1)

    def register(self, name: str, handler: Handler, plugin: str = "?", partial: bool = False) -> None:
        if name not in SYSCALLS:
            raise ValueError(f"unknown x86-64 syscall {name!r}")
        old = self.entries.get(name)
        replaced = (old.replaced + (old.plugin,)) if old else ()
        self.entries[name] = Entry(name, handler, plugin, partial, replaced)
        self.by_nr[SYSCALLS[name]] = handler

    def register_module(self, module: types.ModuleType) -> None:
        """Register every function of ``module`` marked with @syscall."""
        for obj in vars(module).values():
            for name in getattr(obj, "__pysc_syscalls__", ()):
                self.register(name, obj, plugin=module.__name__, partial=obj.__pysc_partial__)

    def unregister(self, name: str) -> None:
        """Drop a handler: the call returns ENOSYS again (and is listed so)."""
        if self.entries.pop(name, None) is not None:
            self.by_nr[SYSCALLS[name]] = None

    def get(self, name: str) -> Handler | None:
        e = self.entries.get(name)
        return e.handler if e else None

    def __contains__(self, name: str) -> bool:
        return name in self.entries


class Dispatcher:
    """Runs the handler of a syscall and turns its outcome into a result.

    Returns an int (value, or -errno), CONTINUE, or raises WouldBlock.
    """

    def __init__(self, kernel, table: SyscallTable, pm, strace=None):
        self.kernel = kernel
        self.by_nr = table.by_nr
        self.strace = strace
        hooks = pm.hook
        self.enter_hook = hooks.pysc_syscall_enter if hooks.pysc_syscall_enter.get_hookimpls() else None
        self.exit_hook = hooks.pysc_syscall_exit if hooks.pysc_syscall_exit.get_hookimpls() else None
        self.unknown: dict[str, int] = {}

    def __call__(self, task: "Task", nr: int, args: tuple[int, ...]):
        self.kernel.current = task
        if self.strace is None and self.enter_hook is None and self.exit_hook is None:
            # The hot path: no tracing, no policy hooks.
            try:
                return self.by_nr[nr](task, *args)
            except SyscallError as e:
                return -e.errno
            except (WouldBlock, TaskGone):
                raise
            except Exception:
                return self._failed(task, nr, args)
        return self._traced(task, nr, args)

    def _traced(self, task, nr, args):
        strace = self.strace
        if strace is not None and strace.wants(nr):
            strace.enter(task, nr, args)
        try:
            result = self._run(task, nr, args)
        except WouldBlock:
            if strace is not None and strace.wants(nr):
                strace.blocked(task, nr)
            raise
        if strace is not None and strace.wants(nr):
            strace.exit(task, nr, args, result)
        return result

    def _failed(self, task, nr, args) -> int:
        if not 0 <= nr < len(self.by_nr) or self.by_nr[nr] is None:
            key = NAMES.get(nr, str(nr))
            if key not in self.unknown:
                log.info("unsupported syscall %s (%d): ENOSYS", key, nr)
            self.unknown[key] = self.unknown.get(key, 0) + 1
            return -C.ENOSYS
        log.exception("handler for %s crashed (task %s, args %s): the app gets EIO",
                      NAMES.get(nr, nr), task.tid, [hex(a) for a in args])
        return -C.EIO

    def _run(self, task, nr, args):
        name = None
        if self.enter_hook is not None:
            name = NAMES.get(nr, str(nr))
            for answer in self.enter_hook(task=task, name=name, args=args):
                if answer is not None:
                    return answer
        try:
            result = self.by_nr[nr](task, *args)
        except SyscallError as e:
            result = -e.errno
        except (WouldBlock, TaskGone):
            raise
        except Exception:
            result = self._failed(task, nr, args)
        if self.exit_hook is not None:
            self.exit_hook(task=task, name=name or NAMES.get(nr, str(nr)), args=args, result=result)
        return result
