"""Clocks, sleeps and interval timers run by the Sentry."""
from __future__ import annotations

import sys
import time

from pysc.core import signals
from pysc.core.abi import consts as C
from pysc.core.abi.structs import ITIMERVAL, TIMESPEC, TIMEVAL
from pysc.core.dispatch import s32, syscall
from pysc.core.errors import SyscallError, WouldBlock
from pysc.core.eventpoll import call_deadline, clear_deadline, expired
from pysc.core.hookspecs import hookimpl
from pysc.core.sigframe import pack_siginfo
from pysc.syscalls.sentry.process import process_cpu, thread_cpu

# clock ids -> the host clock that serves them
HOST_CLOCKS = {0: time.CLOCK_REALTIME, 1: time.CLOCK_MONOTONIC, 4: time.CLOCK_MONOTONIC_RAW,
               5: 5, 6: 6, 7: time.CLOCK_BOOTTIME, 8: time.CLOCK_REALTIME, 9: time.CLOCK_BOOTTIME,
               11: time.CLOCK_TAI}
PROCESS_CPUTIME, THREAD_CPUTIME = 2, 3
COARSE = (5, 6)
TIMER_ABSTIME = 1
ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2


@hookimpl
def pysc_syscalls(table, platform):
    if table.sentry_owned:
        table.register_module(sys.modules[__name__])


def clock_now(t, clk: int) -> float:
    clk = s32(clk)
    if clk in HOST_CLOCKS:
        return time.clock_gettime(HOST_CLOCKS[clk])
    if clk == PROCESS_CPUTIME:
        return process_cpu(t.tg)
    if clk == THREAD_CPUTIME:
        return thread_cpu(t)
    raise SyscallError(C.EINVAL)


def _ts(value: float) -> bytes:
    sec = int(value)
    return TIMESPEC.pack(sec, int((value - sec) * 1e9))


def _read_ts(t, addr: int) -> float:
    sec, nsec = TIMESPEC.unpack(t.mem.read(addr, 16))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise SyscallError(C.EINVAL)
    return sec + nsec / 1e9


@syscall()
def clock_gettime(t, clk, tp, *_):
    now = clock_now(t, clk)
    t.mem.write(tp, _ts(now))
    return 0


@syscall()
def clock_getres(t, clk, res, *_):
    clock_now(t, clk)  # EINVAL for unknown clocks
    if res:
        t.mem.write(res, TIMESPEC.pack(0, 4_000_000 if s32(clk) in COARSE else 1))
    return 0


@syscall()
def gettimeofday(t, tv, tz, *_):
    now = time.time()
    if tv:
        sec = int(now)
        t.mem.write(tv, TIMEVAL.pack(sec, int((now - sec) * 1e6)))
    if tz:
        t.mem.write(tz, bytes(8))
    return 0


@syscall("time")
def time_(t, tloc, *_):
    now = int(time.time())
    if tloc:
        t.mem.write_u64(tloc, now)
    return now


def _sleep(t, key, seconds: float, rem: int) -> int:
    deadline = call_deadline(t, key, seconds)
    if expired(deadline):
        clear_deadline(t, key)
        return 0
    if rem:
        def write_remaining(deadline=deadline):
            left = max(0.0, deadline - time.monotonic())
            t.mem.write(rem, _ts(left))
        t.restart_hook = write_remaining
    raise WouldBlock(deadline=deadline, restart="nohand")


@syscall()
def nanosleep(t, req, rem, *_):
    return _sleep(t, ("nanosleep", req), _read_ts(t, req), rem)


@syscall()
def clock_nanosleep(t, clk, flags, req, rem, *_):
    clk = s32(clk)
    if clk in (PROCESS_CPUTIME, THREAD_CPUTIME):
        raise SyscallError(C.EINVAL)  # sleeping on a CPU clock is not supported
    value = _read_ts(t, req)
    if flags & TIMER_ABSTIME:
        key = ("clock_nanosleep", req, clk)
        saved = t.restart_deadline
        if saved is None or saved[0] != key:
            value = value - clock_now(t, clk)
        else:
            value = saved[1] - time.monotonic()
        return _sleep(t, key, max(0.0, value), 0)
    return _sleep(t, ("clock_nanosleep", req, clk), value, rem)


