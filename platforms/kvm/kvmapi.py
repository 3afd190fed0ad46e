"""The KVM ioctl ABI (include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h)
and the x86 constants the machine layer needs, as ctypes structs and thin
wrappers over fcntl.ioctl.

fcntl.ioctl releases the GIL and measured as fast as a ctypes libc.ioctl
for KVM_RUN.  Pass ctypes structs with mutate_flag=True: they are then used
in place (above 1024 bytes fcntl refuses anything else).  Every ioctl other
than KVM_RUN runs at setup only: on PVM each costs ~9 us.
"""
from __future__ import annotations

import ctypes
import fcntl
import os

# --- ioctl numbers ---
KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(0, nr, 0)


def _iow(nr: int, size: int) -> int:
    return _ioc(1, nr, size)


def _ior(nr: int, size: int) -> int:
    return _ioc(2, nr, size)


def _iowr(nr: int, size: int) -> int:
    return _ioc(3, nr, size)


# --- structs ---
class kvm_regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class kvm_segment(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32), ("selector", ctypes.c_uint16),
                ("type", ctypes.c_uint8), ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8),
                ("db", ctypes.c_uint8), ("s", ctypes.c_uint8), ("l", ctypes.c_uint8), ("g", ctypes.c_uint8),
                ("avl", ctypes.c_uint8), ("unusable", ctypes.c_uint8), ("padding", ctypes.c_uint8)]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16), ("padding", ctypes.c_uint16 * 3)]


class kvm_sregs(ctypes.Structure):
    _fields_ = [("cs", kvm_segment), ("ds", kvm_segment), ("es", kvm_segment), ("fs", kvm_segment),
                ("gs", kvm_segment), ("ss", kvm_segment), ("tr", kvm_segment), ("ldt", kvm_segment),
                ("gdt", kvm_dtable), ("idt", kvm_dtable),
                ("cr0", ctypes.c_uint64), ("cr2", ctypes.c_uint64), ("cr3", ctypes.c_uint64),
                ("cr4", ctypes.c_uint64), ("cr8", ctypes.c_uint64), ("efer", ctypes.c_uint64),
                ("apic_base", ctypes.c_uint64), ("interrupt_bitmap", ctypes.c_uint64 * 4)]


class kvm_vcpu_events(ctypes.Structure):
    _fields_ = [("exception_injected", ctypes.c_uint8), ("exception_nr", ctypes.c_uint8),
                ("exception_has_error_code", ctypes.c_uint8), ("exception_pending", ctypes.c_uint8),
                ("exception_error_code", ctypes.c_uint32),
                ("interrupt", ctypes.c_uint8 * 4), ("nmi", ctypes.c_uint8 * 4),
                ("sipi_vector", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("smi", ctypes.c_uint8 * 4),
                ("triple_fault_pending", ctypes.c_uint8), ("reserved", ctypes.c_uint8 * 26),
                ("exception_has_payload", ctypes.c_uint8), ("exception_payload", ctypes.c_uint64)]


class kvm_sync_regs(ctypes.Structure):
    _fields_ = [("regs", kvm_regs), ("sregs", kvm_sregs), ("events", kvm_vcpu_events)]


class kvm_run_io(ctypes.Structure):
    _fields_ = [("direction", ctypes.c_uint8), ("size", ctypes.c_uint8), ("port", ctypes.c_uint16),
                ("count", ctypes.c_uint32), ("data_offset", ctypes.c_uint64)]


class kvm_run_mmio(ctypes.Structure):
    _fields_ = [("phys_addr", ctypes.c_uint64), ("data", ctypes.c_uint8 * 8), ("len", ctypes.c_uint32),
                ("is_write", ctypes.c_uint8)]


class kvm_run_internal(ctypes.Structure):
    _fields_ = [("suberror", ctypes.c_uint32), ("ndata", ctypes.c_uint32), ("data", ctypes.c_uint64 * 16)]


class kvm_run_fail_entry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", ctypes.c_uint64), ("cpu", ctypes.c_uint32)]


class kvm_run_exit_union(ctypes.Union):
    _fields_ = [("io", kvm_run_io), ("mmio", kvm_run_mmio), ("internal", kvm_run_internal),
                ("fail_entry", kvm_run_fail_entry), ("padding", ctypes.c_char * 256)]


SYNC_REGS_SIZE_BYTES = 2048


class kvm_sync_union(ctypes.Union):
    _fields_ = [("regs", kvm_sync_regs), ("padding", ctypes.c_char * SYNC_REGS_SIZE_BYTES)]


class kvm_run(ctypes.Structure):
    _fields_ = [("request_interrupt_window", ctypes.c_uint8), ("immediate_exit", ctypes.c_uint8),
                ("padding1", ctypes.c_uint8 * 6), ("exit_reason", ctypes.c_uint32),
                ("ready_for_interrupt_injection", ctypes.c_uint8), ("if_flag", ctypes.c_uint8),
                ("flags", ctypes.c_uint16), ("cr8", ctypes.c_uint64), ("apic_base", ctypes.c_uint64),
                ("exit", kvm_run_exit_union),
                ("kvm_valid_regs", ctypes.c_uint64), ("kvm_dirty_regs", ctypes.c_uint64),
                ("s", kvm_sync_union)]


class kvm_cpuid_entry2(ctypes.Structure):
    _fields_ = [("function", ctypes.c_uint32), ("index", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("eax", ctypes.c_uint32), ("ebx", ctypes.c_uint32), ("ecx", ctypes.c_uint32),
                ("edx", ctypes.c_uint32), ("padding", ctypes.c_uint32 * 3)]


class kvm_cpuid2_header(ctypes.Structure):
    _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32)]


