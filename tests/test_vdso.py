"""The kvm platform's vDSO without KVM: the shipped image (mappable as it is,
built from its source), the Timekeeper's clock lines against a simulated
host (accurate, monotonic, following a stepped realtime clock), the vvar
page as the guest code reads it, and the special mappings in an address
space."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import time

import pytest

from pysc.core.abi import consts as C
from pysc.core.errors import SyscallError
from pysc.core.mm.mm import MemoryManager
from pysc.core.mm.physical import PhysicalMemory
from pysc.platforms.kvm import vdso as V

GHZ = 2.5
SEC = 1_000_000_000


# ------------------------------------------------------------------ the image
def test_image_maps_verbatim_and_exports_the_linux_names():
    data = open(V.IMAGE_PATH, "rb").read()
    size = V.check_image(data)
    assert 0 < size <= len(data) and V.load_image() == data[:size]
    if shutil.which("readelf") is None:
        pytest.skip("readelf is not installed (bash .ci/setup installs binutils with gcc)")
    out = subprocess.run(["readelf", "--dyn-syms", "-W", V.IMAGE_PATH], capture_output=True, text=True,
                         check=True).stdout
    names = set(re.findall(r"FUNC\s+\w+\s+DEFAULT\s+\d+ (\w+)@@LINUX_2\.6", out))
    assert names == set(V.EXPORTS) | {"__vdso_" + n for n in V.EXPORTS}


def test_image_is_built_from_its_source(tmp_path):
    """vdso64.so is what build() makes of vdso.c and vdso.lds, with the
    compiler recorded in it (other compilers emit other bytes)."""
    shipped = open(V.IMAGE_PATH, "rb").read()
    recorded = V.compiler_of(shipped)
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    if recorded is None or recorded.removeprefix("GCC: ") != gcc.removeprefix("gcc "):
        pytest.skip(f"vdso64.so was built by {recorded!r}, this host has {gcc!r}")
    V.build(str(tmp_path / "vdso64.so"))
    assert (tmp_path / "vdso64.so").read_bytes() == shipped, "rebuild vdso64.so: python3 -m pysc.platforms.kvm.vdso"


def test_check_image_refuses_what_cannot_be_mapped_verbatim():
    data = bytearray(open(V.IMAGE_PATH, "rb").read())
    with pytest.raises(V.ImageError):
        V.check_image(b"\x7fELF\x01" + bytes(80))
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    for i in range(phnum):
        p = phoff + i * 56
        if struct.unpack_from("<I", data, p)[0] == C.PT_DYNAMIC:
            off, = struct.unpack_from("<Q", data, p + 8)
            relocated = bytearray(data)
            struct.pack_into("<q", relocated, off, C.DT_RELA)
            with pytest.raises(V.ImageError, match="relocations"):
                V.check_image(bytes(relocated))
        if struct.unpack_from("<I", data, p)[0] == C.PT_LOAD:
            moved = bytearray(data)
            struct.pack_into("<Q", moved, p + 16, 0x1000)  # p_vaddr
            with pytest.raises(V.ImageError, match="PT_LOAD"):
                V.check_image(bytes(moved))


# ------------------------------------------------------------------ the clock lines
class Host:
    """A simulated host: a TSC at ``hz`` and clocks that run at ``rate``
    (CLOCK_MONOTONIC_RAW at ``raw_rate``) times the TSC's nominal speed."""

    def __init__(self, hz: float = GHZ * 1e9, rate: float = 1.0, raw_rate: float = 1.0):
        self.hz = hz
        self.tsc_now = 10**12
        self.rate, self.raw_rate = rate, raw_rate
        self.mono = 5 * SEC
        self.raw = 5 * SEC
        self.real_offset = 1_700_000_000 * SEC
        self.boot_offset = 3 * SEC

    def advance(self, ns: float) -> None:
        """Let ``ns`` nanoseconds of CLOCK_MONOTONIC pass."""
        cycles = ns / self.rate * self.hz / 1e9
        self.tsc_now += int(cycles)
        self.mono += ns
        self.raw += cycles * 1e9 / self.hz * self.raw_rate

    def tsc(self) -> int:
        self.advance(20)  # every read takes a little time
        return self.tsc_now

    def clock_ns(self, clock: int) -> int:
        self.advance(30)
        mono = int(self.mono)
        return {time.CLOCK_MONOTONIC: mono, time.CLOCK_MONOTONIC_RAW: int(self.raw),
                time.CLOCK_REALTIME: mono + self.real_offset, time.CLOCK_TAI: mono + self.real_offset + 37 * SEC,
                time.CLOCK_BOOTTIME: mono + self.boot_offset}[clock]