# --- interval timers (setitimer) and alarm ---
class IntervalTimer:
    """One of a process's three interval timers: ITIMER_REAL counts wall
    time, ITIMER_VIRTUAL and ITIMER_PROF the process's CPU time (the Sentry
    sees one CPU clock per thread, guest and Sentry time together, so both
    count the same).  Its signal goes at the deadline, then every interval."""

    SIGNALS = {ITIMER_REAL: C.SIGALRM, ITIMER_VIRTUAL: C.SIGVTALRM, ITIMER_PROF: C.SIGPROF}

    def __init__(self, kernel, tg, which: int):
        self.kernel = kernel
        self.tg = tg
        self.sig = self.SIGNALS[which]
        self.clock = time.monotonic if which == ITIMER_REAL else (lambda: process_cpu(tg))
        self.entry = None
        self.deadline = 0.0  # on self.clock
        self.interval = 0.0

    def arm(self, value: float, interval: float) -> None:
        self._cancel()
        self.interval = interval
        if value > 0:
            self.deadline = self.clock() + value
            self._check_at(value)

    def _cancel(self) -> None:
        if self.entry is not None:
            self.kernel.cancel_timer(self.entry)
            self.entry = None

    def _check_at(self, delay: float) -> None:
        """Look again once ``delay`` more seconds have passed on the wall:
        CPU time cannot count faster than that for one thread."""
        self.entry = self.kernel.add_timer(time.monotonic() + delay, self.check)

    def remaining(self) -> tuple[float, float]:
        if self.entry is None:
            return 0.0, self.interval
        return max(1e-6, self.deadline - self.clock()), self.interval

    def check(self) -> None:
        self.entry = None
        if not self.tg.alive:
            return
        left = self.deadline - self.clock()
        if left > 0:
            self._check_at(max(left, 0.001))
            return
        signals.send(self.kernel, self.tg, self.sig, pack_siginfo(self.sig, signals.SI_KERNEL),
                     from_kernel=True)
        if self.interval > 0:
            self.arm(self.interval, self.interval)


def _itimer(t, which: int) -> IntervalTimer:
    if which not in IntervalTimer.SIGNALS:
        raise SyscallError(C.EINVAL)
    timers = getattr(t.tg, "itimers", None)
    if timers is None:
        timers = t.tg.itimers = {}
    if which not in timers:
        timers[which] = IntervalTimer(t.kernel, t.tg, which)
    return timers[which]


def _tv(value: float) -> tuple[int, int]:
    sec = int(value)
    return sec, int(round((value - sec) * 1e6))


@syscall()
def setitimer(t, which, new, old, *_):
    timer = _itimer(t, s32(which))
    if new:
        isec, iusec, vsec, vusec = ITIMERVAL.unpack(t.mem.read(new, 32))
        if min(isec, iusec, vsec, vusec) < 0 or iusec >= 1_000_000 or vusec >= 1_000_000:
            raise SyscallError(C.EINVAL)
    if old:
        value, interval = timer.remaining()
        t.mem.write(old, ITIMERVAL.pack(*_tv(interval), *_tv(value)))
    if new:
        timer.arm(vsec + vusec / 1e6, isec + iusec / 1e6)
    return 0


@syscall()
def getitimer(t, which, cur, *_):
    value, interval = _itimer(t, s32(which)).remaining()
    t.mem.write(cur, ITIMERVAL.pack(*_tv(interval), *_tv(value)))
    return 0


@syscall()
def alarm(t, seconds, *_):
    timer = _itimer(t, ITIMER_REAL)
    value, _ = timer.remaining()
    timer.arm(float(seconds & 0xFFFFFFFF), 0.0)
    return int(value + 0.5) if value else 0
