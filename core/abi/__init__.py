"""The x86-64 Linux ABI in one place: syscall numbers, constants, struct layouts."""
