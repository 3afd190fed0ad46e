"""The Sentry's ELF loader against a fake memory manager: segment placement
checked with readelf, the initial stack walked as a program would, errors
as Linux gives them, and the whole stack compared byte for byte with what
the host kernel builds for the same exec (with randomisation off)."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess

import pytest

from pysc.core import loader
from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError

PAGE = 4096
USER_LIMIT = 0x7F80_0000_0000
LD_SO = b"/lib64/ld-linux-x86-64.so.2"
BUSYBOX = "/bin/busybox"
RANDOM16 = bytes(range(0xA0, 0xB0))


# --- a memory manager with the API of core/mm/mm.py, backed by a dict of pages ---

class FakeMM:
    """Pages with (prot, flags, name, file, file offset); contents made on first touch."""

    def __init__(self, user_limit: int = USER_LIMIT):
        self.user_limit = user_limit
        self.mmap_base = user_limit - (1 << 30)  # top-down area well below the stack
        self.pages: dict[int, tuple] = {}
        self.data: dict[int, bytearray] = {}
        self.brk_start = None
        self.populated: list[tuple[int, int, bool]] = []
        self.calls: list[tuple] = []

    def _free(self, addr: int, length: int) -> bool:
        return all(p not in self.pages for p in range(addr, addr + length, PAGE))

    def mmap(self, addr, length, prot, flags, file=None, offset=0, name=None):
        self.calls.append(("mmap", addr, length, prot, flags, file, offset, name))
        length = (length + PAGE - 1) & ~(PAGE - 1)
        if length == 0 or addr % PAGE or offset % PAGE:
            raise SyscallError(C.EINVAL)
        if not flags & C.MAP_FIXED:
            if not (addr and self._free(addr, length)):
                addr = self.mmap_base - length
                while not self._free(addr, length):
                    addr -= PAGE
        if addr + length > self.user_limit:
            raise SyscallError(C.ENOMEM)
        for i, p in enumerate(range(addr, addr + length, PAGE)):
            self.data.pop(p, None)
            self.pages[p] = (prot, flags, name, None if flags & C.MAP_ANONYMOUS else file,
                             offset + i * PAGE)
        return addr

    def munmap(self, addr, length):
        self.calls.append(("munmap", addr, length))
        for p in range(addr, addr + length, PAGE):
            self.pages.pop(p, None)
            self.data.pop(p, None)

    def mprotect(self, addr, length, prot):
        for p in range(addr, addr + length, PAGE):
            self.pages[p] = (prot,) + self.pages[p][1:]

    def _page(self, p: int) -> bytearray:
        if p not in self.pages:
            raise SyscallError(C.EFAULT)
        if p not in self.data:
            file, off = self.pages[p][3], self.pages[p][4]
            self.data[p] = bytearray(file.pread(PAGE, off).ljust(PAGE, b"\0") if file else PAGE)
        return self.data[p]

    def _access(self, addr: int, n: int, need: int) -> None:
        for p in range(addr & ~(PAGE - 1), addr + n, PAGE):
            if p not in self.pages or (need and not self.pages[p][0] & need):
                raise SyscallError(C.EFAULT)

    def write_force(self, addr, data):
        self._access(addr, len(data), 0)
        for i, b in enumerate(data):  # fine for the few KiB the loader writes
            self._page((addr + i) & ~(PAGE - 1))[(addr + i) % PAGE] = b

    def write(self, addr, data):
        self._access(addr, len(data), C.PROT_WRITE)
        self.write_force(addr, data)

    def read_force(self, addr, n):
        out = bytearray()
        while n:
            p, o = addr & ~(PAGE - 1), addr % PAGE
            k = min(n, PAGE - o)
            out += self._page(p)[o:o + k]
            addr, n = addr + k, n - k
        return bytes(out)

    def read(self, addr, n):
        self._access(addr, n, C.PROT_READ)
        return self.read_force(addr, n)

    def read_cstr(self, addr):
        out = b""
        while True:
            c = self.read(addr + len(out), 1)
            if c == b"\0":
                return out
            out += c

    def populate(self, addr, length, write=False):
        self._access(addr, length, 0)
        self.populated.append((addr, length, write))

    def set_brk_start(self, addr):
        self.brk_start = addr

    def prot_at(self, addr):
        return self.pages[addr & ~(PAGE - 1)][0]

    def name_at(self, addr):
        return self.pages[addr & ~(PAGE - 1)][2]


class HostFile:
    """A File stand-in over a host file: pread and reference counting."""

    def __init__(self, path: str | bytes):
        self.path = path
        with open(path, "rb") as f:
            self.content = f.read()
        self.refs = 1

    def pread(self, count, offset):
        return self.content[offset:offset + count]

    def decref(self):
        self.refs -= 1


class BytesFile(HostFile):
    def __init__(self, content: bytes):
        self.path, self.content, self.refs = "<bytes>", content, 1


# --- programs to load -------------------------------------------------------------

HELLO_C = r"""
#include <stdio.h>
int counter = 5; char big[100000];
int main(int argc, char **argv) { printf("%s %d\n", argv[0], counter + big[7]); return 0; }
"""

STACKDUMP_C = r"""
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv, char **envp) {
    unsigned long sp = (unsigned long)(argv - 1), top = 0, a, b;
    char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, f))
        if (strstr(line, "[stack]") && sscanf(line, "%lx-%lx", &a, &b) == 2) top = b;
    printf("%lx %lx\n", sp, top);
    for (unsigned char *p = (unsigned char *)sp; p < (unsigned char *)top; p++) printf("%02x", *p);
    printf("\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def progs(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("elf")
    (d / "hello.c").write_text(HELLO_C)
    (d / "stackdump.c").write_text(STACKDUMP_C)
    out = {}
    for name, src, flags in [("static", "hello.c", ["-static"]),
                             ("static_pie", "hello.c", ["-static-pie", "-fPIE"]),
                             ("dyn_pie", "hello.c", ["-pie", "-fPIE"]),
                             ("dyn_nopie", "hello.c", ["-no-pie"]),
                             ("execstack", "hello.c", ["-static", "-z", "execstack"]),
                             ("dump_static", "stackdump.c", ["-static"]),
                             ("dump_pie", "stackdump.c", ["-pie", "-fPIE"])]:
        exe = str(d / name)
        subprocess.run(["gcc", "-O1", "-o", exe, str(d / src), *flags], check=True)
        out[name] = exe
    subprocess.run(["gcc", "-c", "-o", str(d / "hello.o"), str(d / "hello.c")], check=True)
    out["object"] = str(d / "hello.o")
    return out


def readelf_loads(path: str) -> tuple[int, list[tuple[int, int, int, int, int, str]]]:
    """(entry, [(offset, vaddr, filesz, memsz, align, flags)]) as readelf -lW reports them."""
    text = subprocess.run(["readelf", "-lW", path], check=True, capture_output=True, text=True).stdout
    entry = int(re.search(r"Entry point (0x[0-9a-f]+)", text).group(1), 16)
    loads = []
    row = r"^\s+LOAD\s+(0x\S+)\s+(0x\S+)\s+0x\S+\s+(0x\S+)\s+(0x\S+)\s+([RWE ]+?)\s+(0x\S+)$"
    for m in re.finditer(row, text, re.M):
        off, va, fs, ms, flg, al = m.groups()
        loads.append((int(off, 16), int(va, 16), int(fs, 16), int(ms, 16), int(al, 16),
                      flg.replace(" ", "")))
    return entry, loads


def load(path, argv=(b"prog",), envp=(b"A=1",), execfn=None, mm=None, opened=None, **kw):
    mm = mm or FakeMM()
    opened = opened if opened is not None else []

    def open_interp(p):
        f = HostFile(p)
        opened.append(f)
        return f
    kw.setdefault("hwcap", 0x178BFBFF)
    img = loader.load_elf(mm, HostFile(path), list(argv), list(envp),
                          execfn if execfn is not None else os.fsencode(path),
                          open_interp=open_interp, random16=RANDOM16, **kw)
    return mm, img


def walk_stack(mm: FakeMM, sp: int):
    """argc, argv, envp, auxv read back the way _start and ld.so read them."""
    q = lambda a: struct.unpack("<Q", mm.read(a, 8))[0]  # noqa: E731
    argc = q(sp)
    argv = [mm.read_cstr(q(sp + 8 + 8 * i)) for i in range(argc)]
    assert q(sp + 8 + 8 * argc) == 0
    p = sp + 16 + 8 * argc
    envp = []
    while q(p):
        envp.append(mm.read_cstr(q(p)))
        p += 8
    p += 8
    auxv = []
    while True:
        k, v = q(p), q(p + 8)
        auxv.append((k, v))
        p += 16
        if k == C.AT_NULL:
            return argc, argv, envp, auxv


def prot_of(flags: str) -> int:
    return ((C.PROT_READ if "R" in flags else 0) | (C.PROT_WRITE if "W" in flags else 0)
            | (C.PROT_EXEC if "E" in flags else 0))


def check_segments(mm: FakeMM, path: str, bias: int) -> None:
    """Every PT_LOAD where readelf says, with its prot, file bytes and zeroed .bss."""
    content = open(path, "rb").read()
    _, loads = readelf_loads(path)
    for off, va, fs, ms, _al, flg in loads:
        start = va + bias
        for p in range(start & ~(PAGE - 1), start + ms, PAGE):
            assert mm.prot_at(p) == prot_of(flg), hex(p)
        assert mm.read_force(start, fs) == content[off:off + fs]
        if ms > fs:
            tail = ((start + fs + PAGE - 1) & ~(PAGE - 1)) - (start + fs)
            n = min(ms - fs, tail + 2 * PAGE)
            assert mm.read_force(start + fs, n) == bytes(n)


# --- placement ------------------------------------------------------------------------

def test_busybox_static_segments_auxv_and_stack():
    entry, loads = readelf_loads(BUSYBOX)
    argv = [b"busybox", b"echo", b"hi there"]
    envp = [b"PATH=/bin", b"HOME=/root", b""]
    mm, img = load(BUSYBOX, argv, envp, execfn=b"/bin/busybox", map_vdso=lambda mm: 0x7FFF_F7FC_8000,
                   hwcap2=2, uid=1, euid=2, gid=3, egid=4, minsigstksz=1776)
    assert img.load_bias == 0 and img.base == 0 and img.interp is None
    assert img.entry == entry
    check_segments(mm, BUSYBOX, 0)
    top = max(va + ms for _o, va, _f, ms, _a, _fl in loads)
    assert img.brk_start == mm.brk_start == (top + PAGE - 1) & ~(PAGE - 1)

    assert img.sp % 16 == 0
    assert img.stack_top == USER_LIMIT - loader.STACK_GAP
    assert mm.name_at(img.stack_top - 1) == "[stack]"
    assert mm.name_at(img.stack_top - (8 << 20)) == "[stack]"
    assert img.stack_top not in mm.pages
    assert mm.prot_at(img.stack_top - 1) == C.PROT_READ | C.PROT_WRITE
    stack_call = [c for c in mm.calls if c[0] == "mmap" and c[7] == "[stack]"][0]
    assert stack_call[4] & C.MAP_GROWSDOWN
    assert any(a <= img.sp and a + n >= img.stack_top and w for a, n, w in mm.populated)

    argc, got_argv, got_envp, auxv = walk_stack(mm, img.sp)
    assert (argc, got_argv, got_envp) == (3, argv, envp)
    assert auxv == img.auxv
    keys = [k for k, _ in auxv]
    assert keys == [C.AT_SYSINFO_EHDR, C.AT_MINSIGSTKSZ, C.AT_HWCAP, C.AT_PAGESZ, C.AT_CLKTCK,
                    C.AT_PHDR, C.AT_PHENT, C.AT_PHNUM, C.AT_BASE, C.AT_FLAGS, C.AT_ENTRY,
                    C.AT_UID, C.AT_EUID, C.AT_GID, C.AT_EGID, C.AT_SECURE, C.AT_RANDOM,
                    C.AT_HWCAP2, C.AT_EXECFN, C.AT_PLATFORM, C.AT_NULL]
    a = dict(auxv)
    ehdr = open(BUSYBOX, "rb").read(64)
    phoff, phnum = struct.unpack_from("<Q", ehdr, 0x20)[0], struct.unpack_from("<H", ehdr, 0x38)[0]
    first = loads[0]
    assert a[C.AT_PHDR] == first[1] - first[0] + phoff  # no PT_PHDR in busybox: found in a PT_LOAD
    assert mm.read(a[C.AT_PHDR], 56 * phnum) == open(BUSYBOX, "rb").read()[phoff:phoff + 56 * phnum]
    assert (a[C.AT_PHENT], a[C.AT_PHNUM], a[C.AT_PAGESZ], a[C.AT_CLKTCK]) == (56, phnum, 4096, 100)
    assert (a[C.AT_ENTRY], a[C.AT_BASE], a[C.AT_FLAGS], a[C.AT_SECURE]) == (entry, 0, 0, 0)
    assert (a[C.AT_UID], a[C.AT_EUID], a[C.AT_GID], a[C.AT_EGID]) == (1, 2, 3, 4)
    assert (a[C.AT_HWCAP], a[C.AT_HWCAP2], a[C.AT_MINSIGSTKSZ]) == (0x178BFBFF, 2, 1776)
    assert a[C.AT_SYSINFO_EHDR] == 0x7FFF_F7FC_8000
    assert mm.read(a[C.AT_RANDOM], 16) == RANDOM16
    assert mm.read_cstr(a[C.AT_PLATFORM]) == b"x86_64"
    assert a[C.AT_EXECFN] == img.execfn_addr
    assert mm.read(img.execfn_addr, 13) == b"/bin/busybox\0"
    assert img.execfn_addr + 13 + 8 == img.stack_top  # at the very top, under a NULL word
    assert mm.read(img.arg_start, img.arg_end - img.arg_start) == b"busybox\0echo\0hi there\0"
    assert mm.read(img.env_start, img.env_end - img.env_start) == b"PATH=/bin\0HOME=/root\0\0"


def test_no_sysinfo_no_hwcap2_and_empty_argv():
    mm, img = load(BUSYBOX, argv=[], envp=[])
    argc, argv, envp, auxv = walk_stack(mm, img.sp)
    assert (argc, argv, envp) == (1, [b""], [])  # Linux supplies an empty argv[0]
    keys = [k for k, _ in auxv]
    assert C.AT_SYSINFO_EHDR not in keys and C.AT_HWCAP2 not in keys
    assert keys[0] == C.AT_MINSIGSTKSZ and dict(auxv)[C.AT_MINSIGSTKSZ] >= 1024


def test_rseq_auxv_entries_when_asked():
    mm, img = load(BUSYBOX, rseq_feature_size=28, rseq_align=32)
    keys = [k for k, _ in img.auxv]
    assert keys[-5:] == [C.AT_EXECFN, C.AT_PLATFORM, C.AT_RSEQ_FEATURE_SIZE, C.AT_RSEQ_ALIGN, C.AT_NULL]


@pytest.mark.parametrize("argv,envp", [([b"a"], []), ([b"ab", b"c"], [b"x"]),
                                       ([b"x" * 17] * 3, [b"y" * 5] * 4)])
def test_sp_aligned_for_any_string_lengths(argv, envp):
    for extra in range(16):
        mm, img = load(BUSYBOX, argv + [b"z" * extra], envp)
        assert img.sp % 16 == 0
        assert walk_stack(mm, img.sp)[1] == argv + [b"z" * extra]


def test_static_nopie_c(progs):
    mm, img = load(progs["static"])
    entry, loads = readelf_loads(progs["static"])
    assert img.entry == entry and img.load_bias == 0
    check_segments(mm, progs["static"], 0)
    assert mm.read(dict(img.auxv)[C.AT_PHDR], 4) == open(progs["static"], "rb").read()[64:68]


def test_static_pie_goes_to_the_mmap_area(progs):
    mm, img = load(progs["static_pie"])
    entry, loads = readelf_loads(progs["static_pie"])
    assert img.interp is None and img.base == 0
    assert img.load_bias % PAGE == 0 and 0x7F00_0000_0000 < img.load_bias < img.stack_top - (8 << 20)
    assert img.entry == entry + img.load_bias == dict(img.auxv)[C.AT_ENTRY]
    check_segments(mm, progs["static_pie"], img.load_bias)
    top = max(va + ms for _o, va, _f, ms, _a, _fl in loads) + img.load_bias
    assert img.brk_start == (top + PAGE - 1) & ~(PAGE - 1)
    # No PROT_NONE reservation is left over around the image.
    assert all(mm.pages[p][0] != C.PROT_NONE for p in mm.pages)


@pytest.mark.parametrize("kind", ["dyn_pie", "dyn_nopie"])
def test_dynamic_loads_the_interpreter(progs, kind):
    opened = []
    mm, img = load(progs[kind], opened=opened)
    assert [f.path for f in opened] == [LD_SO] and opened[0].refs == 0
    assert img.interp == LD_SO
    entry, loads = readelf_loads(progs[kind])
    expect_bias = C.ELF_ET_DYN_BASE if kind == "dyn_pie" else 0
    assert img.load_bias == expect_bias
    check_segments(mm, progs[kind], expect_bias)
    ld_entry, ld_loads = readelf_loads(LD_SO.decode())
    assert img.base and img.base % PAGE == 0 and img.base > img.brk_start
    check_segments(mm, LD_SO.decode(), img.base)
    assert img.entry == ld_entry + img.base
    a = dict(img.auxv)
    assert (a[C.AT_BASE], a[C.AT_ENTRY]) == (img.base, entry + expect_bias)
    text = subprocess.run(["readelf", "-lW", progs[kind]], capture_output=True, text=True).stdout
    phdr_va = int(re.search(r"^\s+PHDR\s+\S+\s+(0x\S+)", text, re.M).group(1), 16)
    assert a[C.AT_PHDR] == phdr_va + expect_bias  # from PT_PHDR
    assert img.brk_start < img.base


def test_ld_so_run_as_the_program():
    mm, img = load(LD_SO.decode(), argv=[b"ld.so", b"/bin/true"])
    ld_entry, _ = readelf_loads(LD_SO.decode())
    assert img.base == 0 and img.interp is None
    assert img.load_bias > C.ELF_ET_DYN_BASE  # in the mmap area, not at the PIE base
    assert img.entry == ld_entry + img.load_bias
    check_segments(mm, LD_SO.decode(), img.load_bias)


def test_exec_stack(progs):
    mm, img = load(progs["execstack"])
    assert img.exec_stack and mm.prot_at(img.sp) & C.PROT_EXEC
    mm, img = load(progs["static"])
    assert not img.exec_stack and not mm.prot_at(img.sp) & C.PROT_EXEC


def test_bss_tail_of_the_last_file_page_is_zeroed():
    # One RW segment whose file bytes go on past p_filesz: those must read as zeros.
    ph = struct.pack("<IIQQQQQQ", C.PT_LOAD, C.PF_R | C.PF_W, 0, 0x400000, 0x400000, 0x100, 0x3000,
                     0x1000)
    eh = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), C.ET_EXEC, C.EM_X86_64, 1,
                     0x400080, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    content = (eh + ph).ljust(0x100, b"\xcc") + b"\xee" * 0x2000
    mm = FakeMM()
    img = loader.load_elf(mm, BytesFile(content), [b"x"], [], b"x", open_interp=None,
                          random16=RANDOM16, hwcap=0)
    assert mm.read(0x400000, 0x100) == content[:0x100]
    assert mm.read(0x400100, 0x2F00) == bytes(0x2F00)
    assert img.brk_start == 0x403000
    assert mm.pages[0x401000][3] is None  # .bss beyond the file page is anonymous


