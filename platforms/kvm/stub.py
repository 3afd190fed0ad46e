"""The guest's own code, prebuilt: the ring-0 exception stub and the user-mode
syscall trampoline.

Assembling at run time cost more than all of VM setup (PLATFORM-NOTES 2.5.9),
so the bytes below were produced once from SOURCE with
``as --64 -o stub.o stub.s && objcopy -O binary -j .text stub.o stub.bin``
(GNU as 2.40); tests/test_kvm_machine.py re-assembles SOURCE when ``as`` is
available and checks that the bytes still match.

The ring-0 part fills one supervisor page: vector ``v`` enters at ``16 * v``,
pushes a dummy error code where the CPU pushes none, pushes ``v`` and exits
with ``out %al, $0x11``; no register is touched, and cr2 is read from the
sync-area sregs (an emulated ``mov %cr2`` cost up to 6 us on PVM).  The Sentry
never lets it continue past that ``out``: it reads the frame from the stack
and resumes user mode through the ``iretq`` at IRET_POINT, with rsp at a frame
it wrote.  The trampoline is a user page (LSTAR): its ``out %al, $0x10`` exits
for a syscall, and the Sentry returns to user mode itself.  Before that it
answers, without an exit, the anonymous mmap and munmap calls the address
space's guest-mmap page allows (platforms/kvm/guestmmap.py).
"""
from __future__ import annotations

SOURCE = r"""
    .code64
    .text
ring0:                            # supervisor page, R+X
    .macro vector n, cpu_pushed_error_code
    .org \n * 16, 0xcc
    .if \cpu_pushed_error_code == 0
    pushq $0                      # dummy error code
    .endif
    pushq $\n
    jmp common
    .endm
    vector 0, 0
    vector 1, 0
    vector 2, 0
    vector 3, 0
    vector 4, 0
    vector 5, 0
    vector 6, 0
    vector 7, 0
    vector 8, 1
    vector 9, 0
    vector 10, 1
    vector 11, 1
    vector 12, 1
    vector 13, 1
    vector 14, 1
    vector 15, 0
    vector 16, 0
    vector 17, 1
    vector 18, 0
    vector 19, 0
    vector 20, 0
    vector 21, 1
    vector 22, 0
    vector 23, 0
    vector 24, 0
    vector 25, 0
    vector 26, 0
    vector 27, 0
    vector 28, 0
    vector 29, 1
    vector 30, 1
    vector 31, 0
    .org 0x200, 0xcc
common:                           # stack: vector, error code, rip, cs, rflags, rsp, ss
    outb %al, $0x11               # KVM_EXIT_IO on port 0x11: a fault (cr2 is in the sregs)
    ud2                           # never resumed here
    .org 0x210, 0xcc
iret_point:                       # resumed here with rsp at an iret frame
    iretq
    .org 0x220, 0xcc
end_ring0:
    # The user page (LSTAR).  mmap and munmap may be answered here, in user
    # mode, from the address space's guest-mmap page (platforms/kvm/guestmmap.py);
    # every other call, and every call the page does not allow, leaves through
    # syscall_out.  Until its commit store the code changes only rax and the
    # flags, so a kick anywhere before it can rewind to the syscall; after it
    # only the return is left (the machine finishes either, see machine.py).
    .set page, trampoline + 0x40000000   # GUEST_MMAP_VA
    .set max_len, page + 0x00            # 0: answer nothing here
    .set gap_lo, page + 0x08             # the free gap below the fast region
    .set gap_hi, page + 0x10             # the fast region is [gap_hi, top)
    .set top, page + 0x18
    .set prot, page + 0x20               # the fast region's prot
    .set scratch, page + 0x28
    .set skip, page + 0x30               # the largest free range above the gap
    .set flags_not_kept, 0x240d00        # TF DF OF AC ID: sahf restores only SF ZF AF PF CF
    .macro caller_flags           # SF ZF AF PF CF as the caller had them; rax kept
    mov %rax, scratch(%rip)
    mov %r11d, %eax
    shl $8, %eax
    sahf
    mov scratch(%rip), %rax
    .endm
trampoline:
    cmp $9, %rax
    je mmap
    cmp $11, %rax
    je munmap
syscall_out:
    outb %al, $0x10               # KVM_EXIT_IO on port 0x10: a syscall for the Sentry
    ud2
mmap:                             # mmap(0, len, prot, MAP_PRIVATE|MAP_ANONYMOUS, fd, 0)
    lea -1(%rsi), %rax
    cmp max_len(%rip), %rax
    jae slow_mmap                 # 1 <= len <= max_len
    test %rdi, %rdi
    jnz slow_mmap
    cmp $0x22, %r10
    jne slow_mmap
    test %r9, %r9
    jnz slow_mmap
    test $~7, %rdx
    jnz slow_mmap
    test $flags_not_kept, %r11
    jnz slow_mmap
    mov gap_hi(%rip), %rax
    cmp top(%rip), %rax
    je 1f                         # an empty fast region takes any prot
    cmp prot(%rip), %rdx
    jne slow_mmap
1:  lea -1(%rsi), %rax
    or $0xfff, %rax
    cmp skip(%rip), %rax
    jb slow_mmap                  # it fits higher up: placed there
    add $1, %rax                  # the length in pages
    neg %rax
    add gap_hi(%rip), %rax        # carry: gap_hi >= length
    jnc slow_mmap
    cmp gap_lo(%rip), %rax
    jb slow_mmap
    mov %rdx, prot(%rip)
    caller_flags
mmap_commit:
    mov %rax, gap_hi(%rip)
mmap_return:
    jmp *%rcx
munmap:                           # munmap(gap_hi, len): the region's lowest pages
    cmp gap_hi(%rip), %rdi
    jne slow_munmap
    lea -1(%rsi), %rax
    cmp max_len(%rip), %rax
    jae slow_munmap
    test $flags_not_kept, %r11
    jnz slow_munmap
    or $0xfff, %rax
    lea 1(%rdi, %rax), %rax
    cmp top(%rip), %rax
    ja slow_munmap
    caller_flags
munmap_commit:
    mov %rax, gap_hi(%rip)
munmap_return:
    mov $0, %eax
    jmp *%rcx
slow_mmap:
    mov $9, %eax
    jmp syscall_out
slow_munmap:
    mov $11, %eax
    jmp syscall_out
end_trampoline:
"""

