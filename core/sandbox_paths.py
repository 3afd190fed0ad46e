"""Paths a sandbox writes to: its debug logs."""
from __future__ import annotations

import os
import time


def debug_log_path(config, component: str) -> str | None:
    """Where --debug-log puts ``component``'s log: a file of its own in a
    directory (trailing /), or beside the given file name."""
    spec = config.get("debug-log")
    if not spec:
        return None
    command = getattr(config, "command", "") or "do"
    cid = getattr(config, "container_id", "") or str(os.getpid())
    spec = (spec.replace("%ID%", cid).replace("%COMMAND%", command)
            .replace("%TIMESTAMP%", str(int(time.time()))))
    if spec.endswith("/"):
        os.makedirs(spec, exist_ok=True)
        return os.path.join(spec, f"pysc.{component}.{command}.{os.getpid()}.log")
    return spec if component == "sentry" else f"{spec}.{component}"


def state_dir(config) -> str:
    """The runtime's state directory (--root), created if needed; falls back
    to a short per-user directory under /tmp when --root is not writable.
    It must stay short: unix socket paths inside it are limited to 107 bytes."""
    base = config.get("root") or "/var/run/pysc"
    try:
        os.makedirs(base, mode=0o711, exist_ok=True)
        if os.access(base, os.W_OK | os.X_OK):
            return base
    except OSError:
        pass
    base = f"/tmp/pysc-{os.getuid()}"
    os.makedirs(base, mode=0o700, exist_ok=True)
    return base


def do_workdir(config) -> str:
    """A fresh work directory for one `pysc do`; removes those of `do`s that
    died without cleaning up (their pid is gone)."""
    import shutil
    base = state_dir(config)
    for name in os.listdir(base):
        if name.startswith("do-") and name[3:].isdigit() and not _alive(int(name[3:])):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    path = os.path.join(base, f"do-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
