"""The ``pysc`` command line: global flags, then a subcommand (as runsc and runc)."""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import shutil

from pysc.core.flags import Config, FlagError, FlagRegistry
from pysc.core.plugins import call_in_order, make_plugin_manager, platform_class, platforms
from pysc.core.sandbox_paths import debug_log_path, do_workdir

PROG = "pysc"


def version() -> str:
    import importlib.metadata  # here: importing it costs every start ~25 ms
    try:
        return importlib.metadata.version("pysc")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class CLIError(Exception):
    def __init__(self, msg: str, code: int = 2):
        super().__init__(msg)
        self.code = code


def load_flags(pm) -> FlagRegistry:
    reg = FlagRegistry()
    for plugin in pm.get_plugins():
        impl = getattr(plugin, "pysc_add_flags", None)
        if impl is None:
            continue
        before = set(reg.flags)
        impl(reg)
        name = pm.get_name(plugin) or getattr(plugin, "__name__", "?")
        for f in set(reg.flags) - before:
            reg.flags[f].plugin = name
    return reg


def parse_global(argv: list[str], reg: FlagRegistry) -> tuple[dict, list[str]]:
    """Global flags come before the subcommand: --name=value, --name value, or
    --name alone for booleans (also -name, as runsc accepts)."""
    values = reg.defaults()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "--":
            i += 1
            break
        if arg in ("-v", "--version", "-version"):
            values["version"] = True
            i += 1
            continue
        if arg in ("-h", "--help", "-help"):
            values["help"] = True
            i += 1
            continue
        name, eq, text = arg.lstrip("-").partition("=")
        if name not in reg:
            raise CLIError(f"unknown flag --{name} (see `pysc flags`)")
        flag = reg[name]
        if not eq:
            if flag.type.__name__ == "parse_bool":
                text = "true"
            else:
                if i + 1 >= len(argv):
                    raise CLIError(f"flag --{name} needs a value")
                i += 1
                text = argv[i]
        try:
            values[name] = flag.parse(text)
        except FlagError as e:
            raise CLIError(str(e)) from None
        i += 1
    return values, argv[i:]


USAGE = """usage: pysc [global flags] COMMAND [args]

commands:
  do CMD [ARG...]      run CMD in a new sandbox whose root is the host's /
  spec, create, start, run, state, kill, delete, list, ps, events, pause,
  resume, wait, update, exec, install, uninstall
                       the runc-compatible container commands (OCI bundles)
  flags                list every flag, its default and help
  help syscalls        every x86-64 syscall: implemented, partial, host or missing
  help platforms       the platforms and whether they work here
  version              print the version

`pysc flags` lists the global flags (e.g. --platform, --network, --strace).
"""


def setup_logging(config: Config) -> None:
    # Without --debug, only errors reach the caller's stderr, which the app shares.
    level = logging.DEBUG if config.debug else logging.ERROR
    handlers: list[logging.Handler] = []
    debug_log = debug_log_path(config, "sentry")
    if debug_log:
        handlers.append(logging.FileHandler(debug_log))
        level = logging.DEBUG
    elif config.get("log"):
        handlers.append(logging.FileHandler(config.get("log")))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    if config.get("log-format") == "json":
        for h in handlers:
            h.setFormatter(JSONFormatter())
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if config.get("log") or debug_log \
            else "pysc: %(message)s"
        for h in handlers:
            h.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level, handlers=handlers, force=True)


class JSONFormatter(logging.Formatter):
    """One JSON object a line, {"level", "msg", "time"}, as containerd reads runc's log."""

    def format(self, record):
        import json
        import time
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + \
            f".{int(record.msecs * 1000):06d}Z"
        return json.dumps({"level": record.levelname.lower(), "msg": msg, "time": t})


def cmd_flags(reg: FlagRegistry, args: list[str]) -> int:
    width = max(len(n) for n in reg.flags) + 2
    for name in sorted(reg.flags):
        f = reg.flags[name]
        default = f.default
        if isinstance(default, bool):
            default = str(default).lower()
        extra = f" [{f.plugin}]" if not f.plugin.startswith("pysc.") else ""
        print(f"--{name.ljust(width)} (default {default!r}){extra}\n      {f.help}")
    return 0


