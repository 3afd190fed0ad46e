"""Unit tests for core/syscall_report.py."""
import json
import re

from pysc.core.abi.sysnums import SYSCALLS
from pysc.core.dispatch import SyscallTable, syscall
from pysc.core.syscall_report import (summary_counts, syscall_report, syscall_report_json,
                                      syscall_report_text)


class FakePlatform:
    name = "fake"
    delegates = {"munmap", "futex", "mmap (MAP_ANONYMOUS)", "clone (no namespace flags)"}


def h(*args):
    return 0


def make_table():
    t = SyscallTable()
    t.register("read", h, plugin="pysc.syscalls.file")
    t.register("read", h, plugin="acme.fastread")
    t.register("openat", h, plugin="pysc.syscalls.fs")
    t.register("mmap", h, plugin="pysc.syscalls.memory", partial=True)
    t.register("futex", h, plugin="pysc.syscalls.futex")  # delegated outright on this platform
    return t


def test_every_syscall_once_and_counts_add_up():
    text = syscall_report(make_table(), FakePlatform)
    row = re.compile(r"^\s*\d+\s+\w+\s+(implemented|partial|host|missing)")
    body = [line for line in text.splitlines() if row.match(line)]
    names = [line.split()[1] for line in body]
    assert sorted(names) == sorted(SYSCALLS)
    assert len(names) == len(set(names))
    nrs = [int(line.split()[0]) for line in body]
    assert nrs == sorted(SYSCALLS.values())
    m = re.search(r"(\d+) syscalls: (\d+) implemented, (\d+) partial, (\d+) host, "
                  r"(\d+) missing \(ENOSYS\)", text.splitlines()[-1])
    total, impl, part, host, missing = map(int, m.groups())
    assert total == len(SYSCALLS) == impl + part + host + missing
    assert (impl, part, host) == (2, 1, 2)


def test_statuses_and_plugins():
    rows = {r["name"]: r for r in syscall_report_json(make_table(), FakePlatform)}
    assert rows["read"]["status"] == "implemented"
    assert rows["read"]["plugin"] == "acme.fastread"
    assert rows["read"]["replaces"] == ["pysc.syscalls.file"]
    assert rows["mmap"]["status"] == "partial"
    assert rows["mmap"]["host"] == ["MAP_ANONYMOUS"]
    assert rows["clone"]["status"] == "missing"
    assert rows["clone"]["host"] == ["no namespace flags"]
    assert rows["munmap"]["status"] == "host"
    assert rows["futex"]["status"] == "host"
    assert "pysc.syscalls.futex" in rows["futex"]["note"]
    assert rows["kexec_load"]["status"] == "missing"
    text = syscall_report(make_table(), FakePlatform)
    read_line = next(line for line in text.splitlines() if line.split()[1:2] == ["read"])
    assert "implemented" in read_line and "acme.fastread" in read_line
    assert "replaces pysc.syscalls.file" in read_line
    assert re.search(r"\bkexec_load\s+missing \(ENOSYS\)", text)


def test_no_platform_and_module_registration():
    import types
    mod = types.ModuleType("acme.plugin")

    @syscall("getpid", "gettid")
    def getpid(t):
        return 1

    @syscall(partial=True)
    def uname(t, buf):
        return 0

    mod.getpid, mod.uname = getpid, uname
    t = SyscallTable()
    t.register_module(mod)
    rows = syscall_report_json(t, None)
    counts = summary_counts(rows)
    assert counts == {"implemented": 2, "partial": 1, "host": 0,
                      "missing": len(SYSCALLS) - 3, "total": len(SYSCALLS)}


def test_json_format():
    data = json.loads(syscall_report_text(make_table(), FakePlatform, fmt="json"))
    assert len(data) == len(SYSCALLS)
    assert data[0]["nr"] == 0 and data[0]["name"] == "read"
