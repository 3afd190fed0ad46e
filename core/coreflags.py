"""The flags of pysc itself (runsc's names where runsc has the flag)."""
from __future__ import annotations

from pysc.core.hookspecs import hookimpl


DEFAULT_PLATFORM = "seccomp"
FALLBACK_PLATFORM = "ptrace"


@hookimpl
def pysc_add_flags(flags):
    add = flags.add
    add("root", str, "/var/run/pysc", "directory of the runtime's state (container records, sockets)")
    add("log", str, "", "file for the runtime's log; empty for stderr")
    add("log-format", str, "text", "format of --log: text or json", choices=("text", "json"))
    add("debug", bool, False, "log debug messages")
    add("debug-log", str, "",
        "file (or directory, with a trailing /) for the Sentry's and the gofer's logs; "
        "%ID% (the container's id, else the pid), %COMMAND% (the subcommand) and %TIMESTAMP% "
        "are replaced")
    add("systemd-cgroup", bool, False, "accepted for runc compatibility; pysc manages no cgroups")
    add("platform", str, DEFAULT_PLATFORM,
        "how app code runs: seccomp, ptrace or kvm (see `pysc help platforms`); the default falls back "
        "to ptrace where seccomp is unavailable")
    add("network", str, "host",
        "network: host (inet sockets are host sockets of the sandbox's namespace), none "
        "(loopback only, a fresh network namespace) or sandbox (the user-space netstack)",
        choices=("sandbox", "host", "none"))
    add("overlay2", str, "root:memory",
        "root:memory writes go to an in-memory layer above the root; none writes reach it",
        choices=("root:memory", "none"))
    add("file-access", str, "exclusive",
        "exclusive: the sandbox owns the root and may cache it; shared: others may change it",
        choices=("exclusive", "shared"))
    add("directfs", bool, True,
        "the Sentry opens files below fds the gofer donates; false sends every file operation "
        "through the gofer")
    add("strace", bool, False, "write every syscall, decoded, with its result")
    add("strace-syscalls", str, "", "comma-separated syscalls to trace (default: all)")
    add("strace-log-size", int, 32, "how many bytes of a buffer argument --strace shows")
    add("pin-cpu", bool, True,
        "ptrace, seccomp: run the Sentry and the app on one CPU (a round trip costs far less than across CPUs)")
    add("allow-flag-override", bool, False,
        "let dev.pysc.flag.NAME annotations in config.json override flags")
