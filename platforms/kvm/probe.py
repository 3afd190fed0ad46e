"""Which kind of KVM this host has.

PVM (a software hypervisor with shadow paging, module kvm_pvm) behaves
differently from hardware VMX/SVM in ways the machine layer must know about:
SYSCALL stays in ring 3, and guest ring 0 cannot be left through KVM_SET_SREGS
(PLATFORM-NOTES 2.5).  Probe once per process; the answers cannot change
while the modules stay loaded.
"""
from __future__ import annotations

import errno
import functools
import os

DEV_KVM = "/dev/kvm"
_MODULES = (("kvm_pvm", "pvm"), ("kvm_intel", "vmx"), ("kvm_amd", "svm"))


def _loaded_flavour() -> str | None:
    for module, flavour in _MODULES:
        if os.path.isdir(f"/sys/module/{module}"):
            return flavour
    return None


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None when /dev/kvm can be used; otherwise a sentence saying why not."""
    if not os.path.exists(DEV_KVM):
        return f"{DEV_KVM} does not exist (KVM is not enabled on this host)"
    try:
        fd = os.open(DEV_KVM, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied opening {DEV_KVM} (run as root or join the kvm group)"
        return f"cannot open {DEV_KVM}: {e.strerror}"
    try:
        from pysc.platforms.kvm import kvmapi
        import fcntl
        version = fcntl.ioctl(fd, kvmapi.KVM_GET_API_VERSION, 0)
        if version != kvmapi.KVM_API_VERSION:
            return f"{DEV_KVM} has API version {version}, expected {kvmapi.KVM_API_VERSION}"
        for cap, name in ((kvmapi.KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS"),
                          (kvmapi.KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"),
                          (kvmapi.KVM_CAP_XCRS, "KVM_CAP_XCRS")):
            if not kvmapi.check_extension(fd, cap):
                return f"{DEV_KVM} lacks {name}"
    except OSError as e:
        return f"{DEV_KVM} does not answer KVM ioctls: {e.strerror}"
    finally:
        os.close(fd)
    if _loaded_flavour() is None:
        return f"{DEV_KVM} exists but none of kvm_pvm, kvm_intel, kvm_amd is loaded"
    return None


@functools.lru_cache(maxsize=1)
def kvm_flavour() -> str | None:
    """"pvm", "vmx" or "svm"; None when there is no usable /dev/kvm."""
    if unavailable_reason() is not None:
        return None
    return _loaded_flavour()
