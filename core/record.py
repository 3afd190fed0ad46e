"""``Record``: the base of pysc's plain data classes — kernel records such as
credentials and sigactions, the parts of ``config.json``, the state file,
flags, and the messages of the gofer and control protocols.

A record class lists its fields as annotations, in order (``ClassVar``
annotations are not fields).  A field's default is the class attribute of
the same name; a mutable default is written ``Factory(list)`` and made fresh
for every record.  Records compare equal when of the same class with equal
fields, unless the class says ``eq=False`` (then identity, and hashable).

They are not attrs classes, though attrs is what they imitate: importing
attrs costs every start of pysc about 22 ms here, and attrs writes and
compiles several methods for each class when it is defined, about 0.7 ms a
class, which for pysc's 80-odd record classes made attrs the largest part
of a container's start.  This base defines no code per class; its one
``__init__`` costs a microsecond or two more per record, so the few records
made on a hot path (``Stat``) write their own ``__init__``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, TypeVar

R = TypeVar("R", bound="Record")


class Factory:
    """A field default made by calling ``make`` for every new record."""
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]):
        self.make = make


def _is_classvar(kind: Any) -> bool:
    return str(kind).startswith(("ClassVar", "typing.ClassVar"))


class Record:
    FIELDS: ClassVar[tuple[str, ...]] = ()
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, eq: bool = True, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        own = [name for name, kind in cls.__dict__.get("__annotations__", {}).items()
               if not _is_classvar(kind)]
        defaults = dict(cls.DEFAULTS)
        for name in own:
            if name in cls.__dict__:
                value = cls.__dict__[name]
                if isinstance(value, (list, dict, set, bytearray)):
                    raise TypeError(f"{cls.__name__}.{name}: a mutable default is shared by every "
                                    f"record; write Factory({type(value).__name__})")
                defaults[name] = value
            elif defaults:
                raise TypeError(f"{cls.__name__}.{name}: a field without a default follows one with")
        cls.FIELDS = cls.FIELDS + tuple(name for name in own if name not in cls.FIELDS)
        cls.DEFAULTS = defaults
        if not eq:
            cls.__eq__ = object.__eq__  # type: ignore[method-assign]
            cls.__hash__ = object.__hash__  # type: ignore[method-assign]

    def __init__(self, *args: Any, **kwargs: Any):
        fields = self.FIELDS
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} has {len(fields)} fields, got {len(args)} values")
        values = self.__dict__
        values.update(zip(fields, args))
        if len(args) < len(fields):
            defaults = self.DEFAULTS
            for name in fields[len(args):]:
                if name in kwargs:
                    values[name] = kwargs.pop(name)
                elif name in defaults:
                    value = defaults[name]
                    values[name] = value.make() if type(value) is Factory else value
                else:
                    raise TypeError(f"{type(self).__name__}: missing field {name!r}")
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unknown or repeated field(s) {', '.join(kwargs)}")

    def evolve(self: R, **changes: Any) -> R:
        """A shallow copy with some fields changed (attrs.evolve)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        if changes:
            unknown = changes.keys() - set(self.FIELDS)
            if unknown:
                raise TypeError(f"{type(self).__name__}: unknown field(s) {', '.join(sorted(unknown))}")
            new.__dict__.update(changes)
        return new

    def astuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def asdict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.astuple() == other.astuple()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({inner})"
