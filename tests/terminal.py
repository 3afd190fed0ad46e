"""Talking to a program through a pty master, for the terminal tests of the
OCI runtime (tests/oci) and of the container engines (tests/e2e)."""
from __future__ import annotations

import os
import select
import time


def talk(master: int, typed: bytes, until: bytes, prompt: bytes | None = None,
         timeout: float = 30) -> str:
    """Type TYPED into the pty master (once PROMPT has been printed, if
    given); return what came back up to UNTIL, or to the end of the output."""
    out, sent = b"", False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and until not in out:
        if not sent and (prompt is None or prompt in out):
            os.write(master, typed)
            sent = True
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            out += chunk
    return out.decode(errors="replace")
