"""Clocks, sleeps and interval timers run by the Sentry."""
from __future__ import annotations

import sys
import time
from typing import Callable

from pysc.core import signals
from pysc.core.abi import consts as C
from pysc.core.abi.structs import ITIMERSPEC, ITIMERVAL, SIGEVENT, TIMESPEC, TIMEVAL
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


def clock_now_ns(t, clk: int) -> int:
    """Clock ``clk`` now, as the app sees it (the platform's guest clock
    where it has one for ``clk``)."""
    clk = s32(clk)
    guest = t.kernel.guest_clock
    if guest is not None:
        ns = guest.now_ns(clk)
        if ns is not None:
            return ns
    if clk in HOST_CLOCKS:
        return time.clock_gettime_ns(HOST_CLOCKS[clk])
    cpu = cpu_clock(t, clk)
    if cpu is None:
        raise SyscallError(C.EINVAL)
    return int(cpu() * 1e9)


def clock_now(t, clk: int) -> float:
    return clock_now_ns(t, clk) / 1e9


def cpu_clock(t, clk: int) -> Callable[[], float] | None:
    """The CPU-time clock ``clk`` names, None if it names none: the
    caller's process or thread, or one encoded as Linux does for
    clock_getcpuclockid and pthread_getcpuclockid (~pid << 3, bit 2 for a
    thread, a type in bits 0-1 that here always counts the same time)."""
    if clk == PROCESS_CPUTIME:
        tg = t.tg
        return lambda: process_cpu(tg)
    if clk == THREAD_CPUTIME:
        return lambda: thread_cpu(t)
    if clk >= 0:
        return None
    if clk & 3 == 3:
        raise SyscallError(C.EINVAL)
    pid = ~(clk >> 3)
    if clk & 4:  # a thread's, of the caller's own process
        task = t if pid == 0 else t.pidns.task(pid)
        if task is None or task.tg is not t.tg:
            raise SyscallError(C.EINVAL)
        return lambda: thread_cpu(task)
    tg = t.tg if pid == 0 else t.pidns.tg(pid)
    if tg is None:
        raise SyscallError(C.EINVAL)
    return lambda: process_cpu(tg)


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
    now = clock_now_ns(t, clk)
    t.mem.write(tp, TIMESPEC.pack(*divmod(now, 1_000_000_000)))
    return 0


@syscall()
def clock_getres(t, clk, res, *_):
    clock_now(t, clk)  # EINVAL for unknown clocks
    if res:
        t.mem.write(res, TIMESPEC.pack(0, 4_000_000 if s32(clk) in COARSE else 1))
    return 0


