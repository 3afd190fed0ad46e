"""The exec root: the host directory app processes are chrooted into when the
host kernel itself runs their execve (validate, then continue).

The kernel resolves an execve's path, its ``#!`` interpreters and the ELF
interpreter (PT_INTERP) by name in the app's host root, while the app sees
the Sentry's filesystem.  So the exec root starts empty, and before letting
an execve go on the Sentry puts each file it resolved and checked at the
path the kernel will look up.  The kernel can then load nothing the Sentry
did not check: the directory holds only files of the sandbox, nothing of the
host.  Files are copied (a hard link would change the link count the host
and the app see) and kept while they are unchanged.
"""
from __future__ import annotations

import itertools
import os
import posixpath
import shutil
import tempfile

from pysc.core.exec import elf_interpreter, exec_fd
from pysc.core.vfs import Dentry


class ExecRoot:
    def __init__(self, parent: str):
        self.path = tempfile.mkdtemp(prefix=f"pysc-exec-{os.getpid()}-", dir=parent)
        os.chmod(self.path, 0o755)  # the app's host user must reach its files
        self.bpath = os.fsencode(self.path)
        self.placed: dict[bytes, tuple] = {}  # host path -> identity of what is there
        self._tmp = itertools.count()

    @staticmethod
    def lookup_path(path: bytes, base: bytes = b"/") -> bytes:
        """Where the kernel ends up for ``path`` looked up from ``base``: the
        exec root holds plain directories only, so ``..`` and ``.`` are lexical
        and ``..`` stops at the root."""
        full = posixpath.normpath(posixpath.join(base, path))
        return b"/" + full.lstrip(b"/")

    def place(self, path: bytes, d: Dentry, base: bytes = b"/") -> bytes:
        """Put the file of ``d`` where the kernel looks ``path`` up; returns
        the host path (inside the exec root) it is at."""
        rel = self.lookup_path(path, base)
        if rel == b"/":
            raise IsADirectoryError(path)
        st = d.inode.stat()
        key = (st.dev, st.ino, st.size, st.mtime_ns, st.ctime_ns)
        target = self.bpath + rel
        if self.placed.get(rel) == key:
            return target
        parent = posixpath.dirname(target)
        self._make_dirs(parent)
        fd = exec_fd(d)
        try:
            tmp = parent + b"/.pysc-%d" % next(self._tmp)
            self._copy(fd, tmp)
            try:
                os.replace(tmp, target)
            except IsADirectoryError:
                self._remove_tree(target)
                os.replace(tmp, target)
        finally:
            os.close(fd)
        self.placed[rel] = key
        return target

    def place_with_interpreter(self, path: bytes, d: Dentry, resolve, base: bytes = b"/") -> None:
        """Place an ELF file and, if it names one, its PT_INTERP (resolved by
        ``resolve(path) -> Dentry`` in the Sentry's view)."""
        self.place(path, d, base)
        fd = exec_fd(d)
        try:
            interp = elf_interpreter(fd)
        finally:
            os.close(fd)
        if interp is not None:
            self.place(interp, resolve(interp), base)

    def directory(self, path: bytes) -> bytes:
        """A directory at ``path`` (created if needed); returns its host path."""
        target = self.bpath + self.lookup_path(path)
        self._make_dirs(target)
        return target

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # --- helpers ---
    def _make_dirs(self, target: bytes) -> None:
        try:
            os.makedirs(target, 0o755, exist_ok=True)
            return
        except (FileExistsError, NotADirectoryError):
            pass
        # A file placed earlier stands where a directory is wanted now.
        cur = self.bpath
        for part in target[len(self.bpath):].strip(b"/").split(b"/"):
            cur = cur + b"/" + part
            if os.path.lexists(cur) and not os.path.isdir(cur):
                os.unlink(cur)
                self.placed.pop(cur[len(self.bpath):], None)
            os.makedirs(cur, 0o755, exist_ok=True)

    def _remove_tree(self, target: bytes) -> None:
        rel = target[len(self.bpath):]
        for key in [k for k in self.placed if k.startswith(rel + b"/")]:
            del self.placed[key]
        shutil.rmtree(target)

    @staticmethod
    def _copy(fd: int, tmp: bytes) -> None:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o755)
        try:
            os.fchmod(out, 0o755)
            offset = 0
            while True:
                n = os.sendfile(out, fd, offset, 1 << 22)
                if n == 0:
                    break
                offset += n
        finally:
            os.close(out)
