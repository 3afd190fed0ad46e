"""The seccomp platform (seccomp user notification, one supervisor thread)."""
from pysc.core.hookspecs import hookimpl


@hookimpl
def pysc_platforms():
    return {"seccomp": "pysc.platforms.seccomp.platform:SeccompPlatform"}
