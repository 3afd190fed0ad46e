"""The Sentry's own signal and futex state (core/signals.py, core/futex.py),
without any platform: queueing, masks, which thread is woken, exact wake-ups."""
from __future__ import annotations

from pysc.core import signals
from pysc.core.abi import consts as C
from pysc.core.futex import FutexTable, FutexWait
from pysc.core.pidns import PIDNamespace
from pysc.core.signals import SigAction, SigHand, SigPending, bit


class FakePlatform:
    def __init__(self):
        self.interrupted = []
        self.killed = []
        self.continued = []

    def interrupt(self, task):
        self.interrupted.append(task)

    def kill_group(self, tg, sig):
        self.killed.append((tg, sig))

    def continue_group(self, tg):
        self.continued.append(tg)


class FakeTG:
    def __init__(self):
        self.sighand = SigHand()
        self.shared_pending = SigPending()
        self.tasks = []
        self.stopped = False
        self.pidns = PIDNamespace(None)  # a root one, without an init of its own


class FakeTask:
    def __init__(self, tg, mask=0):
        self.tg = tg
        self.sigmask = mask
        self.sigwait = 0
        self.pending = SigPending()
        tg.tasks.append(self)


class FakeKernel:
    def __init__(self):
        self.platform = FakePlatform()
        self.init = None
        self.root_pidns = PIDNamespace(self)


def setup(masks=(0,)):
    k = FakeKernel()
    tg = FakeTG()
    tasks = [FakeTask(tg, m) for m in masks]
    return k, tg, tasks


def test_standard_signals_coalesce_realtime_ones_queue():
    p = SigPending()
    assert p.add(C.SIGUSR1, b"a") and not p.add(C.SIGUSR1, b"b")
    assert p.add(40, b"x") and p.add(40, b"y")
    assert p.take(40) == b"x" and p.mask & bit(40)
    assert p.take(40) == b"y" and not p.mask & bit(40)
    assert p.take(C.SIGUSR1) == b"a" and p.mask == 0


def test_dequeue_takes_faults_first_then_lowest_and_respects_the_mask():
    k, tg, (t,) = setup()
    t.pending.add(C.SIGUSR1, b"")
    tg.shared_pending.add(C.SIGINT, b"")
    t.pending.add(C.SIGSEGV, b"")
    assert signals.dequeue(t)[0] == C.SIGSEGV
    assert signals.dequeue(t)[0] == C.SIGUSR1  # the thread's own set before the shared one
    t.sigmask = bit(C.SIGINT)
    assert signals.dequeue(t) is None and signals.pending_for(t) == 0
    t.sigmask = 0
    assert signals.dequeue(t)[0] == C.SIGINT


def test_send_wakes_a_thread_that_does_not_block_it():
    k, tg, (a, b) = setup((bit(C.SIGUSR1), 0))
    signals.send(k, tg, C.SIGUSR1, b"info")
    assert tg.shared_pending.mask & bit(C.SIGUSR1)
    assert k.platform.interrupted == [b]


def test_blocked_everywhere_stays_pending_and_wakes_nobody():
    k, tg, (a,) = setup((bit(C.SIGUSR1),))
    signals.send(k, tg, C.SIGUSR1, b"")
    assert tg.shared_pending.mask & bit(C.SIGUSR1) and not k.platform.interrupted
    a.sigwait = bit(C.SIGUSR1)  # waiting for it in rt_sigtimedwait: now it is woken
    signals.send(k, tg, C.SIGUSR1, b"")
    assert k.platform.interrupted == [a]


def test_ignored_signals_are_dropped_unless_blocked():
    k, tg, (a,) = setup()
    signals.send(k, tg, C.SIGCHLD, b"")  # default action: ignore
    assert tg.shared_pending.mask == 0
    tg.sighand.actions[C.SIGUSR1] = SigAction(C.SIG_IGN)
    signals.send(k, tg, C.SIGUSR1, b"")
    assert tg.shared_pending.mask == 0
    a.sigmask = bit(C.SIGUSR1)
    signals.send(k, tg, C.SIGUSR1, b"")
    assert tg.shared_pending.mask & bit(C.SIGUSR1)


