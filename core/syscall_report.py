"""``pysc help syscalls``: which x86-64 syscalls a sandbox serves, and how.

Every syscall gets one status:

* ``implemented`` / ``partial`` -- a Sentry handler (Entry.partial marks the
  partial ones), with the plugin module that registered it;
* ``host`` -- the platform lets the host kernel run it (``delegates``);
* ``missing`` -- nothing serves it: the app gets ENOSYS.

A platform may delegate only a case of a call ("mmap (MAP_ANONYMOUS)"): such
a call keeps its Sentry status and the case is noted.  A call delegated
outright is ``host`` even if a handler exists (the handler never runs on
that platform; it is noted).
"""
from __future__ import annotations

import json

from pysc.core.abi.sysnums import SYSCALLS

STATUSES = ("implemented", "partial", "host", "missing")


def _delegates(platform_cls) -> tuple[set[str], dict[str, list[str]]]:
    """(calls delegated outright, call -> qualified cases delegated)."""
    whole: set[str] = set()
    cases: dict[str, list[str]] = {}
    for item in getattr(platform_cls, "delegates", None) or ():
        item = str(item).strip()
        if not item:
            continue
        name, _, rest = item.partition(" ")
        rest = rest.strip()
        if rest:
            cases.setdefault(name, []).append(rest.strip("()"))
        else:
            whole.add(name)
    return whole, cases


def syscall_report_json(table, platform_cls=None) -> list[dict]:
    """One dict per x86-64 syscall, by number: nr, name, status, plugin,
    replaces (plugins this one overrode), host (delegated cases), note."""
    whole, cases = _delegates(platform_cls)
    rows = []
    entries = getattr(table, "entries", {}) or {}
    for name, nr in sorted(SYSCALLS.items(), key=lambda kv: kv[1]):
        entry = entries.get(name)
        row = {"nr": nr, "name": name, "status": "missing", "plugin": None,
               "replaces": [], "host": list(cases.get(name, ())), "note": ""}
        if name in whole:
            row["status"] = "host"
            if entry is not None:
                row["note"] = f"handler in {entry.plugin} unused on this platform"
        elif entry is not None:
            row["status"] = "partial" if entry.partial else "implemented"
            row["plugin"] = entry.plugin
            row["replaces"] = list(entry.replaced or ())
        rows.append(row)
    return rows


def summary_counts(rows: list[dict]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        counts[row["status"]] += 1
    counts["total"] = len(rows)
    return counts


def _served_by(row: dict) -> str:
    notes = []
    if row["replaces"]:
        notes.append("replaces " + ", ".join(row["replaces"]))
    if row["host"]:
        notes.append("host for " + ", ".join(row["host"]))
    if row["note"]:
        notes.append(row["note"])
    text = row["plugin"] or ("host kernel" if row["status"] == "host" else "")
    if notes:
        text = f"{text} ({'; '.join(notes)})" if text else "; ".join(notes)
    return text


def syscall_report(table, platform_cls=None) -> str:
    """The text table of ``pysc help syscalls``."""
    rows = syscall_report_json(table, platform_cls)
    pname = getattr(platform_cls, "name", None) or getattr(platform_cls, "__name__", None)
    width = max(len(r["name"]) for r in rows)
    lines = []
    if pname:
        lines.append(f"x86-64 syscalls on platform {pname}:")
    lines.append(f"{'NR':>3}  {'NAME':<{width}}  {'STATUS':<17}  SERVED BY")
    for r in rows:
        status = "missing (ENOSYS)" if r["status"] == "missing" else r["status"]
        served = _served_by(r)
        lines.append(f"{r['nr']:>3}  {r['name']:<{width}}  {status:<17}  {served}".rstrip())
    c = summary_counts(rows)
    lines.append(f"{c['total']} syscalls: {c['implemented']} implemented, {c['partial']} partial, "
                 f"{c['host']} host, {c['missing']} missing (ENOSYS)")
    return "\n".join(lines) + "\n"


def syscall_report_text(table, platform_cls=None, fmt: str = "text") -> str:
    """``--format text|json`` front end for the CLI."""
    if fmt == "json":
        return json.dumps(syscall_report_json(table, platform_cls), indent=1) + "\n"
    return syscall_report(table, platform_cls)
