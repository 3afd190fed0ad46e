"""``Message``: the base of the records pysc's processes send each other (the
gofer protocol, the control protocol).

A message class lists its fields as annotations, in wire order; a field's
default is the class attribute of the same name and must be immutable.
Messages compare equal when of the same class with equal fields.

They are not attrs classes because attrs writes and compiles several methods
for every class when it is defined, about 0.7 ms each: with some 55 message
classes that was 40 ms of every start of pysc.  This base defines no code
per class; its one ``__init__`` costs about a microsecond more per message.
"""
from __future__ import annotations

from typing import Any, ClassVar


class Message:
    FIELDS: ClassVar[tuple[str, ...]] = ()
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = [name for name, kind in cls.__dict__.get("__annotations__", {}).items()
               if not str(kind).startswith(("ClassVar", "typing.ClassVar"))]
        defaults = dict(cls.DEFAULTS)
        for name in own:
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
            elif defaults:
                raise TypeError(f"{cls.__name__}.{name}: a field without a default follows one with")
        cls.FIELDS = cls.FIELDS + tuple(own)
        cls.DEFAULTS = defaults

    def __init__(self, *args: Any, **kwargs: Any):
        fields = self.FIELDS
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} has {len(fields)} fields, got {len(args)} values")
        values = self.__dict__
        values.update(zip(fields, args))
        for name in fields[len(args):]:
            if name in kwargs:
                values[name] = kwargs.pop(name)
            elif name in self.DEFAULTS:
                values[name] = self.DEFAULTS[name]
            else:
                raise TypeError(f"{type(self).__name__}: missing field {name!r}")
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unknown or repeated field(s) {', '.join(kwargs)}")

    def astuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def asdict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.astuple() == other.astuple()

    __hash__ = None  # mutable, like the attrs classes around it

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({inner})"
