"""Every hook a pysc plugin can implement.

Built-in syscall families, platforms and filesystems implement these hooks
exactly as a third-party plugin does; third-party plugins are found through
the entry-point group ``pysc``.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("pysc")
hookimpl = pluggy.HookimplMarker("pysc")


@hookspec
def pysc_add_flags(flags):
    """Register flags: ``flags.add(name, type, default, help)``."""


@hookspec
def pysc_platforms():
    """Return a dict of platforms by name: each a platform class, or the
    ``"module:Class"`` path of one, imported only when that platform is used
    (or listed by `pysc help platforms`), so that no start pays for importing
    every platform."""


@hookspec
def pysc_syscalls(table, platform):
    """Register syscall handlers: ``table.register("name", handler, plugin=...)``.

    Called in plugin order; a later plugin may wrap or replace an earlier
    handler (``table.get("name")``).  ``platform`` is the platform's name.
    """


@hookspec
def pysc_filesystems():
    """Return a dict of filesystem types by name (``tmpfs``, ``proc``, ...)."""


@hookspec
def pysc_devices():
    """Return a dict of device nodes for /dev: name -> (mode, factory)."""


@hookspec
def pysc_sandbox_started(sandbox):
    """The sandbox's first process is about to run."""


@hookspec
def pysc_sandbox_stopped(sandbox):
    """The sandbox's last process has exited."""


@hookspec
def pysc_task_exit(task):
    """A task (thread) has exited."""


@hookspec
def pysc_syscall_enter(task, name, args):
    """A syscall is about to be handled.  Return an int to answer it instead
    (an errno as a negative number), or None to go on."""


@hookspec
def pysc_syscall_exit(task, name, args, result):
    """A syscall has been handled with ``result`` (negative errno on failure)."""