# --- errors ---------------------------------------------------------------------------

def patched(path: str, at: int, data: bytes) -> BytesFile:
    content = bytearray(open(path, "rb").read())
    content[at:at + len(data)] = data
    return BytesFile(bytes(content))


def load_file(f, **kw):
    mm = FakeMM()
    with pytest.raises(SyscallError) as e:
        loader.load_elf(mm, f, [b"x"], [], b"x", open_interp=kw.pop("open_interp", HostFile),
                        random16=RANDOM16, hwcap=0, **kw)
    return e.value.errno, mm


@pytest.mark.parametrize("name,make,err", [
    ("empty", lambda: BytesFile(b""), C.ENOEXEC),
    ("script", lambda: BytesFile(b"#!/bin/sh\necho\n"), C.ENOEXEC),
    ("truncated header", lambda: BytesFile(open(BUSYBOX, "rb").read(30)), C.ENOEXEC),
    ("truncated phdrs", lambda: BytesFile(open(BUSYBOX, "rb").read(100)), C.EIO),
    ("32-bit", lambda: patched(BUSYBOX, 4, b"\x01"), C.ENOEXEC),
    ("big endian", lambda: patched(BUSYBOX, 5, b"\x02"), C.ENOEXEC),
    ("wrong machine", lambda: patched(BUSYBOX, 18, struct.pack("<H", 183)), C.ENOEXEC),
    ("i386", lambda: patched(BUSYBOX, 18, struct.pack("<H", C.EM_386)), C.ENOEXEC),
    ("core file", lambda: patched(BUSYBOX, 16, struct.pack("<H", C.ET_CORE)), C.ENOEXEC),
    ("bad phentsize", lambda: patched(BUSYBOX, 0x36, struct.pack("<H", 32)), C.ENOEXEC),
    ("no phdrs", lambda: patched(BUSYBOX, 0x38, struct.pack("<H", 0)), C.ENOEXEC),
])
def test_not_an_executable(name, make, err):
    got, mm = load_file(make())
    assert got == err
    assert not mm.pages  # nothing mapped before the checks pass


