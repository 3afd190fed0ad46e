"""The kvm platform's vDSO: guest code that reads the clocks without a VM exit,
and the Sentry's side of it, the vvar page and the clock lines it publishes.

On PVM every syscall is a VM exit of 30 us or more, and programs read the
clock all the time (Python's time.time, glibc's timers, loggers).  With the
vDSO, clock_gettime, gettimeofday, time and clock_getres run in the guest.

The image.  vdso64.so is built from vdso.c and vdso.lds by ``build()`` (run
``python3 -m pysc.platforms.kvm.vdso`` after changing them) and shipped
prebuilt, as stub.py's bytes are: compiling at run time would need gcc on
every host.  Its one PT_LOAD starts at file offset 0, so the file is the
memory image; it has no relocations and reaches the vvar page (one page
below the image) RIP-relative.  Each process maps one shared region holding
both: [vvar] read-only, [vdso] read+execute just above it (as Linux does),
and AT_SYSINFO_EHDR points at [vdso].  Neither can be made writable.

Time.  The guest reads the host's TSC: the machine sets every vCPU's TSC
offset to 0 (PVM applies none anyway; PLATFORM-NOTES §2.8 has the check).
The Timekeeper publishes, per clock, a line  ns = base + ((tsc - tsc_base)
* mult >> SHIFT)  fitted to the host clock it follows, and the Sentry's own
clock syscalls read the same line (``now_ns``), so a program sees one clock
whichever way it asks.  Rules that keep every clock monotonic:
  - the lines are republished when a thread returns to the guest a second
    or more after the last time (so also after a long sleep);
  - a line behind the host jumps forward to it; one ahead keeps its value and
    runs 500 ppm slower (NTP's limit) until it meets the host, then at the
    host's rate: a line of two segments (``meet``), so it never overshoots;
  - only CLOCK_REALTIME and CLOCK_TAI follow a host step backwards (more
    than STEP_NS, e.g. settimeofday);
  - the rate is measured on CLOCK_MONOTONIC (and CLOCK_MONOTONIC_RAW for
    itself) over the longest recent baseline; REALTIME, TAI and BOOTTIME
    run at MONOTONIC's rate, so a step never spoils a rate.
The coarse clocks are served exactly, from the same lines as their precise
twins; anything else (CPU-time clocks, alarms) goes to the syscall.
"""
from __future__ import annotations

import collections
import ctypes
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import time
from typing import Callable

from pysc.core.abi import consts as C

PAGE = 4096
SHIFT = 32
NCLOCKS = 12
# struct vvar in vdso.c: seq, shift, tsc_base, then per clock id
# (base_ns, mult, meet, mult_after).
VVAR = struct.Struct("<IIQ" + "qQQQ" * NCLOCKS)
VVAR_CLOCKS = struct.Struct("<" + "qQQQ" * NCLOCKS)
VVAR_CLOCKS_OFFSET = 16
UPDATE_NS = 1_000_000_000   # republish at most this often
STEP_NS = 1_000_000         # a host clock this far off the line has been stepped
SLEW = 2000                 # a line ahead runs 1/SLEW (500 ppm) slower until it meets the host
HISTORY = 16                # samples kept for the rate

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE_PATH = os.path.join(HERE, "vdso64.so")  # not vdso.so: Python would import that for this module
SOURCE_PATH = os.path.join(HERE, "vdso.c")
SCRIPT_PATH = os.path.join(HERE, "vdso.lds")
CFLAGS = ["-O2", "-fPIC", "-ffreestanding", "-fno-builtin", "-fno-stack-protector", "-fcf-protection=none",
          "-fvisibility=hidden", "-nostdlib", "-shared", "-Wl,-soname=linux-vdso.so.1",
          "-Wl,--hash-style=both", "-Wl,--build-id=none", "-Wl,--no-undefined", "-Wl,-z,max-page-size=4096",
          "-Wl,-z,noexecstack", "-Wl,-s"]
EXPORTS = ("clock_gettime", "gettimeofday", "time", "clock_getres")

# clock id -> the host clock whose line serves it
LINES = {C.CLOCK_REALTIME: time.CLOCK_REALTIME, C.CLOCK_MONOTONIC: time.CLOCK_MONOTONIC,
         C.CLOCK_MONOTONIC_RAW: time.CLOCK_MONOTONIC_RAW, C.CLOCK_REALTIME_COARSE: time.CLOCK_REALTIME,
         C.CLOCK_MONOTONIC_COARSE: time.CLOCK_MONOTONIC, C.CLOCK_BOOTTIME: time.CLOCK_BOOTTIME,
         C.CLOCK_TAI: time.CLOCK_TAI}
