"""The ptrace platform (seccomp RET_TRACE + one tracer thread)."""
from pysc.core.hookspecs import hookimpl


@hookimpl
def pysc_platforms():
    return {"ptrace": "pysc.platforms.ptrace.platform:PtracePlatform"}