def test_relocatable_object_is_enoexec(progs):
    assert load_file(HostFile(progs["object"]))[0] == C.ENOEXEC


def test_bad_interpreter(progs):
    def missing(path):
        raise SyscallError(C.ENOENT)
    got, mm = load_file(HostFile(progs["dyn_pie"]), open_interp=missing)
    assert got == C.ENOENT and not mm.pages
    got, mm = load_file(HostFile(progs["dyn_pie"]), open_interp=lambda p: BytesFile(b"#!/bin/sh\n"))
    assert got == C.ELIBBAD and not mm.pages
    aarch64_ld = patched(LD_SO.decode(), 18, b"\xb7\0")
    got, _ = load_file(HostFile(progs["dyn_pie"]), open_interp=lambda p: aarch64_ld)
    assert got == C.ELIBBAD


def test_interp_path_must_be_nul_terminated(progs):
    content = open(progs["dyn_pie"], "rb").read()
    text = subprocess.run(["readelf", "-lW", progs["dyn_pie"]], capture_output=True, text=True).stdout
    off, size = (int(x, 16) for x in re.search(r"INTERP\s+(0x\S+)\s+\S+\s+\S+\s+(0x\S+)", text).groups())
    bad = bytearray(content)
    bad[off + size - 1] = ord("x")
    assert load_file(BytesFile(bytes(bad)))[0] == C.ENOEXEC


