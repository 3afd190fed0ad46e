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
for every syscall, and the Sentry returns to user mode itself.
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
trampoline:                       # user page, R+X; LSTAR points here
    outb %al, $0x10               # KVM_EXIT_IO on port 0x10: a syscall
    ud2
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
TRAMPOLINE = bytes.fromhex("e6100f0b")

PORT_SYSCALL = 0x10  # the trampoline's out
PORT_FAULT = 0x11    # the exception stub's out
NUM_VECTORS = 32
VECTOR_STRIDE = 16   # vector v enters at RING0 offset 16 * v
COMMON = 0x200       # the fault ``out`` (2 bytes), then ud2
IRET_POINT = 0x210   # an iretq
SYSCALL_ENTRY = 0    # the trampoline's ``out`` (2 bytes), then ud2

# The ring-0 stack at the fault exit, in qwords from rsp upwards.
FRAME_VECTOR, FRAME_ERROR, FRAME_RIP, FRAME_CS, FRAME_RFLAGS, FRAME_RSP, FRAME_SS = range(7)
FRAME_SIZE = 7 * 8
