"""The Sentry's ELF loader: what Linux's binfmt_elf does at execve, for
platforms where the Sentry owns the app's address space (kvm).

It maps the program and its interpreter (ld.so) into a memory manager and
builds the initial stack (strings, auxv, envp, argv, argc) byte for byte as
Linux lays it out, without Linux's randomisation: a PIE with an interpreter
goes at 0x555555554000, everything else the mm places goes where
``mm.mmap(0, ...)`` puts it, the stack ends at ``mm.user_limit - STACK_GAP``
and brk starts right after the program.

Everything that can fail before the first mapping (headers, the
interpreter, E2BIG) is checked first; a failure after that leaves a
half-built address space, which the caller must discard (Linux kills the
process past that point of no return).
"""
from __future__ import annotations

from pysc.core.abi import consts as C
from pysc.core.abi import structs as S
from pysc.core.errors import SyscallError
from pysc.core.record import Record
from pysc.core.sigframe import sigframe_size

PAGE = C.PAGE_SIZE
STACK_GAP = 0x10000  # between the stack's top and user_limit: a guard, fixed instead of random
MAX_STACK_VMA = 1 << 30  # the [stack] VMA of a huge or unlimited RLIMIT_STACK
PLATFORM = b"x86_64"
MAX_PHDRS_SIZE = 65536  # Linux's bound on e_phnum * e_phentsize
PATH_MAX = 4096


def page_down(x: int) -> int:
    return x & ~(PAGE - 1)


def page_up(x: int) -> int:
    return (x + PAGE - 1) & ~(PAGE - 1)


class LoadedImage(Record):
    """Where exec put things: the registers to start with and what /proc and
    brk need.  ``auxv`` is the (type, value) list as on the stack, AT_NULL
    included, as /proc/PID/auxv shows it."""
    entry: int
    sp: int
    phdr_addr: int
    phnum: int
    base: int  # the interpreter's load bias (AT_BASE), 0 without one
    load_bias: int  # the program's
    brk_start: int
    stack_top: int
    execfn_addr: int
    auxv: list[tuple[int, int]]
    arg_start: int = 0  # argv strings, for /proc/PID/cmdline
    arg_end: int = 0
    env_start: int = 0  # envp strings, for /proc/PID/environ
    env_end: int = 0
    interp: bytes | None = None  # the PT_INTERP path, if any
    exec_stack: bool = False


class _Elf(Record):
    """A parsed ELF file: header fields and program headers."""
    file: object
    type: int
    entry: int
    phoff: int
    phnum: int
    phdrs: list[tuple]  # S.ELF64_PHDR tuples

    def loads(self) -> list[tuple]:
        return [ph for ph in self.phdrs if ph[0] == C.PT_LOAD]


def _read(file, count: int, offset: int) -> bytes:
    """Read exactly ``count`` bytes; a short file is EIO, as Linux's elf_read."""
    data = file.pread(count, offset)
    if len(data) != count:
        raise SyscallError(C.EIO)
    return data


def _parse(file, bad: int) -> _Elf:
    """Check the ELF header like Linux's load_elf_binary and read the program
    headers; ``bad`` is the errno of a file that is not an x86-64 ELF
    (ENOEXEC for the program, ELIBBAD for the interpreter)."""
    head = file.pread(S.ELF64_EHDR.size, 0)
    if len(head) < S.ELF64_EHDR.size or not head.startswith(C.ELFMAG):
        raise SyscallError(bad)
    (ident, etype, machine, _version, entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum,
     *_rest) = S.ELF64_EHDR.unpack(head)
    if ident[C.EI_CLASS] != C.ELFCLASS64 or ident[C.EI_DATA] != C.ELFDATA2LSB \
            or machine != C.EM_X86_64:
        raise SyscallError(bad)
    if etype not in (C.ET_EXEC, C.ET_DYN):
        raise SyscallError(C.ENOEXEC if bad == C.ENOEXEC else C.EINVAL)
    if phentsize != S.ELF64_PHDR.size or not 0 < phnum * phentsize <= MAX_PHDRS_SIZE:
        raise SyscallError(C.ENOEXEC)
    table = _read(file, phnum * phentsize, phoff)
    phdrs = [S.ELF64_PHDR.unpack_from(table, i * phentsize) for i in range(phnum)]
    elf = _Elf(file, etype, entry, phoff, phnum, phdrs)
    for ptype, _f, offset, vaddr, _p, filesz, memsz, _a in elf.loads():
        if filesz > memsz or (vaddr - offset) % PAGE:
            raise SyscallError(C.EINVAL)
    if not elf.loads():
        raise SyscallError(C.ENOEXEC)
    return elf


