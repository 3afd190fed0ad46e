"""The seccomp platform (seccomp user notification, one supervisor thread)."""
from pysc.core.hookspecs import hookimpl
from pysc.platforms.seccomp.platform import SeccompPlatform


@hookimpl
def pysc_platforms():
    return {"seccomp": SeccompPlatform}
