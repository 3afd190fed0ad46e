"""sysfs: a minimal synthetic /sys (CPU topology, an empty cgroup mount
point, transparent hugepage mode)."""
from __future__ import annotations

import os

from pysc.core.fs.synthetic import SynthFS, SynthInode

SYSFS_MAGIC = 0x62656572


def _ncpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_range(n: int) -> str:
    return "0\n" if n <= 1 else f"0-{n - 1}\n"


class SysFS(SynthFS):
    name = "sysfs"
    magic = SYSFS_MAGIC
    file_size = 4096

    def __init__(self, kernel=None, ncpus: int | None = None) -> None:
        super().__init__()
        self.k = kernel
        self.ncpus = ncpus or _ncpus()
        self.root = self._build()

    def _build(self) -> SynthInode:
        def tree(node: dict, prefix: tuple) -> SynthInode:
            entries = {}
            for name, sub in node.items():
                key = prefix + (name,)
                if isinstance(sub, dict):
                    entries[name.encode()] = tree(sub, key)
                else:
                    entries[name.encode()] = self.file(key, sub)
            return self.dir(prefix or ("root",), entries, perm=0o755 if prefix else 0o555)

        cpus = cpu_range(self.ncpus)
        cpu_dir: dict = {"online": cpus, "possible": cpus, "present": cpus}
        for i in range(self.ncpus):
            cpu_dir[f"cpu{i}"] = {}
        layout = {
            "block": {},
            "bus": {},
            "class": {},
            "dev": {"block": {}, "char": {}},
            "devices": {"system": {"cpu": cpu_dir}},
            "firmware": {},
            "fs": {"cgroup": {}},
            "kernel": {"mm": {"transparent_hugepage": {
                "enabled": "always [madvise] never\n",
                "defrag": "always defer defer+madvise [madvise] never\n",
            }}},
            "module": {},
        }
        return tree(layout, ())


def make_sysfs(kernel=None) -> "tuple[SysFS, SynthInode]":
    fs = SysFS(kernel)
    return fs, fs.root