def _interp_path(elf: _Elf) -> bytes | None:
    for ptype, _f, offset, _v, _p, filesz, _m, _a in elf.phdrs:
        if ptype == C.PT_INTERP:
            if not 2 <= filesz <= PATH_MAX:
                raise SyscallError(C.ENOEXEC)
            path = _read(elf.file, filesz, offset)
            if path[-1] != 0:
                raise SyscallError(C.ENOEXEC)
            return path.split(b"\0", 1)[0]
    return None


def _alignment(elf: _Elf) -> int:
    """The largest power-of-two p_align of the PT_LOADs, at least a page."""
    align = PAGE
    for ph in elf.loads():
        a = ph[7]
        if a and a & (a - 1) == 0:
            align = max(align, a)
    return align


def _prot(pflags: int) -> int:
    return ((C.PROT_READ if pflags & C.PF_R else 0) | (C.PROT_WRITE if pflags & C.PF_W else 0)
            | (C.PROT_EXEC if pflags & C.PF_X else 0))


def _map(mm, elf: _Elf, bias: int | None) -> int:
    """Map ``elf``'s PT_LOAD segments; with ``bias`` None the mm chooses where
    (the whole span reserved at once, aligned to the segments' p_align).
    Returns the load bias."""
    loads = elf.loads()
    lo = page_down(min(ph[3] for ph in loads))
    hi = page_up(max(ph[3] + ph[6] for ph in loads))
    reserved = None
    if bias is None:
        align = _alignment(elf)
        span = hi - lo + (align - PAGE)
        start = mm.mmap(0, span, C.PROT_NONE, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
        aligned = (start + align - 1) & ~(align - 1)
        if aligned > start:
            mm.munmap(start, aligned - start)
        if aligned + (hi - lo) < start + span:
            mm.munmap(aligned + (hi - lo), start + span - aligned - (hi - lo))
        bias = aligned - lo
        reserved = (aligned, aligned + hi - lo)
    covered: list[tuple[int, int]] = []
    for _t, pflags, offset, vaddr, _p, filesz, memsz, _a in loads:
        prot = _prot(pflags)
        start = page_down(vaddr + bias)
        file_end = vaddr + bias + filesz
        mem_end = vaddr + bias + memsz
        flags = C.MAP_PRIVATE | C.MAP_FIXED
        if filesz:
            mm.mmap(start, page_up(file_end) - start, prot, flags, elf.file,
                    offset - (vaddr + bias - start))
        if memsz > filesz:
            if filesz and file_end % PAGE:
                # The file's last page holds other bytes past p_filesz: .bss starts zeroed.
                mm.write_force(file_end, bytes(page_up(file_end) - file_end))
            anon = page_up(file_end) if filesz else start
            if page_up(mem_end) > anon:
                mm.mmap(anon, page_up(mem_end) - anon, prot, flags | C.MAP_ANONYMOUS)
        covered.append((start, page_up(mem_end)))
    if reserved is not None:
        # Holes between segments stay unmapped, as Linux leaves them.
        at = reserved[0]
        for s, e in sorted(covered):
            if s > at:
                mm.munmap(at, s - at)
            at = max(at, e)
    return bias


def _phdr_addr(elf: _Elf, bias: int) -> int:
    """Where the program headers are in memory (AT_PHDR)."""
    for ptype, _f, _o, vaddr, *_ in elf.phdrs:
        if ptype == C.PT_PHDR:
            return vaddr + bias
    for _t, _f, offset, vaddr, _p, filesz, *_ in elf.loads():
        if offset <= elf.phoff < offset + filesz:
            return elf.phoff - offset + vaddr + bias
    first = elf.loads()[0]
    return first[3] - first[2] + elf.phoff + bias


def _exec_stack(elf: _Elf) -> bool:
    for ptype, pflags, *_ in elf.phdrs:
        if ptype == C.PT_GNU_STACK:
            return bool(pflags & C.PF_X)
    return False  # x86-64 without PT_GNU_STACK: not executable


def check_args(argv: list[bytes], envp: list[bytes], execfn: bytes, stack_size: int) -> int:
    """E2BIG as Linux's execve: each string (with its NUL) at most
    MAX_ARG_STRLEN, all strings and pointers within a quarter of the stack
    rlimit (at most 3/4 of 8 MiB, at least ARG_MAX).  Returns their size."""
    limit = max(min(C.STK_LIM // 4 * 3, stack_size // 4), C.ARG_MAX)
    if len(argv) > C.MAX_ARG_STRINGS or len(envp) > C.MAX_ARG_STRINGS:
        raise SyscallError(C.E2BIG)
    ptr_size = (max(len(argv), 1) + len(envp)) * 8
    if limit <= ptr_size:
        raise SyscallError(C.E2BIG)
    total = 0
    for s in (execfn, *envp, *argv):
        if len(s) + 1 > C.MAX_ARG_STRLEN:
            raise SyscallError(C.E2BIG)
        total += len(s) + 1
    if total > limit - ptr_size:
        raise SyscallError(C.E2BIG)
    return total + ptr_size


def load_elf(mm, file, argv: list[bytes], envp: list[bytes], execfn: bytes, *, open_interp,
             random16: bytes, hwcap: int, hwcap2: int = 0, uid: int = 0, euid: int = 0,
             gid: int = 0, egid: int = 0, secure: bool = False, map_vdso=None,
             stack_size: int = 8 << 20, minsigstksz: int = sigframe_size(),
             rseq_feature_size: int = 0, rseq_align: int = 0) -> LoadedImage:
    """Load the ELF ``file`` (a File with pread) into the empty ``mm`` and build
    its initial stack.  ``open_interp(path)`` returns the File of the PT_INTERP
    path (this function drops that reference when done).  ``execfn`` is the
    path execve was given (AT_EXECFN).  ``map_vdso(mm)``, when given, maps a
    vDSO once the program and interpreter are in and returns AT_SYSINFO_EHDR.
    AT_RSEQ_* entries are added only when nonzero (Linux 6.3+ always has
    them; glibc falls back without)."""
    if len(random16) != 16:
        raise ValueError("random16 must be 16 bytes")
    argv = list(argv) or [b""]  # Linux gives a program run with no argv an empty argv[0]
    elf = _parse(file, C.ENOEXEC)
    interp_path = _interp_path(elf)
    args_size = check_args(argv, envp, execfn, stack_size)
    interp = None
    interp_file = open_interp(interp_path) if interp_path is not None else None
    try:
        if interp_file is not None:
            interp = _parse(interp_file, C.ELIBBAD)

        # The stack first, as Linux, so that nothing the mm places lands in it:
        # the whole rlimit (the Sentry's own accesses do not grow it), or more
        # if the arguments need it (ARG_MAX is allowed with any rlimit).
        exec_stack = _exec_stack(elf)
        stack_top = page_down(mm.user_limit - STACK_GAP)
        size = max(min(page_up(stack_size), MAX_STACK_VMA), page_up(args_size + 2 * PAGE))
        prot = C.PROT_READ | C.PROT_WRITE | (C.PROT_EXEC if exec_stack else 0)
        mm.mmap(stack_top - size, size, prot,
                C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED | C.MAP_GROWSDOWN, name="[stack]")

        # The program.
        if elf.type == C.ET_EXEC:
            bias = _map(mm, elf, 0)
        elif interp is not None:
            align = _alignment(elf)
            lo = page_down(min(ph[3] for ph in elf.loads()))
            bias = page_down((C.ELF_ET_DYN_BASE & ~(align - 1)) - lo)
            bias = _map(mm, elf, bias)
        else:  # a static PIE or ld.so run as the program: in the mmap area, as Linux
            bias = _map(mm, elf, None)
        brk = page_up(max(ph[3] + ph[6] for ph in elf.loads()) + bias)
        mm.set_brk_start(brk)

        # The interpreter.
        base = 0
        entry = elf.entry + bias
        if interp is not None:
            base = _map(mm, interp, 0 if interp.type == C.ET_EXEC else None)
            entry = interp.entry + base
    finally:
        if interp_file is not None and hasattr(interp_file, "decref"):
            interp_file.decref()
    sysinfo_ehdr = map_vdso(mm) if map_vdso is not None else 0

    phdr = _phdr_addr(elf, bias)
    aux = [(C.AT_MINSIGSTKSZ, minsigstksz), (C.AT_HWCAP, hwcap), (C.AT_PAGESZ, PAGE),
           (C.AT_CLKTCK, C.CLK_TCK), (C.AT_PHDR, phdr), (C.AT_PHENT, S.ELF64_PHDR.size),
           (C.AT_PHNUM, elf.phnum), (C.AT_BASE, base), (C.AT_FLAGS, 0),
           (C.AT_ENTRY, elf.entry + bias), (C.AT_UID, uid), (C.AT_EUID, euid), (C.AT_GID, gid),
           (C.AT_EGID, egid), (C.AT_SECURE, int(bool(secure)))]
    if sysinfo_ehdr:
        aux.insert(0, (C.AT_SYSINFO_EHDR, sysinfo_ehdr))
    img = _build_stack(stack_top, argv, envp, execfn, random16, aux, hwcap2,
                       rseq_feature_size, rseq_align)
    blob, sp = img["blob"], img["sp"]
    mm.populate(page_down(sp), stack_top - page_down(sp), write=True)
    mm.write_force(sp, blob)
    return LoadedImage(entry=entry, sp=sp, phdr_addr=phdr, phnum=elf.phnum, base=base,
                       load_bias=bias, brk_start=brk, stack_top=stack_top,
                       execfn_addr=img["execfn"], auxv=img["auxv"],
                       arg_start=img["arg_start"], arg_end=img["env_start"],
                       env_start=img["env_start"], env_end=img["execfn"],
                       interp=interp_path, exec_stack=exec_stack)


def _push_strings(p: int, vector: list[bytes], strings: list[bytes]) -> tuple[int, list[int]]:
    """Place ``vector``'s strings below ``p``, last first (appended to
    ``strings`` in that order); the new ``p`` and each string's address."""
    ptrs = []
    for s in reversed(vector):
        p -= len(s) + 1
        ptrs.append(p)
        strings.append(s + b"\0")
    ptrs.reverse()
    return p, ptrs


def _build_stack(top: int, argv: list[bytes], envp: list[bytes], execfn: bytes, random16: bytes,
                 aux: list[tuple[int, int]], hwcap2: int, rseq_feature_size: int,
                 rseq_align: int) -> dict:
    """The bytes from the initial rsp up to ``top``, laid out as Linux's execve
    and create_elf_tables do, from the top down: a NULL word, the execfn
    string, the envp then argv strings (argv[0] lowest), 16-byte alignment,
    the platform string, the AT_RANDOM bytes, then (16-byte aligned at argc)
    argc, argv[], NULL, envp[], NULL, auxv."""
    p = top - 8
    p -= len(execfn) + 1
    execfn_addr = p
    strings = [execfn + b"\0"]
    p, env_ptrs = _push_strings(p, envp, strings)
    env_start = p
    p, arg_ptrs = _push_strings(p, argv, strings)
    arg_start = p
    strings_blob = b"".join(reversed(strings))  # from arg_start to top - 8

    p &= ~15
    p -= len(PLATFORM) + 1
    platform_addr = p
    p -= 16
    random_addr = p
    auxv = list(aux) + [(C.AT_RANDOM, random_addr)]
    if hwcap2:
        auxv.append((C.AT_HWCAP2, hwcap2))
    auxv += [(C.AT_EXECFN, execfn_addr), (C.AT_PLATFORM, platform_addr)]
    if rseq_feature_size:
        auxv += [(C.AT_RSEQ_FEATURE_SIZE, rseq_feature_size), (C.AT_RSEQ_ALIGN, rseq_align)]
    auxv.append((C.AT_NULL, 0))
    words = len(argv) + 1 + len(envp) + 1 + 1 + 2 * len(auxv)
    sp = (p - words * 8) & ~15

    table = [len(argv), *arg_ptrs, 0, *env_ptrs, 0]
    for k, v in auxv:
        table += [k, v]
    blob = bytearray(top - sp)
    def put(addr: int, data: bytes) -> None:
        blob[addr - sp:addr - sp + len(data)] = data
    put(sp, b"".join(w.to_bytes(8, "little") for w in table))
    put(random_addr, random16)
    put(platform_addr, PLATFORM + b"\0")
    put(arg_start, strings_blob)
    return {"blob": bytes(blob), "sp": sp, "execfn": execfn_addr, "auxv": auxv,
            "arg_start": arg_start, "env_start": env_start}