RING0 = bytes.fromhex(
    "6a006a00e9f7010000cccccccccccccc6a006a01e9e7010000cccccccccccccc6a006a02e9d7010000cccccccccccccc"
    "6a006a03e9c7010000cccccccccccccc6a006a04e9b7010000cccccccccccccc6a006a05e9a7010000cccccccccccccc"
    "6a006a06e997010000cccccccccccccc6a006a07e987010000cccccccccccccc6a08e979010000cccccccccccccccccc"
    "6a006a09e967010000cccccccccccccc6a0ae959010000cccccccccccccccccc6a0be949010000cccccccccccccccccc"
    "6a0ce939010000cccccccccccccccccc6a0de929010000cccccccccccccccccc6a0ee919010000cccccccccccccccccc"
    "6a006a0fe907010000cccccccccccccc6a006a10e9f7000000cccccccccccccc6a11e9e9000000cccccccccccccccccc"
    "6a006a12e9d7000000cccccccccccccc6a006a13e9c7000000cccccccccccccc6a006a14e9b7000000cccccccccccccc"
    "6a15e9a9000000cccccccccccccccccc6a006a16e997000000cccccccccccccc6a006a17e987000000cccccccccccccc"
    "6a006a18eb7acccccccccccccccccccc6a006a19eb6acccccccccccccccccccc6a006a1aeb5acccccccccccccccccccc"
    "6a006a1beb4acccccccccccccccccccc6a006a1ceb3acccccccccccccccccccc6a1deb2ccccccccccccccccccccccccc"
    "6a1eeb1ccccccccccccccccccccccccc6a006a1feb0acccccccccccccccccccce6110f0bcccccccccccccccccccccccc"
    "48cfcccccccccccccccccccccccccccc"
)
TRAMPOLINE = bytes.fromhex(
    "4883f809740e4883f80b0f84c1000000e6100f0b488d46ff483b05e1ffff3f0f83020100004885ff0f85f90000004983"
    "fa220f85ef0000004d85c90f85e600000048f7c2f8ffffff0f85d900000049f7c3000d24000f85cc000000488b05aeff"
    "ff3f483b05afffff3f740d483b15aeffff3f0f85af000000488d46ff480dff0f0000483b05a7ffff3f0f829800000048"
    "83c00148f7d848030573ffff3f0f8384000000483b055effff3f727b4889156dffff3f4889056effff3f4489d8c1e008"
    "9e488b0560ffff3f48890541ffff3fffe1483b3d38ffff3f7557488d46ff483b051bffff3f734a49f7c3000d24007541"
    "480dff0f0000488d440701483b0516ffff3f772d4889051dffff3f4489d8c1e0089e488b050fffff3f488905f0feff3f"
    "b800000000ffe1b809000000e9dffeffffb80b000000e9d5feffff"
)

