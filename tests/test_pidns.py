"""PID namespaces (core/pidns.py): the numbers a pod container's processes
see, against the Kernel's (the sandbox namespace's)."""
from __future__ import annotations

from pysc.core.pidns import PIDNamespace
from pysc.core.task import ThreadGroup


class FakeKernel:
    def __init__(self):
        self.tasks, self.thread_groups = {}, {}
        self.root_pidns = PIDNamespace(self)

    def clock_ticks(self):
        return 0


def test_the_root_namespace_is_the_kernel_numbering():
    k = FakeKernel()
    tg = ThreadGroup(k, 7, None)
    k.thread_groups[7] = tg
    ns = k.root_pidns
    assert ns.is_root and ns.chain() == []
    assert ns.id_of(7) == 7 and ns.kernel_id(7) == 7
    assert ns.tg(7) is tg and ns.sees(tg)


def test_a_child_namespace_maps_both_ways_and_hides_the_rest():
    k = FakeKernel()
    child = PIDNamespace(k, k.root_pidns)
    outside = ThreadGroup(k, 1, None)
    inside = ThreadGroup(k, 12, None)
    inside.pidns = child
    k.thread_groups.update({1: outside, 12: inside})
    child.add(12, 1)
    assert child.level == 1 and child.chain() == [child]
    assert child.id_of(12) == 1 and child.kernel_id(1) == 12
    assert child.tg(1) is inside, "its pid 1 is its own init, not the sandbox's"
    assert child.id_of(1) == 0 and not child.sees(outside), "a process outside has no number"
    assert child.kernel_id(5) is None and child.tg(5) is None
    assert k.root_pidns.id_of(12) == 12, "the sandbox sees it under its kernel id"


def test_numbers_are_handed_out_in_order_and_reused_after_forget():
    k = FakeKernel()
    ns = PIDNamespace(k, k.root_pidns)
    ns.add(40, ns.alloc())
    ns.add(41, ns.alloc())
    assert (ns.id_of(40), ns.id_of(41)) == (1, 2)
    ns.forget(40)
    assert ns.id_of(40) == 0 and ns.kernel_id(1) is None
    assert ns.alloc() == 3, "counting goes on, as Linux's does, before wrapping"


def test_nested_namespaces_chain_outermost_first():
    k = FakeKernel()
    a = PIDNamespace(k, k.root_pidns)
    b = PIDNamespace(k, a)
    assert b.level == 2 and b.chain() == [a, b]


def test_a_child_inherits_its_parents_namespace():
    k = FakeKernel()
    ns = PIDNamespace(k, k.root_pidns)
    parent = ThreadGroup(k, 3, None)
    parent.pidns = ns
    assert ThreadGroup(k, 4, parent).pidns is ns
