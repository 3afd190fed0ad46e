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
    spec = (spec.replace("%ID%", str(os.getpid())).replace("%COMMAND%", "do")
            .replace("%TIMESTAMP%", str(int(time.time()))))
    if spec.endswith("/"):
        os.makedirs(spec, exist_ok=True)
        return os.path.join(spec, f"pysc.{component}.{os.getpid()}.log")
    return spec if component == "sentry" else f"{spec}.{component}"