STEPPING = frozenset({time.CLOCK_REALTIME, time.CLOCK_TAI})
# host clock -> the host clock whose rate it runs at
RATE_OF = {time.CLOCK_REALTIME: time.CLOCK_MONOTONIC, time.CLOCK_TAI: time.CLOCK_MONOTONIC,
           time.CLOCK_BOOTTIME: time.CLOCK_MONOTONIC, time.CLOCK_MONOTONIC: time.CLOCK_MONOTONIC,
           time.CLOCK_MONOTONIC_RAW: time.CLOCK_MONOTONIC_RAW}


class ImageError(Exception):
    """vdso64.so is not an image the kvm platform can map as it is."""


def check_image(data: bytes) -> int:
    """The size of the memory image in ``data`` (an ELF shared object), after
    checking that it can be mapped verbatim: one PT_LOAD at offset and
    address 0, a PT_DYNAMIC, and no relocations."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1 or len(data) < 64:
        raise ImageError("not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == C.PT_LOAD:
            loads.append((p_offset, p_vaddr, p_filesz, p_memsz))
        elif p_type == C.PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if len(loads) != 1 or loads[0][:2] != (0, 0) or loads[0][2] != loads[0][3]:
        raise ImageError("wants exactly one PT_LOAD, at offset and address 0, with no bss")
    if dynamic is None:
        raise ImageError("no PT_DYNAMIC")
    off, size = dynamic
    for tag, _ in struct.iter_unpack("<qQ", data[off:off + size]):
        if tag in (C.DT_RELA, C.DT_REL, C.DT_TEXTREL, C.DT_JMPREL):
            raise ImageError("has relocations")
    return loads[0][2]


def load_image(path: str = IMAGE_PATH) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    return data[:check_image(data)]


def compiler_of(data: bytes) -> str | None:
    """The compiler an image says built it (its .comment section)."""
    start = data.find(b"GCC: ")
    if start < 0:
        return None
    return data[start:data.index(b"\0", start)].decode()


def build(out: str = IMAGE_PATH, cc: str = "gcc") -> None:
    """Compile vdso.c with vdso.lds into ``out``, checked."""
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "vdso.so")
        subprocess.run([cc, *CFLAGS, "-Wl,-T," + SCRIPT_PATH, "-o", target, SOURCE_PATH], check=True)
        with open(target, "rb") as f:
            data = f.read()
    check_image(data)
    with open(out, "wb") as f:
        f.write(data)


def host_tsc_reader() -> Callable[[], int]:
    """The Sentry's own rdtsc (lfence first, as the vDSO does), as a ctypes function."""
    code = bytes.fromhex("0faee8" "0f31" "48c1e220" "4809d0" "c3")  # lfence; rdtsc; rax |= rdx << 32; ret
    buf = mmap.mmap(-1, PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mprotect(ctypes.c_void_p(addr), PAGE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise OSError(ctypes.get_errno(), "mprotect of the rdtsc page")
    fn = ctypes.PYFUNCTYPE(ctypes.c_uint64)(addr)
    fn.page = buf  # lives as long as the function
    return fn


def unavailable_reason(machine) -> str | None:
    """Why the vDSO cannot be offered on ``machine``, or None."""
    if not machine.host_tsc:
        return "KVM cannot set the vCPUs' TSC offset (no KVM_CAP_VCPU_ATTRIBUTES)"
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            source = f.read().strip()
    except OSError:
        source = "unknown"
    if source != "tsc":
        return f"the host's clocksource is {source}, not tsc"
    if not machine.tsc_khz:
        return "KVM reports no TSC rate"
    return None


def line_value(line: tuple[int, int, int, int], delta: int) -> int:
    """A clock line ``delta`` TSC cycles after its base, as vdso.c computes it."""
    base, mult, meet, mult_after = line
    if delta < meet:
        return base + ((delta * mult) >> SHIFT)
    return base + ((meet * mult) >> SHIFT) + (((delta - meet) * mult_after) >> SHIFT)


class Timekeeper:
    """Publishes the clock lines (see the module docstring) into ``page``, the
    start of the vvar page, and answers the Sentry's clock reads from them.
    ``tsc`` and ``clock_ns`` are the host's TSC and clocks (tests pass fakes)."""

    def __init__(self, page, tsc_khz: int, tsc: Callable[[], int] | None = None,
                 clock_ns: Callable[[int], int] = time.clock_gettime_ns):
        self.page = page
        self.tsc = tsc if tsc is not None else host_tsc_reader()
        self.clock_ns = clock_ns
        self.nominal = (1_000_000 << SHIFT) // tsc_khz  # ns per cycle << SHIFT, from KVM
        self.seq = 0
        self.tsc_base = 0
        self.lines: dict[int, tuple[int, int, int, int]] = {}  # host clock -> (base, mult, meet, mult_after)
        self.history: collections.deque = collections.deque(maxlen=HISTORY)
        self.next_update = 0  # CLOCK_MONOTONIC ns

    def tick(self) -> None:
        """Republish if the last update is a second old (cheap otherwise)."""
        if time.monotonic_ns() >= self.next_update:
            self.update()

    def _sample(self) -> dict[int, tuple[int, int]]:
        """Host clock -> (tsc, ns), each read between two TSC reads."""
        tsc, clock_ns = self.tsc, self.clock_ns
        out = {}
        for clock in RATE_OF:
            a = tsc()
            ns = clock_ns(clock)
            b = tsc()
            out[clock] = ((a + b) >> 1, ns)
        return out

    def _rate(self, sample: dict, clock: int) -> int:
        """ns per cycle << SHIFT of ``clock``, over the longest baseline kept."""
        t1, n1 = sample[clock]
        if self.history:
            t0, n0 = self.history[0][clock]
            if t1 - t0 > 0 and (n1 - n0) * 4 >= UPDATE_NS:
                return ((n1 - n0) << SHIFT) // (t1 - t0)
        old = self.lines.get(clock)
        return old[1] if old is not None else self.nominal

    def update(self) -> None:
        sample = self._sample()
        rates = {clock: self._rate(sample, clock) for clock in set(RATE_OF.values())}
        self.history.append(sample)
        now = self.tsc()
        lines = {}
        for clock, (t, ns) in sample.items():
            mult = rates[RATE_OF[clock]]
            truth = ns + (((now - t) * mult) >> SHIFT)
            old = self._value(clock, now)
            ahead = None if old is None else old - truth
            if ahead is None or ahead < 0 or (ahead > STEP_NS and clock in STEPPING):
                lines[clock] = (truth, mult, 0, mult)
            else:
                slow = mult - mult // SLEW
                lines[clock] = (old, slow, (ahead << SHIFT) // (mult - slow), mult)
        self.tsc_base, self.lines = now, lines
        self._publish()
        self.next_update = time.monotonic_ns() + UPDATE_NS

    def _value(self, clock: int, tsc: int) -> int | None:
        line = self.lines.get(clock)
        return None if line is None else line_value(line, max(tsc - self.tsc_base, 0))

    def now_ns(self, clk: int) -> int | None:
        """Clock id ``clk`` now, as the vDSO computes it; None if it has no line."""
        clock = LINES.get(clk)
        if clock is None or not self.lines:
            return None
        return self._value(clock, self.tsc())

    def _publish(self) -> None:
        """Seqlock write: readers that see an odd or changed seq use the syscall."""
        page = self.page
        self.seq += 1
        struct.pack_into("<I", page, 0, self.seq)
        words = [0] * (4 * NCLOCKS)
        for clk, clock in LINES.items():
            words[4 * clk:4 * clk + 4] = self.lines[clock]
        struct.pack_into("<IQ", page, 4, SHIFT, self.tsc_base)
        VVAR_CLOCKS.pack_into(page, VVAR_CLOCKS_OFFSET, *words)
        self.seq += 1
        struct.pack_into("<I", page, 0, self.seq)


class Vdso:
    """The image and its vvar page in one guest-physical region, mapped into
    every process the kvm platform loads."""

    def __init__(self, phys, tsc_khz: int, image: bytes | None = None):
        image = load_image() if image is None else image
        self.size = (len(image) + PAGE - 1) & ~(PAGE - 1)
        fd = os.memfd_create("pysc-vdso", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, PAGE + self.size)
            os.pwrite(fd, image, PAGE)
            self.region = phys.add_region(fd, 0, PAGE + self.size, False)
        finally:
            os.close(fd)
        self.timekeeper = Timekeeper(self.region.view[:VVAR.size], tsc_khz)
        self.timekeeper.update()

    def map_into(self, mm) -> int:
        """Map [vvar] and [vdso] into ``mm``; returns AT_SYSINFO_EHDR."""
        base = mm.get_unmapped_area(0, PAGE + self.size, 0)
        mm.map_special(base, self.region, 0, PAGE, C.PROT_READ, "[vvar]")
        mm.map_special(base + PAGE, self.region, PAGE, self.size, C.PROT_READ | C.PROT_EXEC, "[vdso]")
        return base + PAGE


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else IMAGE_PATH
    build(target)
    print(f"built {target}")
