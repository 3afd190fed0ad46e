"""The plugin manager: built-in and third-party plugins, loaded the same way."""
from __future__ import annotations

import importlib
import os
import re
import sys

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
    "pysc.platforms.kvm",
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
    "pysc.syscalls.sentry.ipc",
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
        for ep_name, value in find_entry_points(ENTRY_POINT_GROUP):
            if pm.get_plugin(value) is None and pm.get_plugin(ep_name) is None:
                pm.register(load_entry_point(value), name=value)
    for name in extra:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name=name)
    return pm


def find_entry_points(group: str, path: list[str] | None = None) -> list[tuple[str, str]]:
    """``(name, value)`` of the entry points in ``group`` of every distribution
    installed on ``path`` (default ``sys.path``), the first of a name winning,
    as ``importlib.metadata.entry_points`` finds them.

    It reads each ``*.dist-info``/``*.egg-info/entry_points.txt`` itself:
    importing importlib.metadata costs about 25 ms, on every start of pysc."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in sys.path if path is None else path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:  # missing, or a zip
            continue
        for name in names:
            stem, dot, kind = name.rpartition(".")
            if not dot or kind not in ("dist-info", "egg-info"):
                continue
            dist = re.sub(r"[-_.]+", "_", stem.split("-", 1)[0]).lower()
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(entry or ".", name, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            found += _entry_points_in(text, group)
    return found


def _entry_points_in(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = value`` lines of section ``[group]`` of an entry_points.txt (INI)."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group and "=" in line:
            name, value = line.split("=", 1)
            out.append((name.strip(), value.strip()))
    return out


def load_entry_point(value: str):
    """The object an entry point names: ``module`` or ``module:attr.attr`` (extras ignored)."""
    value = value.split("[", 1)[0].strip()
    module, _, attr = value.partition(":")
    obj = importlib.import_module(module.strip())
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def platforms(pm) -> dict:
    """Every platform the plugins offer, by name: a class or a ``"module:Class"``
    path (``platform_class`` imports it)."""
    out: dict = {}
    for result in pm.hook.pysc_platforms():
        out.update(result)
    return out


def platform_class(entry) -> type:
    """The class of a ``platforms()`` entry."""
    return load_entry_point(entry) if isinstance(entry, str) else entry


def call_in_order(hook, **kwargs) -> list:
    """Call a hook's implementations in registration order (built-ins first),
    so that a later plugin's registration replaces an earlier one's; pluggy
    itself calls the last registered first."""
    return [impl.function(**kwargs) for impl in hook.get_hookimpls()]
