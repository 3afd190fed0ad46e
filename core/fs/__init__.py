"""Filesystems that live in the Sentry (not gofer-backed)."""
from pysc.core.hookspecs import hookimpl


@hookimpl
def pysc_filesystems():
    from pysc.core.fs.devfs import make_devfs
    from pysc.core.fs.procfs import ProcFS
    from pysc.core.fs.sysfs import SysFS
    from pysc.core.fs.tmpfs import TmpFS
    return {"tmpfs": lambda kernel: TmpFS(), "proc": ProcFS, "sysfs": SysFS, "devfs": make_devfs}