def test_e2big():
    big = b"x" * (C.MAX_ARG_STRLEN - 1)  # with its NUL: exactly the limit
    load(BUSYBOX, argv=[b"a", big])
    for argv, envp in [([b"a", big + b"x"], []), ([b"a"], [big + b"x"]),
                       ([b"a"] + [big] * 20, [])]:  # 2.6 MB > 8 MiB / 4
        mm = FakeMM()
        with pytest.raises(SyscallError) as e:
            load(BUSYBOX, argv=argv, envp=envp, mm=mm)
        assert e.value.errno == C.E2BIG and not mm.pages
    # A small stack rlimit still allows ARG_MAX; a big one allows a quarter of it (max 6 MiB).
    with pytest.raises(SyscallError):
        load(BUSYBOX, argv=[b"a"] + [b"y" * 1000] * 140, stack_size=64 << 10)
    load(BUSYBOX, argv=[b"a"] + [b"y" * 1000] * 120, stack_size=64 << 10)
    load(BUSYBOX, argv=[b"a"] + [big] * 20, stack_size=32 << 20)
    loader.check_args([b"a"] + [big] * 40, [], b"x", stack_size=1 << 40)  # 5.2 MB < 6 MiB
    with pytest.raises(SyscallError):
        loader.check_args([b"a"] + [big] * 50, [], b"x", stack_size=1 << 40)


