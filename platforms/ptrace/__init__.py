"""The ptrace platform (seccomp RET_TRACE + one tracer thread)."""
from pysc.core.hookspecs import hookimpl
from pysc.platforms.ptrace.platform import PtracePlatform


@hookimpl
def pysc_platforms():
    return {"ptrace": PtracePlatform}