def keeper(host: Host, khz: int | None = None) -> tuple[V.Timekeeper, bytearray]:
    page = bytearray(V.PAGE)
    tk = V.Timekeeper(memoryview(page), khz or int(host.hz / 1000), tsc=host.tsc, clock_ns=host.clock_ns)
    return tk, page


def guest_read(page: bytes, clk: int, tsc: int) -> int | None:
    """What vdso.c's read_ns computes from the vvar page."""
    seq, shift, tsc_base, *clocks = V.VVAR.unpack_from(page)
    if seq & 1 or clk >= V.NCLOCKS:
        return None
    base, mult, meet, mult_after = clocks[4 * clk:4 * clk + 4]
    if not mult:
        return None
    delta = max(tsc - tsc_base, 0)
    if delta < meet:
        return base + ((delta * mult) >> shift)
    return base + ((meet * mult) >> shift) + (((delta - meet) * mult_after) >> shift)


def test_lines_match_the_host_and_the_page_matches_the_lines():
    host = Host()
    tk, page = keeper(host)
    assert V.VVAR.unpack_from(page)[0] == 0 and tk.now_ns(C.CLOCK_MONOTONIC) is None  # nothing yet
    tk.update()
    assert V.VVAR.unpack_from(page)[0] == 2
    for clk, clock in V.LINES.items():
        tsc = host.tsc()
        want = host.clock_ns(clock)
        got = guest_read(page, clk, tsc)
        assert got == tk._value(clock, tsc)
        assert abs(got - want) < 1000, f"clock {clk} is {got - want} ns off"
    assert tk.now_ns(C.CLOCK_REALTIME_COARSE) - tk.now_ns(C.CLOCK_REALTIME) < 1000
    for clk in (C.CLOCK_PROCESS_CPUTIME_ID, C.CLOCK_THREAD_CPUTIME_ID, C.CLOCK_REALTIME_ALARM, 10, 12, -1):
        assert tk.now_ns(clk) is None
        assert guest_read(page, clk, host.tsc()) is None if 0 <= clk < V.NCLOCKS else True
    struct.pack_into("<I", page, 0, 3)  # a writer in the middle of an update: the guest uses the syscall
    assert guest_read(page, C.CLOCK_MONOTONIC, host.tsc()) is None


@pytest.mark.parametrize("khz_error,rate,raw_rate", [(0, 1.0, 1.0), (1e-4, 1.0, 1.0), (0, 1.0002, 0.9999),
                                                      (-2e-4, 0.9995, 1.0)])
def test_lines_are_monotonic_and_converge(khz_error, rate, raw_rate):
    """KVM's TSC rate slightly wrong, the host's clocks slewed: every clock
    read between and across updates (one a second) goes forward, and after a
    few updates the lines are within a microsecond of the host."""
    host = Host(rate=rate, raw_rate=raw_rate)
    tk, page = keeper(host, int(host.hz / 1000 * (1 + khz_error)))
    last = {clk: 0 for clk in V.LINES}
    for second in range(40):
        tk.update()
        for _ in range(20):
            host.advance(SEC / 20)
            tsc = host.tsc()
            for clk in V.LINES:
                now = guest_read(page, clk, tsc)
                assert now >= last[clk], f"clock {clk} went back by {last[clk] - now} ns at {second} s"
                last[clk] = now
    for clk, clock in V.LINES.items():
        err = tk.now_ns(clk) - host.clock_ns(clock)
        assert abs(err) < 1000, f"clock {clk} is {err} ns off the host after 40 s"


