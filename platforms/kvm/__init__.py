"""The kvm platform: the app runs in guest ring 3 of a KVM VM built from Python;
every syscall and fault becomes a VM exit that the Sentry handles."""
from pysc.core.hookspecs import hookimpl


@hookimpl
def pysc_platforms():
    return {"kvm": "pysc.platforms.kvm.platform:KvmPlatform"}