def test_init_gets_only_handled_or_blocked_signals_from_inside():
    k, tg, (a,) = setup()
    k.init = tg
    signals.send(k, tg, C.SIGTERM, b"")
    assert tg.shared_pending.mask == 0
    signals.send(k, tg, C.SIGTERM, b"", from_kernel=True)
    assert tg.shared_pending.mask & bit(C.SIGTERM)
    tg.shared_pending = SigPending()
    tg.sighand.actions[C.SIGTERM] = SigAction(0x401000)
    signals.send(k, tg, C.SIGTERM, b"")
    assert tg.shared_pending.mask & bit(C.SIGTERM)
    signals.send(k, tg, C.SIGKILL, b"")
    assert k.platform.killed == [(tg, C.SIGKILL)]


def test_sigcont_discards_pending_stops_and_continues():
    k, tg, (a,) = setup()
    tg.sighand.actions[C.SIGTSTP] = SigAction(0x401000)
    signals.send(k, tg, C.SIGTSTP, b"")
    tg.stopped = True
    signals.send(k, tg, C.SIGCONT, b"")
    assert not tg.shared_pending.mask & bit(C.SIGTSTP)
    assert k.platform.continued == [tg] and not tg.stopped


def test_force_unblocks_and_resets_an_ignored_fault():
    k, tg, (a,) = setup((bit(C.SIGSEGV),))
    tg.sighand.actions[C.SIGSEGV] = SigAction(C.SIG_IGN)
    signals.force(k, a, C.SIGSEGV, b"")
    assert not a.sigmask & bit(C.SIGSEGV)
    assert tg.sighand.actions[C.SIGSEGV].handler == C.SIG_DFL
    assert signals.dequeue(a)[0] == C.SIGSEGV


def test_exec_resets_handlers_but_keeps_ignored():
    h = SigHand()
    h.actions[C.SIGINT] = SigAction(C.SIG_IGN, C.SA_RESTART)
    h.actions[C.SIGUSR1] = SigAction(0x401000, C.SA_SIGINFO, 0x402000, 5)
    h.reset_for_exec()
    assert h.actions[C.SIGINT].handler == C.SIG_IGN and h.actions[C.SIGINT].flags == 0
    assert h.actions[C.SIGUSR1] == SigAction()


def test_default_actions():
    assert signals.default_action(C.SIGSEGV) == "core"
    assert signals.default_action(C.SIGTERM) == "term"
    assert signals.default_action(C.SIGTSTP) == "stop"
    assert signals.default_action(C.SIGCHLD) == "ignore"
    assert signals.default_action(C.SIGCONT) == "cont"


# --- futexes ---
def waiter(table, key, bitset=0xFFFFFFFF):
    w = FutexWait(table, key, bitset)
    woken = []
    w.add(object(), lambda: woken.append(True))
    return w, woken


def test_futex_wake_wakes_exactly_n_in_order():
    table = FutexTable()
    ws = [waiter(table, "k") for _ in range(3)]
    assert table.wake("k", 2) == 2
    assert [w.woken for w, _ in ws] == [True, True, False]
    assert [bool(x) for _, x in ws] == [True, True, False]
    assert table.wake("other", 5) == 0
    ws[2][0].remove(None)  # interrupted by a signal: it leaves the queue
    assert table.wake("k", 5) == 0 and "k" not in table.queues


def test_futex_bitsets_and_requeue():
    table = FutexTable()
    a, _ = waiter(table, "k", 0b01)
    b, _ = waiter(table, "k", 0b10)
    assert table.wake("k", 5, 0b10) == 1 and b.woken and not a.woken
    c, _ = waiter(table, "k")
    assert table.requeue("k", "k2", 0, 5) == 2
    assert a.key == c.key == "k2" and "k" not in table.queues
    assert table.wake("k2", 1) == 1 and a.woken


def test_the_leaders_mask_decides_whether_init_drops_a_signal():
    """kill() of init whose main thread blocks the signal: it is queued, even
    though another thread (say, one about to exit) does not block it."""
    k, tg, (leader, other) = setup((bit(C.SIGUSR2), 0))
    k.init = tg
    signals.send(k, tg, C.SIGUSR2, b"")
    assert tg.shared_pending.mask & bit(C.SIGUSR2)
    assert k.platform.interrupted == [other]
