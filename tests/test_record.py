"""Record, the base of pysc's data classes, and Message, the protocols' records."""
from __future__ import annotations

from typing import ClassVar

import pytest

from pysc.core.message import Message
from pysc.core.record import Factory, Record


class Walk(Message):
    handle: int
    names: tuple = ()
    errno: int = 0


class Other(Message):
    handle: int
    names: tuple = ()
    errno: int = 0


def test_fields_defaults_and_keywords():
    assert Walk.FIELDS == ("handle", "names", "errno")
    w = Walk(3, errno=2)
    assert (w.handle, w.names, w.errno) == (3, (), 2)
    assert w.astuple() == (3, (), 2) and w.asdict() == {"handle": 3, "names": (), "errno": 2}
    assert repr(w) == "Walk(handle=3, names=(), errno=2)"


def test_equality_needs_the_same_class():
    assert Walk(1, (b"a",)) == Walk(1, (b"a",))
    assert Walk(1) != Walk(2)
    assert Walk(1) != Other(1)
    with pytest.raises(TypeError):
        hash(Walk(1))


@pytest.mark.parametrize("args, kwargs, why", [
    ((), {}, "missing field 'handle'"),
    ((1, (), 0, 9), {}, "3 fields, got 4"),
    ((1,), {"handle": 2}, "unknown or repeated"),
    ((1,), {"bogus": 2}, "unknown or repeated"),
])
def test_bad_construction(args, kwargs, why):
    with pytest.raises(TypeError, match=why):
        Walk(*args, **kwargs)


def test_a_field_without_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="follows one with"):
        class Bad(Message):
            a: int = 0
            b: int


def test_subclass_extends_fields():
    class Base(Message):
        a: int

    class Sub(Base):
        b: int = 5

    assert Sub.FIELDS == ("a", "b") and Sub(1).b == 5 and Base.FIELDS == ("a",)


class Bag(Record):
    name: str
    items: list = Factory(list)
    LIMIT: ClassVar[int] = 3  # not a field


class Handle(Record, eq=False):
    fd: int


def test_factory_makes_a_fresh_default_each_time():
    a, b = Bag("a"), Bag("b")
    a.items.append(1)
    assert b.items == [] and a.items == [1]
    assert Bag.FIELDS == ("name", "items")


def test_a_mutable_default_is_refused():
    with pytest.raises(TypeError, match="Factory"):
        class Bad(Record):
            items: list = []


def test_eq_false_compares_identity_and_hashes():
    h = Handle(3)
    assert h != Handle(3) and h == h
    assert {h: 1}[h] == 1


def test_evolve_copies_and_changes():
    a = Bag("a", [1])
    b = a.evolve(name="b")
    assert (b.name, b.items) == ("b", [1]) and a.name == "a"
    assert b.items is a.items  # shallow, as attrs.evolve
    assert a.evolve() == a and a.evolve() is not a
    with pytest.raises(TypeError, match="unknown field"):
        a.evolve(bogus=1)


def test_an_own_init_keeps_the_rest():
    from pysc.core.abi.structs import Stat
    st = Stat(0o100644, ino=5, size=9)
    assert st.asdict()["size"] == 9 and st.nlink == 1
    assert st.copy() == st and st.evolve(size=1) != st
    assert "ino=5" in repr(st)