def cmd_help(pm, config: Config, args: list[str]) -> int:
    topic = args[0] if args else ""
    if topic == "syscalls":
        from pysc.core.dispatch import SyscallTable
        from pysc.core.syscall_report import syscall_report_text
        fmt = "json" if "--format=json" in args or args[1:3] == ["--format", "json"] else "text"
        name = config.platform
        entry = platforms(pm).get(name)
        cls = platform_class(entry) if entry is not None else None
        table = SyscallTable(getattr(cls, "sentry_owned", False))
        call_in_order(pm.hook.pysc_syscalls, table=table, platform=name)
        print(syscall_report_text(table, cls, fmt))
        return 0
    if topic == "platforms":
        for name, cls in sorted(platform_classes(pm).items()):
            why = cls.available()
            desc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            state = "available" if not why else f"unavailable: {why}"
            flavour = getattr(cls, "describe", None)
            extra = f" ({flavour()})" if flavour and not why else ""
            print(f"{name:8} {state}{extra}\n         {desc}")
        return 0
    print(USAGE, end="")
    return 0 if not topic else 2


def platform_classes(pm) -> dict:
    """Every platform's class by name (this imports all of them)."""
    return {name: platform_class(entry) for name, entry in platforms(pm).items()}


def cmd_do(pm, config: Config, args: list[str]) -> int:
    from pysc.core.sandbox import Sandbox, SandboxError
    from pysc.fsproxy.gofer import GoferError
    cwd = None
    while args and args[0].startswith("-"):
        a = args.pop(0)
        if a == "--":
            break
        if a.startswith("--cwd="):
            cwd = a.split("=", 1)[1]
        elif a == "--cwd" and args:
            cwd = args.pop(0)
        else:
            raise CLIError(f"do: unknown option {a}")
    if not args:
        raise CLIError("do: missing command (usage: pysc do CMD [ARG...])")
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = "/"
    argv = [os.fsencode(a) for a in args]
    env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    workdir = do_workdir(config)
    try:
        try:
            sb = Sandbox(config, pm, workdir)
            return sb.run(argv, env, os.fsencode(cwd), os.getuid(), os.getgid())
        except SandboxError as e:
            code = e.args[1] if len(e.args) > 1 else 1
            print(f"pysc: {e.args[0]}", file=sys.stderr)
            return code
        except GoferError as e:
            print(f"pysc: the gofer failed: {e}", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run one pysc command.  The cyclic collector is off meanwhile: start-up
    imports a few hundred modules and their garbage is not cyclic, while the
    collections it triggered cost about 10 ms; a sandbox turns it back on
    when it starts serving (``Sandbox.serve``)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    finally:
        if collecting:
            gc.enable()


def _main(argv: list[str]) -> int:
    try:
        pm = make_plugin_manager()
        reg = load_flags(pm)
        values, rest = parse_global(argv, reg)
        config = Config(values, reg)
        if values.get("version"):
            print(f"pysc version {version()}\nspec: 1.0.2")
            return 0
        if values.get("help") or not rest:
            print(USAGE, end="")
            return 0 if values.get("help") else 2
        cmd, args = rest[0], rest[1:]
        config.command = cmd
        setup_logging(config)
        if cmd == "flags":
            return cmd_flags(reg, args)
        if cmd == "help":
            return cmd_help(pm, config, args)
        if cmd == "version":
            print(f"pysc version {version()}\nspec: 1.0.2")
            return 0
        if cmd == "do":
            return cmd_do(pm, config, args)
        from pysc.core import runtime
        if cmd in runtime.COMMANDS:
            try:
                return runtime.COMMANDS[cmd](config, pm, args)
            except runtime.RuntimeError_ as e:
                logging.getLogger("pysc").error("%s", e)
                if config.get("log"):  # the message also goes to the caller, as runc does
                    print(f"pysc: {e}", file=sys.stderr)
                return e.code
        raise CLIError(f"unknown command {cmd!r} (see `pysc help`)")
    except CLIError as e:
        print(f"pysc: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pysc state ID | head -1`: the reader left; as a shell tool does
        return 128 + signal.SIGPIPE


def run() -> None:
    """The ``pysc`` command: ``main()``, then a quick exit.  The interpreter's
    orderly finalization of the ~300 modules a sandbox imports costs 25-40 ms
    after all is done, and `pysc run` waits for it; there is nothing left to
    release but buffered output and log handlers."""
    code = main()
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # a closed or broken stdout: the output is lost either way
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # python3 -m pysc.core.cli
    run()