def test_realtime_follows_a_step_back_and_monotonic_does_not_notice():
    host = Host()
    tk, page = keeper(host)
    for _ in range(3):
        tk.update()
        host.advance(SEC)
    mono_before = tk.now_ns(C.CLOCK_MONOTONIC)
    rate_before = tk.lines[time.CLOCK_MONOTONIC][3]
    host.real_offset -= 3600 * SEC  # settimeofday an hour back
    tk.update()
    assert abs(tk.now_ns(C.CLOCK_REALTIME) - host.clock_ns(time.CLOCK_REALTIME)) < 1000
    assert abs(tk.now_ns(C.CLOCK_TAI) - host.clock_ns(time.CLOCK_TAI)) < 1000
    assert tk.now_ns(C.CLOCK_MONOTONIC) >= mono_before
    assert tk.lines[time.CLOCK_REALTIME][3] == tk.lines[time.CLOCK_MONOTONIC][3] == rate_before


def test_a_line_ahead_of_its_clock_waits_for_it():
    """NTP slows the host's clocks: the line, now ahead, never jumps back
    but runs slower until it meets the host; sped up, the line falls behind
    and jumps forward at the next update."""
    mono = time.CLOCK_MONOTONIC
    host = Host()
    tk, page = keeper(host)
    for _ in range(3):
        tk.update()
        host.advance(SEC)
    host.rate = 0.9998
    host.advance(SEC)
    before = tk.now_ns(C.CLOCK_MONOTONIC)
    ahead = before - host.clock_ns(mono)
    assert ahead > 100_000
    tk.update()
    base, mult, meet, mult_after = tk.lines[mono]
    assert base >= before and mult < mult_after and meet > 0
    last = 0
    for _ in range(100):
        host.advance(SEC / 100)
        now = guest_read(page, C.CLOCK_MONOTONIC, host.tsc())
        assert now >= last
        last = now
    assert 0 <= last - host.clock_ns(mono) < ahead
    host.rate = 1.001
    host.advance(SEC)
    assert tk.now_ns(C.CLOCK_MONOTONIC) < host.clock_ns(mono)
    tk.update()
    assert abs(tk.now_ns(C.CLOCK_MONOTONIC) - host.clock_ns(mono)) < 1000


# ------------------------------------------------------------------ the mappings
@pytest.fixture
def phys():
    p = PhysicalMemory(reserved_frames=16)
    yield p
    p.close()


def test_every_process_maps_the_same_vdso_read_only(phys):
    vd = V.Vdso(phys, 2_500_000)
    image = V.load_image()
    mm = MemoryManager(phys, {255: 0x1000 | 7}, 0x7F80_0000_0000)
    ehdr = vd.map_into(mm)
    assert mm.read(ehdr, len(image)) == image
    assert [line.split()[1:] for line in mm.maps()] == [["r--p", "00000000", "00:00", "0", "[vvar]"],
                                                        ["r-xp", "00000000", "00:00", "0", "[vdso]"]]
    vvar = mm.read(ehdr - V.PAGE, V.VVAR.size)
    assert V.VVAR.unpack(vvar)[0] == 2  # published once at start
    vd.timekeeper.update()
    assert V.VVAR.unpack(mm.read(ehdr - V.PAGE, V.VVAR.size))[0] == 4  # the Sentry's writes show at once

    for addr, length in ((ehdr, V.PAGE), (ehdr - V.PAGE, V.PAGE)):
        with pytest.raises(SyscallError) as e:
            mm.mprotect(addr, length, C.PROT_READ | C.PROT_WRITE)
        assert e.value.errno == C.EACCES
    with pytest.raises(SyscallError) as e:
        mm.mremap(ehdr, vd.size, vd.size + V.PAGE, C.MREMAP_MAYMOVE)
    assert e.value.errno == C.EFAULT
    with pytest.raises(SyscallError) as e:
        mm.write(ehdr, b"x")
    assert e.value.errno == C.EFAULT

    refs = vd.region.refs
    child = mm.fork()
    assert child.read(ehdr, len(image)) == image and vd.region.refs == refs + 2
    child.release()
    mm.munmap(ehdr - V.PAGE, V.PAGE + vd.size)
    assert mm.maps() == [] and vd.region.refs == refs - 2
    mm.release()
    assert os.fstat(vd.region.fd)  # the platform's own reference keeps the region