def kvm_cpuid2(n: int) -> type[ctypes.Structure]:
    """struct kvm_cpuid2 with room for ``n`` entries."""
    return type(f"kvm_cpuid2_{n}", (ctypes.Structure,), {
        "_fields_": [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32),
                     ("entries", kvm_cpuid_entry2 * n)]})


class kvm_msr_entry(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("reserved", ctypes.c_uint32), ("data", ctypes.c_uint64)]


class kvm_msrs_header(ctypes.Structure):
    _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def kvm_msrs(n: int) -> type[ctypes.Structure]:
    """struct kvm_msrs with room for ``n`` entries."""
    return type(f"kvm_msrs_{n}", (ctypes.Structure,), {
        "_fields_": [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("entries", kvm_msr_entry * n)]})


class kvm_xcr(ctypes.Structure):
    _fields_ = [("xcr", ctypes.c_uint32), ("reserved", ctypes.c_uint32), ("value", ctypes.c_uint64)]


class kvm_xcrs(ctypes.Structure):
    _fields_ = [("nr_xcrs", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("xcrs", kvm_xcr * 16),
                ("padding", ctypes.c_uint64 * 16)]


class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("guest_phys_addr", ctypes.c_uint64),
                ("memory_size", ctypes.c_uint64), ("userspace_addr", ctypes.c_uint64)]


class kvm_device_attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32), ("group", ctypes.c_uint32), ("attr", ctypes.c_uint64),
                ("addr", ctypes.c_uint64)]


XSAVE_SIZE = 4096


class kvm_xsave(ctypes.Structure):
    _fields_ = [("region", ctypes.c_uint32 * (XSAVE_SIZE // 4))]


# --- ioctls ---
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, ctypes.sizeof(kvm_cpuid2_header))
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, ctypes.sizeof(kvm_userspace_memory_region))
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, ctypes.sizeof(kvm_regs))
KVM_SET_REGS = _iow(0x82, ctypes.sizeof(kvm_regs))
KVM_GET_SREGS = _ior(0x83, ctypes.sizeof(kvm_sregs))
KVM_SET_SREGS = _iow(0x84, ctypes.sizeof(kvm_sregs))
KVM_GET_MSRS = _iowr(0x88, ctypes.sizeof(kvm_msrs_header))
KVM_SET_MSRS = _iow(0x89, ctypes.sizeof(kvm_msrs_header))
KVM_SET_CPUID2 = _iow(0x90, ctypes.sizeof(kvm_cpuid2_header))
KVM_GET_XSAVE = _ior(0xA4, ctypes.sizeof(kvm_xsave))
KVM_SET_XSAVE = _iow(0xA5, ctypes.sizeof(kvm_xsave))
KVM_GET_XCRS = _ior(0xA6, ctypes.sizeof(kvm_xcrs))
KVM_SET_XCRS = _iow(0xA7, ctypes.sizeof(kvm_xcrs))

KVM_GET_TSC_KHZ = _io(0xA3)
KVM_SET_DEVICE_ATTR = _iow(0xE1, ctypes.sizeof(kvm_device_attr))
KVM_GET_DEVICE_ATTR = _iow(0xE2, ctypes.sizeof(kvm_device_attr))

KVM_API_VERSION = 12

# capabilities (KVM_CHECK_EXTENSION)
KVM_CAP_USER_MEMORY = 3
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_XCRS = 56
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_SYNC_REGS = 74
KVM_CAP_READONLY_MEM = 81
KVM_CAP_VCPU_ATTRIBUTES = 127
KVM_CAP_IMMEDIATE_EXIT = 136

# vCPU attribute groups and attributes (KVM_{GET,SET}_DEVICE_ATTR on a vCPU)
KVM_VCPU_TSC_CTRL = 0
KVM_VCPU_TSC_OFFSET = 0

# kvm_run.kvm_valid_regs / kvm_dirty_regs
KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2

KVM_MEM_READONLY = 1 << 1

# exit reasons
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IO_OUT = 1

# --- x86 ---
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SYSCALL_MASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_PAT = 0x277

CR0_PE, CR0_MP, CR0_ET, CR0_NE = 1 << 0, 1 << 1, 1 << 4, 1 << 5
CR0_WP, CR0_AM, CR0_PG = 1 << 16, 1 << 18, 1 << 31
CR4_PAE, CR4_PGE, CR4_OSFXSR, CR4_OSXMMEXCPT = 1 << 5, 1 << 7, 1 << 9, 1 << 10
CR4_FSGSBASE, CR4_OSXSAVE = 1 << 16, 1 << 18
EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE = 1 << 0, 1 << 8, 1 << 10, 1 << 11

