"""The flag registry behind ``pysc flags`` and every global option."""
from __future__ import annotations

from typing import Any, Callable

from pysc.core.record import Factory, Record


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on", ""):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


class Flag(Record):
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    plugin: str = "pysc"

    def parse(self, text: str) -> Any:
        try:
            value = self.type(text)
        except ValueError as exc:
            raise FlagError(f"invalid value {text!r} for flag --{self.name}: {exc}") from None
        if self.choices is not None and value not in self.choices:
            raise FlagError(f"invalid value {text!r} for flag --{self.name}: "
                            f"choose one of {', '.join(self.choices)}")
        return value


class FlagError(Exception):
    pass


class FlagRegistry(Record):
    flags: dict[str, Flag] = Factory(dict)

    def add(self, name: str, type: Callable[[str], Any] = str, default: Any = None, help: str = "",
            choices: tuple[str, ...] | None = None, plugin: str = "pysc") -> None:
        if name in self.flags:
            raise FlagError(f"flag --{name} registered twice ({self.flags[name].plugin}, {plugin})")
        if type is bool:
            type = parse_bool
        self.flags[name] = Flag(name, type, default, help, choices, plugin)

    def defaults(self) -> dict[str, Any]:
        return {name: f.default for name, f in self.flags.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.flags

    def __getitem__(self, name: str) -> Flag:
        return self.flags[name]


class Config(Record):
    """Flag values for one invocation; attribute access by flag name (dashes become underscores)."""
    values: dict[str, Any]
    registry: "FlagRegistry | None" = None
    command: str = ""  # the subcommand, and the container it is about (--debug-log's names)
    container_id: str = ""

    def __getattr__(self, attr: str) -> Any:
        try:
            return self.values[attr.replace("_", "-")]
        except KeyError:
            raise AttributeError(attr) from None

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def override(self, name: str, text: str) -> None:
        """Set flag ``name`` from text, as if given on the command line."""
        if self.registry is None or name not in self.registry:
            raise FlagError(f"unknown flag --{name}")
        self.values[name] = self.registry[name].parse(text)
