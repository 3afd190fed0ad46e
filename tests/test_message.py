"""The Message base of the gofer and control protocols."""
from __future__ import annotations

import pytest

from pysc.core.message import Message


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
