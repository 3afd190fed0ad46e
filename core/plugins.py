"""The plugin manager: built-in and third-party plugins, loaded the same way."""
from __future__ import annotations

import importlib
import importlib.metadata

import pluggy

from pysc.core import hookspecs

ENTRY_POINT_GROUP = "pysc"

# Modules shipped with pysc that are always loaded.  They are also declared as
# entry points in pyproject.toml, so loading by entry point finds them too;
# this list lets a checkout that is not installed still work.
BUILTIN_PLUGINS = (
    "pysc.core.coreflags",
    "pysc.core.fs",
    "pysc.platforms.ptrace",
    "pysc.platforms.seccomp",
    "pysc.platforms.kvm.platform",
    "pysc.syscalls.fs",
    "pysc.syscalls.file",
    "pysc.syscalls.process",
    "pysc.syscalls.signal",
    "pysc.syscalls.memory",
    "pysc.syscalls.time",
    "pysc.syscalls.identity",
    "pysc.syscalls.net",
    "pysc.syscalls.ipc",
    "pysc.syscalls.poll",
    "pysc.syscalls.misc",
    "pysc.syscalls.sentry.memory",
    "pysc.syscalls.sentry.process",
    "pysc.syscalls.sentry.signal",
    "pysc.syscalls.sentry.time",
)


def make_plugin_manager(extra: tuple[str, ...] = (), entry_points: bool = True) -> pluggy.PluginManager:
    """Builtins first, then entry-point plugins, then ``extra`` module names."""
    pm = pluggy.PluginManager("pysc")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name=name)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.get_plugin(ep.value) is None and pm.get_plugin(ep.name) is None:
                pm.register(ep.load(), name=ep.value)
    for name in extra:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name=name)
    return pm


def call_in_order(hook, **kwargs) -> list:
    """Call a hook's implementations in registration order (built-ins first),
    so that a later plugin's registration replaces an earlier one's; pluggy
    itself calls the last registered first."""
    return [impl.function(**kwargs) for impl in hook.get_hookimpls()]