RFLAGS_CF, RFLAGS_FIXED, RFLAGS_PF, RFLAGS_AF, RFLAGS_ZF, RFLAGS_SF = 0x1, 0x2, 0x4, 0x10, 0x40, 0x80
RFLAGS_TF, RFLAGS_IF, RFLAGS_DF, RFLAGS_OF, RFLAGS_IOPL, RFLAGS_NT = 0x100, 0x200, 0x400, 0x800, 0x3000, 0x4000
RFLAGS_RF, RFLAGS_VM, RFLAGS_AC, RFLAGS_ID = 0x10000, 0x20000, 0x40000, 0x200000
# What user code may own in RFLAGS (Linux's FIX_EFLAGS less RF): everything else is forced.
RFLAGS_USER = (RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_TF | RFLAGS_DF
               | RFLAGS_OF | RFLAGS_AC | RFLAGS_ID)

# page-table entry bits
PTE_P, PTE_RW, PTE_US, PTE_PWT, PTE_PCD, PTE_A, PTE_D, PTE_PS, PTE_G = (
    1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8)
PTE_NX = 1 << 63
PTE_ADDR_MASK = 0x000F_FFFF_FFFF_F000

# exception vectors
VEC_DE, VEC_DB, VEC_NMI, VEC_BP, VEC_OF, VEC_BR, VEC_UD, VEC_NM = 0, 1, 2, 3, 4, 5, 6, 7
VEC_DF, VEC_TS, VEC_NP, VEC_SS, VEC_GP, VEC_PF, VEC_MF, VEC_AC = 8, 10, 11, 12, 13, 14, 16, 17
VEC_MC, VEC_XM, VEC_VE, VEC_CP = 18, 19, 20, 21
# vectors for which the CPU pushes an error code
VECTORS_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
# #PF error code bits
PF_PROT, PF_WRITE, PF_USER, PF_RSVD, PF_INSTR = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4

# XSAVE feature bits of XCR0
XFEATURE_X87, XFEATURE_SSE, XFEATURE_AVX = 1 << 0, 1 << 1, 1 << 2
XFEATURE_AVX512 = (1 << 5) | (1 << 6) | (1 << 7)


# --- thin wrappers ---
def check_extension(fd: int, cap: int) -> int:
    return fcntl.ioctl(fd, KVM_CHECK_EXTENSION, cap)


def open_kvm() -> int:
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        if version != KVM_API_VERSION:
            raise OSError(f"/dev/kvm has API version {version}, expected {KVM_API_VERSION}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def get_supported_cpuid(kvm_fd: int) -> ctypes.Structure:
    """KVM_GET_SUPPORTED_CPUID, growing the buffer until it fits."""
    n = 64
    while True:
        buf = kvm_cpuid2(n)()
        buf.nent = n
        try:
            fcntl.ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, buf, True)
            return buf
        except OSError as e:
            if e.errno != 7 or n >= 4096:  # E2BIG
                raise
            n *= 2


def set_user_memory_region(vm_fd: int, slot: int, gpa: int, size: int, host_addr: int, flags: int = 0) -> None:
    fcntl.ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION,
                kvm_userspace_memory_region(slot, flags, gpa, size, host_addr), False)


def set_msrs(vcpu_fd: int, values: dict[int, int]) -> None:
    buf = kvm_msrs(len(values))()
    buf.nmsrs = len(values)
    for i, (index, data) in enumerate(values.items()):
        buf.entries[i].index = index
        buf.entries[i].data = data
    done = fcntl.ioctl(vcpu_fd, KVM_SET_MSRS, buf, True)
    if done != len(values):
        bad = list(values)[done]
        raise OSError(f"KVM_SET_MSRS refused MSR {bad:#x} = {values[bad]:#x}")


def get_msrs(vcpu_fd: int, indices: list[int]) -> dict[int, int]:
    buf = kvm_msrs(len(indices))()
    buf.nmsrs = len(indices)
    for i, index in enumerate(indices):
        buf.entries[i].index = index
    done = fcntl.ioctl(vcpu_fd, KVM_GET_MSRS, buf, True)
    return {buf.entries[i].index: buf.entries[i].data for i in range(done)}


def vcpu_attr(vcpu_fd: int, group: int, attr: int, value: int | None = None) -> int:
    """A 64-bit vCPU attribute: set it to ``value`` when given, then read it back."""
    buf = ctypes.c_uint64(0 if value is None else value)
    desc = kvm_device_attr(0, group, attr, ctypes.addressof(buf))
    if value is not None:
        fcntl.ioctl(vcpu_fd, KVM_SET_DEVICE_ATTR, desc, False)
    fcntl.ioctl(vcpu_fd, KVM_GET_DEVICE_ATTR, desc, False)
    return buf.value