# --- the host kernel as the reference ----------------------------------------------------

def host_stack(path: str, argv: list[bytes], env: dict[bytes, bytes]):
    """Run ``path`` with address randomisation off; returns (sp, top, stack bytes)."""
    if not shutil.which("setarch"):
        pytest.skip("setarch is not installed")
    r = subprocess.run(["setarch", "x86_64", "-R", path, *argv[1:]], env=env, capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot run with randomisation off: {r.stderr!r}")
    head, dump = r.stdout.split(b"\n")[:2]
    sp, top = (int(x, 16) for x in head.split())
    return sp, top, bytes.fromhex(dump.decode())


def auxv_of(blob: bytes) -> dict[int, int]:
    argc = struct.unpack_from("<Q", blob, 0)[0]
    p = 8 * (argc + 2)
    while struct.unpack_from("<Q", blob, p)[0]:
        p += 8
    p += 8
    out = {}
    while True:
        k, v = struct.unpack_from("<QQ", blob, p)
        out[k] = v
        p += 16
        if k == C.AT_NULL:
            return out


@pytest.mark.parametrize("kind", ["dump_static", "dump_pie"])
def test_initial_stack_matches_the_host_kernel(progs, kind):
    path = progs[kind]
    argv = [os.fsencode(path), b"one", b"", b"three words here"]
    env = {b"HOME": b"/root", b"EMPTY": b"", b"Z": b"z" * 37}
    sp, top, blob = host_stack(path, argv, env)
    assert top - sp == len(blob)
    host = auxv_of(blob)
    random16 = blob[host[C.AT_RANDOM] - sp:host[C.AT_RANDOM] - sp + 16]
    mm, img = load(path, argv, [k + b"=" + v for k, v in env.items()], execfn=os.fsencode(path),
                   mm=FakeMM(user_limit=top + loader.STACK_GAP), hwcap=host[C.AT_HWCAP],
                   hwcap2=host.get(C.AT_HWCAP2, 0), map_vdso=lambda mm: host.get(C.AT_SYSINFO_EHDR, 0),
                   minsigstksz=host[C.AT_MINSIGSTKSZ], uid=host[C.AT_UID], euid=host[C.AT_EUID],
                   gid=host[C.AT_GID], egid=host[C.AT_EGID],
                   rseq_feature_size=host.get(C.AT_RSEQ_FEATURE_SIZE, 0),
                   rseq_align=host.get(C.AT_RSEQ_ALIGN, 0))
    loader_random = dict(img.auxv)[C.AT_RANDOM]
    mm.write_force(loader_random, random16)
    ours = mm.read(img.sp, img.stack_top - img.sp)
    assert img.stack_top == top and img.sp == sp
    if C.AT_BASE in host and host[C.AT_BASE]:  # where ld.so goes is the mm's choice
        assert img.base
        i = ours.index(struct.pack("<QQ", C.AT_BASE, img.base))
        ours = ours[:i] + struct.pack("<QQ", C.AT_BASE, host[C.AT_BASE]) + ours[i + 16:]
    assert ours == blob
    assert set(host) - set(dict(img.auxv)) == set()


# --- the real memory manager ---------------------------------------------------------------

def real_mm():
    try:
        from pysc.core.mm.mm import MemoryManager
        from pysc.core.mm.physical import PhysicalMemory
        return MemoryManager(PhysicalMemory())
    except Exception as e:  # noqa: BLE001 - not built yet, or no memfd here
        pytest.skip(f"no MemoryManager: {e!r}")


def host_fd_file(path):
    from pysc.core.file import HostFDFile
    return HostFDFile(os.open(path, os.O_RDONLY | os.O_CLOEXEC), C.O_RDONLY, name=os.fsencode(path))


@pytest.mark.parametrize("kind", ["static", "dyn_pie", "static_pie"])
def test_with_the_real_memory_manager(progs, kind):
    mm = real_mm()
    path = progs[kind]
    interps = []

    def open_interp(p):
        interps.append(p)
        return host_fd_file(os.fsdecode(p))
    f = host_fd_file(path)
    try:
        img = loader.load_elf(mm, f, [b"hello", b"x"], [b"A=1"], os.fsencode(path),
                              open_interp=open_interp, random16=RANDOM16, hwcap=1)
    finally:
        f.decref()
    assert interps == ([LD_SO] if kind == "dyn_pie" else [])
    argc, argv, envp, auxv = walk_stack(mm, img.sp)
    assert (argc, argv, envp, auxv) == (2, [b"hello", b"x"], [b"A=1"], img.auxv)
    assert mm.read(dict(auxv)[C.AT_RANDOM], 16) == RANDOM16
    content = open(path, "rb").read()
    for off, va, fs, ms, _al, flg in readelf_loads(path)[1]:
        if "R" in flg:
            assert mm.read(va + img.load_bias, fs) == content[off:off + fs]
            assert mm.read(va + img.load_bias + fs, ms - fs) == bytes(ms - fs)
    stack = [v for v in mm.vmas if v.name == "[stack]"]
    assert len(stack) == 1 and stack[0].end == img.stack_top


def test_stack_mapped_first_and_bounded():
    mm, img = load(BUSYBOX, stack_size=C.RLIM_INFINITY & ~0xFFF)  # ulimit -s unlimited
    maps = [c for c in mm.calls if c[0] == "mmap"]
    assert maps[0][7] == "[stack]" and maps[0][2] == loader.MAX_STACK_VMA
    assert img.stack_top - loader.MAX_STACK_VMA in mm.pages
    mm, img = load(BUSYBOX, argv=[b"a"] + [b"y" * 1000] * 120, stack_size=64 << 10)
    stack = [c for c in mm.calls if c[0] == "mmap" and c[7] == "[stack]"][0]
    assert stack[2] > 120_000 and img.sp > img.stack_top - stack[2]  # the args fit, rlimit or not