PORT_SYSCALL = 0x10  # the trampoline's out
PORT_FAULT = 0x11    # the exception stub's out
NUM_VECTORS = 32
VECTOR_STRIDE = 16   # vector v enters at RING0 offset 16 * v
COMMON = 0x200       # the fault ``out`` (2 bytes), then ud2
IRET_POINT = 0x210   # an iretq

# Labels of the trampoline (offsets in TRAMPOLINE; LSTAR is offset 0).
SYSCALL_OUT = 0x10       # the ``out`` (2 bytes), then ud2
MMAP = 0x14
MMAP_COMMIT = 0xC8
MMAP_RETURN = 0xCF
MUNMAP = 0xD1
MUNMAP_COMMIT = 0x119
MUNMAP_RETURN = 0x120
SLOW_MMAP = 0x127
SLOW_MUNMAP = 0x131
LABELS = {"syscall_out": SYSCALL_OUT, "mmap": MMAP, "mmap_commit": MMAP_COMMIT, "mmap_return": MMAP_RETURN,
          "munmap": MUNMAP, "munmap_commit": MUNMAP_COMMIT, "munmap_return": MUNMAP_RETURN,
          "slow_mmap": SLOW_MMAP, "slow_munmap": SLOW_MUNMAP}
SYS_MMAP, SYS_MUNMAP = 9, 11

# The guest-mmap page the trampoline reads (at ``page`` in SOURCE, 1 GiB above it).
GUEST_MMAP_OFFSET = 0x4000_0000
PAGE_MAX_LEN, PAGE_GAP_LO, PAGE_GAP_HI, PAGE_TOP, PAGE_PROT, PAGE_SCRATCH, PAGE_SKIP = range(0, 0x38, 8)
FLAGS_NOT_KEPT = 0x240D00  # rflags a syscall answered in the trampoline cannot restore


def unwind(offset: int, rax: int, rcx: int) -> tuple[int, int]:
    """(rax, rip) of the user state for a thread interrupted at ``offset``
    in the trampoline (user mode, on PVM): before a commit, the syscall
    instruction again (it will be made anew); after one, its return."""
    if MMAP_COMMIT < offset <= MMAP_RETURN:
        return rax, rcx
    if MUNMAP_COMMIT < offset <= MUNMAP_RETURN + 5:
        return 0, rcx
    if MMAP <= offset <= MMAP_COMMIT or SLOW_MMAP <= offset < SLOW_MUNMAP:
        rax = SYS_MMAP
    elif MUNMAP <= offset <= MUNMAP_COMMIT or offset >= SLOW_MUNMAP:
        rax = SYS_MUNMAP
    return rax, rcx - 2

# The ring-0 stack at the fault exit, in qwords from rsp upwards.
FRAME_VECTOR, FRAME_ERROR, FRAME_RIP, FRAME_CS, FRAME_RFLAGS, FRAME_RSP, FRAME_SS = range(7)
FRAME_SIZE = 7 * 8