@syscall()
def gettimeofday(t, tv, tz, *_):
    if tv:
        sec, ns = divmod(clock_now_ns(t, C.CLOCK_REALTIME), 1_000_000_000)
        t.mem.write(tv, TIMEVAL.pack(sec, ns // 1000))
    if tz:
        t.mem.write(tz, bytes(8))
    return 0


@syscall("time")
def time_(t, tloc, *_):
    now = clock_now_ns(t, C.CLOCK_REALTIME) // 1_000_000_000
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


# --- interval timers (setitimer, alarm) and POSIX timers ---
class IntervalTimer:
    """A timer that sends its signal at a deadline on ``clock``, then every
    interval.  A process's three interval timers are ones: ITIMER_REAL counts
    wall time, ITIMER_VIRTUAL and ITIMER_PROF the process's CPU time (the
    Sentry sees one CPU clock per thread, guest and Sentry time together, so
    both count the same)."""

    SIGNALS = {ITIMER_REAL: C.SIGALRM, ITIMER_VIRTUAL: C.SIGVTALRM, ITIMER_PROF: C.SIGPROF}

    def __init__(self, kernel, tg, sig: int, clock: Callable[[], float]):
        self.kernel = kernel
        self.tg = tg
        self.sig = sig
        self.clock = clock
        self.entry = None
        self.deadline = 0.0  # on self.clock
        self.interval = 0.0

    def arm(self, value: float, interval: float) -> None:
        """Fire in ``value`` seconds (0: disarm), then every ``interval``."""
        self.cancel()
        self.interval = interval
        if value > 0:
            self.deadline = self.clock() + value
            self._check_at(value)

    def cancel(self) -> None:
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
        return max(1e-9, self.deadline - self.clock()), self.interval

    def check(self) -> None:
        self.entry = None
        if not self.tg.alive:
            return
        now = self.clock()
        if now < self.deadline:
            self._check_at(max(self.deadline - now, 0.001))
            return
        missed = int((now - self.deadline) // self.interval) if self.interval > 0 else 0
        self.fire(missed)
        if self.interval > 0:  # on the original schedule, as Linux keeps it
            self.deadline += (missed + 1) * self.interval
            self._check_at(max(self.deadline - self.clock(), 0.0))

    def fire(self, missed: int) -> None:
        signals.send(self.kernel, self.tg, self.sig, pack_siginfo(self.sig, signals.SI_KERNEL),
                     from_kernel=True)


def _itimer(t, which: int) -> IntervalTimer:
    if which not in IntervalTimer.SIGNALS:
        raise SyscallError(C.EINVAL)
    timers = getattr(t.tg, "itimers", None)
    if timers is None:
        timers = t.tg.itimers = {}
    if which not in timers:
        tg = t.tg
        clock = time.monotonic if which == ITIMER_REAL else (lambda: process_cpu(tg))
        timers[which] = IntervalTimer(t.kernel, tg, IntervalTimer.SIGNALS[which], clock)
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


class PosixTimer(IntervalTimer):
    """A timer of timer_create: on one of the clocks, for the process or
    (SIGEV_THREAD_ID) one of its threads, with SI_TIMER siginfo carrying
    its id, overrun and the sigev_value.  Expirations missed while the
    Sentry was late count as overruns; Linux also counts those that come
    while the previous signal is still pending, which this does not."""

    def __init__(self, t, timer_id: int, clk: int, sig: int, notify: int, value: int, target):
        super().__init__(t.kernel, t.tg, sig, cpu_clock(t, clk) or time.monotonic)
        self.id, self.clk, self.notify, self.value, self.target = timer_id, clk, notify, value, target
        self.now = lambda: clock_now(t, clk)  # the clock's own reading, for absolute times
        self.overrun = 0  # of the last signal sent

    def fire(self, missed: int) -> None:
        if self.notify == C.SIGEV_NONE:
            return
        self.overrun = missed
        task = self.target if self.target is not None and not self.target.exited else None
        info = pack_siginfo(self.sig, C.SI_TIMER, timerid=self.id, overrun=missed, value=self.value)
        signals.send(self.kernel, self.tg, self.sig, info, task=task, from_kernel=True)


WALL_TIMER_CLOCKS = (0, 1, 7, 8, 9, 11)  # not the coarse or raw ones


def _posix_timer(t, timer_id: int) -> PosixTimer:
    timer = t.tg.posix_timers.get(s32(timer_id))
    if timer is None:
        raise SyscallError(C.EINVAL)
    return timer


@syscall()
def timer_create(t, clk, sevp, timerid, *_):
    clk = s32(clk)
    if clk not in WALL_TIMER_CLOCKS and cpu_clock(t, clk) is None:
        raise SyscallError(C.EINVAL)
    timers = t.tg.posix_timers
    timer_id = next(i for i in range(len(timers) + 1) if i not in timers)
    if sevp:
        value, sig, notify, tid = SIGEVENT.unpack(t.mem.read(sevp, SIGEVENT.size))
    else:
        value, sig, notify, tid = timer_id, C.SIGALRM, C.SIGEV_SIGNAL, 0
    target = None
    if notify & ~C.SIGEV_THREAD_ID not in (C.SIGEV_SIGNAL, C.SIGEV_NONE) or notify == C.SIGEV_THREAD:
        raise SyscallError(C.EINVAL)
    if notify != C.SIGEV_NONE and not 1 <= sig <= C.NSIG:
        raise SyscallError(C.EINVAL)
    if notify & C.SIGEV_THREAD_ID:
        target = t.pidns.task(s32(tid))
        if target is None or target.tg is not t.tg:
            raise SyscallError(C.EINVAL)
    t.mem.write_u32(timerid, timer_id)
    timers[timer_id] = PosixTimer(t, timer_id, clk, sig, notify, value, target)
    return 0


def _itimerspec(value: float, interval: float) -> bytes:
    return _ts(interval) + _ts(value)


@syscall()
def timer_settime(t, timerid, flags, new, old, *_):
    timer = _posix_timer(t, timerid)
    isec, insec, vsec, vnsec = ITIMERSPEC.unpack(t.mem.read(new, ITIMERSPEC.size))
    if min(isec, insec, vsec, vnsec) < 0 or insec >= 1_000_000_000 or vnsec >= 1_000_000_000:
        raise SyscallError(C.EINVAL)
    if old:
        t.mem.write(old, _itimerspec(*timer.remaining()))
    value, interval = vsec + vnsec / 1e9, isec + insec / 1e9
    if value and s32(flags) & C.TIMER_ABSTIME:
        value = max(value - timer.now(), 1e-9)  # a time already past fires at once
    timer.arm(value, interval)
    return 0


@syscall()
def timer_gettime(t, timerid, cur, *_):
    t.mem.write(cur, _itimerspec(*_posix_timer(t, timerid).remaining()))
    return 0


@syscall()
def timer_getoverrun(t, timerid, *_):
    return _posix_timer(t, timerid).overrun


@syscall()
def timer_delete(t, timerid, *_):
    _posix_timer(t, timerid).cancel()
    del t.tg.posix_timers[s32(timerid)]
    return 0
