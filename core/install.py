"""``pysc install`` / ``pysc uninstall``: register pysc as a Docker runtime.

    pysc install [--config-file /etc/docker/daemon.json] [--runtime NAME]
                 [--experimental] [-- FLAG...]
    pysc uninstall [--config-file /etc/docker/daemon.json] [--runtime NAME]

``install`` adds (or replaces) ``runtimes[NAME]`` in Docker's daemon.json:

    {"runtimes": {"pysc": {"path": "/usr/local/bin/pysc",
                           "runtimeArgs": ["--platform=ptrace"]}}}

Every other key of the file is kept. The file is rewritten atomically (a
temporary file in the same directory, then rename), keeping its permissions
and owner; a missing file counts as ``{}`` and its directory is created. A file
that is not valid JSON is never overwritten: the command fails and names it.
``uninstall`` removes the entry again. dockerd reads the file when it starts
(or on SIGHUP), so it must be restarted afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

DEFAULT_CONFIG_FILE = "/etc/docker/daemon.json"
DEFAULT_RUNTIME = "pysc"


def _error(msg: str, code: int = 1) -> Exception:
    # Imported here: pysc.core.runtime merges this module's COMMANDS, so a
    # module-level import would be circular.
    from pysc.core.runtime import RuntimeError_
    return RuntimeError_(msg, code)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _error(f"{self.prog}: {message}", 2)


def _parser(cmd: str) -> _Parser:
    p = _Parser(prog=f"pysc {cmd}", add_help=True)
    p.add_argument("--config-file", "--config_file", dest="config_file",
                   default=DEFAULT_CONFIG_FILE, metavar="FILE",
                   help=f"Docker's daemon configuration (default {DEFAULT_CONFIG_FILE})")
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, metavar="NAME",
                   help=f"the runtime name, as in docker run --runtime=NAME (default {DEFAULT_RUNTIME})")
    return p


def _split_dashdash(argv: list[str]) -> tuple[list[str], list[str]]:
    """Options before the first ``--``, runtime arguments after it."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return list(argv), []


def pysc_executable() -> str:
    """The absolute path of the pysc command being run (what Docker will exec)."""
    arg0 = sys.argv[0] if sys.argv else ""
    if arg0 and os.path.basename(arg0).startswith("pysc"):
        path = arg0 if os.sep in arg0 else shutil.which(arg0)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.realpath(path)
    path = shutil.which("pysc")
    if path:
        return os.path.realpath(path)
    raise _error("cannot find the pysc executable: put pysc on PATH and run `pysc install` again")


def read_daemon_config(path: str) -> dict:
    """The JSON object in ``path``; ``{}`` when the file is missing or empty."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise _error(f"cannot read {path}: {e.strerror}") from None
    if not data.strip():
        return {}
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise _error(f"{path}: invalid JSON: {e}; the file was not changed") from None
    if not isinstance(obj, dict):
        raise _error(f"{path}: the top level is a JSON {type(obj).__name__}, "
                     "not an object; the file was not changed")
    return obj


def _runtimes_of(path: str, obj: dict) -> dict:
    runtimes = obj.get("runtimes")
    if runtimes is None:
        return {}
    if not isinstance(runtimes, dict):
        raise _error(f'{path}: "runtimes" is not a JSON object; the file was not changed')
    return runtimes


def write_daemon_config(path: str, obj: dict) -> None:
    """Replace ``path`` atomically with ``obj``, keeping mode and owner."""
    target = os.path.realpath(path)  # a symlinked daemon.json stays a symlink
    parent = os.path.dirname(target) or "."
    try:
        os.makedirs(parent, mode=0o755, exist_ok=True)
        try:
            st = os.stat(target)
            mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
        except FileNotFoundError:
            mode, owner = 0o644, None
        text = json.dumps(obj, indent=4) + "\n"
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", dir=parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), mode)
                if owner is not None:
                    try:
                        os.fchown(f.fileno(), *owner)
                    except PermissionError:
                        pass
                os.fsync(f.fileno())
            os.rename(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise _error(f"cannot write {path}: {e.strerror or e}") from None


def install(path: str, name: str, runtime_args: list[str], experimental: bool = False,
            executable: str | None = None) -> tuple[dict, bool]:
    """Add or replace runtime ``name``; returns (the new entry, whether one was replaced)."""
    if not name:
        raise _error("install: the runtime name must not be empty", 2)
    obj = read_daemon_config(path)
    runtimes = _runtimes_of(path, obj)
    entry = {"path": executable or pysc_executable(), "runtimeArgs": list(runtime_args)}
    replaced = name in runtimes
    runtimes[name] = entry
    obj["runtimes"] = runtimes
    if experimental:
        obj["experimental"] = True
    write_daemon_config(path, obj)
    return entry, replaced


def uninstall(path: str, name: str) -> dict:
    """Remove runtime ``name``; returns the entry that was removed."""
    if not os.path.exists(path):
        raise _error(f'runtime "{name}" not found: {path} does not exist')
    obj = read_daemon_config(path)
    runtimes = _runtimes_of(path, obj)
    if name not in runtimes:
        raise _error(f'runtime "{name}" not found in {path}')
    entry = runtimes.pop(name)
    if runtimes:
        obj["runtimes"] = runtimes
    else:
        obj.pop("runtimes", None)
    write_daemon_config(path, obj)
    return entry


def cmd_install(config, pm, argv) -> int:
    opts, runtime_args = _split_dashdash(argv)
    p = _parser("install")
    p.usage = "pysc install [--config-file FILE] [--runtime NAME] [--experimental] [-- FLAG...]"
    p.add_argument("--experimental", action="store_true",
                   help='also set "experimental": true in the file')
    a = p.parse_args(opts)
    entry, replaced = install(a.config_file, a.runtime, runtime_args, a.experimental)
    verb = "Replaced" if replaced else "Added"
    print(f'{verb} runtime "{a.runtime}" in {a.config_file}: path {entry["path"]}, '
          f"arguments {json.dumps(entry['runtimeArgs'])}")
    if a.experimental:
        print(f'Set "experimental": true in {a.config_file}')
    print(f"Restart dockerd to use it (e.g. systemctl restart docker), then: "
          f"docker run --rm --runtime={a.runtime} IMAGE")
    return 0


def cmd_uninstall(config, pm, argv) -> int:
    opts, extra = _split_dashdash(argv)
    p = _parser("uninstall")
    a = p.parse_args(opts)
    if extra:
        raise _error("pysc uninstall: unexpected arguments after --: " + " ".join(extra), 2)
    obj = read_daemon_config(a.config_file) if os.path.exists(a.config_file) else {}
    uninstall(a.config_file, a.runtime)
    print(f'Removed runtime "{a.runtime}" from {a.config_file}')
    if obj.get("default-runtime") == a.runtime:
        print(f'warning: "default-runtime" in {a.config_file} is still "{a.runtime}"; '
              "dockerd will not start until it is changed", file=sys.stderr)
    print("Restart dockerd to apply (e.g. systemctl restart docker)")
    return 0


COMMANDS = {"install": cmd_install, "uninstall": cmd_uninstall}
